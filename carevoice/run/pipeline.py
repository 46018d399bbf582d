"""decode -> batch -> assemble -> write: the event loop of a run on this machine.

:class:`BatchRunner` is the one batch runner (transcribe, bench and benchmarks/ all use it): a
thread pool decodes files (carevoice.run.chunking), chunks from many files meet in the scheduler's
buckets, full batches go to one inference thread per engine (one engine per GPU), and each file's
chunks come back regrouped (carevoice.run.assembly). :class:`Transcriber` adds what a real run needs
around it: a claim on each file before it is decoded (carevoice.run.claims), and its outputs written
atomically once it is complete. A stop signal during a run (Ctrl-C, SIGTERM) lets the batches already
on an engine finish, and their files be written, before the run stops (:class:`Drain`). Core
functions return values and never print: the CLI renders.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from carevoice import interrupts
from carevoice.engine.build import cuda_names, engine_build, words_build
from carevoice.engine.cpus import cpu_budget_here
from carevoice.engine.models import ModelRef
from carevoice.engine.policy import prompted_windows_s
from carevoice.engine.vad import MAX_CHUNK_S
from carevoice.engine.whisper import EngineItem, ItemResult
from carevoice.errors import CareVoiceError, Cause, EngineError, FileError
from carevoice.results import NO_SPEECH_HEARD, FileResult, FileStatus
from carevoice.run.assembly import FileChunks
from carevoice.run.audio import WAV_HEAD_BYTES, Ffmpeg, stop_all_decodes, wav_stated_end
from carevoice.run.chinese import convert_transcript
from carevoice.run.chunking import Prepared, engine_items, prepare_file
from carevoice.run.claims import Claims
from carevoice.run.decode_pool import DecodePool
from carevoice.run.discovery import Job
from carevoice.run.failures import forget_failure, remember_failure, remembered
from carevoice.run.planning import FilePlan, redo_note
from carevoice.run.records import Identity, Provenance
from carevoice.run.rules import FROM_AUDIO_HINT, IN_THE_WAY_HINT, Reason
from carevoice.run.scheduler import BatchScheduler
from carevoice.run.writers import Written, output_path, retire_outputs, transcript_from_json, write_outputs
from carevoice.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOWS_S,
    DecodeSettings,
    OutputFormat,
    TranscribeSettings,
)
from carevoice.transcript import Transcript


class EngineFacts(Protocol):
    """What the CLI shows about the engines of a run."""

    @property
    def ref(self) -> ModelRef: ...

    @property
    def device(self) -> str: ...

    @property
    def compute_type(self) -> str: ...

    @property
    def device_index(self) -> int: ...


class BatchEngine(EngineFacts, Protocol):
    """What the runner needs of an engine (carevoice.engine.whisper.Engine, or a stand-in in tests)."""

    def features(self, samples: np.ndarray) -> np.ndarray: ...

    def run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult | EngineError]: ...


class NoEngine:
    """Stands in for the engines when every file of a run renders from its recorded JSON: no model
    is loaded. A file found to need the engine after all (its record changed since the run was
    planned) fails with a line saying to rerun."""

    device = "cpu"
    compute_type = "none"
    device_index = 0

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref

    @staticmethod
    def changed() -> EngineError:
        return EngineError("it changed while this run was being planned, and no model was loaded", "rerun the same command")

    def features(self, samples: np.ndarray) -> np.ndarray:
        raise self.changed()

    def run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult]:
        raise self.changed()


@dataclass
class RunStats:
    """Counters the CLI shows while the run goes on, and the run's progress in audio time.

    Progress: a job is *seen* once its length is known (decoded) or it will never have one
    (refused, failed to decode); audio is *done* chunk by chunk as batches come back, and the
    rest of a file's length (silence between chunks) once the file is finished. Audio *rendered*
    from recorded JSON is done at once, without the engine (not a measure of speed).
    """

    engine_calls: int = 0
    chunks: int = 0
    widened_chunks: int = 0  # decoded again in the full window
    continued_chunks: int = 0  # decoded on after stopping early
    redecoded_chunks: int = 0  # decoded the safe (sequential) way
    calls_per_engine: list[int] = field(default_factory=list)  # engine calls of each engine, in load order
    files_seen: int = 0
    files_measured: int = 0  # seen with a known length
    audio_seen_s: float = 0.0
    audio_done_s: float = 0.0
    audio_rendered_s: float = 0.0
    files_rendered: int = 0
    slowest_batch_s: float = 0.0  # the longest an engine took over one batch (0: none back yet)

    def seen(self, duration_s: float | None = None) -> None:
        """A job's length is known (None: it will never be: refused, or not decodable)."""
        self.files_seen += 1
        if duration_s is not None:
            self.files_measured += 1
            self.audio_seen_s += duration_s

    def finished_file(self, duration_s: float, credited_s: float = 0.0) -> None:
        """A file is finished (written, failed or rendered): the part of it not yet counted is done."""
        self.audio_done_s += max(0.0, duration_s - credited_s)

    def whole_file(self, duration_s: float) -> None:
        """A file seen and finished in one step (back from a Ray actor)."""
        self.seen(duration_s)
        self.finished_file(duration_s)

    def rendered(self, duration_s: float, written: bool = True) -> None:
        """A file written from its recorded JSON (``written``; else refused, or failed): done at once, no engine work."""
        self.whole_file(duration_s)
        self.audio_rendered_s += duration_s
        self.files_rendered += written

    def batch_back(self, engine_index: int, outcome: BatchOutcome) -> None:
        """A batch came back from an engine."""
        self.engine_calls += outcome.engine_calls
        self.chunks += outcome.chunks
        self.slowest_batch_s = max(self.slowest_batch_s, outcome.elapsed_s)
        self.calls_per_engine[engine_index] += outcome.engine_calls

    def chunk_back(self, result: ItemResult) -> None:
        """A chunk's result came back: what its engine did beyond one decode."""
        self.widened_chunks += result.widened
        self.continued_chunks += result.continued
        self.redecoded_chunks += result.redecoded

    def estimated_audio_s(self, jobs: int) -> float | None:
        """The run's whole audio: what is known, plus the jobs not seen yet at the mean length of the
        files measured so far (None before any length is known, or while every one is 0)."""
        if self.files_measured == 0:
            return None
        estimate = self.audio_seen_s + self.audio_seen_s / self.files_measured * max(0, jobs - self.files_seen)
        return estimate if estimate > 0 else None


