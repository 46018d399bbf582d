"""decode -> batch -> assemble -> write: one FileResult per input; never raises for one bad file.

Data flows one way. A thread pool decodes files through ffmpeg, finds speech and computes
features; chunks from many files meet in the scheduler's buckets; full batches go to one
inference thread per engine (one engine per GPU); finished chunks come back to the main thread,
are regrouped per file, mapped back to the file's own timeline and written atomically. Core
functions return values and never print: the CLI renders.
"""

from __future__ import annotations

import itertools
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from carevoice import interrupts
from carevoice.audio import SAMPLE_RATE_HZ, Ffmpeg, decode_audio, stop_all_decodes
from carevoice.chinese import convert_transcript, load_converter
from carevoice.discovery import Job, path_text
from carevoice.engine import (
    MAX_CHUNK_S,
    Engine,
    EngineItem,
    ItemResult,
    SpeechSpan,
    detect_speech,
    window_frames,
)
from carevoice.errors import CareVoiceError, EngineError, FileError, SetupError
from carevoice.locks import OutputLock, remove_stale_locks, try_lock
from carevoice.models import ModelRef
from carevoice.scheduler import BatchScheduler
from carevoice.settings import DecodeSettings, Device, TranscribeSettings
from carevoice.transcript import Segment, Transcript, Word
from carevoice.writers import (
    foreign_outputs,
    is_finished,
    output_path,
    record_path,
    remove_stale_temp_files,
    write_error,
    write_outputs,
)


