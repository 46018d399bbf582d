"""Issue 22, faults 4 and 10, in the batch runner: progress while one long batch holds the engine
(the watcher's heartbeat hangs on it), and a stop signal during a batch: the runner waits for the
batches already on an engine, yields the files they finish and only then stops; a second signal
stops it at once.

The engine is tests/doubles.py's FakeEngine with a gate the test holds: a batch ends when the test
says so, never after a guessed time. Every wait has a deadline far above what it takes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from doubles import FakeEngine

from carevoice import interrupts
from carevoice.engine.models import resolve_model
from carevoice.engine.vad import SpeechSpan
from carevoice.errors import Interrupted
from carevoice.results import FileResult
from carevoice.run.assembly import FileChunks
from carevoice.run.chunking import Prepared
from carevoice.run.discovery import Job
from carevoice.run.pipeline import BatchRunner, Drain, RunStats
from carevoice.settings import SAMPLE_RATE_HZ, DecodeSettings, EngineSettings

DEADLINE_S = 60.0  # for one awaited event: far above what it takes (a second), so only a hang fails
RAISED = {signal.SIGTERM: Interrupted, signal.SIGINT: KeyboardInterrupt}


def jobs(folder: Path, count: int) -> list[Job]:
    return [Job(folder / f"r{i:02d}.wav", folder / f"r{i:02d}", f"r{i:02d}.wav") for i in range(count)]


def prepared(job: Job) -> Prepared:
    """A made-up 2 s recording, all speech: one chunk."""
    samples = np.zeros(2 * SAMPLE_RATE_HZ, dtype=np.float32)
    return Prepared(job, samples, (SpeechSpan(0, len(samples)),))


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """The engine's gate; always opened at the end, so no engine thread is left waiting on it."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def engine(gate: threading.Event) -> FakeEngine:
    return FakeEngine(resolve_model("tiny.en", EngineSettings().cache_dir), gate=gate)


@pytest.fixture
def signals() -> Iterator[None]:
    restore = interrupts.install()
    yield
    restore()


def signal_once_inside(engine: FakeEngine, signum: int) -> threading.Thread:
    """Sends ``signum`` to this process as soon as a batch is in the engine (the main thread gets it)."""

    def send() -> None:
        if engine.inside.wait(DEADLINE_S):
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_progress_is_told_while_one_long_batch_holds_the_engine(tmp_path: Path, engine: FakeEngine, gate: threading.Event) -> None:
    """One file, one chunk, one batch: after its decode, nothing comes back until the batch does, so a
    call while the batch is inside the engine is the runner's own tick (what keeps a heartbeat going)."""
    while_inside: list[RunStats] = []

    def on_progress(stats: RunStats) -> None:
        if engine.inside.is_set():
            while_inside.append(stats)
            gate.set()  # seen: the batch may end

    watchdog = threading.Timer(DEADLINE_S, gate.set)  # without a tick the batch would never end
    watchdog.start()
    try:
        runner = BatchRunner([engine], DecodeSettings(), prepared, batch_size=2, workers=1)
        finished = list(runner.run(jobs(tmp_path, 1), on_progress=on_progress))
    finally:
        watchdog.cancel()
    assert while_inside, f"no progress while the batch held the engine ({DEADLINE_S:.0f} s)"
    assert [f.complete for f in finished if isinstance(f, FileChunks)] == [True]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_during_a_batch_waits_for_it_yields_its_files_then_stops(
    tmp_path: Path, engine: FakeEngine, gate: threading.Event, signals: None, signum: int
) -> None:
    """Six files, batches of two, one engine: the stop comes while the first batch is in the engine
    (the second waits for it). The runner says what it waits for, lets the batch finish, yields its
    two files, and raises the interrupt without running another batch."""
    drains: list[Drain] = []

    def on_stop(drain: Drain) -> None:
        drains.append(drain)
        gate.set()  # the batch in the engine ends now

    runner = BatchRunner([engine], DecodeSettings(), prepared, batch_size=2, workers=1)
    finished: list[str] = []
    signal_once_inside(engine, signum)
    with pytest.raises(RAISED[signum]):
        for file in runner.run(jobs(tmp_path, 6), on_stop=on_stop):
            assert isinstance(file, FileChunks) and file.complete
            finished.append(file.job.source.name)
    assert finished == ["r00.wav", "r01.wav"]  # the batch that was in the engine, written by the caller
    assert [(d.by, d.batches, d.files) for d in drains] == [("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C", 1, 2)]
    assert engine.batches == [2]  # the batch that waited for the engine never ran


def test_a_second_signal_stops_at_once(tmp_path: Path, engine: FakeEngine, signals: None) -> None:
    """While the runner waits for the batch, a second SIGTERM ends it at once: nothing more is yielded."""

    def on_stop(drain: Drain) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in this thread, here or just after

    runner = BatchRunner([engine], DecodeSettings(), prepared, batch_size=2, workers=1)
    finished: list[FileChunks | FileResult] = []
    signal_once_inside(engine, signal.SIGTERM)
    with pytest.raises(Interrupted):
        finished.extend(runner.run(jobs(tmp_path, 6), on_stop=on_stop))
    assert finished == []


@pytest.mark.parametrize(
    ("drain", "earlier_batch_s", "words"),
    [
        (Drain("SIGTERM", 1, 2, 11.2), 0.0, "finishing the batch in progress (2 files), up to ~12 s"),
        (Drain("SIGTERM", 1, 1, 3.0), 20.5, "finishing the batch in progress (1 file), up to ~21 s"),  # a slower one earlier
        (Drain("Ctrl-C", 2, 5, 0.2), 0.0, "finishing the 2 batches in progress (5 files), up to ~1 s"),
        (
            Drain("SIGTERM", 1, 0, None),
            0.0,
            "waiting for the batch in progress to end (it finishes no file), how long is not known yet (no batch came back before it)",
        ),
        (Drain("SIGTERM", 1, 3, None), 7.0, "finishing the batch in progress (3 files), up to ~7 s"),
    ],
)
def test_what_a_stop_says_it_waits_for(drain: Drain, earlier_batch_s: float, words: str) -> None:
    assert drain.describe(earlier_batch_s) == words
