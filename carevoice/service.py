"""``carevoice watch``: transcribe recordings as they arrive in drop folders, as a long-running service.

The model loads once. At start, every file not yet finished is transcribed, exactly as ``transcribe``
would (the rerun rules of carevoice.reruns decide); then file-system events (carevoice.watcher), or
walks every ``--poll`` seconds, bring new and changed files. A file is taken only once it has settled
(carevoice.arrivals) and decodes whole; one found truncated waits for the rest of its upload, and
one failed by the engine or its folder (carevoice.errors.Cause) is tried again later. Files
that settle close together (within ``--gather``) share batches, and files that settle while a batch
of files is transcribed form the next one. SIGTERM or Ctrl-C end the service after the file being
written (writes are atomic, carevoice.interrupts); a restart resumes. Nothing here prints: lines go
to the caller's :class:`WatchLog`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carevoice import interrupts
from carevoice.arrivals import Arrivals
from carevoice.claims import BUSY_ELSEWHERE, Claims, plan_jobs, run_facts
from carevoice.day_report import DayReport
from carevoice.discovery import find_audio_files, find_jobs_among, real_place
from carevoice.errors import Cause, ExitCode, Interrupted, UsageError
from carevoice.heartbeat import Beat, Phase, beating_elsewhere, read_beat, write_beat
from carevoice.reruns import Reason
from carevoice.results import FileResult, FileStatus
from carevoice.settings import DEFAULT_HEALTH_MAX_AGE_S, RESCAN_S, WatchSettings

BEAT_S = 5.0  # the heartbeat is rewritten this often (at most)
# Ready files at once that start a batch without waiting for --gather (a burst is under way).
GATHER_ENOUGH_FILES = 64


@dataclass(frozen=True)
class WatchLog:
    """Where the service's lines go (the CLI adds times and colours).

    Attributes:
        note: A line about the service itself (start, mode, a batch of files, stop).
        result: A file finished: done, failed, or skipped for a reason worth a line.
        waiting: A file found incomplete (path, why): it is tried again once it changes.
    """

    note: Callable[[str], None]
    result: Callable[[FileResult], None]
    waiting: Callable[[Path, str], None]


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Service:
    """One watcher. Build it, then :meth:`run` it until it is asked to stop.

    Args:
        settings: What to watch and what each file gets.
        log: Where its lines go.
        clock: Monotonic seconds.
    """

    def __init__(self, settings: WatchSettings, log: WatchLog, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.log = log
        self.clock = clock
        self.roots = tuple(settings.transcribe.inputs)
        self.absolute = tuple(Path(os.path.abspath(r)) for r in self.roots)
        self.arrivals = Arrivals(settings.settle_s, settings.incomplete_wait_s, clock, retry_after_s=settings.retry_after_s)
        self.run_id = uuid.uuid4().hex
        self.started_unix = time.time()
        self.done = self.failed = self.tried_again = 0  # failures to be tried again are not (yet) failed files
        self.engine_failed: set[Path] = set()  # files the engine failed since the last file done (heartbeat.health)
        self.beaten_s = float("-inf")
        self.phase = Phase.STARTING
        self.events: Any = None  # carevoice.watcher.Events while file-system events are used
        self.poll_s: float | None = settings.poll_s
        self.walked_s = float("-inf")
        self.report: DayReport | None = None
        self.unreadable: dict[str, str] = {}  # watched folders that cannot be read now, and why

    # --- the heartbeat -----------------------------------------------------------------------

    def beat(self, phase: Phase | None = None, force: bool = False) -> None:
        """Rewrite the heartbeat (at most every BEAT_S unless the phase changes or ``force``)."""
        if phase is not None and phase is not self.phase:
            self.phase, force = phase, True
        if not force and self.clock() - self.beaten_s < BEAT_S:
            return
        beat = Beat(
            os.getpid(), self.phase, time.time(), self.started_unix, self.done, self.failed, self.arrivals.waiting,
            tuple(str(r) for r in self.roots), len(self.engine_failed),
        )  # fmt: skip
        try:
            write_beat(self.settings.heartbeat, beat)
        except OSError as exc:
            if self.beaten_s == float("-inf"):  # said once: the service itself still works
                self.log.note(f"cannot write the heartbeat {self.settings.heartbeat} ({exc.strerror}) — choose another --heartbeat")
        self.beaten_s = self.clock()

    # --- start -------------------------------------------------------------------------------

    def _start(self) -> None:
        """Check, load the model, and choose how changes are seen. Raises UsageError / SetupError."""
        from carevoice.audio import find_ffmpeg
        from carevoice.chinese import load_converter
        from carevoice.policy import ENGINE_REVISION
        from carevoice.report import engines_text, placement_note
        from carevoice.runs import load_engines, model_identity, resolve_run_model

        settings = self.settings
        self.beat(Phase.STARTING, force=True)
        ts = settings.transcribe
        ref = resolve_run_model(ts)
        load_converter(ts.decode.zh_script)
        self.ffmpeg = find_ffmpeg()
        self.engines, choice = load_engines(ts, ref)
        self.facts = run_facts(ts, ref.model_id, model_identity(ref, ts.engine.cache_dir, self.engines[0]), ENGINE_REVISION)
        device = engines_text(self.engines)
        self.log.note(f"model {ref.model_id} from {ref.origin} on {device} ({placement_note(choice)})")
        if settings.report_dir is not None:
            options = {**ts.options(), "settle_s": settings.settle_s, "gather_s": settings.gather_s, "poll_s": settings.poll_s}
            facts = {"run_id": self.run_id, "model": ref.model_id, "device": device, "options": options}
            self.report = DayReport(settings.report_dir, facts, self.clock)
        self._choose_changes()

    def _choose_changes(self) -> None:
        """Events where the file system sends them, else walks every --poll seconds."""
        from carevoice.watcher import DEFAULT_POLL_S, Events, filesystem_type, without_events

        if self.poll_s is not None:
            self.log.note(f"walking the folders every {self.poll_s:g} s (--poll); no file-system events")
            return
        for root in self.absolute:
            fstype = filesystem_type(root)
            if without_events(fstype):
                self.poll_s = DEFAULT_POLL_S
                self.log.note(
                    f"{root} is on {fstype}, which sends no file-system events for changes made elsewhere: "
                    f"walking the folders every {self.poll_s:g} s (set --poll to change)"
                )
                return
        events = Events(self.absolute, self.settings.transcribe.recursive).start()
        if not events.alive:
            self.poll_s = DEFAULT_POLL_S
            self.log.note(f"no file-system events ({events.failure}): walking the folders every {self.poll_s:g} s instead")
            return
        self.events = events
        self.log.note(f"listening for file-system events (and walking the folders every {RESCAN_S:g} s for any missed)")

    # --- what changed ------------------------------------------------------------------------

    def _as_given(self, path: Path) -> Path | None:
        """An absolute path from an event, named as a walk names it: below the folder as the user
        spelled it, its folder by its real place when a walk reaches it there (inotify may name a
        folder linked in from inside by the link: discovery.links_inside); None for one a walk
        would not find either (below a hidden folder, such as a report folder)."""
        for given, absolute in zip(self.roots, self.absolute):
            if not path.is_relative_to(absolute):
                continue
            if (place := real_place(path.parent, absolute)) is not None:
                return given / place / path.name
            below = path.relative_to(absolute)  # through a link to a folder elsewhere (or gone)
            return None if any(part.startswith(".") for part in below.parts) else given / below
        return None

    def walk(self, folder: Path | None = None) -> None:
        """Look at every audio file below the watched folders, or below one folder in them (all of
        them: also forget what is gone)."""
        within = None if folder is None else next(r for r in self.roots if folder.is_relative_to(r))
        found, problems = find_audio_files(self.roots if folder is None else (folder,), self.settings.transcribe.recursive, within)
        paths = set(found)
        if folder is None:
            unreadable = {str(p.path): p.message for p in problems if p.path in self.roots}
            for root, message in unreadable.items():
                if root not in self.unreadable:  # said once, and again once it is back
                    self.log.note(f"{root}: {message}; nothing there is watched until it is back")
            for root in self.unreadable.keys() - unreadable.keys():
                self.log.note(f"{root} is back")
            self.unreadable = unreadable
            self.arrivals.keep_only(paths)
            self.walked_s = self.clock()
        for path in sorted(paths, key=str):
            self.arrivals.observe(path)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Take the changes that came (waiting up to ``timeout_s`` for one) and walk when it is time."""
        every_s = self.poll_s if self.events is None else RESCAN_S
        if self.events is not None and not self.events.alive:
            from carevoice.watcher import DEFAULT_POLL_S

            self.log.note(f"file-system events stopped ({self.events.failure}): walking the folders every {DEFAULT_POLL_S:g} s instead")
            self.events, self.poll_s, every_s = None, DEFAULT_POLL_S, DEFAULT_POLL_S
        if self.clock() - self.walked_s >= every_s:  # type: ignore[operator]
            self.walk()
        if self.events is not None:
            for changed in self.events.take(timeout_s):
                path = self._as_given(changed)
                if path is None:
                    continue
                # The kind of change is not trusted: one batch may hold a removal and an addition of
                # the same name (a recording replaced) in any order. What a stat says now decides.
                if os.path.isdir(path):
                    if self.settings.transcribe.recursive:
                        self.walk(path)  # a folder moved in: its files may have come before its watch
                else:
                    self.arrivals.observe(path)
        elif timeout_s > 0:
            time.sleep(timeout_s)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> ExitCode:
        """Start, then transcribe what arrives until SIGTERM or Ctrl-C (exit 0).

        Raises:
            UsageError: bad options, or another watcher writes the heartbeat.
            SetupError: ffmpeg, the model or the device is unusable.
        """
        self.settings.validate()
        # A busy watcher may go a whole batch without a beat: as long as health gives it.
        other = beating_elsewhere(read_beat(self.settings.heartbeat), time.time(), DEFAULT_HEALTH_MAX_AGE_S)
        if other is not None:  # before this watcher writes a beat over the other's
            raise UsageError(
                f"another carevoice watch (pid {other}) writes the heartbeat {self.settings.heartbeat}",
                "give each watcher its own --heartbeat (or $CAREVOICE_HEARTBEAT)",
            )
        if self.settings.report_dir is not None:
            try:
                self.settings.report_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create --report-dir {self.settings.report_dir} ({exc.strerror})", "choose a folder this user can write") from None
        stopped_by: str | None = None
        try:
            self._start()
            self.walk()  # after the events are on: a file arriving now is seen one way or the other
            self.log.note(f"watching {', '.join(str(r) for r in self.roots)}: {self.arrivals.waiting} file(s) to look at, settling for {self.settings.settle_s:g} s")
            gather_until: float | None = None
            while True:
                interrupts.check()  # a stop signal whose exception a finalizer dropped still stops the loop
                ready, gave_up = self.arrivals.due()
                for lost in gave_up:
                    self._record(FileResult(lost.path, FileStatus.FAILED, error=f"{lost.error} (unchanged for {self.settings.incomplete_wait_s:g} s: the upload seems abandoned)"))
                if ready and gather_until is None and len(ready) < GATHER_ENOUGH_FILES:
                    gather_until = self.clock() + self.settings.gather_s
                if ready and (gather_until is None or self.clock() >= gather_until or len(ready) >= GATHER_ENOUGH_FILES):
                    gather_until = None
                    self._transcribe(ready)
                    self.beat(force=True)  # the set's counts (and an engine failing every file) reach health at once
                    # Measured over 20 minutes of arrivals (benchmarks/README.md): RSS 446-488 MiB
                    # with this, 548-634 MiB without; the heap's free pages are not a leak, but a
                    # service that holds them for months looks like one.
                    release_free_memory()
                    continue
                self.beat(Phase.IDLE)
                if self.report is not None:
                    self._write_report()
                self.pump(self._wait_s(gather_until))
        except (Interrupted, KeyboardInterrupt) as exc:
            stopped_by = "SIGTERM" if isinstance(exc, Interrupted) else "Ctrl-C"
        finally:
            try:
                with interrupts.deferred():  # a second signal (docker stop and timeout both send one) waits, then ends nothing more
                    if self.events is not None:
                        self.events.stop()
                    if self.report is not None:
                        self._write_report(stopping=True)
                    self.beat(Phase.STOPPED, force=True)
            except (Interrupted, KeyboardInterrupt):
                stopped_by = stopped_by or "signal"
        try:
            again = f" ({self.tried_again} failure(s) tried again)" if self.tried_again else ""
            self.log.note(f"stopped ({stopped_by}): {self.done} transcribed, {self.failed} failed{again} since start; a restart resumes")
        except (Interrupted, KeyboardInterrupt):
            pass  # yet another signal: the line is written, the service has stopped
        return ExitCode.OK

    def _wait_s(self, gather_until: float | None) -> float:
        """How long the loop may wait for a change: until a file may be ready, a walk or a beat is due."""
        now = self.clock()
        times = [now + BEAT_S]
        if gather_until is not None:
            times.append(gather_until)
        if (check := self.arrivals.next_check_s()) is not None:
            times.append(check)
        walk_every = self.poll_s if self.events is None else RESCAN_S
        times.append(self.walked_s + walk_every)  # type: ignore[operator]
        return min(max(0.0, min(times) - now), BEAT_S)

    def _write_report(self, stopping: bool = False) -> None:
        """The day's summary when it is due (at most once a minute, past midnight, at a stop)."""
        assert self.report is not None
        try:
            if self.report.new_day() or stopping or self.report.due():
                self.report.write(stopping)
        except OSError as exc:
            self.log.note(f"cannot write the day's report under {self.report.folder} ({exc.strerror}) — check --report-dir")
            self.report.written_s = self.clock()  # try again later, not at every turn

    def _record(self, result: FileResult) -> None:
        """A file is finished: count it, report it, log it (incomplete files wait instead; files
        failed for a passing cause are tried again later)."""
        if result.cause is Cause.INCOMPLETE:
            self.arrivals.found_incomplete(result.source, result.error or "incomplete")
            self.log.waiting(result.source, result.error or "incomplete")
            return
        done, failed = result.status is FileStatus.DONE, result.status is FileStatus.FAILED
        if done:
            self.engine_failed.clear()
        elif result.cause is Cause.ENGINE:
            self.engine_failed.add(result.source)
        retry = self.arrivals.retry_later(result.source) if failed and result.cause is not None else None
        again_s = retry.after_s if retry is not None else None
        self.done += done
        self.failed += failed and again_s is None
        self.tried_again += again_s is not None
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

    def _transcribe(self, ready: list[Path]) -> None:
        """Plan the ready files as ``transcribe`` would and transcribe those that need it, in shared batches."""
        from carevoice.pipeline import RunStats, Transcriber

        ts = self.settings.transcribe
        taken = [path for path in ready if self.arrivals.take(path)]
        found = find_jobs_among(taken, self.roots, ts.output_dir)
        planned = plan_jobs(found.jobs, ts, self.facts)
        settled = [FileResult(p.path, FileStatus.FAILED, error=p.message) for p in found.problems]
        settled += [p.result() for p in planned if p.settled]
        current = sum(r.status is FileStatus.SKIPPED and r.note == Reason.CURRENT.value for r in settled)
        for result in settled:
            self._record(result)
        jobs = [p.job for p in planned if not p.settled]
        if current:
            self.log.note(f"{current} file(s) already transcribed with these options: left as they are")
        if not jobs:
            return
        self.log.note(f"transcribing {len(jobs)} file(s)")
        self.beat(Phase.BUSY)
        claims = Claims.of(planned, self.facts, self.run_id)
        transcriber = Transcriber(
            ts, self.engines[0], self.ffmpeg, claims, more_engines=self.engines[1:], planned={p.job.source: p for p in planned}
        )

        def on_progress(stats: RunStats) -> None:  # a decode or a batch came back: the loop is alive
            self.pump()
            self.beat()

        # Each result is recorded (logged, counted, reported) with its outputs, before a stop signal can land.
        for _ in transcriber.run(jobs, on_result=self._record, on_progress=on_progress):
            pass