Progress = Callable[[RunStats], None]

# While the runner waits for a decode or a batch, it tells progress at least this often (a watcher's
# heartbeat goes on during one long batch) and sees a stop signal within this long.
TICK_S = 1.0


@dataclass(frozen=True)
class Drain:
    """What a run asked to stop waits for: the batches on an engine (the others never start).

    Attributes:
        by: What asked ("SIGTERM", "Ctrl-C").
        batches: Batches on an engine when the signal came.
        files: Files they finish (written before the run stops; files with chunks in other batches
            are done again by the next run).
        slowest_batch_s: This run's slowest batch so far (None: none has come back yet).
    """

    by: str
    batches: int
    files: int
    slowest_batch_s: float | None

    def describe(self, earlier_batch_s: float = 0.0) -> str:
        """What it waits for and about how long, in words; ``earlier_batch_s``: the slowest batch
        of the caller's earlier runs on the same engines (a watcher runs one for each set of files)."""
        batches = "the batch" if self.batches == 1 else f"the {self.batches} batches"
        slowest_s = max(self.slowest_batch_s or 0.0, earlier_batch_s)
        how_long = f"up to ~{math.ceil(slowest_s)} s" if slowest_s > 0 else "how long is not known yet (no batch came back before it)"
        if self.files == 0:  # chunks of long files whose other chunks wait: the process cannot end before the engine does
            return f"waiting for {batches} in progress to end (it finishes no file), {how_long}"
        return f"finishing {batches} in progress ({self.files} file{'' if self.files == 1 else 's'}), {how_long}"


Stopping = Callable[[Drain], None]


@dataclass
class Chunk:
    """One speech chunk on its way through the scheduler."""

    file: FileChunks
    index: int
    item: EngineItem


@dataclass
class BatchOutcome:
    """What one batch became on one engine (after any out-of-memory halving)."""

    results: list[tuple[Chunk, ItemResult | EngineError]]
    engine_calls: int = 0
    chunks: int = 0
    elapsed_s: float = 0.0  # on the engine, out-of-memory halvings included


