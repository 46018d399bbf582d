"""A transcribe run from options to results: plan (cheap, nothing loaded), choose the device, load
the engines, then iterate the results. The CLI drives it; ``carevoice.run.distributed`` builds the same
:class:`Run` on a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol

from carevoice.engine import decoder
from carevoice.engine.devices import (
    ClusterPlacement,
    DeviceChoice,
    DeviceReason,
    choose_compute_type,
    choose_device,
    gpu_indices,
)
from carevoice.engine.models import ModelRef
from carevoice.engine.whisper import Engine
from carevoice.errors import SetupError
from carevoice.results import FileResult
from carevoice.run.audio import find_ffmpeg
from carevoice.run.chinese import load_converter
from carevoice.run.claims import Claims
from carevoice.run.discovery import Job
from carevoice.run.pipeline import (
    EngineFacts,
    NoEngine,
    Progress,
    RunStats,
    Stopping,
    Transcriber,
)
from carevoice.run.planning import model_identity, plan_run
from carevoice.run.tidying import tidy
from carevoice.settings import Device, TranscribeSettings


class Backend(Protocol):
    """Runs planned jobs and yields one FileResult each: :class:`carevoice.run.pipeline.Transcriber` in
    this process, ``carevoice.run.distributed.RayTranscriber`` on a Ray cluster. Each result goes to
    ``on_result`` before it is yielded."""

    @property
    def engine(self) -> EngineFacts: ...

    @property
    def engines(self) -> Sequence[EngineFacts]: ...

    @property
    def stats(self) -> RunStats: ...

    @property
    def log_path(self) -> Path | None:
        """Where the backend's own log lines went (Ray's), when it has any."""

    def run(
        self,
        jobs: list[Job],
        on_result: Callable[[FileResult], None] = ...,
        on_progress: Progress | None = None,
        on_stop: Stopping | None = None,
    ) -> Iterator[FileResult]: ...


@dataclass
class Run:
    """A validated, planned transcription run, ready to iterate.

    Build with :func:`start_run` (or ``carevoice.run.distributed.start_ray_run``); iterate :meth:`results`.
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

    def results(self, on_progress: Progress | None = None, on_stop: Stopping | None = None) -> Iterator[FileResult]:
        """Every file's result: the settled ones first, then each transcribed one as soon as it is
        written (or failed). Each is appended to :attr:`finished` before it is yielded.
        ``on_progress`` gets the run's :class:`RunStats` as audio is done (chunk by chunk);
        ``on_stop`` what a first stop signal waits for (carevoice.run.pipeline.Drain)."""
        for result in self.settled:
            self.finished.append(result)
            yield result
        if self.transcriber is not None and self.jobs:
            yield from self.transcriber.run(self.jobs, self.finished.append, on_progress, on_stop=on_stop)


def _load_gpus(settings: TranscribeSettings, ref: ModelRef, choice: DeviceChoice) -> tuple[list[Any], DeviceChoice, SetupError]:
    """One engine per GPU (they share the scheduler, so each gets full cross-file batches), each in
    the compute type its GPU runs, loaded and warmed up; a GPU that cannot load or run the model
    (full, no cuBLAS) is dropped with its reason, and the run goes on with the others.

    Returns:
        The engines, the choice with the GPUs used and dropped, and the last failure (raised by
        the caller when no GPU works).
    """

    engines, used, computes, dropped = [], [], [], []
    failure = SetupError("no GPU to load the model on")
    for index in gpu_indices(settings.gpus, choice.cuda_devices):
        compute = choose_compute_type(settings.engine.compute_type, decoder.cuda_compute_types(index))
        try:
            engines.append(Engine.load(replace(settings.engine, compute_type=compute.compute_type), ref, "cuda", device_index=index))
        except SetupError as exc:
            dropped.append((index, exc.message))
            failure = exc
            continue
        used.append(index)
        computes.append(compute)
    if len(dropped) > 1:
        failure = SetupError(f"no GPU can run the model: {'; '.join(f'GPU {i}: {why}' for i, why in dropped)}", failure.hint)
    return engines, replace(choice, gpus=tuple(used), compute=tuple(computes), dropped=tuple(dropped)), failure


