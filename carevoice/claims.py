"""Which files this run transcribes, and the locks that keep two runs off the same file.

Before any model loads, :func:`plan_jobs` gathers what is known of each recording (its record, its
stat — and its bytes only when the stat differs —, its outputs) and asks carevoice.reruns what to
do with it; it also refuses outputs that must never be written (over a recording, outside
--output-dir, a name too long to exist). While the run goes on, :class:`Claims` locks each file's
outputs just before it is decoded, plans it again under the lock (another process may have done it
meanwhile), and lets go once it is written or failed. Everything here returns records of facts and
FileResults; nothing prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from carevoice.discovery import Job
from carevoice.locks import OutputLock, remove_stale_locks, try_lock
from carevoice.names import name_problem
from carevoice.records import Identity, Record, read_record, sha256_of
from carevoice.reruns import Action, FileFacts, FilePlan, OutputState, Reason, RunFacts, plan_file
from carevoice.results import FileResult, FileStatus
from carevoice.settings import OutputFormat, TranscribeSettings
from carevoice.writers import output_path, refresh_record, remove_stale_temp_files, write_error


@dataclass(frozen=True)
class Planned:
    """One recording's plan, with what it was made from.

    Attributes:
        job: The input.
        plan: What the run does with it.
        record: Its record as read for the plan (None: none).
        input: The recording's identity when its bytes were found unchanged (the record's, with the
            current stat), else None (it is identified again while it is decoded).
        problem: With FAIL, the one line that says why and what to do.
    """

    job: Job
    plan: FilePlan
    record: Record | None = None
    input: Identity | None = None
    problem: str = ""

    @property
    def settled(self) -> bool:
        """Nothing to do for it in this run: skipped or failed already."""
        return self.plan.action in (Action.SKIP, Action.FAIL)

    def result(self) -> FileResult:
        """The FileResult of a settled file."""
        if self.plan.action is Action.FAIL:
            return FileResult(self.job.source, FileStatus.FAILED, error=self.problem)
        return FileResult(self.job.source, FileStatus.SKIPPED, note=self.plan.reason.value)


def output_state(stem: Path, fmt: OutputFormat, record: Record | None) -> OutputState:
    """Whether an output path is empty, holds what CareVoice wrote, or something else. Its bytes
    are read only when its stat differs from the one recorded."""
    path = output_path(stem, fmt)
    if not os.path.lexists(path):
        return OutputState.MISSING
    entry = record.outputs.get(fmt.value) if record is not None else None
    if entry is None:
        return OutputState.FOREIGN
    try:
        if entry.identity is not None and entry.identity.same_stat(os.stat(path)):
            return OutputState.OURS
        return OutputState.OURS if record.ours(fmt.value, sha256_of(path)) else OutputState.FOREIGN  # type: ignore[union-attr]
    except OSError:
        return OutputState.FOREIGN  # cannot be read (a dangling link, no permission): not provably ours


def gather_facts(job: Job, formats: Sequence[OutputFormat]) -> tuple[FileFacts, Identity | None]:
    """What is known of one recording now; and its identity when its bytes are the recorded ones."""
    record = read_record(job.output_stem)
    changed: bool | None = None
    unchanged_identity = None
    if record is not None and record.input is not None:
        try:
            st = os.stat(job.source)
            if record.input.same_stat(st):
                changed, unchanged_identity = False, record.input
            else:
                changed = sha256_of(job.source) != record.input.sha256
                unchanged_identity = None if changed else record.input.with_stat(st)
        except OSError:
            changed = True  # unreadable now: it is decoded again, and fails there with ffmpeg's reason
    recorded = record.formats if record is not None else set()
    outputs = {fmt: output_state(job.output_stem, fmt, record) for fmt in set(formats) | recorded}
    return FileFacts(record, changed, outputs), unchanged_identity


def blocked_message(job: Job, plan: FilePlan, requested: Sequence[OutputFormat]) -> str:
    """The one line for a file whose outputs include one a person wrote or edited."""
    fmt = plan.formats[0]
    name = output_path(job.output_stem, fmt).name
    if fmt in requested:
        return f"{name} exists and was not written by CareVoice (or was edited) — move it away or pass --overwrite"
    return (
        f"{name} was edited since CareVoice wrote it, and belongs to a transcript that is out of date — "
        "move it away or pass --overwrite"
    )


def plan_job(job: Job, run: RunFacts) -> Planned:
    """Plan one recording (the outputs' own safety is checked by :func:`plan_jobs`)."""
    facts, unchanged = gather_facts(job, run.formats)
    plan = plan_file(facts, run)
    problem = blocked_message(job, plan, run.formats) if plan.action is Action.FAIL else ""
    return Planned(job, plan, facts.record, unchanged, problem)


def plan_jobs(
    jobs: list[Job], settings: TranscribeSettings, run: RunFacts, every_input: list[Job] | None = None, *, dry_run: bool = False
) -> list[Planned]:
    """Plan every job, in order: what to transcribe, redo or add, what is settled (skipped or failed).

    ``every_input``: all inputs of the run when ``jobs`` is one shard of them (default: ``jobs``);
    no output may replace any of their recordings, whichever shard they are in. Unless
    ``dry_run``, what killed runs left behind is cleared first, and a record whose recording was
    only touched gets its new stat (so the next run reads nothing).
    """
    if not dry_run:
        for folder in sorted({job.output_stem.parent for job in jobs}):
            remove_stale_temp_files(folder)
            remove_stale_locks(folder)
    sources = {os.path.realpath(job.source) for job in (jobs if every_input is None else every_input)}
    planned = []
    for job in jobs:
        entry = plan_job(job, run)
        problem = None if entry.settled else output_problem(job, settings, sources)  # only files that will be written
        if problem is not None:
            planned.append(Planned(job, FilePlan(Action.FAIL, Reason.PROBLEM), entry.record, problem=problem))
            continue
        if not dry_run and entry.plan.action is Action.SKIP:
            refresh_stat(entry)
        planned.append(entry)
    return planned


def refresh_stat(entry: Planned) -> None:
    """Give a skipped file's record the recording's new stat when only the stat changed (a touch, a
    copy), so the next run reads nothing. Under the file's lock, and only while the record is the
    one planned with: another process may be writing the file right now. Best effort."""
    record, identity = entry.record, entry.input
    if record is None or identity is None or identity == record.input:
        return
    try:
        lock = try_lock(entry.job.output_stem)
    except OSError:
        return
    if lock is None:
        return
    try:
        now = read_record(entry.job.output_stem)
        if now is not None and now.complete and now.run_id == record.run_id and now.input == record.input:
            refresh_record(entry.job.output_stem, now, identity)
    finally:
        lock.release()


def output_problem(job: Job, settings: TranscribeSettings, sources: set[str]) -> str | None:
    """Why this job's outputs must not be written where they would go, or None.

    What no option may allow: an output replacing a recording of this run (``visit.txt`` that is
    really audio), with --output-dir an output landing outside it through a symbolic link, and an
    output name longer than a file name may be.
    """
    for fmt in settings.formats:
        target = output_path(job.output_stem, fmt)
        if os.path.realpath(target) in sources:
            return (
                f"its output {target.name} would replace an input recording — "
                "rename the recording so that its extension says what it is"
            )
        if (too_long := name_problem(target.name)) is not None:
            return too_long
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


BUSY_ELSEWHERE = "being transcribed by another CareVoice process"  # a FileResult's note: its lock is held


class Claims:
    """The files this process is transcribing: each one's output lock, taken before it is decoded,
    and its plan, made again under the lock.

    Args:
        run: What this run makes (formats, model, options).
        run_id: This run's id (records say which run wrote them).
        seen: By source, the run id of the record each file had when the run was planned ("" for
            none): with --overwrite, a record written since by another run means that run did the file.
    """

    def __init__(self, run: RunFacts, run_id: str, seen: dict[Path, str] | None = None) -> None:
        self.run = run
        self.run_id = run_id
        self.seen = seen or {}
        self._locks: dict[Path, OutputLock] = {}  # by source
        self.claimed: dict[Path, Planned] = {}  # by source: the plan each held file is carried out by

    @classmethod
    def of(cls, planned: Sequence[Planned], run: RunFacts, run_id: str) -> Claims:
        """The claims a run of these plans takes (the record each file had when planned included)."""
        return cls(run, run_id, {p.job.source: p.record.run_id if p.record else "" for p in planned})

    def claim(self, job: Job) -> FileResult | None:
        """Lock the job's outputs and plan it again; None when it is ours to do, else why not.

        Another `carevoice transcribe` on the same folder holds the lock of the file it is working
        on, and may have finished a file since this run was planned: either way this run leaves it.
        """
        try:
            lock = try_lock(job.output_stem)
        except OSError as exc:
            error = write_error(job.output_stem.parent, exc)
            return FileResult(job.source, FileStatus.FAILED, error=str(error), cause=error.cause)
        if lock is None:
            return FileResult(job.source, FileStatus.SKIPPED, note=BUSY_ELSEWHERE)
        try:
            now = plan_job(job, self.run)
        except BaseException:
            lock.release()
            raise
        record = now.record
        done_meanwhile = now.plan.action is Action.SKIP or (
            self.run.overwrite
            and record is not None
            and record.complete
            and (record.run_id == self.run_id or record.run_id != self.seen.get(job.source, record.run_id))
        )
        if done_meanwhile or now.plan.action is Action.FAIL:
            lock.release()
            if now.plan.action is Action.FAIL:
                return now.result()
            return FileResult(job.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
        self._locks[job.source] = lock
        self.claimed[job.source] = now
        return None

    def release(self, job: Job) -> None:
        """Let go of a file (written, or failed). Safe for a file not held."""
        self.claimed.pop(job.source, None)
        lock = self._locks.pop(job.source, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        """Let go of every file still held (the run ended, or was interrupted)."""
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()
        self.claimed.clear()


def run_facts(settings: TranscribeSettings, model: str, model_sha256: str | None, engine_revision: int) -> RunFacts:
    """What this run makes, for every file's plan."""
    return RunFacts(
        formats=settings.formats,
        words=settings.decode.word_timestamps,
        model=model,
        model_sha256=model_sha256,
        engine_revision=engine_revision,
        text=settings.decode.text_options(),
        overwrite=settings.overwrite,
    )


def planned_note(planned: Planned) -> str | None:
    """Why a file that is being transcribed (again) is: ``redo: recording changed since …``."""
    plan = planned.plan
    if plan.action is Action.REDO:
        return f"redo: {plan.reason.value}"
    if plan.action is Action.ADD:
        return f"redo: {plan.reason.value}; wrote {', '.join(f.value for f in plan.write)} only"
    return None


def claims_for(settings: TranscribeSettings, model: str, model_sha256: str | None = None) -> Claims:
    """The claims of a new run with these settings (for callers that plan no run: bench, tests)."""
    import uuid

    from carevoice.policy import ENGINE_REVISION

    return Claims(run_facts(settings, model, model_sha256, ENGINE_REVISION), uuid.uuid4().hex)
