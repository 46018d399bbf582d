"""Issue 8 — every GPU of a host: one engine per device, all fed full cross-file batches from one
scheduler, one decode pool, one progress display and report, outputs identical to one engine.

On this CPU-only machine the real proof runs two real tiny.en engines on the CPU side by side
(the pipeline cannot tell them from two GPUs); the CUDA wiring (--gpus, device indices, the
one-engine-per-GPU default) is checked with a fake engine, and on a real GPU by the `gpu` tests.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    DATA_DIR,
    comparable_outputs,
    invoke_cli,
    read_manifest,
)
from doubles import FakeEngine, fake_load

from carevoice.engine import decoder
from carevoice.engine.models import resolve_model
from carevoice.engine.vad import SpeechSpan
from carevoice.engine.whisper import Engine
from carevoice.results import FileResult, FileStatus
from carevoice.run.audio import find_ffmpeg
from carevoice.run.chunking import Prepared
from carevoice.run.claims import claims_for
from carevoice.run.discovery import Job, find_jobs
from carevoice.run.pipeline import SPEECH_BYTES_PER_S_AT_LEAST, BatchRunner, Transcriber
from carevoice.run.planning import plan_files
from carevoice.settings import (
    SAMPLE_RATE_HZ,
    DecodeSettings,
    Device,
    EngineSettings,
    OutputFormat,
    TranscribeSettings,
)

# The 8 shortest English clips (1.5-4 s): one chunk each, four batches of two.
CLIPS = sorted(
    (row["file"] for row in read_manifest(DATA_DIR / "manifest.tsv") if row["language"] == "en"),
    key=lambda name: float(next(r for r in read_manifest(DATA_DIR / "manifest.tsv") if r["file"] == name)["duration_s"]),
)[:8]


def copy_clips(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in CLIPS:
        shutil.copy(DATA_DIR / name, folder / name)
    return folder


def every_file(folder: Path) -> dict[str, bytes]:
    return comparable_outputs(folder, set(CLIPS))


def transcribe_with(engines: list[Engine], folder: Path) -> Transcriber:
    settings = TranscribeSettings(
        inputs=(folder,),
        formats=tuple(OutputFormat),
        engine=EngineSettings(model="tiny.en", device=Device.CPU, cpu_threads=1),
        decode=DecodeSettings(batch_size=2),
    )
    claims = claims_for(settings, engines[0].ref.model_id)
    planned = plan_files(find_jobs(settings.inputs).jobs, settings, claims.run)
    jobs = [p.job for p in planned if not p.settled]
    assert len(jobs) == len(CLIPS)
    transcriber = Transcriber(settings, engines[0], find_ffmpeg(), claims, more_engines=engines[1:])
    results = list(transcriber.run(jobs))
    assert sorted(r.source.name for r in results) == sorted(CLIPS)
    assert all(r.status is FileStatus.DONE for r in results), [r.error for r in results]
    return transcriber


@pytest.fixture(scope="module")
def two_cpu_engines() -> list[Engine]:
    ref = resolve_model("tiny.en", EngineSettings().cache_dir)
    return [Engine.load(EngineSettings(model="tiny.en", cpu_threads=1), ref, "cpu") for _ in range(2)]


def test_two_real_engines_share_the_batches_and_write_byte_identical_outputs(
    two_cpu_engines: list[Engine], tmp_path: Path
) -> None:
    assert len(CLIPS) == 8
    one = transcribe_with(two_cpu_engines[:1], copy_clips(tmp_path / "one"))
    two = transcribe_with(two_cpu_engines, copy_clips(tmp_path / "two"))
    assert one.stats.calls_per_engine == [4]
    assert two.stats.engine_calls == sum(two.stats.calls_per_engine) == 4
    assert min(two.stats.calls_per_engine) >= 1, two.stats.calls_per_engine  # both engines really ran batches
    assert two.stats.chunks == one.stats.chunks == 8
    outputs = every_file(tmp_path / "two")
    assert len(outputs) == len(CLIPS) * (len(OutputFormat) + 1)  # five formats and the record each
    assert outputs == every_file(tmp_path / "one")


# --- CUDA wiring, with a fake engine standing in for a model on each GPU ------------------------


def run_fake_decodes(folder: Path, files: int, engine: FakeEngine, prepare: Callable[[Job], None], decode_workers: int) -> None:
    """Transcribe ``files`` made-up 2 s files whose decoding is ``prepare`` (a sleep), through the real
    Transcriber with one batch of two per engine call; every file must be done."""
    settings = TranscribeSettings(
        inputs=(folder,),
        formats=(OutputFormat.TXT,),
        engine=EngineSettings(model="tiny.en", device=Device.CPU),
        decode=DecodeSettings(batch_size=2),
        decode_workers=decode_workers,
    )

    def prepared(job: Job) -> Prepared:
        prepare(job)
        samples = np.zeros(2 * SAMPLE_RATE_HZ, dtype=np.float32)
        return Prepared(job, samples, (SpeechSpan(0, len(samples)),))

    jobs = [Job(folder / f"r{i:02d}.wav", folder / f"r{i:02d}", f"r{i:02d}.wav") for i in range(files)]
    transcriber = Transcriber(settings, engine, None, claims_for(settings, engine.ref.model_id), prepare=prepared)  # type: ignore[arg-type]
    results = list(transcriber.run(jobs))
    assert [r.status for r in results] == [FileStatus.DONE] * files, [r.error for r in results]
    assert engine.entered == files


def test_decoding_stays_a_bounded_distance_ahead_of_slow_engines(tmp_path: Path) -> None:
    """Decoding is far faster than inference: decoded files must wait in the scheduler, which holds
    decoding back, not pile up in the engines' queue (an archive of short files all in memory)."""
    engine = FakeEngine(resolve_model("tiny.en", EngineSettings().cache_dir), delay_s=0.04)
    ahead: list[int] = []

    def prepare(job: Job) -> None:
        ahead.append(len(ahead) + 1 - engine.entered)  # files decoded (this one too) that no engine has had yet
        time.sleep(0.003)

    run_fake_decodes(tmp_path, 60, engine, prepare, decode_workers=1)
    assert len(ahead) == 60
    # About 14 at most: two decodes in flight, the scheduler's limit (4 batches) and the two decodes
    # admitted past it, and the batch waiting for the engine (two while the engine thread is slow to
    # take it). Without the bound, ~50: nearly every file decoded before the engine has it.
    assert max(ahead) <= 18, ahead


