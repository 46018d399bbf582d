"""The hidden note a failed recording leaves where its outputs would go (``.<name>.carevoice-failed.json``),
so that the next plan says ``try again (failed last time, …)`` while the recording is unchanged
(carevoice.run.rules.after_failure), and a dry run predicts the failure.

A note holds the recording's stat, the one-line error, when and which run: never transcript text.
It is written (atomically) only for a failure of the recording's own or of its folder, which an
unchanged recording meets again; not for one that passes by itself (an upload under way, a device
out of memory) or an interruption. It goes once the file is written. Notes are best effort: a
folder that refuses one is left without. Discovery and watching skip hidden names, and tidying
clears only temporary files and locks, so a note is never taken for a recording or a leftover.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from carevoice.errors import Cause
from carevoice.run import writers
from carevoice.run.names import hidden_name
from carevoice.run.records import stat_key
from carevoice.run.rules import FailedBefore

FAILED_SUFFIX = ".carevoice-failed.json"
NOTE_VERSION = 1
STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "inode")


def stat_of(st: os.stat_result) -> dict[str, int]:
    """The part of a recording's stat a note keeps: what a record compares (records.stat_key)."""
    return dict(zip(STAT_KEYS, stat_key(st)))


def note_path(stem: Path) -> Path:
    """Where the failure note for the outputs ``<stem>.*`` lives."""
    return stem.with_name(hidden_name(stem.name, FAILED_SUFFIX))


def remembered(cause: Cause | None) -> bool:
    """Whether a failure with this cause is noted: the recording's own (None) or its folder's (full, read-only)."""
    return cause is None or cause is Cause.FOLDER


@dataclass(frozen=True)
class FailureNote:
    """What a note says: the recording's stat when it failed, the error, when (local time, ISO) and which run."""

    stat: dict[str, int]
    error: str
    at: str
    run_id: str

    def against(self, st: os.stat_result | None) -> FailedBefore:
        """The note against the recording as it is now (None: it cannot be stat'ed)."""
        # As records compare a recording: a rewrite or replacement changes ctime (and usually the inode).
        unchanged = st is not None and stat_of(st) == self.stat
        try:
            when = datetime.fromisoformat(self.at).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            when = "at an unknown time"
        return FailedBefore(when, self.error, unchanged)


def remember_failure(stem: Path, source: Path, error: str, run_id: str, now: datetime) -> None:
    """Write the note of a failed recording (best effort: a folder that refuses it, or a recording
    gone meanwhile, leaves none)."""
    try:
        st = os.stat(source)
        note = {
            "version": NOTE_VERSION,
            "input": stat_of(st),
            "error": error,
            "at": now.isoformat(timespec="seconds"),
            "run_id": run_id,
        }
        stem.parent.mkdir(parents=True, exist_ok=True)  # under --output-dir a failed file may be the first of its folder
        writers.atomic_write(note_path(stem), json.dumps(note, indent=1).encode("ascii"))  # the writers' one way to write a file
    except OSError:
        pass


def forget_failure(stem: Path) -> None:
    """Remove the note of a recording now written (best effort: one left behind describes an older
    stat, and a plan reads it only for a file that is to be transcribed)."""
    try:
        os.unlink(note_path(stem))
    except OSError:
        pass


def read_failure(stem: Path) -> FailureNote | None:
    """The failure note for ``<stem>.*``, or None when there is none, or it cannot be read or makes no sense."""
    try:
        data = json.loads(note_path(stem).read_text(encoding="utf-8"))
        stat = {key: int(data["input"][key]) for key in STAT_KEYS}
        return FailureNote(stat, str(data["error"]), str(data["at"]), str(data.get("run_id", "")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def failed_before(stem: Path, source: Path) -> FailedBefore | None:
    """What the note of ``<stem>.*`` says of the recording as it is now; None without a note."""
    note = read_failure(stem)
    if note is None:
        return None
    try:
        st: os.stat_result | None = os.stat(source)
    except OSError:
        st = None
    return note.against(st)
