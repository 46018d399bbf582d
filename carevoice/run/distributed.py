"""`transcribe --ray`: the same run on a Ray cluster (Ray Data), with the same outputs and report.

The planned jobs become a Ray dataset; decoding (chunking.prepare_file) runs as CPU tasks; a pool
of actors (one GPU each, or CPU actors on a cluster without GPUs) each holds one Engine and runs
the in-process pipeline (pipeline.Transcriber: cross-file batching, skip-finished and locks
checked before any engine call, atomic writes, per-file errors) over a block of decoded files,
writing where the outputs live (a shared filesystem). Each file's FileResult comes back to the
driver. An actor that dies is restarted and its block retried by Ray; files it had written are
finished by then and are not transcribed again.

Only this module imports ray, and only :func:`start_ray_run` imports this module's Ray parts:
nothing in the single-machine path needs Ray installed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from carevoice import interrupts
from carevoice.engine.cpus import cpu_budget_here
from carevoice.engine.devices import ClusterPlacement
from carevoice.engine.models import ModelRef, resolve_model
from carevoice.engine.vad import SpeechSpan
from carevoice.engine.whisper import Engine
from carevoice.errors import CareVoiceError, Cause, SetupError
from carevoice.results import FileResult, FileStatus
from carevoice.run.audio import find_ffmpeg
from carevoice.run.chunking import Prepared, prepare_file
from carevoice.run.claims import Claims
from carevoice.run.discovery import Job
from carevoice.run.pipeline import Progress, RunStats, Stopping, Transcriber
from carevoice.run.planning import RunPlan, plan_run
from carevoice.run.records import Identity, read_record
from carevoice.run.rules import RunFacts
from carevoice.run.runs import Run
from carevoice.run.tidying import tidy
from carevoice.run.writers import output_path
from carevoice.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_COMPUTE_TYPE,
    SAMPLE_RATE_HZ,
    Device,
    TranscribeSettings,
)

# A decode holds its file's samples (float32, 16 kHz: 230 MB for an hour) plus ffmpeg's buffers.
DECODE_MEMORY_BYTES = 256 * 2**20
RAY_EXTRA_HINT = 'pip install "carevoice[ray]"  (or: pip install "ray[data]")'
_NOTE_RETRIED = "written by an earlier attempt of its Ray task (a worker was lost)"
# RunStats counters that each actor call reports for its block and the driver adds up.
_BLOCK_COUNTERS = ("engine_calls", "chunks", "widened_chunks", "continued_chunks", "redecoded_chunks")


# Ray Data columns hold text as UTF-8; file names that are not UTF-8 travel as bytes.
def _fs(path: Path | str) -> bytes:
    return os.fsencode(str(path))


def _text_bytes(text: str | None) -> bytes:
    return b"" if text is None else text.encode("utf-8", "surrogateescape")


def _bytes_text(data: bytes) -> str | None:
    return data.decode("utf-8", "surrogateescape") if data else None


@dataclass(frozen=True)
class ActorFacts:
    """What the driver knows about the engines on the cluster (the CLI shows it)."""

    ref: ModelRef  # resolved on the driver
    device: str
    compute_type: str


def job_row(index: int, job: Job, seen: str = "") -> dict[str, Any]:
    """A job as a dataset row. Paths are made absolute: workers run in other folders (and hosts).
    ``seen``: the run id of the record the file had when the run was planned ("" for none)."""
    return {
        "index": index,
        "source": _fs(os.path.abspath(job.source)),
        "stem": _fs(os.path.abspath(job.output_stem)),
        "seen": seen,
    }


def _row_job(row: dict[str, Any]) -> Job:
    source = Path(os.fsdecode(row["source"]))
    return Job(source, Path(os.fsdecode(row["stem"])), str(source))


@functools.lru_cache(maxsize=1)
def _ffmpeg() -> Any:

    return find_ffmpeg()


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data CPU task: decode one file and find its chunks (chunking.prepare_file).

    Never raises for one bad file (a raising task would end the whole dataset): the error
    travels in the row and becomes that file's FAILED result, as in the in-process pipeline.
    """

    out = {**row, "samples": b"", "spans": b"", "error": b"", "identity": b"", "decoded_by": b"", "vad_heard": False}
    try:
        prepared = prepare_file(_row_job(row), _ffmpeg())
    except CareVoiceError as exc:
        out["error"] = _text_bytes(str(exc))
        return out
    except Exception as exc:  # a bug in one file's preparation must not end the batch
        out["error"] = _text_bytes(f"unexpected {type(exc).__name__} while decoding — a CareVoice bug: please report it with this line")
        return out
    out["samples"] = np.ascontiguousarray(prepared.samples, dtype=np.float32).tobytes()
    out["spans"] = np.array([(s.start, s.end) for s in prepared.spans], dtype=np.int64).tobytes()
    out["vad_heard"] = prepared.vad_heard
    if prepared.identity is not None:
        out["identity"] = json.dumps(prepared.identity.to_dict()).encode("ascii")
    out["decoded_by"] = _text_bytes(prepared.decoded_by or "")
    return out


