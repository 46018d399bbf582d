"""The watcher's counts: the day's report counts recordings, each once in its last state that day,
however often the watcher restarts or a file is tried again; its JSON Lines file keeps every event.
The watcher's own counts (heartbeat, the stop line) count a file failed and then done as done."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from carevoice.errors import Cause
from carevoice.results import NO_SPEECH_HEARD, FileResult, FileStatus
from carevoice.run.rules import Reason
from carevoice.watch.arrivals import Arrivals, Sighting
from carevoice.watch.day_report import DayReport, day_files_path, day_report_path
from carevoice.watch.ledger import Ledger
from carevoice.watch.log import WatchLog

FACTS = {"model": "tiny.en", "device": "cpu (int8)", "options": {}}
DAY = "2026-03-02"


def _done(name: str, duration_s: float) -> FileResult:
    return FileResult(Path(f"in/{name}"), FileStatus.DONE, duration_s=duration_s)


def _undecodable(name: str) -> FileResult:
    return FileResult(Path(f"in/{name}"), FileStatus.FAILED, error="cannot decode audio")


def _engine_failed(name: str) -> FileResult:
    return FileResult(Path(f"in/{name}"), FileStatus.FAILED, error="out of memory on cuda:0", cause=Cause.ENGINE)


def _current(name: str) -> FileResult:
    return FileResult(Path(f"in/{name}"), FileStatus.SKIPPED, note=Reason.CURRENT.value)


class Day:
    """Runs of the watcher on one report folder, each a new DayReport, on a clock the test turns."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.when = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
        self.runs = 0

    def start(self) -> DayReport:
        self.runs += 1
        self.when += timedelta(minutes=5)
        return DayReport(self.folder, {**FACTS, "run_id": f"r{self.runs}"}, clock=lambda: 0.0, now=lambda: self.when)

    def summary(self, day: str = DAY) -> dict:
        return json.loads(day_report_path(self.folder, day).read_text())


def test_restarts_and_redos_count_each_recording_once_in_its_last_state(tmp_path: Path) -> None:
    """The issue's day: two undecodable files fail at each of five starts (four restarts), a half
    transcript is redone when the rest of the upload lands, an engine failure is tried again and
    done, another is tried again and never done; three old files are found transcribed at each start."""
    day = Day(tmp_path)
    report = day.start()
    for name in ("old1.wav", "old2.wav", "old3.wav"):
        report.add(_current(name))
    report.add(_done("visit.wav", duration_s=20.0))  # from the first part of an upload
    report.add(_undecodable("bad1.wav"))
    report.add(_undecodable("bad2.wav"))
    report.add(_engine_failed("gpu.wav"), tried_again_in_s=60.0)
    report.add(_engine_failed("oom.wav"), tried_again_in_s=60.0)
    report.write(stopping=True)
    for _ in range(4):  # four restarts: each tries every failed file again
        report = day.start()
        for name in ("old1.wav", "old2.wav", "old3.wav", "bad1.wav", "bad2.wav"):
            report.add(_current(name) if name.startswith("old") else _undecodable(name))
        if day.runs == 2:
            report.add(_done("visit.wav", duration_s=50.0))  # the whole upload, redone
        if day.runs == 3:
            report.add(_done("gpu.wav", duration_s=10.0))
            report.add(_engine_failed("oom.wav"), tried_again_in_s=120.0)
        report.write(stopping=True)

    expected = {"done": 2, "no_speech": 0, "skipped": 0, "failed": 2, "tried_again": 1}
    summary = day.summary()
    assert summary["counts"] == expected
    assert summary["audio_s"] == 60.0  # the redo's 50 s, not the half's 20 s beside it
    assert [run.get("already_transcribed") for run in summary["runs"]] == [3, 3, 3, 3, 3]  # what each start found
    assert "already_transcribed" not in summary  # a day-wide sum would grow with the restarts
    lines = [json.loads(line) for line in day_files_path(tmp_path, DAY).read_text().splitlines()]
    assert len(lines) == 5 + 4 * 2 + 1 + 2  # the history keeps every event
    assert day.start().counts == expected  # a sixth start counts the same from the lines


def test_a_file_skipped_for_another_reason_then_done_is_done(tmp_path: Path) -> None:
    report = Day(tmp_path).start()
    report.add(FileResult(Path("in/a.wav"), FileStatus.SKIPPED, note="another process is transcribing it"))
    assert report.counts["skipped"] == 1
    report.add(_done("a.wav", duration_s=3.0))
    assert report.counts == {"done": 1, "no_speech": 0, "skipped": 0, "failed": 0, "tried_again": 0} and report.audio_s == 3.0