def infer_batch(engine: BatchEngine, batch: list[Chunk], options: DecodeSettings) -> BatchOutcome:
    """Run a batch; on out-of-memory (or any engine error) split it in halves and retry,
    so only the chunks that fail on their own fail their files. Runs in an engine's thread."""
    if not batch:
        return BatchOutcome([])
    started = time.monotonic()
    try:
        results = engine.run_batch([c.item for c in batch], options)
        return BatchOutcome(list(zip(batch, results)), 1, len(batch), time.monotonic() - started)
    except EngineError as exc:  # EngineOutOfMemory included
        if len(batch) == 1:
            return BatchOutcome([(batch[0], exc)], elapsed_s=time.monotonic() - started)
    half = len(batch) // 2
    first, second = infer_batch(engine, batch[:half], options), infer_batch(engine, batch[half:], options)
    calls, chunks = first.engine_calls + second.engine_calls, first.chunks + second.chunks
    return BatchOutcome(first.results + second.results, calls, chunks, time.monotonic() - started)


def decode_file(
    prepare: Callable[[Job], Prepared],
    file: FileChunks,
    features: Callable[[np.ndarray], np.ndarray],
    language: str | None,
    windows_s: tuple[float, ...],
) -> tuple[Prepared, list[EngineItem]]:
    """A file decoded and cut into engine items; runs in a decoding thread. The time it takes is the
    file's own (FileChunks.own_s, read once its future is done)."""
    started = time.monotonic()
    try:
        prepared = prepare(file.job)
        return prepared, engine_items(prepared, features, language, windows_s)
    finally:
        file.own_s += time.monotonic() - started


def files_finished_by(batches: Iterable[list[Chunk]]) -> int:
    """How many files these batches finish: those whose every chunk still out is in them."""
    files: dict[int, FileChunks] = {}
    out: Counter[int] = Counter()
    for batch in batches:
        for chunk in batch:
            files[id(chunk.file)] = chunk.file
            out[id(chunk.file)] += 1
    return sum(f.failed is None and len(f.results) + out[key] == len(f.offsets_s) for key, f in files.items())


# Decoded audio waits for the engines as samples (64 kB a second) and features (32 kB a second)
# until its file is finished. What runs ahead is bounded in audio seconds, not files, so a folder of
# one-hour visits holds no more than one of voice notes: the engines' batches in flight and the
# next ones to form, in full 30 s chunks (CPU, batch 8: 960 s, ~90 MB), and one decode beyond it.
AHEAD_BATCHES = 4
# Before a file is decoded its length is guessed: a WAV's from its header, any other file's from its
# size at a low speech bitrate (16 kbit/s: WhatsApp's Opus, Android's AMR-WB), so a long file is not
# let in beside others by mistake and a folder of 60 s voice notes still decodes four at a time.
SPEECH_BYTES_PER_S_AT_LEAST = 2000


def guessed_audio_s(job: Job) -> float:
    """About how much audio a file holds, before it is decoded (0 when it cannot be read: it fails at once)."""
    try:
        with open(job.source, "rb") as handle:
            head, size = handle.read(WAV_HEAD_BYTES), os.fstat(handle.fileno()).st_size
    except OSError:
        return 0.0
    stated = wav_stated_end(head)
    return size / (stated[1] if stated is not None else SPEECH_BYTES_PER_S_AT_LEAST)


@dataclass
class Ahead:
    """The audio decoded and not finished yet (``held_s``), and the decodes under way (by their
    guessed length): a new decode starts while there are fewer than ``decodes`` and all of it fits
    ``budget_s``, and whenever nothing is decoding (so the engines never wait for one)."""

    budget_s: float
    decodes: int
    held_s: float = 0.0
    decoding: dict[int, float] = field(default_factory=dict)  # guessed seconds by id(FileChunks)
    guesses: dict[Path, float] = field(default_factory=dict)  # of jobs waiting: each file's head is read once

    def guess(self, job: Job) -> float:
        if job.source not in self.guesses:
            self.guesses[job.source] = guessed_audio_s(job)
        return self.guesses[job.source]

    def room_for(self, job: Job) -> bool:
        fits = self.held_s + sum(self.decoding.values()) + self.guess(job) <= self.budget_s
        return not self.decoding or (len(self.decoding) < self.decodes and fits)

    def started(self, file: FileChunks) -> None:
        """A job is decoding as ``file``: its guess now counts among the decodes under way."""
        self.decoding[id(file)] = self.guess(file.job)
        del self.guesses[file.job.source]

    def decoded(self, file: FileChunks, finished: Iterable[FileChunks]) -> None:
        """A file's decode is over: its audio (none, when it failed) is held until it is finished
        (``finished``: at once, when it failed or has no speech)."""
        self.decoding.pop(id(file), None)
        self.held_s += file.duration_s
        self.finished(finished)

    def finished(self, files: Iterable[FileChunks]) -> None:
        self.held_s -= sum(f.duration_s for f in files)