class _Undecodable(CareVoiceError):
    """A decode error that happened in a Ray task, raised again where the pipeline expects it."""


class FileTranscriberActor:
    """Ray Data actor: one Engine, and the in-process pipeline over each block of decoded files.

    Args:
        settings: The run's settings (from the driver).
        run: What the run makes (from the driver's plan).
        run_id: The run's id: records written by an earlier attempt of a block carry it.
        device: ``"cuda"`` (Ray gives the actor one GPU: index 0 of what it sees) or ``"cpu"``.
    """

    def __init__(self, settings: TranscribeSettings, run: RunFacts, run_id: str, device: str) -> None:

        self.settings = settings
        self.run = run
        self.run_id = run_id
        ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
        self.engine = Engine.load(settings.engine, ref, device)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [{key: batch[key][i] for key in batch} for i in range(len(batch["index"]))]
        jobs = [_row_job(row) for row in rows]
        decoded = {job.source: row for job, row in zip(jobs, rows)}

        def prepare(job: Job) -> Prepared:
            row = decoded[job.source]
            if row["error"]:
                raise _Undecodable(_bytes_text(row["error"]) or "cannot decode")
            spans = np.frombuffer(row["spans"], dtype=np.int64).reshape(-1, 2)
            samples = np.frombuffer(row["samples"], dtype=np.float32)
            identity = Identity.from_dict(json.loads(bytes(row["identity"]))) if row["identity"] else None
            decoded_by = _bytes_text(row["decoded_by"]) or None
            vad_heard = bool(row["vad_heard"])
            return Prepared(job, samples, tuple(SpeechSpan(int(a), int(b)) for a, b in spans), identity, decoded_by, vad_heard)

        claims = Claims(self.run, self.run_id, {job.source: str(row["seen"]) for job, row in zip(jobs, rows)})
        transcriber = Transcriber(self.settings, self.engine, None, claims, prepare=prepare)
        results = {r.source: r for r in transcriber.run(jobs)}
        out: dict[str, list[Any]] = {k: [] for k in ("index", "status", "duration_s", "elapsed_s", "language", "error", "note", "why", "conflict", "cause", "actor", *_BLOCK_COUNTERS)}
        for position, (job, row) in enumerate(zip(jobs, rows)):
            result = self._retried(results[job.source], row)
            out["index"].append(int(row["index"]))
            out["status"].append(result.status.value)
            out["duration_s"].append(result.duration_s)
            out["elapsed_s"].append(result.elapsed_s)
            out["language"].append(result.language or "")
            out["error"].append(_text_bytes(result.error))
            out["note"].append(_text_bytes(result.note))
            out["why"].append(_text_bytes(result.why))
            out["conflict"].append(b"" if result.conflict is None else os.fsencode(result.conflict))  # a person's edit kept aside
            out["cause"].append("" if result.cause is None else result.cause.value)
            out["actor"].append(self.name)
            # The block's engine work, counted once (on its first row) so the driver can sum rows.
            for counter in _BLOCK_COUNTERS:
                out[counter].append(getattr(transcriber.stats, counter) if position == 0 else 0)
        return out

    def _retried(self, result: FileResult, row: dict[str, Any]) -> FileResult:
        """A file skipped because this very run has written it was written by an earlier attempt of
        this block (an actor that died after writing it): report it as done."""
        if result.status is not FileStatus.SKIPPED or row["error"]:
            return result
        record = read_record(Path(os.fsdecode(row["stem"])))
        if record is None or not record.complete or record.run_id != self.run_id:
            return result
        return FileResult(
            result.source,
            FileStatus.DONE,
            duration_s=len(row["samples"]) / np.dtype(np.float32).itemsize / SAMPLE_RATE_HZ,
            note=_NOTE_RETRIED,  # its language went with the lost actor's result
        )