def test_what_runs_ahead_of_the_engines_is_bounded_in_audio_seconds(tmp_path: Path) -> None:
    """A folder of long visits holds no more audio than the bound: before a file is decoded its length
    is guessed from its size (pipeline.guessed_audio_s), so four decode workers do not each take a
    long file at once (before: eight 300 s files decoded before the engine finished one)."""
    visit_s, files = 300, 10
    engine = FakeEngine(resolve_model("tiny.en", EngineSettings().cache_dir), delay_s=0.01)
    jobs = []
    for i in range(files):
        source = tmp_path / f"visit{i:02d}.opus"
        with open(source, "wb") as handle:  # the size of 300 s of speech at the lowest bitrate (sparse)
            handle.truncate(visit_s * SPEECH_BYTES_PER_S_AT_LEAST)
        jobs.append(Job(source, tmp_path / f"visit{i:02d}", source.name))
    finished = 0
    live: list[int] = []  # files decoded (this one too) and not finished, as each decode starts

    def prepare(job: Job) -> Prepared:
        live.append(len(live) + 1 - finished)
        samples = np.zeros(visit_s * SAMPLE_RATE_HZ, dtype=np.float32)
        return Prepared(job, samples, tuple(SpeechSpan(s, s + 30 * SAMPLE_RATE_HZ) for s in range(0, len(samples), 30 * SAMPLE_RATE_HZ)))

    runner = BatchRunner([engine], DecodeSettings(), prepare, batch_size=2, workers=4, ahead_s=3 * visit_s)
    for file in runner.run(jobs):
        assert not isinstance(file, FileResult) and file.complete, file
        finished += 1
    assert finished == files and len(live) == files
    # Three files' audio fits the bound; one more decodes while the engines work on them.
    assert max(live) <= 4, live


def test_wav_files_are_guessed_by_their_header_and_decode_side_by_side(tmp_path: Path) -> None:
    """A 30 s WAV is 960 kB: guessed at a speech bitrate it would look like 8 minutes and decode
    alone. Its header says 32 kB a second, so two decode at once (they meet at a barrier; before:
    the second never started while the first waited for it, BrokenBarrierError)."""
    engine = FakeEngine(resolve_model("tiny.en", EngineSettings().cache_dir))
    jobs = []
    for i in range(4):
        source = tmp_path / f"note{i}.wav"
        with wave.open(str(source), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE_HZ)
            out.writeframes(bytes(30 * SAMPLE_RATE_HZ * 2))
        jobs.append(Job(source, tmp_path / f"note{i}", source.name))
    together = threading.Barrier(2, timeout=30)

    def prepare(job: Job) -> Prepared:
        if job.source.name in ("note0.wav", "note1.wav"):
            together.wait()
        samples = np.zeros(30 * SAMPLE_RATE_HZ, dtype=np.float32)
        return Prepared(job, samples, (SpeechSpan(0, len(samples)),))

    runner = BatchRunner([engine], DecodeSettings(), prepare, batch_size=2, workers=2)
    assert [f.complete for f in runner.run(jobs) if not isinstance(f, FileResult)] == [True] * 4


def test_the_main_thread_sleeps_while_the_oldest_decode_holds_up_the_line(tmp_path: Path) -> None:
    """Files join the scheduler in job order, so later files whose decodes finish first wait for the
    first one: meanwhile the main thread must wait for it, not spin over their finished decodes."""
    engine = FakeEngine(resolve_model("tiny.en", EngineSettings().cache_dir), delay_s=0.04)

    def prepare(job: Job) -> None:
        if job.source.name == "r00.wav":
            time.sleep(1.0)  # a long recording

    busy_s = time.thread_time()
    run_fake_decodes(tmp_path, 6, engine, prepare, decode_workers=2)
    busy_s = time.thread_time() - busy_s
    assert busy_s < 0.3, f"the main thread was busy {busy_s:.2f} s of a run that waits 1 s for one decode"


