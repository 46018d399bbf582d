"""A transcribe run from options to results: plan (cheap, nothing loaded), choose the device, load
the engines, then iterate the results. The CLI drives it; ``carevoice.distributed`` builds the same
:class:`Run` on a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from carevoice.claims import plan_jobs
from carevoice.devices import ClusterPlacement, DeviceChoice, DeviceReason, choose_device, gpu_indices
from carevoice.discovery import Job
from carevoice.errors import SetupError
from carevoice.models import ModelRef
from carevoice.pipeline import EngineFacts, RunStats, Transcriber
from carevoice.results import FileResult, FileStatus
from carevoice.settings import Device, TranscribeSettings


class Backend(Protocol):
    """Runs planned jobs and yields one FileResult each: :class:`carevoice.pipeline.Transcriber` in
    this process, ``carevoice.distributed.RayTranscriber`` on a Ray cluster. Each result goes to
    ``on_result`` before it is yielded."""

    @property
    def engine(self) -> EngineFacts: ...

    @property
    def engines(self) -> Sequence[EngineFacts]: ...

    @property
    def stats(self) -> RunStats: ...

    def run(self, jobs: list[Job], on_result: Callable[[FileResult], None] = ...) -> Iterator[FileResult]: ...


@dataclass(frozen=True)
class Plan:
    """Everything decided before any model loads: what to run, what is settled, and with which model."""

    settings: TranscribeSettings
    ref: ModelRef
    fingerprint: dict[str, Any]
    jobs: list[Job]
    settled: list[FileResult]
    found: int  # inputs found before --shard picked this run's part


@dataclass
class Run:
    """A validated, planned transcription run, ready to iterate.

    Build with :func:`start_run` (or ``carevoice.distributed.start_ray_run``); iterate :meth:`results`.
    :attr:`finished` holds every result produced so far, complete even when an interrupt stops the
    iteration (a written file is recorded before the interrupt can land).
    """

    settings: TranscribeSettings
    settled: list[FileResult]
    jobs: list[Job]
    transcriber: Backend | None
    placement: DeviceChoice | ClusterPlacement | None = None
    found: int = 0  # inputs found before --shard picked this run's part
    finished: list[FileResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.settled) + len(self.jobs)

    def results(self) -> Iterator[FileResult]:
        for result in self.settled:
            self.finished.append(result)
            yield result
        if self.transcriber is not None and self.jobs:
            yield from self.transcriber.run(self.jobs, self.finished.append)


def plan_run(settings: TranscribeSettings) -> Plan:
    """Validate, discover, pick this shard and plan: all cheap, nothing loaded.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: the model cannot be found.
    """
    from carevoice.discovery import find_jobs, select_shard
    from carevoice.errors import UsageError
    from carevoice.models import resolve_model

    settings.validate()
    found = find_jobs(settings.inputs, settings.output_dir, settings.recursive)
    if not found.jobs and not found.problems:
        raise UsageError("no audio files found", "name audio files, or folders holding .wav/.mp3/.m4a/… files")
    total_found = len(found.jobs) + sum(p.key is not None for p in found.problems)
    every_input = found.jobs
    if settings.shard is not None:
        # After the collision check, which must see every input. A shard left with nothing is
        # not an error: with more shards than files some are empty, and a job array must not fail.
        found = select_shard(found, settings.shard.index, settings.shard.count)
    problems = [FileResult(p.path, FileStatus.FAILED, error=p.message) for p in found.problems]
    ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
    fingerprint = settings.decode.fingerprint(ref.model_id)
    jobs, settled = plan_jobs(found.jobs, settings, fingerprint, every_input)
    settled = sorted(problems + settled, key=lambda r: str(r.source))
    return Plan(settings, ref, fingerprint, jobs, settled, total_found)


def start_run(settings: TranscribeSettings) -> Run:
    """Plan (cheap), then find ffmpeg and load the model(s) only if work remains.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: ffmpeg, the model or the device is unusable.
    """
    from carevoice.audio import find_ffmpeg
    from carevoice.chinese import load_converter
    from carevoice.decoder import cuda_device_count
    from carevoice.engine import Engine

    plan = plan_run(settings)
    if not plan.jobs:
        return Run(settings, plan.settled, [], None, found=plan.found)
    load_converter(settings.decode.zh_script)  # OpenCC, like ffmpeg, must work before the model loads
    ffmpeg = find_ffmpeg()
    choice = replace(choose_device(settings.engine.device, cuda_device_count()), gpus_asked=settings.gpus)
    gpus = gpu_indices(settings.gpus, choice.cuda_devices) if choice.device == "cuda" else ()
    try:
        # One engine per GPU; they share the scheduler, so each gets full cross-file batches.
        engines = [Engine.load(settings.engine, plan.ref, "cuda", device_index=i) for i in gpus] or [
            Engine.load(settings.engine, plan.ref, choice.device)
        ]
        choice = replace(choice, gpus=gpus)
    except SetupError as exc:
        if settings.engine.device is not Device.AUTO or choice.device == "cpu":
            raise
        # auto picked CUDA but it is unusable (driver, cuBLAS): CPU still works.
        engines = [Engine.load(settings.engine, plan.ref, "cpu")]
        choice = replace(choice, device="cpu", reason=DeviceReason.AUTO_CUDA_UNUSABLE, problem=exc.message)
    transcriber = Transcriber(settings, engines[0], ffmpeg, plan.fingerprint, more_engines=engines[1:])
    return Run(settings, plan.settled, plan.jobs, transcriber, choice, plan.found)
