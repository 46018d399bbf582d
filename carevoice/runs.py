"""A transcribe run from options to results: plan (cheap, nothing loaded), choose the device, load
the engines, then iterate the results. The CLI drives it; ``carevoice.distributed`` builds the same
:class:`Run` on a Ray cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol

from carevoice.claims import Claims, Planned, plan_jobs, run_facts
from carevoice.devices import ClusterPlacement, DeviceChoice, DeviceReason, choose_compute_type, choose_device, gpu_indices
from carevoice.discovery import Job
from carevoice.errors import SetupError
from carevoice.models import ModelRef
from carevoice.pipeline import EngineFacts, NoEngine, Progress, RunStats, Transcriber
from carevoice.results import FileResult, FileStatus
from carevoice.reruns import RunFacts
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

    @property
    def log_path(self) -> Path | None:
        """Where the backend's own log lines went (Ray's), when it has any."""

    def run(self, jobs: list[Job], on_result: Callable[[FileResult], None] = ..., on_progress: Progress | None = None) -> Iterator[FileResult]: ...


@dataclass(frozen=True)
class Plan:
    """Everything decided before any model loads: what to do with each file, and with which model.

    Attributes:
        settings: The run's options.
        ref: The model.
        run: What this run makes (carevoice.reruns.RunFacts).
        run_id: This run's id, written into every record it makes.
        planned: Each input's plan, in input order (``--dry-run`` prints them).
        problems: Inputs that are not files to plan (collisions, broken links).
        found: Inputs found before --shard picked this run's part.
    """

    settings: TranscribeSettings
    ref: ModelRef
    run: RunFacts
    run_id: str
    planned: list[Planned]
    problems: list[FileResult]
    found: int

    @property
    def jobs(self) -> list[Job]:
        """What the engine (or the recorded JSON) has to do, in input order."""
        return [p.job for p in self.planned if not p.settled]

    @property
    def settled(self) -> list[FileResult]:
        """Files settled without work: skipped, or failed before any (sorted by name)."""
        return sorted(self.problems + [p.result() for p in self.planned if p.settled], key=lambda r: str(r.source))

    def claims(self) -> Claims:
        """The claims a run of this plan takes (the record each file had when planned included)."""
        return Claims.of(self.planned, self.run, self.run_id)


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

    def results(self, on_progress: Progress | None = None) -> Iterator[FileResult]:
        """Every file's result: the settled ones first, then each transcribed one as soon as it is
        written (or failed). Each is appended to :attr:`finished` before it is yielded.
        ``on_progress`` gets the run's :class:`RunStats` as audio is done (chunk by chunk)."""
        for result in self.settled:
            self.finished.append(result)
            yield result
        if self.transcriber is not None and self.jobs:
            yield from self.transcriber.run(self.jobs, self.finished.append, on_progress)


def plan_run(settings: TranscribeSettings) -> Plan:
    """Validate, discover, pick this shard and plan each file: all cheap, no model loaded.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: the model cannot be found.
    """
    from carevoice.discovery import find_jobs, select_shard
    from carevoice.policy import ENGINE_REVISION
    from carevoice.errors import UsageError

    settings.validate()
    found = find_jobs(settings.inputs, settings.output_dir, settings.recursive)
    if not found.jobs and not found.problems:
        raise UsageError("no audio files found", "name audio files, or folders holding .wav/.mp3/.m4a/… files")
    if not found.jobs and all(p.missing for p in found.problems):
        named = ", ".join(str(p.path) for p in found.problems[:3]) + (" …" if len(found.problems) > 3 else "")
        raise UsageError(f"nothing to transcribe: no such file or folder ({named})", "check the paths")
    total_found = len(found.jobs) + sum(p.key is not None for p in found.problems)
    every_input = found.jobs
    if settings.shard is not None:
        # After the collision check, which must see every input. A shard left with nothing is
        # not an error: with more shards than files some are empty, and a job array must not fail.
        found = select_shard(found, settings.shard.index, settings.shard.count)
    problems = [FileResult(p.path, FileStatus.FAILED, error=p.message) for p in found.problems]
    ref = resolve_run_model(settings)
    run = run_facts(settings, ref.model_id, model_identity(ref, settings.engine.cache_dir), ENGINE_REVISION)
    planned = plan_jobs(found.jobs, settings, run, every_input, dry_run=settings.dry_run)
    return Plan(settings, ref, run, uuid.uuid4().hex, planned, problems, total_found)


