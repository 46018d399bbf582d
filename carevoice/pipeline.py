"""decode -> batch -> assemble -> write: one FileResult per input; never raises for one bad file.

Data flows one way. A thread pool decodes files through ffmpeg, finds speech and computes
features while the main thread runs inference; chunks from many files meet in the scheduler's
buckets; finished chunks are regrouped per file, mapped back to the file's own timeline and
written atomically. Core functions return values and never print: the CLI renders.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from carevoice import interrupts
from carevoice.audio import SAMPLE_RATE_HZ, Ffmpeg, decode_audio, stop_all_decodes
from carevoice.chinese import convert_transcript, load_converter
from carevoice.discovery import Job, path_text
from carevoice.engine import MAX_CHUNK_S, Engine, EngineItem, EngineOutOfMemory, ItemResult, SpeechSpan, detect_speech
from carevoice.errors import CareVoiceError, EngineError, FileError, SetupError
from carevoice.locks import OutputLock, remove_stale_locks, try_lock
from carevoice.scheduler import BatchScheduler, window_frames
from carevoice.settings import Device, TranscribeSettings
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
    redecoded_chunks: int = 0
    audio_done_s: float = 0.0


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
        frames = window_frames(len(samples) / SAMPLE_RATE_HZ)
        items.append(EngineItem(samples, engine.features(samples), frames, language))
    return items


def plan_jobs(
    jobs: list[Job], settings: TranscribeSettings, fingerprint: dict[str, Any]
) -> tuple[list[Job], list[FileResult]]:
    """Split jobs into those to run and those already settled (finished, or blocked by a foreign file)."""
    to_run, settled = [], []
    for folder in sorted({job.output_stem.parent for job in jobs}):
        remove_stale_temp_files(folder)
        remove_stale_locks(folder)
    sources = {os.path.realpath(job.source) for job in jobs}
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
    """Runs a planned batch of jobs through one engine. Iterate :meth:`run` for FileResults."""

    def __init__(self, settings: TranscribeSettings, engine: Engine, ffmpeg: Ffmpeg, fingerprint: dict[str, Any]) -> None:
        self.settings = settings
        self.engine = engine
        self.ffmpeg = ffmpeg
        self.fingerprint = fingerprint
        self.batch_size = settings.decode.batch_size or {"cuda": 16}.get(engine.device, 8)
        self.stats = RunStats()
        self._locks: dict[Path, OutputLock] = {}  # by source: outputs this process is producing
        self._started_ns = time.time_ns()
        self.options = {
            **fingerprint,
            "batch_size": self.batch_size,
            "device": engine.device,
            "compute_type": engine.compute_type,
        }

    def _workers(self) -> int:
        return self.settings.decode_workers or max(1, min(4, os.cpu_count() or 1))

    def run(self, jobs: list[Job]) -> Iterator[FileResult]:
        """Transcribe jobs; yields each file's result as soon as it is written (or failed)."""
        scheduler: BatchScheduler[Chunk] = BatchScheduler(self.batch_size)
        workers = self._workers()
        pending_jobs = list(reversed(jobs))
        in_flight: dict[Future[tuple[Prepared, list[EngineItem]]], _FileState] = {}
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="carevoice-decode")
        try:
            while pending_jobs or in_flight:
                while pending_jobs and len(in_flight) < workers * 2:
                    job = pending_jobs.pop()
                    if (not_here := self._claim(job)) is not None:
                        yield not_here
                        continue
                    in_flight[pool.submit(self._prepare, job)] = _FileState(job, time.monotonic())
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: str(in_flight[f].job.source)):
                    state = in_flight.pop(future)
                    yield from self._admit(state, future, scheduler)
                for batch in scheduler.ready():
                    yield from self._run_batch(batch)
            for batch in scheduler.flush():
                yield from self._run_batch(batch)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
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
        prepared = prepare_file(job, self.ffmpeg)
        return prepared, engine_items(prepared, self.engine, self.settings.decode.language)

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

    def _run_batch(self, batch: list[Chunk]) -> Iterator[FileResult]:
        live = [c for c in batch if c.file.failed is None]
        for chunk, result in self._infer(live):
            if isinstance(result, CareVoiceError):
                chunk.file.failed = str(result)
            else:
                chunk.file.results[chunk.index] = result
                self.stats.redecoded_chunks += result.redecoded
        touched = {id(c.file): c.file for c in batch}
        for state in touched.values():
            if state.failed is not None and not state.reported:
                state.reported = True
                yield self._failed(state, state.failed)
            elif state.failed is None and len(state.results) == state.expected:
                yield from self._finished(state)

    def _infer(self, batch: list[Chunk]) -> list[tuple[Chunk, ItemResult | CareVoiceError]]:
        """Run a batch; on out-of-memory (or any engine error) split it in halves and retry,
        so only the chunks that fail on their own fail their files."""
        if not batch:
            return []
        try:
            results = self.engine.run_batch([c.item for c in batch], self.settings.decode)
            self.stats.engine_calls += 1
            self.stats.chunks += len(batch)
            return list(zip(batch, results))
        except EngineOutOfMemory as exc:
            if len(batch) == 1:
                return [(batch[0], exc)]
        except EngineError as exc:
            if len(batch) == 1:
                return [(batch[0], exc)]
        half = len(batch) // 2
        return self._infer(batch[:half]) + self._infer(batch[half:])

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


