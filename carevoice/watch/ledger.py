"""What a watcher has done since it started, and where that goes: each finished file is counted,
added to the day's report and logged; the counts and the phase go into the heartbeat that
``carevoice health`` reads. A file found incomplete waits instead, and one failed for a passing
cause is tried again later (the arrivals decide when).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from carevoice.errors import Cause
from carevoice.files import pid_space
from carevoice.results import FileResult, FileStatus
from carevoice.run.claims import BUSY_ELSEWHERE
from carevoice.run.rules import Reason
from carevoice.watch.arrivals import Arrivals
from carevoice.watch.day_report import DayReport
from carevoice.watch.heartbeat import Beat, Phase, write_beat
from carevoice.watch.log import WatchLog

BEAT_S = 5.0  # the heartbeat is rewritten this often (at most)


class Ledger:
    """The watcher's counts, heartbeat and day report.

    Args:
        heartbeat: The heartbeat file.
        roots: The watched folders (named in each beat).
        arrivals: The book of arrivals (files waiting, and retries).
        log: Where lines go.
        clock: Monotonic seconds.
    """

    def __init__(self, heartbeat: Path, roots: tuple[Path, ...], arrivals: Arrivals, log: WatchLog, clock: Callable[[], float]) -> None:
        self.heartbeat = heartbeat
        self.roots = roots
        self.arrivals = arrivals
        self.log = log
        self.clock = clock
        self.started_unix = time.time()
        self.done = 0  # transcripts written since start (a recording redone after it changed counts again)
        # The recordings whose last try since start failed: True when it is tried again later. A file
        # failed and then done is done; its size is that of the failures not done since (a few dozen).
        self.failing: dict[Path, bool] = {}
        self.engine_failed: set[Path] = set()  # files the engine failed since the last file done (heartbeat.health)
        self.beaten_s = float("-inf")
        self.phase = Phase.STARTING
        self.report: DayReport | None = None
        self.unreadable = 0  # what the walks cannot look at now (the watcher sets it)

    @property
    def failed(self) -> int:
        """Recordings failed since start and not done since (each once)."""
        return sum(not again for again in self.failing.values())

    @property
    def tried_again(self) -> int:
        """Recordings whose last try failed and that are tried again later (not, or not yet, failed)."""
        return sum(self.failing.values())

    def beat(self, phase: Phase | None = None, force: bool = False) -> None:
        """Rewrite the heartbeat (at most every BEAT_S unless the phase changes or ``force``)."""
        if phase is not None and phase is not self.phase:
            self.phase, force = phase, True
        if not force and self.clock() - self.beaten_s < BEAT_S:
            return
        self.failing = {path: again for path, again in self.failing.items() if self.arrivals.knows(path)}  # removed since: not failing
        beat = Beat(
            os.getpid(), self.phase, time.time(), self.started_unix, self.done, self.failed, self.arrivals.waiting,
            tuple(str(r) for r in self.roots), len(self.engine_failed), pid_space(), self.unreadable,
        )  # fmt: skip
        try:
            write_beat(self.heartbeat, beat)
        except OSError as exc:
            if self.beaten_s == float("-inf"):  # said once: the service itself still works
                self.log.note(f"cannot write the heartbeat {self.heartbeat} ({exc.strerror}) — choose another --heartbeat")
        self.beaten_s = self.clock()

    def write_report(self, stopping: bool = False) -> None:
        """The day's summary when it is due (at most once a minute, past midnight, at a stop)."""
        if self.report is None:
            return
        try:
            if self.report.new_day() or stopping or self.report.due():
                self.report.write(stopping)
        except OSError as exc:
            self.log.note(f"cannot write the day's report under {self.report.folder} ({exc.strerror}) — check --report-dir")
            self.report.written_s = self.clock()  # try again later, not at every turn

    def record(self, result: FileResult) -> None:
        """A file is finished: count it, report it, log it (incomplete files wait instead; files
        failed for a passing cause are tried again later)."""
        if result.cause is Cause.INCOMPLETE:
            self.arrivals.found_incomplete(result.source, result.error or "incomplete")
            self.log.waiting(result.source, result.error or "incomplete")
            return
        done, failed = result.status is FileStatus.DONE, result.status is FileStatus.FAILED
        if done or result.status is FileStatus.NO_SPEECH:  # the engine worked (no speech heard: counted apart, never retried)
            self.engine_failed.clear()
        elif result.cause is Cause.ENGINE:
            self.engine_failed.add(result.source)
        retry = self.arrivals.retry_later(result.source) if failed and result.cause is not None else None
        again_s = retry.after_s if retry is not None else None
        self.done += done
        if failed:
            self.failing[result.source] = again_s is not None
        else:
            self.failing.pop(result.source, None)
        if self.report is not None:
            try:
                self.report.add(result, again_s)
            except OSError as exc:
                self.log.note(f"cannot add to the day's report under {self.report.folder} ({exc.strerror}) — check --report-dir")
        if not (result.status is FileStatus.SKIPPED and result.note == Reason.CURRENT.value):
            self.log.result(result)
        if retry is not None:
            self.log.note(f"{result.source}: {retry.note}")
        if result.note == BUSY_ELSEWHERE:
            # Its lock is held by another process, which may die before it finishes: the next
            # walk looks at the file again (and finds it transcribed, or takes it).
            self.arrivals.forget(result.source)
