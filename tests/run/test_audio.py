"""audio.py: real ffmpeg turns any input into float32 mono 16 kHz, safely, with one-line errors."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import encode

from carevoice.errors import AudioDecodeError, SetupError
from carevoice.run import audio
from carevoice.run.audio import (
    Ffmpeg,
    FfmpegSource,
    build_decode_command,
    decode_audio,
    find_ffmpeg,
)
from carevoice.settings import SAMPLE_RATE_HZ


def generate(ffmpeg: Ffmpeg, target: Path, lavfi: str, *args: str) -> Path:
    """Synthesise a test signal with ffmpeg's lavfi sources (test setup only)."""
    subprocess.run(
        [ffmpeg.path, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, *args, str(target)], check=True
    )
    return target


def peak_frequencies_hz(samples: np.ndarray, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE_HZ)
    peaks: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[index] - p) > 50 for p in peaks):
            peaks.append(float(freqs[index]))
        if len(peaks) == count:
            break
    return sorted(peaks)


@pytest.fixture(scope="module")
def tone_wav(ffmpeg_bin: Ffmpeg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of 440 Hz at 16 kHz mono."""
    return generate(ffmpeg_bin, tmp_path_factory.mktemp("tone") / "tone.wav", "sine=frequency=440:duration=1.5:sample_rate=16000")


def test_decode_returns_float32_mono_16khz_of_the_right_length(tone_wav: Path, ffmpeg_bin: Ffmpeg) -> None:
    samples = decode_audio(tone_wav, ffmpeg_bin)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == 24_000  # 1.5 s at 16 kHz
    assert peak_frequencies_hz(samples, 1) == pytest.approx([440.0], abs=2)
    assert 0.05 < float(np.sqrt(np.mean(samples**2))) < 0.2  # lavfi's sine is at 1/8 full scale


def test_stereo_44k_is_downmixed_and_resampled(ffmpeg_bin: Ffmpeg, tmp_path: Path) -> None:
    # 440 Hz on the left, 1000 Hz on the right: a mono mix holds both.
    stereo = generate(
        ffmpeg_bin,
        tmp_path / "stereo.flac",
        "sine=frequency=440:duration=2:sample_rate=44100",
        "-f", "lavfi", "-i", "sine=frequency=1000:duration=2:sample_rate=44100",
        "-filter_complex", "[0:a][1:a]join=inputs=2:channel_layout=stereo",
    )  # fmt: skip
    samples = decode_audio(stereo, ffmpeg_bin)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 32_000) <= 16  # 2 s; the resampler may trim a millisecond
    assert peak_frequencies_hz(samples, 2) == pytest.approx([440.0, 1000.0], abs=2)


@pytest.mark.parametrize("name", ["-rf.wav", "http:x.wav", "concat:a.wav", "a b;rm -rf x.wav"])
def test_odd_names_in_the_cwd_are_local_files(
    name: str, tone_wav: Path, ffmpeg_bin: Ffmpeg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(tone_wav, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    samples = decode_audio(Path(name), ffmpeg_bin)
    assert len(samples) == 24_000
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing else was created, nothing removed


def test_the_command_is_a_safe_argument_list(tmp_path: Path) -> None:
    command = build_decode_command(Path("-rf.wav"), "/usr/bin/ffmpeg")
    assert command[:2] == ["/usr/bin/ffmpeg", "-nostdin"]
    assert command[command.index("-protocol_whitelist") + 1] == "file"
    assert "concat" not in command[command.index("-format_whitelist") + 1].split(",")
    assert "hls" not in command[command.index("-format_whitelist") + 1].split(",")
    source = command[command.index("-i") + 1]
    assert source == "file:" + os.path.abspath("-rf.wav")
    assert command.index("-protocol_whitelist") < command.index("-i")  # input options precede their input
    assert command[-1] == "pipe:"
    assert {"-ac", "-ar", "-f"} <= set(command)
    assert command[command.index("-ar") + 1] == str(SAMPLE_RATE_HZ)
    assert command[command.index("-ac") + 1] == "1"
    assert command[command.index("-f") + 1] == "f32le"


def test_ffmpeg_runs_without_a_shell_and_without_stdin(
    tone_wav: Path, ffmpeg_bin: Ffmpeg, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, dict[str, object]]] = []
    real_popen = subprocess.Popen

    def spy(args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        calls.append((args, kwargs))
        return real_popen(args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(audio.subprocess, "Popen", spy)
    decode_audio(tone_wav, ffmpeg_bin)
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert isinstance(args, list) and args == build_decode_command(tone_wav, ffmpeg_bin.path)
    assert not kwargs.get("shell", False)
    assert kwargs["stdin"] == subprocess.DEVNULL


SECRET = "patient reports chest pain"


@pytest.mark.parametrize(
    "name, content",
    [
        ("garbage.wav", os.urandom(4096)),
        ("empty.wav", b""),
        ("notes.mp3", f"{SECRET}\nsecond line\n".encode()),
        ("truncated.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "),
    ],
    ids=["random-bytes", "empty", "text", "truncated-header"],
)
def test_undecodable_files_raise_one_line_that_quotes_nothing_from_inside(
    name: str, content: bytes, ffmpeg_bin: Ffmpeg, tmp_path: Path
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(bad, ffmpeg_bin)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(("cannot decode audio (ffmpeg: ", "the file contains no audio"))
    assert SECRET not in message and "second line" not in message
    assert str(tmp_path) not in message  # the caller names the file once; ffmpeg's copy is stripped


def test_a_file_without_an_audio_stream_fails(ffmpeg_bin: Ffmpeg, tmp_path: Path) -> None:
    video = generate(ffmpeg_bin, tmp_path / "silent-film.mkv", "testsrc=duration=1:size=64x64:rate=5")
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(video, ffmpeg_bin)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "name, playlist, segment, segment_args",
    [
        ("list.wav", "ffconcat version 1.0\nfile 'segment.wav'\n", "segment.wav", ()),
        (
            "list.mp3",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\nsegment.ts\n#EXT-X-ENDLIST\n",
            "segment.ts",
            ("-c:a", "aac", "-f", "mpegts"),
        ),
    ],
    ids=["ffconcat", "hls"],
)
def test_playlists_cannot_open_other_files(
    name: str,
    playlist: str,
    segment: str,
    segment_args: tuple[str, ...],
    tone_wav: Path,
    ffmpeg_bin: Ffmpeg,
    tmp_path: Path,
) -> None:
    # Both would decode the segment next to them if their demuxer were allowed (seen with a plain ffmpeg).
    encode(ffmpeg_bin, tone_wav, tmp_path / segment, *segment_args)
    disguised = tmp_path / name
    disguised.write_text(playlist, encoding="utf-8")
    with pytest.raises(AudioDecodeError):
        decode_audio(disguised, ffmpeg_bin)


def test_a_hanging_ffmpeg_is_stopped(tone_wav: Path, tmp_path: Path) -> None:
    sleeper = tmp_path / "fake-ffmpeg"
    sleeper.write_text("#!/bin/sh\nexec sleep 120\n", encoding="utf-8")
    sleeper.chmod(sleeper.stat().st_mode | stat.S_IXUSR)
    started = time.monotonic()
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(tone_wav, Ffmpeg(str(sleeper), FfmpegSource.ENV), timeout_s=0.5)
    assert time.monotonic() - started < 60, "ffmpeg was waited for, not killed"
    assert "did not finish within" in str(caught.value)


def test_an_unrunnable_ffmpeg_is_a_file_error_not_a_crash(tone_wav: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(tone_wav, Ffmpeg(str(tmp_path / "no-such-ffmpeg"), FfmpegSource.ENV))
    assert "cannot run ffmpeg" in str(caught.value)


def test_find_ffmpeg_prefers_the_override_then_path_then_imageio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREVOICE_FFMPEG", "/opt/ffmpeg")
    assert find_ffmpeg() == Ffmpeg("/opt/ffmpeg", FfmpegSource.ENV)
    monkeypatch.delenv("CAREVOICE_FFMPEG")
    system = shutil.which("ffmpeg")
    if system:
        assert find_ffmpeg() == Ffmpeg(system, FfmpegSource.SYSTEM)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on PATH
    found = find_ffmpeg()
    assert found.source is FfmpegSource.IMAGEIO and os.access(found.path, os.X_OK)


def test_no_ffmpeg_anywhere_is_a_setup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREVOICE_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(SetupError) as caught:
        find_ffmpeg()
    assert "ffmpeg not found" in caught.value.message and "install" in caught.value.hint