@dataclass
class Run:
    """A validated, planned transcription run, ready to iterate.

    Build with :func:`start_run`; iterate :meth:`results`.
    """

    settings: TranscribeSettings
    settled: list[FileResult]
    jobs: list[Job]
    transcriber: Transcriber | None
    device_note: str = ""

    @property
    def total(self) -> int:
        return len(self.settled) + len(self.jobs)

    def results(self) -> Iterator[FileResult]:
        yield from self.settled
        if self.transcriber is not None and self.jobs:
            yield from self.transcriber.run(self.jobs)


def start_run(settings: TranscribeSettings) -> Run:
    """Validate, discover and plan (cheap), then find ffmpeg and load the model only if work remains.

    Raises:
        UsageError: bad options or nothing to transcribe.
        SetupError: ffmpeg, the model or the device is unusable.
    """
    from carevoice.audio import find_ffmpeg
    from carevoice.discovery import find_jobs
    from carevoice.engine import resolve_device
    from carevoice.errors import UsageError
    from carevoice.models import resolve_model

    settings.validate()
    found = find_jobs(settings.inputs, settings.output_dir, settings.recursive)
    problems = [FileResult(p.path, FileStatus.FAILED, error=p.message) for p in found.problems]
    if not found.jobs and not problems:
        raise UsageError("no audio files found", "name audio files, or folders holding .wav/.mp3/.m4a/… files")
    ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
    fingerprint = settings.decode.fingerprint(ref.model_id)
    jobs, settled = plan_jobs(found.jobs, settings, fingerprint)
    settled = sorted(problems + settled, key=lambda r: str(r.source))
    if not jobs:
        return Run(settings, settled, [], None)
    load_converter(settings.decode.zh_script)  # OpenCC, like ffmpeg, must work before the model loads
    ffmpeg = find_ffmpeg()
    device, note = resolve_device(settings.engine.device)
    try:
        engine = Engine.load(settings.engine, ref, device)
    except SetupError as exc:
        if settings.engine.device is not Device.AUTO or device == "cpu":
            raise
        # auto picked CUDA but it is unusable (driver, cuBLAS): CPU still works.
        engine = Engine.load(settings.engine, ref, "cpu")
        note = f"auto: CUDA unusable ({exc.message}), fell back to CPU"
    return Run(settings, settled, jobs, Transcriber(settings, engine, ffmpeg, fingerprint), note)