def test_each_day_counts_its_own_recordings_and_forgets_them_at_midnight(tmp_path: Path) -> None:
    """A failure tried again before midnight and done after it: tried again one day, done the next.
    What a day holds per recording goes at midnight (a watcher runs for months)."""
    day = Day(tmp_path)
    day.when = datetime(2026, 3, 2, 23, 50, tzinfo=timezone.utc)
    report = day.start()
    report.add(_engine_failed("gpu.wav"), tried_again_in_s=600.0)
    report.add(_done("a.wav", duration_s=1.0))
    day.when += timedelta(minutes=15)
    report.add(_done("gpu.wav", duration_s=4.0))
    report.write(stopping=True)
    assert day.summary()["counts"] == {"done": 1, "no_speech": 0, "skipped": 0, "failed": 0, "tried_again": 1}
    assert day.summary("2026-03-03")["counts"] == {"done": 1, "no_speech": 0, "skipped": 0, "failed": 0, "tried_again": 0}
    assert report.audio_s == 4.0


def _ledger(tmp_path: Path, notes: list[str]) -> Ledger:
    arrivals = Arrivals(10.0, 600.0, clock=lambda: 0.0, stat=lambda path: Sighting(100, 1, 7, 1), retry_after_s=(60.0,))
    log = WatchLog(note=notes.append, result=lambda result: None, waiting=lambda path, why: None, loaded=lambda *facts: None)
    return Ledger(tmp_path / "heartbeat.json", (Path("in"),), arrivals, log, clock=lambda: 0.0)


def test_the_watchers_counts_call_a_file_failed_then_done_done(tmp_path: Path) -> None:
    """Since start: a recording that failed and was then transcribed is not also a failed file; one
    that failed twice is one failed file; one failing now and to be tried again is counted apart."""
    ledger = _ledger(tmp_path, [])
    ledger.record(_undecodable("bad.wav"))
    ledger.record(_undecodable("bad.wav"))  # it changed, and failed again
    ledger.record(_undecodable("fixed.wav"))
    ledger.record(_done("fixed.wav", duration_s=2.0))  # a new export of it
    ledger.record(_engine_failed("gpu.wav"))  # tried again in 60 s
    assert (ledger.done, ledger.failed, ledger.tried_again) == (1, 1, 1)
    ledger.record(_engine_failed("gpu.wav"))  # the tries used up: a failure
    assert (ledger.done, ledger.failed, ledger.tried_again) == (1, 2, 0)
    ledger.record(_done("gpu.wav", duration_s=2.0))  # a restart of the engine, or a change
    assert (ledger.done, ledger.failed, ledger.tried_again) == (2, 1, 0)


def test_a_recording_with_no_speech_heard_is_counted_apart_logged_and_not_tried_again(tmp_path: Path) -> None:
    """Issue 23: sound in which nothing is heard is not `done`; the engine did its work (a failing
    engine before it is not unhealthy any more), the file is not retried, and its audio counts."""
    day = Day(tmp_path / "reports")
    shown: list[FileResult] = []
    ledger = _ledger(tmp_path, [])
    ledger.log = WatchLog(note=lambda text: None, result=shown.append, waiting=lambda path, why: None, loaded=lambda *facts: None)
    ledger.report = day.start()
    ledger.record(_engine_failed("gpu.wav"))
    unheard = FileResult(Path("in/night.wav"), FileStatus.NO_SPEECH, duration_s=8.0, note=NO_SPEECH_HEARD)
    ledger.record(unheard)
    ledger.record(_done("visit.wav", duration_s=2.0))
    assert (ledger.done, ledger.failed, ledger.tried_again) == (1, 0, 1)
    assert shown[1] == unheard and not ledger.arrivals.knows(Path("in/night.wav"))  # no retry was booked
    ledger.report.write(stopping=True)
    summary = day.summary()
    assert {k: v for k, v in summary["counts"].items() if v} == {"done": 1, "no_speech": 1, "tried_again": 1}
    assert summary["audio_s"] == 10.0


def test_the_engine_working_on_a_file_with_no_speech_heard_clears_its_failures(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, [])
    ledger.record(_engine_failed("gpu.wav"))
    assert ledger.engine_failed == {Path("in/gpu.wav")}
    ledger.record(FileResult(Path("in/night.wav"), FileStatus.NO_SPEECH, duration_s=8.0, note=NO_SPEECH_HEARD))
    assert ledger.engine_failed == set()
