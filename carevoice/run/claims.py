"""The locks that keep two runs off one file: a file's outputs are locked just before it is decoded,
its plan is made again under the lock (another process may have done it meanwhile), and the lock
is let go once it is written or failed. Returns FileResults for the files it leaves; never prints.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from carevoice.engine.policy import ENGINE_REVISION
from carevoice.results import FileResult, FileStatus
from carevoice.run.discovery import Job
from carevoice.run.locks import OutputLock, try_lock
from carevoice.run.planning import FilePlan, plan_file, run_facts
from carevoice.run.rules import Action, RunFacts
from carevoice.run.writers import write_error
from carevoice.settings import TranscribeSettings

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
        self.claimed: dict[Path, FilePlan] = {}  # by source: the plan each held file is carried out by

    @classmethod
    def of(cls, planned: Sequence[FilePlan], run: RunFacts, run_id: str) -> Claims:
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
            now = plan_file(job, self.run)
        except BaseException:
            lock.release()
            raise
        record = now.record
        done_meanwhile = now.decision.action is Action.SKIP or (
            self.run.overwrite
            and record is not None
            and record.complete
            and (record.run_id == self.run_id or record.run_id != self.seen.get(job.source, record.run_id))
        )
        if done_meanwhile or now.decision.action is Action.FAIL:
            lock.release()
            if now.decision.action is Action.FAIL:
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


def claims_for(settings: TranscribeSettings, model: str, model_sha256: str | None = None) -> Claims:
    """The claims of a new run with these settings (for callers that plan no run: bench, tests)."""
    return Claims(run_facts(settings, model, model_sha256, ENGINE_REVISION), uuid.uuid4().hex)