def default_decode_workers() -> int:
    """Decode processes beside the engine: one per CPU this process may use (:func:`cpu_budget_here`), at most 4."""
    return min(4, cpu_budget_here().cpus)


class BatchRunner:
    """Files -> chunks -> cross-file batches on one engine or several -> each file's chunk results.

    Args:
        engines: One engine, or one per GPU: each takes whole batches from the one scheduler in a
            thread of its own. The first also computes features (the same on every engine).
        decode: What the model is asked to do.
        prepare: How a job becomes a decoded file (e.g. :func:`carevoice.run.chunking.prepare_file`
            with ffmpeg, or audio decoded beforehand); runs in the decode pool and may raise FileError.
        batch_size: Chunks per batch (default: DEFAULT_BATCH_SIZE for the first engine's device).
        workers: Decode-pool threads (default: one per core, at most 4).
        windows_s: The encoder windows chunks may run in (the engines' own).
        ahead_s: The most audio decoded ahead of the engines (default: AHEAD_BATCHES batches of 30 s chunks).
    """

    def __init__(
        self,
        engines: Sequence[BatchEngine],
        decode: DecodeSettings,
        prepare: Callable[[Job], Prepared],
        *,
        batch_size: int | None = None,
        workers: int = 0,
        windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S,
        ahead_s: float = 0.0,
    ) -> None:
        self.engines = tuple(engines)
        self.decode = decode
        self.prepare = prepare
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE[self.engines[0].device]
        self.workers = workers or default_decode_workers()
        self.windows_s = windows_s
        self.ahead_s = ahead_s or AHEAD_BATCHES * self.batch_size * MAX_CHUNK_S
        self.stats = RunStats(calls_per_engine=[0] * len(self.engines))

    def run(
        self,
        jobs: Sequence[Job],
        admit: Callable[[Job], FileResult | None] = lambda job: None,
        on_progress: Progress | None = None,
        on_stop: Stopping | None = None,
    ) -> Iterator[FileChunks | FileResult]:
        """Yields each file once its chunks are all back (or once it failed), as :class:`FileChunks`.

        ``admit`` is asked about each job just before it is decoded: a FileResult says why it is not
        to be done (yielded as it is), None lets it in. ``on_progress`` gets :attr:`stats` whenever
        a file is decoded or a batch comes back (so a long file moves a progress bar while its
        chunks are transcribed), and every TICK_S while it waits for either. The calling thread
        admits files, forms batches, receives results and reports progress; decoding runs in a pool
        and each engine in a thread of its own.

        A first stop signal (Ctrl-C, SIGTERM: carevoice.interrupts) drains the run: nothing more is
        started, ``on_stop`` is told what it waits for (if a batch is on an engine), the files those
        batches finish are yielded, then the signal's exception is raised. A second one raises at once.
        """
        progress = on_progress or (lambda stats: None)
        scheduler: BatchScheduler[Chunk] = BatchScheduler(self.batch_size)
        pending_jobs = list(reversed(jobs))
        decoding: dict[Future[tuple[Prepared, list[EngineItem]]], FileChunks] = {}
        inferring: dict[Future[tuple[int, BatchOutcome]], list[Chunk]] = {}
        # Two batches per engine: one running, one waiting, so no engine waits for the main thread.
        max_batches = 2 * len(self.engines)
        ahead = Ahead(self.ahead_s, decodes=self.workers * 2)
        idle: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self.engines)):
            idle.put(index)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="carevoice-decode")
        engines = ThreadPoolExecutor(max_workers=len(self.engines), thread_name_prefix="carevoice-infer")
        end_draining = interrupts.start_draining()
        try:
            while pending_jobs or decoding or inferring or scheduler.pending:
                if interrupts.requested() is not None:
                    yield from self._drain(decoding, inferring, progress, on_stop)
                    break
                # Decoded files wait in the scheduler; while it holds more than it should (the
                # engines are the bottleneck), or more audio waits than ``ahead`` allows, decode no
                # further ahead: memory stays bounded.
                while pending_jobs and scheduler.pending <= scheduler.max_pending and ahead.room_for(pending_jobs[-1]):
                    job = pending_jobs.pop()
                    if (refused := admit(job)) is not None:
                        self.stats.seen()
                        yield refused
                        continue
                    file = FileChunks(job)
                    features, language = self.engines[0].features, self.decode.language
                    decoding[pool.submit(decode_file, self.prepare, file, features, language, self.windows_s)] = file
                    ahead.started(file)
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
                done, _ = wait([*itertools.islice(decoding, 1), *inferring], timeout=TICK_S, return_when=FIRST_COMPLETED)
                if not done:
                    progress(self.stats)  # one long decode or batch: the caller is alive all the same
                    continue
                # Files join the scheduler in job order, whatever order their decodes finish in:
                # batches then hold the same chunks on every run, with any number of engines or
                # Ray tasks, and batch-mates change a chunk's numbers in the last digits (CTranslate2
                # int8 GEMMs), so this is what makes outputs identical bit for bit. Decoding is
                # far faster than inference, so waiting for the oldest decode costs next to nothing.
                # Progress is told before the files it finished are yielded: a display then never
                # counts a file as done while its audio is not.
                while decoding and (oldest := next(iter(decoding))).done():
                    file = decoding.pop(oldest)
                    finished = self._admit(file, oldest, scheduler)
                    ahead.decoded(file, finished)
                    progress(self.stats)
                    yield from finished
                for future in [f for f in inferring if f in done]:  # in submission order
                    finished = self._collect(inferring.pop(future), *future.result())
                    ahead.finished(finished)
                    progress(self.stats)
                    yield from finished
            # A stop noted while the last files were finished, or once a drain is over, stops the caller
            # too (a stop signal whose exception a finalizer dropped, as well).
            interrupts.check()
        finally:
            end_draining()
            pool.shutdown(wait=False, cancel_futures=True)
            engines.shutdown(wait=False, cancel_futures=True)  # after a second signal a running batch ends on its own, unused
            stop_all_decodes()  # an interrupted run must not wait for (or leave behind) ffmpeg

    def _drain(
        self,
        decoding: dict[Future[tuple[Prepared, list[EngineItem]]], FileChunks],
        inferring: dict[Future[tuple[int, BatchOutcome]], list[Chunk]],
        progress: Progress,
        on_stop: Stopping | None,
    ) -> Iterator[FileChunks]:
        """A stop signal came: start nothing more, wait for the batches on an engine (a batch cannot
        be cut short, and the process could not end before it anyway), yield the files they finish."""
        for future in decoding:
            future.cancel()
        stop_all_decodes()  # what they decode would wait for batches that will not run
        running = {future: batch for future, batch in inferring.items() if not future.cancel()}
        if running and on_stop is not None:
            by = interrupts.requested() or "a signal"
            on_stop(Drain(by, len(running), files_finished_by(running.values()), self.stats.slowest_batch_s or None))
        while running:
            done, _ = wait(running, timeout=TICK_S, return_when=FIRST_COMPLETED)
            if not done:
                progress(self.stats)
            for future in [f for f in running if f in done]:
                finished = self._collect(running.pop(future), *future.result())
                progress(self.stats)
                yield from finished

    def _infer_on_idle_engine(self, idle: queue.SimpleQueue[int], batch: list[Chunk]) -> tuple[int, BatchOutcome]:
        """Runs in an inference thread: there are as many threads as engines, so one is always idle."""
        index = idle.get()
        try:
            return index, infer_batch(self.engines[index], batch, self.decode)
        finally:
            idle.put(index)

    def _admit(
        self, file: FileChunks, future: Future[tuple[Prepared, list[EngineItem]]], scheduler: BatchScheduler[Chunk]
    ) -> list[FileChunks]:
        """A decoded file's chunks go to the scheduler; returns the file if it is finished already (failed, or no speech)."""
        try:
            prepared, items = future.result()
        except FileError as exc:
            file.failed, file.cause = str(exc), exc.cause
        except CareVoiceError as exc:
            file.failed = str(exc)
        except Exception as exc:  # a bug in one file's preparation must not end the batch
            file.failed = f"unexpected {type(exc).__name__} while decoding — a CareVoice bug: please report it with this line"
        if file.failed is not None:
            self.stats.seen()
            return [file]
        file.take(prepared)
        self.stats.seen(file.duration_s)
        if not items:
            self.stats.finished_file(file.duration_s)
            return [file]
        for index, item in enumerate(items):
            scheduler.add(item.window_frames, Chunk(file, index, item))
        return []

    def _collect(self, batch: list[Chunk], engine_index: int, outcome: BatchOutcome) -> list[FileChunks]:
        """Regroup a batch's results per file; returns each file whose last chunk this was (or that failed)."""
        self.stats.batch_back(engine_index, outcome)
        failed_before = {id(c.file) for c in batch if c.file.failed is not None}
        share_s = outcome.elapsed_s / max(1, len(outcome.results))
        for chunk, result in outcome.results:
            chunk.file.own_s += share_s
            if chunk.file.failed is not None:
                continue  # another chunk of this file failed while this batch ran
            chunk.file.credited_s += chunk.item.duration_s
            self.stats.audio_done_s += chunk.item.duration_s
            if isinstance(result, EngineError):
                chunk.file.failed, chunk.file.cause = str(result), result.cause
            else:
                chunk.file.results[chunk.index] = result
                self.stats.chunk_back(result)
        finished = []
        for key, file in {id(c.file): c.file for c in batch}.items():
            if (file.failed is not None and key not in failed_before) or file.complete:
                self.stats.finished_file(file.duration_s, file.credited_s)
                finished.append(file)
        return finished