def start_run(settings: TranscribeSettings) -> Run:
    """Plan (cheap, reads only), clear what killed runs left, then find ffmpeg and load the
    model(s) only if work remains: each model once, whichever folders' groups use it.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: ffmpeg, the model or the device is unusable.
    """
    plan = plan_run(settings)
    tidy(plan.files)
    if not plan.jobs:
        return Run(settings, plan.settled, [], None, found=plan.found)
    parts: list[Transcriber] = []
    loaded: dict[str, tuple[list[Any], DeviceChoice]] = {}  # by model: a model loads once for every group that uses it
    choice: DeviceChoice | None = None
    ffmpeg = None
    for group in plan.groups:
        if not group.jobs:
            continue
        planned = {p.job.source: p for p in group.files}
        claims = Claims.of(group.files, group.run, plan.run_id)
        if not any(p.decision.needs_engine for p in group.files if not p.settled):  # only outputs to add from recorded JSON
            parts.append(Transcriber(group.settings, NoEngine(group.ref), None, claims, planned=planned, prepare=_no_decoding))
            continue
        load_converter(group.settings.decode.zh_script)  # OpenCC, like ffmpeg, must work before the model loads
        ffmpeg = ffmpeg or find_ffmpeg()
        if group.ref.model_id not in loaded:
            loaded[group.ref.model_id] = load_engines(group.settings, group.ref)
        engines, choice = loaded[group.ref.model_id]
        if claims.run.model_sha256 is None:  # a hub model downloaded just now by its load: name its weights in the records
            claims.run = replace(claims.run, model_sha256=model_identity(group.ref, settings.engine.cache_dir, engines[0]))
        parts.append(Transcriber(group.settings, engines[0], ffmpeg, claims, more_engines=engines[1:], planned=planned))
    backend = parts[0] if len(parts) == 1 else Groups(parts)
    return Run(settings, plan.settled, plan.jobs, backend, choice, plan.found)


class Groups:
    """A :class:`Backend` for a run whose folders set different options: one Transcriber per group
    (sharing the engines of a model), run one after the other, counted as one run."""

    def __init__(self, parts: list[Transcriber]) -> None:
        self.parts = parts
        self.log_path: Path | None = None

    @property
    def engine(self) -> EngineFacts:
        return self.parts[0].engine

    @property
    def engines(self) -> Sequence[EngineFacts]:
        unique: dict[int, EngineFacts] = {}
        for part in self.parts:
            unique.update((id(e), e) for e in part.engines)
        return list(unique.values())

    @property
    def stats(self) -> RunStats:
        """The groups' counters added up (an engine two groups share, counted once with both its calls)."""
        total = RunStats()
        calls: dict[int, int] = {}
        for part in self.parts:
            stats = part.stats
            for counter in fields(RunStats):  # every counter adds up, one added later included
                if counter.name not in ("calls_per_engine", "slowest_batch_s"):
                    setattr(total, counter.name, getattr(total, counter.name) + getattr(stats, counter.name))
            total.slowest_batch_s = max(total.slowest_batch_s, stats.slowest_batch_s)
            for engine, count in zip(part.engines, stats.calls_per_engine):
                calls[id(engine)] = calls.get(id(engine), 0) + count
        total.calls_per_engine = list(calls.values())
        return total

    def run(
        self,
        jobs: list[Job],
        on_result: Callable[[FileResult], None] = lambda result: None,
        on_progress: Progress | None = None,
        on_stop: Stopping | None = None,
    ) -> Iterator[FileResult]:
        """Each group's jobs through its Transcriber, group by group; progress is the whole run's."""
        progress = None if on_progress is None else (lambda _part: on_progress(self.stats))
        for part in self.parts:
            mine = [job for job in jobs if job.source in part.planned]
            if mine:
                yield from part.run(mine, on_result, progress, on_stop)


def load_engines(settings: TranscribeSettings, ref: ModelRef) -> tuple[list[Any], DeviceChoice]:
    """The device this run uses and its engines, loaded and warmed up: one per GPU that can run the
    model, else the CPU (with --device auto; --device cuda raises instead).

    Raises:
        SetupError: the model cannot load, or no requested GPU can run it.
    """

    choice = replace(choose_device(settings.engine.device, decoder.cuda_device_count()), gpus_asked=settings.gpus)
    engines: list[Any] = []
    if choice.device == "cuda":
        engines, choice, failure = _load_gpus(settings, ref, choice)
        if not engines:  # not one GPU can run the model
            if settings.engine.device is not Device.AUTO:
                raise failure
            choice = replace(choice, device="cpu", reason=DeviceReason.AUTO_CUDA_UNUSABLE, problem=failure.message)  # CPU still works
    if choice.device == "cpu":
        engines = [Engine.load(settings.engine, ref, "cpu")]
    return engines, choice


def _no_decoding(job: Job) -> NoReturn:
    """A run that loads no model decodes nothing (see NoEngine)."""
    raise NoEngine.changed()
