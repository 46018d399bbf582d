"""The per-day report of ``carevoice watch`` (--report-dir): a JSON Lines file of the files finished
that day, appended as each finishes, and a small summary beside it that counts the day's recordings.
Only the day's recordings are held in memory, and only until midnight (a watcher runs for months).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from carevoice import __version__
from carevoice.results import FileResult, FileStatus
from carevoice.run import writers
from carevoice.run.rules import Reason

REPORT_EVERY_S = 60.0  # the summary is rewritten this often (at most), at midnight and when the service stops
TRIED_AGAIN = "tried_again"  # the count of recordings whose last line is a failure to be tried again later
RETRY_KEY = "tried_again_in_s"  # a line's: when its failed file is tried again
COUNTED = (*(s.value for s in FileStatus), TRIED_AGAIN)  # the summary's counts, in this order


def local_now() -> datetime:
    return datetime.now().astimezone()


def day_report_path(folder: Path, day: str) -> Path:
    """The day's summary; its files are listed in the JSON Lines file beside it (:func:`day_files_path`)."""
    return folder / f"carevoice-watch-{day}.json"


def day_files_path(folder: Path, day: str) -> Path:
    return folder / f"carevoice-watch-{day}.jsonl"


class DayReport:
    """One report per local day under --report-dir, in two files:

    - ``carevoice-watch-DAY.jsonl``: the day's history, a line for each time a file finishes (done,
      failed, or skipped for a reason other than "already transcribed"), with the time; appended,
      never rewritten. A failure to be tried again says when (``tried_again_in_s``);
    - ``carevoice-watch-DAY.json``: the day's summary, rewritten atomically at most every
      REPORT_EVERY_S, at midnight and at stop: the recordings of the day's lines counted once each,
      by how their last line ended (``tried_again``: a failure to be tried again), the seconds of
      audio of those done, the options, and each run of the watcher with the files it found
      already transcribed.

    A restart on the same day adds to both; the counts are taken again from the lines (a killed
    watcher's last summary may be behind them). Memory: the last state of each recording named in
    the day's lines (its path, what it counts as and its duration: ~400 bytes, 4 MB for 10,000
    recordings a day, measured), let go at midnight.

    Args:
        folder: --report-dir.
        facts: What every summary says (run_id, model, device, options).
        clock: Monotonic seconds (when to rewrite).
        now: The local time (which day it is).
    """

    def __init__(
        self, folder: Path, facts: dict[str, Any], clock: Callable[[], float], now: Callable[[], datetime] = local_now
    ) -> None:
        self.folder = folder
        self.facts = facts
        self.clock = clock
        self.now = now
        self.dirty = False
        self.written_s = float("-inf")
        self._open(self.now().date().isoformat())

    def _open(self, day: str) -> None:
        """Start the day's report, with what an earlier run wrote to it today."""
        self.day = day
        self.ended: dict[str, tuple[str, float]] = {}  # each recording's last line: (what it counts as, its duration_s)
        self.runs: list[dict[str, Any]] = []
        try:
            earlier = json.loads(day_report_path(self.folder, day).read_bytes())
            self.runs = list(earlier.get("runs", []))
        except (OSError, ValueError, TypeError, AttributeError):
            pass  # none yet (or unreadable: a new one replaces it)
        try:
            with open(day_files_path(self.folder, day), "r+", encoding="utf-8", errors="replace") as lines:
                line = "\n"
                for line in lines:
                    try:
                        entry = json.loads(line)
                        counted_as = TRIED_AGAIN if RETRY_KEY in entry else FileStatus(entry["status"]).value
                        self._end(str(entry["file"]), counted_as, float(entry["duration_s"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut by a kill
                if not line.endswith("\n"):
                    lines.write("\n")  # end the cut line: the next one must start a line of its own
        except OSError:
            pass
        self.runs.append({"run_id": self.facts["run_id"], "started": self.now().isoformat(timespec="seconds"), "already_transcribed": 0})
        self.dirty = True

    def _end(self, file: str, counted_as: str, duration_s: float) -> None:
        """A recording's latest line: it now counts as that (and only that) for the day."""
        self.ended.pop(file, None)  # to the end: the dict stays in the order the recordings last ended
        self.ended[file] = (counted_as, duration_s)

    @property
    def counts(self) -> dict[str, int]:
        """The day's recordings by how their last line ended."""
        counts = dict.fromkeys(COUNTED, 0)
        for counted_as, _ in self.ended.values():
            counts[counted_as] += 1
        return counts

    @property
    def audio_s(self) -> float:
        """Seconds of audio of the day's recordings that ended done or with no speech heard (a redo's, not the first try's)."""
        heard = (FileStatus.DONE.value, FileStatus.NO_SPEECH.value)
        return sum(duration_s for counted_as, duration_s in self.ended.values() if counted_as in heard)

    def new_day(self) -> bool:
        """Whether midnight has passed since the report was opened: then the old day's summary is
        written, complete, and the new day's opened (the caller writes it)."""
        today = self.now().date().isoformat()
        if today == self.day:
            return False
        if self.runs:
            self.runs[-1]["stopped"] = self.now().isoformat(timespec="seconds")  # this run's part of that day
        self.dirty = True
        try:
            self.write()
        finally:
            self._open(today)  # the new day starts even when the old one's summary cannot be written
        return True

    def add(self, result: FileResult, tried_again_in_s: float | None = None) -> None:
        """Count a finished file and append its line (raises OSError when the folder cannot be written).
        ``tried_again_in_s``: the failed file will be tried again that much later."""
        self.new_day()
        self.dirty = True
        if result.status is FileStatus.SKIPPED and result.note == Reason.CURRENT.value:
            self.runs[-1]["already_transcribed"] += 1  # this run's (a sum over the runs would grow with restarts)
            return
        entry = {**result.to_dict(), "at": self.now().isoformat(timespec="seconds")}
        self._end(entry["file"], result.status.value if tried_again_in_s is None else TRIED_AGAIN, entry["duration_s"])
        if tried_again_in_s is not None:
            entry[RETRY_KEY] = tried_again_in_s
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        # One write in append mode: a line lands whole after any other (a kill loses at most this one).
        fd = os.open(day_files_path(self.folder, self.day), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def to_dict(self) -> dict[str, Any]:
        return {
            "carevoice_version": __version__,
            "day": self.day,
            **{k: v for k, v in self.facts.items() if k != "run_id"},
            "runs": self.runs,
            "counts": self.counts,
            "audio_s": round(self.audio_s, 3),
            "files": day_files_path(self.folder, self.day).name,
        }

    def write(self, stopping: bool = False) -> Path | None:
        """Write the day's summary if anything changed; returns where (None: nothing to write)."""
        if stopping and self.runs:
            self.runs[-1]["stopped"] = self.now().isoformat(timespec="seconds")
            self.dirty = True
        if not self.dirty:
            return None

        self.folder.mkdir(parents=True, exist_ok=True)
        path = day_report_path(self.folder, self.day)
        writers.atomic_write(path, (json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        self.dirty, self.written_s = False, self.clock()
        return path

    def due(self) -> bool:
        return self.dirty and self.clock() - self.written_s >= REPORT_EVERY_S