class RayTranscriber:
    """Runs planned jobs on a Ray cluster; the same interface as pipeline.Transcriber (a Backend).

    Args:
        plan: The planned run (from runs.plan_run on the driver).
        actors: Actors (engines) to run; each holds one model.
        device: ``"cuda"``: one GPU per actor; ``"cpu"``: CPU actors.
        files_per_task: Files each actor call transcribes together (cross-file batches are formed
            within it; a lost actor redoes at most its unwritten files of one call).
    """

    def __init__(self, plan: RunPlan, actors: int, device: str, files_per_task: int) -> None:

        self.plan = plan
        self.group = plan.only_group("--ray")  # one model and one set of options for every actor
        self.settings = self.group.settings
        self.actors = actors
        self.device = device
        self.files_per_task = files_per_task
        # "ray:cuda", not "cuda": the driver's NVML sampler would see this machine's GPUs, not the cluster's.
        facts = ActorFacts(self.group.ref, f"ray:{device}", self.settings.engine.compute_type or DEFAULT_COMPUTE_TYPE[device])
        self.engine = facts
        self.engines: Sequence[ActorFacts] = (facts,) * actors
        self.stats = RunStats(calls_per_engine=[0] * actors)
        # Where Ray's own log lines written to this process's stderr go (the CLI names it if any came).
        self.log_path = Path(tempfile.gettempdir()) / f"carevoice-ray-{plan.run_id}.log"

    def run(
        self,
        jobs: list[Job],
        on_result: Callable[[FileResult], None] = lambda result: None,
        on_progress: Progress | None = None,
        on_stop: Stopping | None = None,
    ) -> Iterator[FileResult]:
        """Transcribe jobs on the cluster; yields each file's result (after handing it to ``on_result``)
        as its actor call returns. Progress comes a file at a time (chunks are done on the actors).
        ``on_stop`` is never called: a stop signal ends the run at once, and Ray drops the calls in
        flight (their files are done again by the next run)."""
        import ray  # the ray extra: only with --ray

        seen = Claims.of(self.group.files, self.group.run, self.plan.run_id).seen
        cpu = self.device == "cpu"
        threads = self.settings.engine.cpu_threads or 1
        actor_resources: dict[str, Any] = {"num_cpus": threads} if cpu else {"num_cpus": 1, "num_gpus": 1}
        dataset = (
            # One file per block (up to 1000 blocks), so that decodes spread over every node.
            ray.data.from_items([job_row(i, job, seen.get(job.source, "")) for i, job in enumerate(jobs)], override_num_blocks=max(1, min(len(jobs), 1000)))
            # The memory reservation also keeps Ray Data from fusing decoding into the actors (it
            # fuses operators with equal resources): fused, files would be decoded one after another
            # in front of each engine call instead of on every CPU of the cluster, ahead of the engines.
            .map(decode_row, num_cpus=1, memory=DECODE_MEMORY_BYTES)
            .map_batches(
                FileTranscriberActor,
                fn_constructor_kwargs={
                    "settings": _cluster_settings(self.settings, threads if cpu else 0),
                    "run": self.group.run,
                    "run_id": self.plan.run_id,
                    "device": self.device,
                },
                batch_size=self.files_per_task,
                compute=ray.data.ActorPoolStrategy(size=self.actors),
                runtime_env={"env_vars": thread_environment()},
                batch_format="numpy",
                **actor_resources,
            )
        )
        actor_index: dict[str, int] = {}
        # Ray prints cluster events (e.g. "Task ... failed, retrying" when a worker dies) on the
        # driver's stdout, which carries only results here (--json): they go to stderr instead
        # (the terminal's, so redirected after fd 2 is), and Ray's own C++ log lines on fd 2 go to
        # the log file.
        with native_stderr_to(self.log_path), contextlib.redirect_stdout(sys.stderr):
            try:
                for result in self._results(dataset, jobs, actor_index):
                    on_result(result)
                    self.stats.whole_file(result.duration_s)
                    if on_progress is not None:
                        on_progress(self.stats)
                    yield result
                    interrupts.check()  # after the file is recorded: a stop signal whose exception a finalizer dropped
            finally:
                ray.shutdown()

    def _results(self, dataset: Any, jobs: list[Job], actor_index: dict[str, int]) -> Iterator[FileResult]:
        for row in dataset.iter_rows():
            job = jobs[int(row["index"])]
            actor = str(row["actor"])
            slot = actor_index.setdefault(actor, len(actor_index) % max(1, self.actors))
            for counter in _BLOCK_COUNTERS:
                setattr(self.stats, counter, getattr(self.stats, counter) + int(row[counter]))
            self.stats.calls_per_engine[slot] += int(row["engine_calls"])
            status = FileStatus(str(row["status"]))
            yield FileResult(
                job.source,
                status,
                outputs=tuple(output_path(job.output_stem, fmt) for fmt in self.settings.formats) if status in (FileStatus.DONE, FileStatus.NO_SPEECH) else (),
                duration_s=float(row["duration_s"]),
                elapsed_s=float(row["elapsed_s"]),
                language=str(row["language"]) or None,
                error=_bytes_text(bytes(row["error"])),
                note=_bytes_text(bytes(row["note"])),
                why=_bytes_text(bytes(row["why"])),
                cause=Cause(str(row["cause"])) if row["cause"] else None,
                conflict=Path(os.fsdecode(bytes(row["conflict"]))) if row["conflict"] else None,
            )


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[None]:
    """Send what is written to file descriptor 2 (Ray's C++ core worker logs there, e.g. its
    "constructor arguments in the object store" error line for every Ray Data actor pool, ray#57838)
    to ``path``, while Python's ``sys.stderr`` (our progress, errors and summary) stays on the terminal.

    Whatever happens inside (an error, Ctrl-C, a generator closed early), fd 2 and ``sys.stderr``
    are the user's again afterwards, no descriptor is left open, and an empty log is removed.
    """
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # Ray's lines name the user's files
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            terminal = os.fdopen(os.dup(saved), "w", encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace", buffering=1)
            previous = sys.stderr
            try:
                os.dup2(log, 2)
                sys.stderr = terminal
                yield
            finally:
                os.dup2(saved, 2)  # first: whatever fails below, fd 2 is the terminal again
                sys.stderr = previous
                with contextlib.suppress(OSError, ValueError):  # a closed pipe (EPIPE) on the way out
                    terminal.close()
        finally:
            os.close(saved)
    finally:
        empty = os.fstat(log).st_size == 0
        os.close(log)
        if empty:  # Ray said nothing: leave nothing behind
            path.unlink(missing_ok=True)


def thread_environment() -> dict[str, str]:
    """The thread settings of a local run, for the actors' processes.

    Ray starts workers with OMP_NUM_THREADS=1 unless told otherwise, and the numbers of both
    CTranslate2 (OpenMP) and numpy's OpenBLAS (the mel features) depend on their thread counts
    in the last digits — measured: OMP_NUM_THREADS=1 or OPENBLAS_NUM_THREADS=1 alone changes
    probabilities in the 3rd decimal and word ends by 20 ms on tiny.en. Unset, both use every
    core, so the actors get what this machine's local run has: the driver's values, or its CPU budget
    (:func:`cpu_budget_here`: a container's limit, not the host's cores).
    """
    env = {name: os.environ[name] for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(cpu_budget_here().cpus)
    return env


def _cluster_settings(settings: TranscribeSettings, cpu_threads: int) -> TranscribeSettings:
    """The settings an actor runs with: its engine uses the CPUs Ray reserved for it, no more."""

    return replace(settings, engine=replace(settings.engine, cpu_threads=cpu_threads), decode_workers=settings.decode_workers or 2)


def _import_ray() -> Any:
    try:
        import ray  # the ray extra: only with --ray
        import ray.data  # noqa: F401  (the ray extra: only with --ray)
    except ImportError:
        raise SetupError("--ray needs Ray, which is not installed", f"install it: {RAY_EXTRA_HINT}") from None
    return ray


def start_ray_run(settings: TranscribeSettings) -> Run:
    """Plan on the driver (cheap, as for a local run), then connect to Ray and size the actor pool.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: Ray is not installed, the cluster cannot be reached, or it has no GPU for --device cuda.
    """

    plan = plan_run(settings)
    plan.only_group("--ray")  # a usage error before Ray starts
    tidy(plan.files)
    if not plan.jobs:
        return Run(settings, plan.settled, [], None, found=plan.found)
    ray = _import_ray()
    address = None if settings.ray_address == "local" else settings.ray_address  # None: ray.init starts one here

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        for name in ("ray", "ray.data"):  # Ray Data's INFO lines would mix with our progress
            logging.getLogger(name).setLevel(logging.ERROR)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise SetupError(
            f"cannot start or reach Ray at {settings.ray_address} ({reason})",
            "check the address (ray status), start a cluster (ray start --head), or use --ray local",
        ) from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours shows cluster-wide throughput
    # Each actor call then gets consecutive files of the job list, and the pipeline admits them in
    # that order: the batches are the ones a local run forms (as long as no call ends in the middle
    # of a batch), and so are the outputs, bit for bit.
    context.execution_options.preserve_order = True
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if settings.engine.device is Device.CUDA and gpus == 0:
        ray.shutdown()
        raise SetupError("--device cuda asked for, but the Ray cluster has no GPU", "use --device cpu, or add GPU nodes")
    device = "cpu" if settings.engine.device is Device.CPU or gpus == 0 else "cuda"
    threads = settings.engine.cpu_threads or 1
    cpus = int(resources.get("CPU", 0))
    if settings.ray_actors:
        actors = settings.ray_actors
    elif device == "cuda":
        actors = gpus
    else:  # leave a CPU per node for decoding
        actors = max(1, (cpus - _node_count(ray)) // threads)
    if device == "cuda" and actors > gpus:
        # Each actor holds one GPU: the ones beyond the cluster's would wait for ever.
        ray.shutdown()
        raise SetupError(
            f"--ray-actors {actors}: the Ray cluster has {gpus} GPU(s), and each actor needs one",
            "lower --ray-actors, or add GPU nodes",
        )
    needed = actors * (threads if device == "cpu" else 1) + 1
    if needed > cpus:
        # Ray would wait for ever: the actors hold every CPU and no file could be decoded.
        ray.shutdown()
        raise SetupError(
            f"the Ray cluster has {cpus} CPU(s); {actors} actor(s) need {needed - 1} and decoding at least 1 more",
            "lower --ray-actors (or --cpu-threads), or add nodes",
        )
    batch = settings.decode.batch_size or DEFAULT_BATCH_SIZE[device]
    # Up to four batches per task, but small enough that every actor gets some of a short list;
    # always whole batches, so that task boundaries fall on batch boundaries (see RayTranscriber).
    per_actor = math.ceil(len(plan.jobs) / actors)
    files_per_task = settings.ray_files_per_task or batch * max(1, min(4, math.ceil(per_actor / batch)))
    placement = ClusterPlacement(device, actors, files_per_task)
    return Run(settings, plan.settled, plan.jobs, RayTranscriber(plan, actors, device, files_per_task), placement, plan.found)


def _node_count(ray: Any) -> int:
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