def resolve_run_model(settings: TranscribeSettings) -> ModelRef:
    """The model of a run, checked against its --language (cheap: nothing is loaded).

    Raises:
        UsageError: a language the model does not know.
        SetupError: the model cannot be found.
    """
    from carevoice.errors import UsageError
    from carevoice.models import is_multilingual, resolve_model

    ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
    if settings.decode.language not in (None, "en") and is_multilingual(ref) is False:
        raise UsageError(
            f"--language {settings.decode.language}: the model {ref.model_id} knows only English",
            "leave --language out (or pass -l en), or use a multilingual model such as --model base",
        )
    return ref


def _load_gpus(settings: TranscribeSettings, ref: ModelRef, choice: DeviceChoice) -> tuple[list[Any], DeviceChoice, SetupError]:
    """One engine per GPU (they share the scheduler, so each gets full cross-file batches), each in
    the compute type its GPU runs, loaded and warmed up; a GPU that cannot load or run the model
    (full, no cuBLAS) is dropped with its reason, and the run goes on with the others.

    Returns:
        The engines, the choice with the GPUs used and dropped, and the last failure (raised by
        the caller when no GPU works).
    """
    from carevoice.decoder import cuda_compute_types
    from carevoice.engine import Engine

    engines, used, computes, dropped = [], [], [], []
    failure = SetupError("no GPU to load the model on")
    for index in gpu_indices(settings.gpus, choice.cuda_devices):
        compute = choose_compute_type(settings.engine.compute_type, cuda_compute_types(index))
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


def model_identity(ref: ModelRef, cache_dir: Path, engine: Any = None) -> str | None:
    """The SHA-256 of the model's weights; None for a hub model not downloaded yet (records then
    compare it by name until it is). ``engine``: a loaded engine, whose files are on disk."""
    from carevoice.decoder import cached_model_dir
    from carevoice.models import weights_digest

    if ref.is_local:
        folder: Path | None = Path(ref.load_from)
    elif engine is not None and hasattr(engine, "decoder"):
        folder = Path(engine.decoder.model_path)
    else:
        folder = cached_model_dir(ref.load_from, str(cache_dir / "hub"))
    if folder is None:
        return None
    try:
        return weights_digest(folder, cache_dir)
    except OSError:
        return None


def start_run(settings: TranscribeSettings) -> Run:
    """Plan (cheap), then find ffmpeg and load the model(s) only if work remains.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: ffmpeg, the model or the device is unusable.
    """
    from carevoice.audio import find_ffmpeg
    from carevoice.chinese import load_converter

    plan = plan_run(settings)
    if not plan.jobs:
        return Run(settings, plan.settled, [], None, found=plan.found)
    planned = {p.job.source: p for p in plan.planned}
    if not any(p.plan.needs_engine for p in plan.planned if not p.settled):  # only outputs to add from recorded JSON
        return Run(settings, plan.settled, plan.jobs, Transcriber(settings, NoEngine(plan.ref), None, plan.claims(), planned=planned, prepare=_no_decoding), None, plan.found)
    load_converter(settings.decode.zh_script)  # OpenCC, like ffmpeg, must work before the model loads
    ffmpeg = find_ffmpeg()
    engines, choice = load_engines(settings, plan.ref)
    claims = plan.claims()
    if claims.run.model_sha256 is None:  # a hub model downloaded just now by its load: name its weights in the records
        claims.run = replace(claims.run, model_sha256=model_identity(plan.ref, settings.engine.cache_dir, engines[0]))
    transcriber = Transcriber(settings, engines[0], ffmpeg, claims, more_engines=engines[1:], planned=planned)
    return Run(settings, plan.settled, plan.jobs, transcriber, choice, plan.found)


def load_engines(settings: TranscribeSettings, ref: ModelRef) -> tuple[list[Any], DeviceChoice]:
    """The device this run uses and its engines, loaded and warmed up: one per GPU that can run the
    model, else the CPU (with --device auto; --device cuda raises instead).

    Raises:
        SetupError: the model cannot load, or no requested GPU can run it.
    """
    from carevoice.decoder import cuda_device_count
    from carevoice.engine import Engine

    choice = replace(choose_device(settings.engine.device, cuda_device_count()), gpus_asked=settings.gpus)
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
