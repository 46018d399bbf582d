"""Which files this run may transcribe, and the locks that keep two runs off the same file.

Before any model loads, :func:`plan_jobs` sets aside what is already finished, and what must not be
written (an output that would replace a recording, land outside --output-dir, or replace a file
CareVoice did not write), after clearing what killed runs left behind. While the run goes on,
:class:`Claims` locks each file's outputs just before it is decoded, and lets go once it is written
or failed. Everything here returns FileResults; nothing prints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from carevoice.discovery import Job
from carevoice.locks import OutputLock, remove_stale_locks, try_lock
from carevoice.results import FileResult, FileStatus
from carevoice.settings import OutputFormat, TranscribeSettings
from carevoice.writers import foreign_outputs, is_finished, output_path, record_path, remove_stale_temp_files, write_error


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
        problem = output_problem(job, settings, sources)  # only files that will be written
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


def output_problem(job: Job, settings: TranscribeSettings, sources: set[str]) -> str | None:
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


class Claims:
    """The files this process is transcribing: each one's output lock, taken before it is decoded.

    Args:
        formats: The outputs a file gets.
        overwrite: --overwrite (finished files are redone).
        fingerprint: The options that key resume.
        started_ns: When the run started (time.time_ns; default: now). With --overwrite, a file
            finished since then counts as done by someone else, so a worker that takes over part
            of a run (a retried Ray task) passes the start of the whole run.
    """

    def __init__(
        self, formats: tuple[OutputFormat, ...], overwrite: bool, fingerprint: dict[str, Any], started_ns: int | None = None
    ) -> None:
        self.formats = formats
        self.overwrite = overwrite
        self.fingerprint = fingerprint
        self.started_ns = started_ns or time.time_ns()
        self._locks: dict[Path, OutputLock] = {}  # by source

    def claim(self, job: Job) -> FileResult | None:
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
        if not is_finished(job.output_stem, self.formats, self.fingerprint):
            return False
        if not self.overwrite:
            return True  # planning left it to run, so someone finished it since
        try:
            return record_path(job.output_stem).stat().st_mtime_ns >= self.started_ns
        except OSError:
            return False

    def release(self, job: Job) -> None:
        """Let go of a file (written, or failed). Safe for a file not held."""
        lock = self._locks.pop(job.source, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        """Let go of every file still held (the run ended, or was interrupted)."""
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()
