"""``carevoice watch``: transcribe recordings as they arrive in drop folders, as a long-running service.

The model loads once. At start, every file not yet finished is transcribed, exactly as ``transcribe``
would (the rerun rules of carevoice.run.rules decide); then file-system events (carevoice.watch.events), or
walks every ``--poll`` seconds, bring new and changed files. A file is taken only once it has settled
(carevoice.watch.arrivals), no local process holds it open for writing, and, if its format does not
state its length, once it has settled for longer (carevoice.watch.uploads); and it must decode whole:
one found truncated waits for the rest of its upload, and one failed by the engine or its folder
(carevoice.errors.Cause) is tried again later. Files
that settle close together (within ``--gather``) share batches, and files that settle while a batch
of files is transcribed form the next one. SIGTERM or Ctrl-C end the service once the batch in
progress is finished and its files written (carevoice.run.pipeline.Drain; a second signal at once;
writes are atomic, carevoice.interrupts); a restart resumes. Nothing here prints: lines go
to the caller's :class:`WatchLog`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from carevoice import interrupts
from carevoice.engine.devices import engines_label
from carevoice.engine.heap import release_free_memory
from carevoice.errors import Cause, ExitCode, Interrupted, UsageError
from carevoice.folders import FolderFiles
from carevoice.results import FileResult, FileStatus
from carevoice.run.audio import find_ffmpeg
from carevoice.run.chinese import load_converter
from carevoice.run.claims import Claims
from carevoice.run.discovery import find_jobs_among
from carevoice.run.pipeline import Drain, RunStats, Transcriber
from carevoice.run.planning import (
    FilePlan,
    plan_files,
    resolve_run_model,
    settings_for,
)
from carevoice.run.rules import Action, Reason, RunFacts
from carevoice.run.runs import load_engines
from carevoice.run.tidying import tidy
from carevoice.settings import DEFAULT_HEALTH_MAX_AGE_S, TranscribeSettings, WatchSettings
from carevoice.watch.arrivals import Arrivals
from carevoice.watch.changes import Changes
from carevoice.watch.day_report import DayReport
from carevoice.watch.groups import FolderModels
from carevoice.watch.heartbeat import (
    Phase,
    beating_elsewhere,
    read_beat,
)
from carevoice.watch.ledger import BEAT_S, Ledger
from carevoice.watch.log import WatchLog
from carevoice.watch.uploads import holds

# Ready files at once that start a batch without waiting for --gather (a burst is under way).
GATHER_ENOUGH_FILES = 64
# A folder is cleared of killed runs' leftovers when files are first written there, then at most this often.
CLEAR_EVERY_S = 3600.0


def gather_step(ready: int, gather_until: float | None, now_s: float, gather_s: float) -> tuple[bool, float | None]:
    """Whether the ready files are transcribed now, and until when the gather window is open.

    The first ready file opens a window of ``gather_s`` for others to share its batches; it closes
    when it ends, or at once when GATHER_ENOUGH_FILES are ready. With no file ready (the ones that
    were have gone, or changed again) no window is open: an open one with nothing in it kept the
    loop from ever waiting.
    """
    if ready == 0:
        return False, None
    if ready >= GATHER_ENOUGH_FILES:
        return True, None
    until = now_s + gather_s if gather_until is None else gather_until
    if now_s >= until:
        return True, None
    return False, until


class Service:
    """One watcher. Build it, then :meth:`run` it until it is asked to stop.

    Args:
        settings: What to watch and what each file gets.
        log: Where its lines go.
        clock: Monotonic seconds.
    """

    def __init__(self, settings: WatchSettings, log: WatchLog, clock: Callable[[], float] = time.monotonic) -> None:
        # watch has no --overwrite: what a file's line advises is what a watcher's user can do
        settings = replace(settings, transcribe=replace(settings.transcribe, overwrite=False, offers_overwrite=False))
        self.settings = settings
        self.log = log
        self.clock = clock
        self.roots = tuple(settings.transcribe.inputs)
        hold = partial(holds, settle_s=settings.settle_s, settle_unsized_s=settings.settle_unsized_s)
        self.arrivals = Arrivals(settings.settle_s, settings.incomplete_wait_s, clock, retry_after_s=settings.retry_after_s, hold=hold)
        self.changes = Changes(self.roots, settings.transcribe.recursive, self.arrivals, log.note, clock, settings.poll_s)
        self.ledger = Ledger(settings.heartbeat, self.roots, self.arrivals, log, clock)
        self.run_id = uuid.uuid4().hex
        self.cleared: dict[Path, float] = {}  # folders cleared of killed runs' leftovers, and when (carevoice.run.tidying)
        self.slowest_batch_s = 0.0  # of every set so far: what a stop says it may wait for

    def _start(self) -> None:
        """Check, load the model, and choose how changes are seen. Raises UsageError / SetupError."""
        settings = self.settings
        self.ledger.beat(Phase.STARTING, force=True)
        ts = settings.transcribe
        folders = FolderFiles()
        for root in self.roots:  # a bad carevoice.toml in or above a watched folder stops the start (exit 2)
            settings_for(root, ts, folders)
        ref = resolve_run_model(ts)
        load_converter(ts.decode.zh_script)
        self.ffmpeg = find_ffmpeg()
        engines, choice = load_engines(ts, ref)
        self.models = FolderModels(self.log, {ref.model_id: (ref, engines)})
        device = engines_label(engines)
        self.log.loaded(ref, device, choice)
        if settings.report_dir is not None:
            options = {
                **ts.options(),
                "settle_s": settings.settle_s,
                "settle_unsized_s": settings.settle_unsized_s,
                "gather_s": settings.gather_s,
                "poll_s": settings.poll_s,
            }
            facts = {"run_id": self.run_id, "model": ref.model_id, "device": device, "options": options}
            self.ledger.report = DayReport(settings.report_dir, facts, self.clock)
        self.changes.choose()

    def run(self) -> ExitCode:
        """Start, then transcribe what arrives until SIGTERM or Ctrl-C (exit 0).

        Raises:
            UsageError: bad options, or another watcher writes the heartbeat.
            SetupError: ffmpeg, the model or the device is unusable.
        """
        self.settings.validate()
        # A live watcher beats at least every few seconds: one older than health's limit is gone or stuck.
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
        ledger = self.ledger
        stopped_by: str | None = None
        try:
            self._start()
            self.changes.walk()  # after the events are on: a file arriving now is seen one way or the other
            self.log.note(
                f"watching {', '.join(str(r) for r in self.roots)}: {self.arrivals.waiting} file(s) to look at, settling for "
                f"{self.settings.settle_s:g} s ({self.settings.settle_unsized_s:g} s for formats that do not state their length)"
            )
            gather_until: float | None = None
            while True:
                interrupts.check()  # a stop signal whose exception a finalizer dropped still stops the loop
                ready, gave_up = self.arrivals.due()
                for path, why in self.arrivals.newly_held():
                    self.log.held(path, why)
                for lost in gave_up:
                    ledger.record(FileResult(lost.path, FileStatus.FAILED, error=f"{lost.error} (unchanged for {self.settings.incomplete_wait_s:g} s: the upload seems abandoned)"))
                go, gather_until = gather_step(len(ready), gather_until, self.clock(), self.settings.gather_s)
                if go:
                    self._transcribe(ready)
                    ledger.beat(force=True)  # the set's counts (and an engine failing every file) reach health at once
                    # Measured over 20 minutes of arrivals (benchmarks/README.md): RSS 446-488 MiB
                    # with this, 548-634 MiB without; the heap's free pages are not a leak, but a
                    # service that holds them for months looks like one.
                    release_free_memory()
                    continue
                ledger.unreadable = len(self.changes.problems)
                ledger.beat(Phase.IDLE)
                ledger.write_report()
                self.changes.pump(self._wait_s(gather_until, ready))
        except (Interrupted, KeyboardInterrupt) as exc:
            stopped_by = "SIGTERM" if isinstance(exc, Interrupted) else "Ctrl-C"
        finally:
            try:
                with interrupts.deferred():  # a second signal (docker stop and timeout both send one) waits, then ends nothing more
                    self.changes.stop()
                    ledger.write_report(stopping=True)
                    ledger.beat(Phase.STOPPED, force=True)
            except (Interrupted, KeyboardInterrupt):
                stopped_by = stopped_by or "signal"
        try:
            again = f" ({ledger.tried_again} failure(s) tried again)" if ledger.tried_again else ""
            self.log.note(f"stopped ({stopped_by}): {ledger.done} transcribed, {ledger.failed} failed{again} since start; a restart resumes")
        except (Interrupted, KeyboardInterrupt):
            pass  # yet another signal: the line is written, the service has stopped
        return ExitCode.OK

    def _wait_s(self, gather_until: float | None, ready: list[Path]) -> float:
        """How long the loop may wait for a change: until a file may be ready, the gather window
        closes, a walk or a beat is due. Files ready already wait for the window: they are not due."""
        now = self.clock()
        times = [now + BEAT_S, self.changes.next_walk_s()]
        if gather_until is not None:
            times.append(gather_until)
        if (check := self.arrivals.next_check_s(ready=set(ready))) is not None:
            times.append(check)
        return min(max(0.0, min(times) - now), BEAT_S)

    def _transcribe(self, ready: list[Path]) -> None:
        """Plan the ready files as ``transcribe`` would and transcribe those that need it, in shared batches."""
        ts = self.settings.transcribe
        taken = [path for path in ready if self.arrivals.take(path)]
        found = find_jobs_among(taken, self.roots, ts.output_dir, named=self.arrivals.siblings)
        groups, bad = self.models.group(found.jobs, self.settings.transcribe)
        # A first set after a restart is the whole folder: health hears from the watcher while it plans.
        planned_groups = [
            (own, facts, plan_files(jobs, own, facts, found.jobs, on_planned=lambda count: self.ledger.beat(Phase.BUSY)))
            for own, facts, jobs in groups
        ]
        planned = [p for _, _, group in planned_groups for p in group]
        now_s = self.clock()
        self.cleared = {folder: at_s for folder, at_s in self.cleared.items() if now_s - at_s < CLEAR_EVERY_S}
        self.cleared.update(dict.fromkeys(tidy(planned, cleared=self.cleared), now_s))
        # Failed before any work: by what lies beside the file (its name taken, an output in the
        # way, the folder, a carevoice.toml that is bad or names a model that cannot load), which a
        # change there may lift: said once, counted failed, and looked at again when its folders
        # (or those carevoice.toml files) change (not on a timetable: nothing else can lift it).
        blocked = [(FileResult(p.path, FileStatus.FAILED, error=p.message), (p.path.parent,)) for p in found.problems]
        blocked += [(FileResult(job.source, FileStatus.FAILED, error=message), lifted) for job, message, lifted in bad]
        blocked += [
            (replace(p.result(), cause=None), tuple(dict.fromkeys((p.job.source.parent, p.job.output_stem.parent))))
            for p in planned
            if p.decision.action is Action.FAIL
        ]
        settled = [p.result() for p in planned if p.decision.action is Action.SKIP]
        current = sum(r.status is FileStatus.SKIPPED and r.note == Reason.CURRENT.value for r in settled)
        for result, folders in blocked:
            if self.arrivals.block(result.source, result.error or "", folders):
                self.ledger.record(result)
        for result in settled:
            self.arrivals.unblock(result.source)
            self.ledger.record(result)
        jobs = [p.job for p in planned if not p.settled]
        for job in jobs:
            self.arrivals.unblock(job.source)
        if current:
            self.log.note(f"{current} file(s) already transcribed with these options: left as they are")
        if not jobs:
            return
        self.log.note(f"transcribing {len(jobs)} file(s)")
        self.ledger.beat(Phase.BUSY)
        for own, facts, group in planned_groups:
            if any(not p.settled for p in group):
                self._run_group(own, facts, group)

    def _run_group(self, settings: TranscribeSettings, facts: RunFacts, planned: list[FilePlan]) -> None:
        """Transcribe the planned files of one group (one set of options), in shared batches."""
        jobs = [p.job for p in planned if not p.settled]
        engines = self.models.engines(settings)[1]
        load_converter(settings.decode.zh_script)
        claims = Claims.of(planned, facts, self.run_id)
        transcriber = Transcriber(
            settings, engines[0], self.ffmpeg, claims, more_engines=engines[1:], planned={p.job.source: p for p in planned}
        )

        def on_progress(stats: RunStats) -> None:  # a decode or a batch came back, or a long one goes on: the loop is alive
            self.changes.pump()
            self.ledger.beat()

        def on_stop(drain: Drain) -> None:  # the first stop signal: the batch in progress is finished first
            self.log.note(f"stopping ({drain.by}): {drain.describe(self.slowest_batch_s)}; a second signal drops the batch")

        def on_result(result: FileResult) -> None:
            self.ledger.record(result)
            if result.cause is Cause.FOLDER:  # tried again on a timetable (a full disk), and as soon as its folder changes
                self.arrivals.block(result.source, result.error or "", (result.source.parent,))

        # Each result is recorded (logged, counted, reported) with its outputs, before a stop signal can land.
        for _ in transcriber.run(jobs, on_result=on_result, on_progress=on_progress, on_stop=on_stop):
            pass
        self.slowest_batch_s = max(self.slowest_batch_s, transcriber.stats.slowest_batch_s)