class FileStatus(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    """What happened to one input. `error` is one line naming the cause and the fix; never transcript text."""

    source: Path
    status: FileStatus
    outputs: tuple[Path, ...] = ()
    duration_s: float = 0.0
    elapsed_s: float = 0.0
    language: str | None = None
    error: str | None = None
    note: str | None = None  # e.g. "no speech found", "already done"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; names that are not valid UTF-8 appear with \\udcXX escapes."""
        return {
            "file": path_text(self.source),
            "status": self.status.value,
            "outputs": [path_text(p) for p in self.outputs],
            "duration_s": round(self.duration_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "language": self.language,
            "error": None if self.error is None else path_text(self.error),
            "note": None if self.note is None else path_text(self.note),
        }


@dataclass
class Chunk:
    """One speech chunk on its way through the scheduler."""

    file: _FileState
    index: int
    offset_s: float
    item: EngineItem


@dataclass
class _FileState:
    job: Job
    started: float
    duration_s: float = 0.0
    results: dict[int, ItemResult] = field(default_factory=dict)
    expected: int = 0
    offsets_s: list[float] = field(default_factory=list)
    failed: str | None = None
    reported: bool = False


@dataclass(frozen=True)
class Prepared:
    """A decoded file: its length and its chunks' spans (samples), before features."""

    job: Job
    samples: np.ndarray
    spans: tuple[SpeechSpan, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ


@dataclass
class RunStats:
    """Counters the CLI shows while the run goes on."""

    engine_calls: int = 0
    chunks: int = 0
    widened_chunks: int = 0  # decoded again in the full window
    continued_chunks: int = 0  # decoded on after stopping early
    redecoded_chunks: int = 0  # decoded the safe (sequential) way
    audio_done_s: float = 0.0
    calls_per_engine: list[int] = field(default_factory=list)  # engine calls of each engine, in load order


@dataclass
class BatchOutcome:
    """What one batch became on one engine (after any out-of-memory halving)."""

    results: list[tuple[Chunk, ItemResult | CareVoiceError]]
    engine_calls: int = 0
    chunks: int = 0


def infer_batch(engine: Engine, batch: list[Chunk], options: DecodeSettings) -> BatchOutcome:
    """Run a batch; on out-of-memory (or any engine error) split it in halves and retry,
    so only the chunks that fail on their own fail their files. Runs in an engine's thread."""
    if not batch:
        return BatchOutcome([])
    try:
        results = engine.run_batch([c.item for c in batch], options)
        return BatchOutcome(list(zip(batch, results)), 1, len(batch))
    except EngineError as exc:  # EngineOutOfMemory included
        if len(batch) == 1:
            return BatchOutcome([(batch[0], exc)])
    half = len(batch) // 2
    first, second = infer_batch(engine, batch[:half], options), infer_batch(engine, batch[half:], options)
    return BatchOutcome(first.results + second.results, first.engine_calls + second.engine_calls, first.chunks + second.chunks)


def plan_chunks(speech: list[SpeechSpan]) -> tuple[SpeechSpan, ...]:
    """Chunks of at most 30 s for a long file: speech spans merged greedily while the merged
    stretch fits in 30 s (the silence between them stays in, so times map back by an offset)."""
    limit = int(MAX_CHUNK_S * SAMPLE_RATE_HZ)
    chunks: list[SpeechSpan] = []
    for span in speech:
        for start in range(span.start, span.end, limit):  # VAD spans are <= 30 s; this is a guard
            piece = SpeechSpan(start, min(span.end, start + limit))
            if chunks and piece.end - chunks[-1].start <= limit:
                chunks[-1] = SpeechSpan(chunks[-1].start, piece.end)
            else:
                chunks.append(piece)
    return tuple(chunks)


def prepare_file(job: Job, ffmpeg: Ffmpeg) -> Prepared:
    """Decode one file and find its speech (runs in the decode pool).

    Raises:
        FileError: the file cannot be decoded.
    """
    samples = decode_audio(job.source, ffmpeg)
    if len(samples) <= MAX_CHUNK_S * SAMPLE_RATE_HZ:
        # One chunk, no VAD: it costs ~1/3 of a core at our throughput, and the engine
        # checks chunks that might be silence with VAD after decoding anyway.
        return Prepared(job, samples, (SpeechSpan(0, len(samples)),))
    return Prepared(job, samples, plan_chunks(detect_speech(samples)))


def engine_items(prepared: Prepared, engine: Engine, language: str | None) -> list[EngineItem]:
    """The engine inputs of a decoded file: one per chunk, with features and encoder window."""
    items = []
    for span in prepared.spans:
        samples = prepared.samples[span.start : span.end]
        frames = window_frames(len(samples) / SAMPLE_RATE_HZ, language=language)
        items.append(EngineItem(samples, engine.features(samples), frames, language))
    return items


def plan_jobs(
    jobs: list[Job], settings: TranscribeSettings, fingerprint: dict[str, Any], every_input: list[Job] | None = None
) -> tuple[list[Job], list[FileResult]]:
    """Split jobs into those to run and those already settled (finished, or blocked by a foreign file).

    ``every_input``: all inputs of the run when ``jobs`` is one shard of them (default: ``jobs``);
    no output may replace any of their recordings, whichever shard they are in.
    """
    to_run, settled = [], []
    for folder in sorted({job.output_stem.parent for job in jobs}):
        remove_stale_temp_files(folder)
        remove_stale_locks(folder)
    sources = {os.path.realpath(job.source) for job in (jobs if every_input is None else every_input)}
    for job in jobs:
        if not settings.overwrite and is_finished(job.output_stem, settings.formats, fingerprint):
            settled.append(FileResult(job.source, FileStatus.SKIPPED, note="already transcribed with these options"))
            continue
        problem = _output_problem(job, settings, sources)  # only files that will be written
        if problem is not None:
            settled.append(FileResult(job.source, FileStatus.FAILED, error=problem))
            continue
        foreign = [] if settings.overwrite else foreign_outputs(job.output_stem, settings.formats)
        if foreign:
            settled.append(
                FileResult(
                    job.source,
                    FileStatus.FAILED,
                    error=f"{foreign[0].name} exists and was not written by CareVoice (or was edited) — "
                    "move it away or pass --overwrite",
                )
            )
            continue
        to_run.append(job)
    return to_run, settled


def _output_problem(job: Job, settings: TranscribeSettings, sources: set[str]) -> str | None:
    """Why this job's outputs must not be written where they would go, or None.

    Two things no option may allow: an output replacing a recording of this run (``visit.txt`` that
    is really audio), and with --output-dir an output landing outside it through a symbolic link.
    """
    for fmt in settings.formats:
        target = output_path(job.output_stem, fmt)
        if os.path.realpath(target) in sources:
            return (
                f"its output {target.name} would replace an input recording — "
                "rename the recording so that its extension says what it is"
            )
    folder = job.output_stem.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot write to {folder} — make the folder writable (in a container: run with --user "
            "matching the folder's owner), or choose another --output-dir"
        )
    if settings.output_dir is not None:
        root = os.path.realpath(settings.output_dir)
        folder = os.path.realpath(job.output_stem.parent)
        if folder != root and not folder.startswith(root.rstrip(os.sep) + os.sep):
            return (
                f"its output folder {job.output_stem.parent} leads outside --output-dir (through a symbolic link) — "
                "remove the link or choose another --output-dir"
            )
    return None


def _assemble(state: _FileState, engine: Engine, settings: TranscribeSettings, options: dict[str, Any]) -> Transcript:
    segments: list[Segment] = []
    weight: Counter[str] = Counter()
    probability: dict[str, float] = {}
    chunks = [state.results[i] for i in range(state.expected)]
    for result, offset in zip(chunks, state.offsets_s):
        spoken = sum(s.end_s - s.start_s for s in result.segments)
        if result.segments:
            weight[result.language] += spoken + 1e-3
            probability.setdefault(result.language, result.language_probability)
        for s in result.segments:
            segments.append(
                Segment(
                    id=len(segments),
                    start_s=round(s.start_s + offset, 3),
                    end_s=round(s.end_s + offset, 3),
                    text=s.text,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                    compression_ratio=s.compression_ratio,
                    words=tuple(
                        Word(round(w.start_s + offset, 3), round(w.end_s + offset, 3), w.text, w.probability) for w in s.words
                    ),
                    language=s.language,
                )
            )
    if weight:
        language = weight.most_common(1)[0][0]
    else:
        language = settings.decode.language or (chunks[0].language if chunks else "") or ""
    return Transcript(
        language=language,
        language_probability=probability.get(language, 1.0 if settings.decode.language else 0.0),
        duration_s=state.duration_s,
        segments=tuple(segments),
        speech_detected=bool(segments),
        model=engine.ref.model_id,
        options=options,
    )


class Transcriber:
    """Runs a planned batch of jobs through one engine, or one per GPU. Iterate :meth:`run` for FileResults.

    Args:
        settings: The run's options.
        engine: The first (or only) engine; it also computes features (the same on every engine).
        ffmpeg: The decoder.
        fingerprint: The options that key resume.
        more_engines: Further engines of the same model, one per GPU: each takes whole batches
            from the one scheduler in a thread of its own.
        prepare: How a job becomes a decoded file (default: :func:`prepare_file` with ffmpeg);
            runs in the decode pool and may raise FileError.
        started_ns: When the run started (time.time_ns; default: now). With --overwrite, a file
            finished since then counts as done by someone else, so a worker that takes over part
            of a run (a retried Ray task) passes the start of the whole run.
    """

    def __init__(
        self,
        settings: TranscribeSettings,
        engine: Engine,
        ffmpeg: Ffmpeg | None,
        fingerprint: dict[str, Any],
        more_engines: Sequence[Engine] = (),
        prepare: Callable[[Job], Prepared] | None = None,
        started_ns: int | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.engines = (engine, *more_engines)
        self.ffmpeg = ffmpeg
        self.fingerprint = fingerprint
        self.batch_size = settings.decode.batch_size or {"cuda": 16}.get(engine.device, 8)
        self.stats = RunStats(calls_per_engine=[0] * len(self.engines))
        self._prepare_file = prepare
        self._locks: dict[Path, OutputLock] = {}  # by source: outputs this process is producing
        self._started_ns = started_ns or time.time_ns()
        self.options = {
            **fingerprint,
            "batch_size": self.batch_size,
            "device": engine.device,
            "compute_type": engine.compute_type,
        }

    def _workers(self) -> int:
        return self.settings.decode_workers or max(1, min(4, os.cpu_count() or 1))

    def run(self, jobs: list[Job]) -> Iterator[FileResult]:
        """Transcribe jobs; yields each file's result as soon as it is written (or failed).

        The calling thread claims and admits files, forms batches and writes outputs (so Ctrl-C
        and SIGTERM, which land in the main thread, find every file whole or untouched); decoding
        runs in a pool and each engine runs batches in a thread of its own.
        """
        scheduler: BatchScheduler[Chunk] = BatchScheduler(self.batch_size)
        workers = self._workers()
        pending_jobs = list(reversed(jobs))
        decoding: dict[Future[tuple[Prepared, list[EngineItem]]], _FileState] = {}
        inferring: dict[Future[tuple[int, BatchOutcome]], list[Chunk]] = {}
        # Two batches per engine: one running, one waiting, so no engine waits for the main thread.
        max_batches = 2 * len(self.engines)
        idle: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self.engines)):
            idle.put(index)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="carevoice-decode")
        engines = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="carevoice-infer")
        try:
            while pending_jobs or decoding or inferring or scheduler.pending:
                # Decoded files wait in the scheduler; while it holds more than it should (the
                # engines are the bottleneck), decode no further ahead: memory stays bounded.
                while pending_jobs and len(decoding) < workers * 2 and scheduler.pending <= scheduler.max_pending:
                    job = pending_jobs.pop()
                    if (not_here := self._claim(job)) is not None:
                        yield not_here
                        continue
                    decoding[pool.submit(self._prepare, job)] = _FileState(job, time.monotonic())
                batches = scheduler.ready() if pending_jobs or decoding else scheduler.flush()
                # Take a batch only when an engine has room for it: what the engines cannot take yet
                # stays in the scheduler, where it holds back decoding (above). The generator takes
                # nothing from the scheduler until asked, so a batch left there is not lost.
                while len(inferring) < max_batches and (batch := next(batches, None)) is not None:
                    live = [c for c in batch if c.file.failed is None]  # a failed file's other chunks need no engine
                    inferring[engines.submit(self._infer_on_idle_engine, idle, live)] = batch
                if not decoding and not inferring:
                    continue  # the files claimed were settled without decoding: claim the next ones
                # Only the oldest decode can be admitted (below): waiting on a later one that is
                # already done would return at once, again and again, while the oldest decodes.
                done, _ = wait([*itertools.islice(decoding, 1), *inferring], return_when=FIRST_COMPLETED)
                # Files join the scheduler in job order, whatever order their decodes finish in:
                # batches then hold the same chunks on every run, with any number of engines or
                # Ray tasks, and batch-mates change a chunk's numbers in the last digits (CTranslate2
                # int8 GEMMs), so this is what makes outputs identical bit for bit. Decoding is
                # far faster than inference, so waiting for the oldest decode costs next to nothing.
                while decoding and (oldest := next(iter(decoding))).done():
                    yield from self._admit(decoding.pop(oldest), oldest, scheduler)
                for future in [f for f in inferring if f in done]:  # in submission order
                    batch = inferring.pop(future)
                    yield from self._collect(batch, *future.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            engines.shutdown(wait=False, cancel_futures=True)  # a running batch ends on its own; its results are dropped
            stop_all_decodes()  # an interrupted run must not wait for (or leave behind) ffmpeg
            for lock in self._locks.values():
                lock.release()
            self._locks.clear()

    def _claim(self, job: Job) -> FileResult | None:
        """Lock the job's outputs before decoding it; None when it is ours to do, else why not.

        Another `carevoice transcribe` on the same folder holds the lock of the file it is working
        on, and may have finished a file since this run was planned: either way this run leaves it.
        """
        try:
            lock = try_lock(job.output_stem)
        except OSError as exc:
            return FileResult(job.source, FileStatus.FAILED, error=str(write_error(job.output_stem.parent, exc)))
        if lock is None:
            return FileResult(job.source, FileStatus.SKIPPED, note="another CareVoice process is transcribing it")
        if self._finished_since_start(job):
            lock.release()
            return FileResult(job.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
        self._locks[job.source] = lock
        return None

    def _finished_since_start(self, job: Job) -> bool:
        if not is_finished(job.output_stem, self.settings.formats, self.fingerprint):
            return False
        if not self.settings.overwrite:
            return True  # planning left it to run, so someone finished it since
        try:
            return record_path(job.output_stem).stat().st_mtime_ns >= self._started_ns
        except OSError:
            return False

    def _release(self, job: Job) -> None:
        lock = self._locks.pop(job.source, None)
        if lock is not None:
            lock.release()

    def _prepare(self, job: Job) -> tuple[Prepared, list[EngineItem]]:
        if self._prepare_file is not None:
            prepared = self._prepare_file(job)
        else:
            assert self.ffmpeg is not None, "a Transcriber without ffmpeg needs prepare="
            prepared = prepare_file(job, self.ffmpeg)
        return prepared, engine_items(prepared, self.engine, self.settings.decode.language)

    def _infer_on_idle_engine(self, idle: queue.SimpleQueue[int], batch: list[Chunk]) -> tuple[int, BatchOutcome]:
        """Runs in an inference thread: there are as many threads as engines, so one is always idle."""
        index = idle.get()
        try:
            return index, infer_batch(self.engines[index], batch, self.settings.decode)
        finally:
            idle.put(index)

    def _admit(
        self, state: _FileState, future: Future[tuple[Prepared, list[EngineItem]]], scheduler: BatchScheduler[Chunk]) -> Iterator[FileResult]:
        try:
            prepared, items = future.result()
        except CareVoiceError as exc:
            yield self._failed(state, str(exc))
            return
        except Exception as exc:  # a bug in one file's preparation must not end the batch
            yield self._failed(state, f"unexpected {type(exc).__name__} while decoding — rerun with --traceback and report it")
            return
        state.duration_s = prepared.duration_s
        state.expected = len(items)
        state.offsets_s = [span.start / SAMPLE_RATE_HZ for span in prepared.spans]
        if not items:
            yield from self._finished(state)
            return
        for index, item in enumerate(items):
            scheduler.add(item.window_frames, Chunk(state, index, state.offsets_s[index], item))

    def _collect(self, batch: list[Chunk], engine_index: int, outcome: BatchOutcome) -> Iterator[FileResult]:
        """Regroup a batch's results per file; write each file whose last chunk this was."""
        self.stats.engine_calls += outcome.engine_calls
        self.stats.chunks += outcome.chunks
        self.stats.calls_per_engine[engine_index] += outcome.engine_calls
        for chunk, result in outcome.results:
            if chunk.file.failed is not None:
                continue  # another chunk of this file failed while this batch ran
            if isinstance(result, CareVoiceError):
                chunk.file.failed = str(result)
            else:
                chunk.file.results[chunk.index] = result
                self.stats.widened_chunks += result.widened
                self.stats.continued_chunks += result.continued
                self.stats.redecoded_chunks += result.redecoded
        touched = {id(c.file): c.file for c in batch}
        for state in touched.values():
            if state.failed is not None and not state.reported:
                state.reported = True
                yield self._failed(state, state.failed)
            elif state.failed is None and len(state.results) == state.expected:
                yield from self._finished(state)

    def _failed(self, state: _FileState, message: str) -> FileResult:
        self._release(state.job)
        return FileResult(
            state.job.source,
            FileStatus.FAILED,
            duration_s=state.duration_s,
            elapsed_s=time.monotonic() - state.started,
            error=message,
        )

    def _finished(self, state: _FileState) -> Iterator[FileResult]:
        """Write a file's outputs and hand over its result with Ctrl-C/SIGTERM held until the caller
        has taken it: an interrupt then lands after the file is both written and counted as done."""
        with interrupts.deferred():
            yield self._finish(state)

    def _finish(self, state: _FileState) -> FileResult:
        try:
            transcript = _assemble(state, self.engine, self.settings, self.options)
            transcript = convert_transcript(transcript, self.settings.decode.zh_script)  # before every writer
            outputs = write_outputs(state.job.output_stem, self.settings.formats, transcript, self.fingerprint)
        except FileError as exc:
            return self._failed(state, str(exc))
        except Exception as exc:  # a bug in one file's output must not end the batch
            return self._failed(state, f"unexpected {type(exc).__name__} while writing — rerun with --traceback and report it")
        self._release(state.job)
        self.stats.audio_done_s += state.duration_s
        return FileResult(
            state.job.source,
            FileStatus.DONE,
            outputs=outputs,
            duration_s=state.duration_s,
            elapsed_s=time.monotonic() - state.started,
            language=transcript.language or None,
            note=None if transcript.speech_detected else "no speech found",
        )


class EngineFacts(Protocol):
    """What the CLI shows about the engines of a run."""

    @property
    def ref(self) -> ModelRef: ...

    @property
    def device(self) -> str: ...

    @property
    def compute_type(self) -> str: ...


class Backend(Protocol):
    """Runs planned jobs and yields one FileResult each: :class:`Transcriber` in this process,
    ``carevoice.distributed.RayTranscriber`` on a Ray cluster."""

    @property
    def engine(self) -> EngineFacts: ...

    @property
    def engines(self) -> Sequence[EngineFacts]: ...

    @property
    def stats(self) -> RunStats: ...

    def run(self, jobs: list[Job]) -> Iterator[FileResult]: ...


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
    """

    settings: TranscribeSettings
    settled: list[FileResult]
    jobs: list[Job]
    transcriber: Backend | None
    device_note: str = ""
    found: int = 0  # inputs found before --shard picked this run's part

    @property
    def total(self) -> int:
        return len(self.settled) + len(self.jobs)

    def results(self) -> Iterator[FileResult]:
        yield from self.settled
        if self.transcriber is not None and self.jobs:
            yield from self.transcriber.run(self.jobs)


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
    from carevoice.engine import cuda_device_count, resolve_device

    plan = plan_run(settings)
    ref, fingerprint, jobs, settled, total_found = plan.ref, plan.fingerprint, plan.jobs, plan.settled, plan.found
    if not jobs:
        return Run(settings, settled, [], None, found=total_found)
    load_converter(settings.decode.zh_script)  # OpenCC, like ffmpeg, must work before the model loads
    ffmpeg = find_ffmpeg()
    device, note = resolve_device(settings.engine.device)
    gpus = _gpu_indices(settings.gpus, cuda_device_count()) if device == "cuda" else ()
    try:
        # One engine per GPU; they share the scheduler, so each gets full cross-file batches.
        engines = [Engine.load(settings.engine, ref, device, device_index=i) for i in gpus] or [Engine.load(settings.engine, ref, device)]
    except SetupError as exc:
        if settings.engine.device is not Device.AUTO or device == "cpu":
            raise
        # auto picked CUDA but it is unusable (driver, cuBLAS): CPU still works.
        engines, gpus = [Engine.load(settings.engine, ref, "cpu")], ()
        note = f"auto: CUDA unusable ({exc.message}), fell back to CPU"
    if settings.gpus is not None and not gpus:  # auto found no usable GPU (--device cpu with --gpus is exit 2)
        note += f"; --gpus {','.join(map(str, settings.gpus))} ignored: no usable GPU"
    elif len(gpus) > 1:
        note += f"; one engine on each of GPUs {','.join(map(str, gpus))}"
    elif gpus and settings.gpus is not None:
        note += f"; GPU {gpus[0]}"
    transcriber = Transcriber(settings, engines[0], ffmpeg, fingerprint, more_engines=engines[1:])
    return Run(settings, settled, jobs, transcriber, note, total_found)


def _gpu_indices(asked: tuple[int, ...] | None, visible: int) -> tuple[int, ...]:
    """The CUDA devices to load an engine on: those asked for, else every one CTranslate2 sees.

    Raises:
        SetupError: an index CTranslate2 does not see.
    """
    if asked is None:
        return tuple(range(max(visible, 1)))
    unseen = [i for i in asked if i >= visible]
    if unseen:
        raise SetupError(
            f"--gpus {','.join(map(str, asked))}: CTranslate2 sees {visible} CUDA device(s), numbered 0 to {visible - 1}",
            "name GPUs from that range (CUDA_VISIBLE_DEVICES renumbers them), or leave --gpus out to use every one",
        )
    return asked