def retire_replaced(planned: FilePlan, stem: Path, message: str) -> tuple[Path | None, str]:
    """When a file that failed replaced a recording with outputs, those go (writers.retire_outputs: a
    person's edit kept aside), so none describes the old recording. Returns where an edit was kept,
    and the failure's line (with why the old outputs could not go, if they could not)."""
    if planned.record is None or planned.decision.reason is not Reason.RECORDING_CHANGED:
        return None, message
    try:
        return next(iter(retire_outputs(stem, planned.record)), None), message
    except FileError as exc:
        return None, f"{message}; and {exc}"


def decoder_for(
    ffmpeg: Ffmpeg | None, prepare: Callable[[Job], Prepared] | None, devices: Iterable[str] = ("cpu",)
) -> tuple[DecodePool | None, Callable[[Job], Prepared]]:
    """How a Transcriber decodes: ``prepare`` when given, else :func:`prepare_file` with a pool of decode
    workers (carevoice.run.decode_pool, beside ``ffmpeg``), returned to be closed when each run ends:
    one worker beside engines on the CPU (their batches take seconds), one per decode thread beside a GPU."""
    if prepare is not None:
        return None, prepare
    if ffmpeg is None:
        raise ValueError("a Transcriber without ffmpeg needs prepare=")
    pool = DecodePool(ffmpeg, most=1 if all(device == "cpu" for device in devices) else 0)
    return pool, functools.partial(prepare_file, decoder=pool)