@pytest.fixture
def three_gpus(monkeypatch: pytest.MonkeyPatch) -> list[FakeEngine]:
    """CTranslate2 'sees' three CUDA devices; Engine.load builds a fake on the index it is given,
    slow enough (20 ms a batch) that the engines overlap."""
    loaded: list[FakeEngine] = []
    monkeypatch.setattr(decoder, "cuda_device_count", lambda: 3)
    monkeypatch.setattr(Engine, "load", fake_load(loaded, delay_s=0.02, only_on="cuda"))
    return loaded


def test_cuda_uses_every_gpu_by_default_and_gpus_chooses(three_gpus: list[FakeEngine], tmp_path: Path) -> None:
    every = invoke_cli("transcribe", copy_clips(tmp_path / "every"), "--device", "cuda", "-m", "tiny.en", "--batch-size", "1", "--json")
    assert every.exit_code == 0, every.stderr
    assert [e.device_index for e in three_gpus] == [0, 1, 2]
    assert "one engine on each of GPUs 0,1,2" in every.stderr
    record = json.loads(every.stdout)
    assert record["device"] == "cuda ×3 (float16)"
    assert record["counts"]["done"] == 8 and record["engine_calls"] == 8
    assert record["engine_calls_per_engine"] == [e.calls for e in three_gpus]
    assert sum(e.calls > 0 for e in three_gpus) >= 2  # batches really spread over the GPUs

    three_gpus.clear()
    chosen = invoke_cli("transcribe", copy_clips(tmp_path / "chosen"), "--device", "cuda", "-m", "tiny.en", "--gpus", "2,0", "--batch-size", "1")
    assert chosen.exit_code == 0, chosen.stderr
    assert [e.device_index for e in three_gpus] == [2, 0]
    assert "one engine on each of GPUs 2,0" in chosen.stderr

    three_gpus.clear()
    single = invoke_cli("transcribe", copy_clips(tmp_path / "single"), "--device", "cuda", "-m", "tiny.en", "--gpus", "1", "--batch-size", "1")
    assert single.exit_code == 0, single.stderr
    assert [e.device_index for e in three_gpus] == [1]
    assert every_file(tmp_path / "every") == every_file(tmp_path / "chosen") == every_file(tmp_path / "single")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--device", "cpu", "--gpus", "0"), 2, "error: --gpus chooses CUDA devices, but --device cpu was asked for"),
        (("--device", "cuda", "--gpus", "x"), 2, "error: --gpus 'x' is not a list of GPU indices"),
        (("--device", "cuda", "--gpus", "0,0"), 2, "error: --gpus '0,0' names a GPU twice"),
        (("--device", "cuda", "--gpus", "0,3"), 3, "error: --gpus 0,3: CTranslate2 sees 3 CUDA device(s), numbered 0 to 2"),
    ],
    ids=["cpu", "not-numbers", "twice", "unseen"],
)
def test_bad_gpus_fail_before_any_model_loads(
    three_gpus: list[FakeEngine], tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    folder = copy_clips(tmp_path / "clips")
    result = invoke_cli("transcribe", folder, "-m", "tiny.en", *args)
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == message
    assert three_gpus == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(CLIPS)


# --- real GPUs ------------------------------------------------------------------------------------


def _cuda_devices() -> int:
    return decoder.cuda_device_count()


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_devices() < 1, reason="needs a CUDA device that CTranslate2 sees")
def test_every_gpu_writes_what_one_gpu_writes(tmp_path: Path) -> None:
    common = ("-m", "tiny.en", "--device", "cuda", "-f", "all", "--batch-size", "2")
    one = invoke_cli("transcribe", copy_clips(tmp_path / "one"), *common, "--gpus", "0", "--json")
    every = invoke_cli("transcribe", copy_clips(tmp_path / "every"), *common, "--json")
    assert one.exit_code == every.exit_code == 0, every.stderr
    record = json.loads(every.stdout)
    assert record["counts"]["done"] == 8
    if _cuda_devices() > 1:
        assert min(record["engine_calls_per_engine"]) >= 1
        assert len(record["gpu"]["devices"]) >= 2  # NVML utilisation per GPU in the report
    assert every_file(tmp_path / "every") == every_file(tmp_path / "one")


def test_gpus_under_auto_without_a_gpu_says_it_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder, "cuda_device_count", lambda: 0)
    result = invoke_cli("transcribe", copy_clips(tmp_path / "auto"), "-m", "tiny.en", "--gpus", "0,1", "--batch-size", "1")
    assert result.exit_code == 0, result.stderr
    assert "auto: no CUDA device found; --gpus 0,1 ignored: no usable GPU" in result.stderr
