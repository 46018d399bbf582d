"""`carevoice bench`: how fast will these files go on this machine, GPU vs CPU, CareVoice vs plain
faster-whisper. Timed runs on the user's files -> BenchResult. Nothing here prints.

Per device and mode: the model load is timed on its own, a warm-up on the first few seconds of
audio is not counted (a whole extra pass cost a third of a bench), then
``runs`` timed runs end to end (ffmpeg decode, VAD, features, inference, writing into a
temporary folder) and ``runs`` timed inference-only runs on audio decoded beforehand. The
CareVoice rows drive the real pipeline (pipeline.Transcriber, and its BatchRunner inference-only); the faster-whisper rows call
``WhisperModel.transcribe`` once per file on the same loaded model and drain its lazy segment
generator, where all the work happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carevoice import __version__, interrupts
from carevoice.commands.bench_results import (
    BenchFile,
    BenchMode,
    BenchResult,
    BenchRow,
    Timing,
)
from carevoice.engine import cuda_probe, decoder, nvml
from carevoice.engine.build import package_versions, this_cpu
from carevoice.engine.cpus import cpu_budget_here
from carevoice.engine.devices import choose_compute_type
from carevoice.engine.gpu_stats import GpuSampler
from carevoice.engine.models import resolve_model
from carevoice.engine.vad import SpeechSpan
from carevoice.engine.whisper import Engine
from carevoice.errors import CareVoiceError, UsageError
from carevoice.results import FileStatus
from carevoice.run.assembly import FileChunks
from carevoice.run.audio import decode_audio, ffmpeg_version, find_ffmpeg
from carevoice.run.chunking import prepare_file
from carevoice.run.claims import claims_for
from carevoice.run.discovery import find_jobs
from carevoice.run.pipeline import BatchRunner, Transcriber
from carevoice.settings import (
    DEFAULT_FORMATS,
    SAMPLE_PATH,
    SAMPLE_RATE_HZ,
    BenchSettings,
    Device,
    EngineSettings,
    TranscribeSettings,
)

if TYPE_CHECKING:
    import numpy as np

    from carevoice.engine.models import ModelRef
    from carevoice.engine.nvml import NvmlInfo
    from carevoice.run.audio import Ffmpeg
    from carevoice.run.chunking import Prepared
    from carevoice.run.discovery import Job
    from carevoice.settings import DecodeSettings

WARMUP_AUDIO_S = 5.0  # the warm-up: the first seconds of the first file, through the same path
VERSIONED_PACKAGES = ("faster-whisper", "ctranslate2", "numpy", "onnxruntime", "nvidia-ml-py")


def _versions(ffmpeg: Ffmpeg) -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "carevoice": __version__,
        **package_versions(VERSIONED_PACKAGES),
        "ffmpeg": ffmpeg_version(ffmpeg),
        "cpu_path": this_cpu(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _hardware(nvml_info: NvmlInfo) -> dict[str, Any]:
    try:
        memory_gib: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": cpu_budget_here().cpus,  # affinity and a container's limit
        "cpu_budget": cpu_budget_here().reason,
        "memory_gib": memory_gib,
        "gpus": [d.name for d in nvml_info.devices],
        "nvml": nvml_info.to_dict(),
    }


def infer_prepared(engine: Engine, prepared: Sequence[Prepared], decode: DecodeSettings, batch_size: int) -> int:
    """CareVoice's batched inference on files already decoded and chunked (chunking.prepare_file):
    the pipeline's own batch runner, minus ffmpeg, VAD and writing. Returns the number of segments.

    Raises:
        _RunFailed: a file failed (a benchmark must not hide it).
    """

    by_job = {file.job: file for file in prepared}
    runner = BatchRunner([engine], decode, by_job.__getitem__, batch_size=batch_size)
    segments = 0
    for file in runner.run(list(by_job)):
        assert isinstance(file, FileChunks)  # nothing is refused without an admit check
        if file.failed is not None:
            raise _RunFailed(f"{file.job.source}: {file.failed}")
        segments += sum(len(result.segments) for result in file.results.values())
    return segments


def transcribe_plain(engine: Engine, samples: np.ndarray, decode: DecodeSettings) -> int:
    """Plain faster-whisper on one file's samples, as its README shows (on the engine's loaded
    WhisperModel); returns the number of segments."""
    segments, _ = engine.decoder.model.transcribe(
        samples,
        language=decode.language,
        task=decode.task.value,
        beam_size=decode.beam_size,
        word_timestamps=decode.word_timestamps,
    )
    # `segments` is a lazy generator: inference happens while it is drained, so time the draining.
    return sum(1 for _ in segments)


@dataclass
class _Inputs:
    """Files decoded (and chunked) once, shared by every row."""

    output_dir: Path  # the jobs' outputs are planned under it; each timed run writes to its own copy
    jobs: list[Job]
    prepared: list[Prepared]
    files: list[BenchFile]
    skipped: list[tuple[Path, str]]


def _gather(settings: BenchSettings, ffmpeg: Ffmpeg, output_dir: Path) -> _Inputs:

    found = find_jobs(settings.inputs or (SAMPLE_PATH,), output_dir, settings.recursive)
    inputs = _Inputs(output_dir, [], [], [], [(p.path, p.message) for p in found.problems])
    for job in found.jobs:
        try:
            prepared = prepare_file(job, ffmpeg)
        except CareVoiceError as exc:
            inputs.skipped.append((job.source, str(exc)))
            continue
        inputs.jobs.append(job)
        inputs.prepared.append(prepared)
        inputs.files.append(BenchFile(job.source, prepared.duration_s))
    if not inputs.jobs:
        raise UsageError("no audio files to benchmark", "name audio files or folders, or run without paths for the bundled sample")
    return inputs


def _timed(action: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


class _Runner:
    """Runs the rows of one device on a loaded engine."""

    def __init__(
        self, settings: BenchSettings, inputs: _Inputs, ffmpeg: Ffmpeg, engine: Engine, ref: ModelRef, say: Callable[[str], None]
    ) -> None:
        self.settings = settings
        self.inputs = inputs
        self.ffmpeg = ffmpeg
        self.engine = engine
        self.say = say
        self.transcribe_settings = TranscribeSettings(
            inputs=settings.inputs,
            formats=DEFAULT_FORMATS,
            engine=EngineSettings(settings.engine.model, Device(engine.device), engine.compute_type, settings.engine.cpu_threads),
            decode=settings.decode,
            overwrite=True,
        )
        self.ref = ref
        self.batch_size = self._transcriber().batch_size
        self._runs = 0

    def _transcriber(self):  # type: ignore[no-untyped-def]
        """The real pipeline, as `transcribe` builds it (a run of its own: new claims, new run id)."""

        return Transcriber(self.transcribe_settings, self.engine, self.ffmpeg, claims_for(self.transcribe_settings, self.ref.model_id))

    def carevoice_e2e(self) -> int:
        """One `transcribe` of every file by the real pipeline, into a folder of its own.

        A fresh folder and Transcriber per run: outputs left by the previous run would make the
        pipeline skip the files as already done (and a run would take ~0 s).
        """

        self._runs += 1
        run_dir = self.inputs.output_dir.with_name(f"{self.inputs.output_dir.name}-{self.engine.device}-{self._runs}")
        jobs = [
            dataclasses.replace(job, output_stem=run_dir / job.output_stem.relative_to(self.inputs.output_dir))
            for job in self.inputs.jobs
        ]
        results = list(self._transcriber().run(jobs))
        not_done = [r for r in results if r.status is not FileStatus.DONE]
        if not_done or len(results) != len(jobs):
            example = f", e.g. {not_done[0].source}: {not_done[0].error or not_done[0].note}" if not_done else ""
            raise _RunFailed(f"{len(jobs) - len(results) + len(not_done)} of {len(jobs)} file(s) not transcribed{example}")
        return len(results)

    def carevoice_inference(self) -> int:
        return infer_prepared(self.engine, self.inputs.prepared, self.settings.decode, self.batch_size)

    def plain_e2e(self) -> int:

        return sum(transcribe_plain(self.engine, decode_audio(job.source, self.ffmpeg), self.settings.decode) for job in self.inputs.jobs)

    def plain_inference(self) -> int:
        return sum(transcribe_plain(self.engine, file.samples, self.settings.decode) for file in self.inputs.prepared)

    def _warm_samples(self) -> Prepared:

        first = self.inputs.prepared[0]
        samples = first.samples[: int(WARMUP_AUDIO_S * SAMPLE_RATE_HZ)]
        return dataclasses.replace(first, samples=samples, spans=(SpeechSpan(0, len(samples)),))

    def carevoice_warm_up(self) -> int:
        return infer_prepared(self.engine, [self._warm_samples()], self.settings.decode, self.batch_size)

    def plain_warm_up(self) -> int:
        return transcribe_plain(self.engine, self._warm_samples().samples, self.settings.decode)

    def measure(self, row: BenchRow, e2e: Callable[[], int], inference: Callable[[], int], warm_up: Callable[[], int]) -> None:
        """Warm up, then time `runs` end-to-end and `runs` inference-only runs, sampling the GPU on CUDA.

        ``inference`` returns the number of segments it produced (kept as proof of work).
        """

        runs = self.settings.runs
        row.warmup_s, _ = _timed(warm_up)
        self.say(f"{row.key}: warm-up {row.warmup_s:.2f} s")
        sampler = GpuSampler(cuda_indices=[0]) if row.device is Device.CUDA else None  # the bench's engine is on CUDA device 0
        with sampler if sampler is not None else contextlib.nullcontext():
            e2e_runs = []
            for i in range(runs):
                interrupts.check()  # a stop signal whose exception a finalizer dropped still stops the bench
                elapsed, _ = _timed(e2e)
                e2e_runs.append(elapsed)
                self.say(f"{row.key}: end-to-end run {i + 1}/{runs} {elapsed:.2f} s")
            row.e2e = Timing(tuple(e2e_runs))
            inference_runs = []
            for i in range(runs):
                interrupts.check()
                elapsed, count = _timed(inference)
                inference_runs.append(elapsed)
                row.segments = count
                self.say(f"{row.key}: inference-only run {i + 1}/{runs} {elapsed:.2f} s")
            row.inference = Timing(tuple(inference_runs))
        if sampler is not None:
            row.gpu = sampler.stats()
        row.available = True


class _RunFailed(CareVoiceError):
    """A timed run did not finish cleanly; its row says why."""


def _device_problem(device: Device, settings: BenchSettings, ref: ModelRef, probe_audio: np.ndarray | None, workdir: Path) -> str | None:
    """Why a device cannot run this model, or None. CUDA is tried in a child process first:
    a missing cuBLAS aborts the process, and the benchmark must survive to report the CPU."""
    if device is not Device.CUDA:
        return None

    problem = decoder.backend_problem()
    if problem:
        return problem
    if decoder.cuda_device_count() == 0:
        return "CTranslate2 sees no CUDA device"
    audio_path = None
    if probe_audio is not None:
        audio_path = workdir / "probe.f32"
        probe_audio.astype("<f4").tofile(audio_path)
    probe = cuda_probe.probe_cuda_inference(
        ref.load_from,
        bench_compute_type(settings, device),
        audio_path,
        settings.gpu_timeout_s,
        None if ref.is_local else str(settings.engine.cache_dir / "hub"),
    )
    return None if probe.ok else probe.detail


def run_bench(settings: BenchSettings, say: Callable[[str], None] = lambda line: None) -> BenchResult:
    """Benchmark every requested device (and plain faster-whisper with ``compare``) on the same files.

    Args:
        settings: What to measure.
        say: Receives one line per step (model load, each run) for a progress display.

    Returns:
        One row per device and mode; a device that cannot run is a row saying why.

    Raises:
        UsageError: bad options, or no decodable input.
        SetupError: ffmpeg missing, or the model cannot be resolved.
    """

    settings.validate()
    ffmpeg = find_ffmpeg()
    ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
    nvml_info = nvml.read_nvml_info()
    modes = (BenchMode.CAREVOICE, BenchMode.FASTER_WHISPER) if settings.compare else (BenchMode.CAREVOICE,)
    with tempfile.TemporaryDirectory(prefix="carevoice-bench-") as tmp:
        inputs = _gather(settings, ffmpeg, Path(tmp) / "out")
        audio_s, files = sum(f.duration_s for f in inputs.files), len(inputs.files)
        say(f"{files} file(s), {audio_s:.1f} s of audio; model {ref.model_id} from {ref.origin}")
        rows: list[BenchRow] = []
        for device in settings.devices:
            device_rows = [BenchRow(mode, device, audio_s, files) for mode in modes]
            rows.extend(device_rows)
            _run_device(settings, inputs, ffmpeg, ref, device_rows, say, Path(tmp))
            gc.collect()  # free the model (and GPU memory) before the next device loads its own
    return BenchResult(
        settings=_settings_dict(settings, ref),
        versions=_versions(ffmpeg),
        hardware=_hardware(nvml_info),
        files=inputs.files,
        skipped=inputs.skipped,
        rows=rows,
        gpu_note=nvml_info.describe(),
    )


def _run_device(
    settings: BenchSettings,
    inputs: _Inputs,
    ffmpeg: Ffmpeg,
    ref: ModelRef,
    rows: list[BenchRow],
    say: Callable[[str], None],
    workdir: Path,
) -> None:
    """Fill in the rows of one device: its timings, or why it cannot run."""

    device = rows[0].device
    problem = _device_problem(device, settings, ref, inputs.prepared[0].samples[: 30 * SAMPLE_RATE_HZ], workdir)
    if problem is None:
        try:
            load_s, engine = _timed_load(settings, ref, device)
        except CareVoiceError as exc:
            problem = exc.message
    if problem is not None:
        for row in rows:
            row.reason = problem
        say(f"{device.value}: unavailable — {problem}")
        return
    say(f"{device.value}: model loaded in {load_s:.2f} s ({engine.compute_type})")
    runner = _Runner(settings, inputs, ffmpeg, engine, ref, say)
    for row in rows:
        row.compute_type, row.load_s = engine.compute_type, load_s
        if row.mode is BenchMode.CAREVOICE:
            row.batch_size = runner.batch_size
            e2e, inference, warm_up = runner.carevoice_e2e, runner.carevoice_inference, runner.carevoice_warm_up
        else:
            row.batch_size = 1
            e2e, inference, warm_up = runner.plain_e2e, runner.plain_inference, runner.plain_warm_up
        try:
            runner.measure(row, e2e, inference, warm_up)
        except CareVoiceError as exc:
            row.available, row.reason = False, exc.message
        except Exception as exc:  # e.g. a CUDA error inside plain faster-whisper: this row fails, the others run
            row.available, row.reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if not row.available:
            say(f"{row.key}: failed — {row.reason}")


def bench_compute_type(settings: BenchSettings, device: Device) -> str | None:
    """The compute type a run would use on this device (CUDA device 0 for the GPU rows)."""
    if device is not Device.CUDA:
        return settings.engine.compute_type

    return choose_compute_type(settings.engine.compute_type, decoder.cuda_compute_types(0)).compute_type


def _timed_load(settings: BenchSettings, ref: ModelRef, device: Device) -> tuple[float, Engine]:

    engine_settings = EngineSettings(
        settings.engine.model, device, bench_compute_type(settings, device), settings.engine.cpu_threads, settings.engine.cache_dir
    )
    started = time.perf_counter()
    engine = Engine.load(engine_settings, ref, device.value)
    return time.perf_counter() - started, engine


def _settings_dict(settings: BenchSettings, ref: ModelRef) -> dict[str, Any]:
    decode = settings.decode
    return {
        "model": settings.engine.model,
        "model_id": ref.model_id,
        "model_origin": ref.origin,
        "devices": [d.value for d in settings.devices],
        "compute_type": settings.engine.compute_type,
        "cpu_threads": settings.engine.cpu_threads or cpu_budget_here().cpus,
        "batch_size": decode.batch_size,
        "beam_size": decode.beam_size,
        "language": decode.language,
        "task": decode.task.value,
        "word_timestamps": decode.word_timestamps,
        "formats": [f.value for f in DEFAULT_FORMATS],
        "runs": settings.runs,
        "warmup_audio_s": WARMUP_AUDIO_S,
        "compare": settings.compare,
    }