class Transcriber:
    """Runs a planned batch of jobs through one engine, or one per GPU, writing each file's outputs.
    Iterate :meth:`run` for FileResults.

    Args:
        settings: The run's options.
        engine: The first (or only) engine.
        ffmpeg: The ffmpeg program (None when ``prepare`` is given), beside the decode workers.
        claims: This run's claims (what it makes, its run id); each file is claimed before it is
            decoded and written as its claim's plan says.
        more_engines: Further engines of the same model, one per GPU.
        prepare: How a job becomes a decoded file (default: :func:`decoder_for`'s).
        planned: The plans made before the run, by source: files whose missing outputs render from
            their recorded JSON are written without the engine.
    """

    def __init__(
        self,
        settings: TranscribeSettings,
        engine: BatchEngine,
        ffmpeg: Ffmpeg | None,
        claims: Claims,
        more_engines: Sequence[BatchEngine] = (),
        prepare: Callable[[Job], Prepared] | None = None,
        planned: dict[Path, FilePlan] | None = None,
    ) -> None:
        self.engines = (engine, *more_engines)
        self.pool, prepare = decoder_for(ffmpeg, prepare, (e.device for e in self.engines))
        self.settings = settings
        self.engine = engine
        self.log_path: Path | None = None  # a Backend's own log (Ray's lines); this one has none to write
        self.claims = claims
        self.planned = planned or {}
        self.runner = BatchRunner(
            self.engines,
            settings.decode,
            prepare,
            batch_size=settings.decode.batch_size,
            workers=settings.decode_workers,
            windows_s=prompted_windows_s(settings.engine.windows_s, bool(settings.decode.glossary)),
        )
        # What shaped the words besides model and options, for the records (each adds its own ffmpeg).
        cuda = [e.device_index for e in self.engines if e.device == "cuda"]
        names = cuda_names(cuda) if cuda else {}
        builds = [engine_build(e.device, e.compute_type, names.get(e.device_index)) for e in self.engines]
        self.build = words_build(builds)
        # What a transcript's JSON says it was made with.
        self.options = {
            "model": claims.run.model,
            **settings.decode.text_options(),
            "word_timestamps": settings.decode.word_timestamps,
            "batch_size": self.runner.batch_size,
            "device": engine.device,
            "compute_type": engine.compute_type,
        }

    @property
    def batch_size(self) -> int:
        return self.runner.batch_size

    @property
    def stats(self) -> RunStats:
        return self.runner.stats

    def run(
        self,
        jobs: list[Job],
        on_result: Callable[[FileResult], None] = lambda result: None,
        on_progress: Progress | None = None,
        on_stop: Stopping | None = None,
    ) -> Iterator[FileResult]:
        """Transcribe jobs; yields each file's result as soon as it is written (or failed).

        ``on_result`` receives each result before it is yielded; for a written file, in the same
        stretch with Ctrl-C and SIGTERM held as its outputs: an interrupt lands before a file's
        outputs or after they are both written and recorded, never between (so the caller's
        record of the run is complete, whatever its own code was doing when the signal came).
        ``on_progress``, ``on_stop`` and how a stop signal drains the run: see :meth:`BatchRunner.run`.
        """
        try:
            engine_jobs = []
            for job in jobs:  # first what renders from a recorded JSON: no engine needed
                planned = self.planned.get(job.source)
                if planned is None or not planned.decision.from_json:
                    engine_jobs.append(job)
                    continue
                refused = self.claims.claim(job)
                if refused is None and not self.claims.claimed[job.source].decision.from_json:
                    self.claims.release(job)  # it changed since planning: the engine does it
                    engine_jobs.append(job)
                    continue
                with interrupts.deferred():
                    result = refused or self._render(job)
                    on_result(result)
                self.stats.rendered(result.duration_s, written=result.status is FileStatus.DONE)
                if on_progress is not None:
                    on_progress(self.stats)
                yield result
            for event in self.runner.run(engine_jobs, admit=self.claims.claim, on_progress=on_progress, on_stop=on_stop):
                if isinstance(event, FileResult):
                    on_result(event)
                    yield event
                    continue
                with interrupts.deferred():
                    result = self._finish(event)
                    on_result(result)
                yield result
        finally:
            self.claims.release_all()
            if self.pool is not None:
                self.pool.close()  # no decode worker outlives a run

    def _provenance(
        self, identity: Identity | None, words: bool | None = None, build: dict[str, Any] | None = None, heard: bool = True
    ) -> Provenance:
        return Provenance(
            run_id=self.claims.run_id,
            model=self.claims.run.model,
            model_sha256=self.claims.run.model_sha256,
            engine_revision=self.claims.run.engine_revision,
            text=self.settings.decode.text_options(),
            input=identity,
            words=self.settings.decode.word_timestamps if words is None else words,
            build=self.build if build is None else build,
            heard=heard,
        )

    def _write(
        self, job: Job, transcript: Transcript, identity: Identity | None, words: bool | None = None, build: dict[str, Any] | None = None,
        heard: bool = True,
    ) -> tuple[Written, str | None]:
        """Write a claimed file's outputs as its plan says; returns what was written (and kept aside) and why."""
        planned = self.claims.claimed[job.source]
        decision = planned.decision
        written = write_outputs(
            job.output_stem, decision.write, transcript, self._provenance(identity, words, build, heard),
            remove=decision.remove, keep=decision.keep, aside=decision.aside, old=planned.record, overwrite=self.settings.overwrite,
            in_the_way_hint=IN_THE_WAY_HINT[self.settings.offers_overwrite],
        )  # fmt: skip
        forget_failure(job.output_stem)
        return written, redo_note(planned)

    def _render(self, job: Job) -> FileResult:
        """Write a claimed file's missing outputs from its recorded JSON (the transcript is current)."""
        started = time.monotonic()
        planned = self.claims.claimed[job.source]
        try:
            transcript = transcript_from_json(output_path(job.output_stem, OutputFormat.JSON).read_bytes())
            # The JSON holds word timings (JSON is always made with them), and so does what renders from
            # it; its words were made as its record says.
            record = planned.record
            heard = record.heard if record else True
            written, why = self._write(
                job, transcript, planned.input or (record.input if record else None), words=True, build=record.build if record else {}, heard=heard
            )  # fmt: skip
        except FileError as exc:
            return FileResult(job.source, FileStatus.FAILED, error=str(exc), cause=exc.cause)
        except Exception as exc:  # a JSON changed since planning, or a bug: this file fails, the batch goes on
            return FileResult(
                job.source,
                FileStatus.FAILED,
                error=f"cannot render from its JSON output ({type(exc).__name__}) — {FROM_AUDIO_HINT[self.settings.offers_overwrite]}",
            )
        finally:
            self.claims.release(job)
        return FileResult(
            job.source, FileStatus.DONE if heard else FileStatus.NO_SPEECH, outputs=written.outputs, duration_s=transcript.duration_s,
            elapsed_s=time.monotonic() - started, language=transcript.language or None, why=why, note=None if heard else NO_SPEECH_HEARD,
            conflict=next(iter(written.aside), None),
        )  # fmt: skip

    def _finish(self, file: FileChunks) -> FileResult:
        """Write a complete file's outputs; a failed file's result. Lets go of the file's claim.
        Its ``elapsed_s`` is its own time (FileChunks.own_s) and its writing's."""
        writing = time.monotonic()
        try:
            if file.failed is not None:
                return self._failed(file, file.failed, file.cause, retire=True)
            transcript = file.transcript(model=self.claims.run.model, options=self.options, language=self.settings.decode.language)
            transcript = convert_transcript(transcript, self.settings.decode.zh_script)  # before every writer
            unheard = not transcript.speech_detected and file.sound  # sound, and no words even without VAD: a person listens
            written, why = self._write(file.job, transcript, file.identity, build={**self.build, "ffmpeg": file.decoded_by}, heard=not unheard)
        except FileError as exc:
            return self._failed(file, str(exc), exc.cause)
        except Exception as exc:  # a bug in one file's output must not end the batch
            return self._failed(file, f"unexpected {type(exc).__name__} while writing — a CareVoice bug: please report it with this line")
        finally:
            self.claims.release(file.job)
        return FileResult(
            file.job.source,
            FileStatus.NO_SPEECH if unheard else FileStatus.DONE,
            outputs=written.outputs,
            duration_s=file.duration_s,
            elapsed_s=file.own_s + time.monotonic() - writing,
            language=transcript.language or None,
            note=NO_SPEECH_HEARD if unheard else None if transcript.speech_detected else "no speech found",
            why=why,
            conflict=next(iter(written.aside), None),
        )

    def _failed(self, file: FileChunks, message: str, cause: Cause | None = None, *, retire: bool = False) -> FileResult:
        """A claimed file's failure (noted for the next plan; with ``retire``, before anything was written: see retire_replaced)."""
        stem = file.job.output_stem
        conflict, message = retire_replaced(self.claims.claimed[file.job.source], stem, message) if retire else (None, message)
        if remembered(cause):
            remember_failure(stem, file.job.source, message, self.claims.run_id, datetime.now().astimezone())
        return FileResult(
            file.job.source, FileStatus.FAILED, duration_s=file.duration_s, elapsed_s=file.own_s, error=message, cause=cause, conflict=conflict
        )  # fmt: skip
