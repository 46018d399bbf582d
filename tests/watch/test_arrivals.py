"""The rules of `carevoice watch` that need no model: when a file has settled (a table), the book of
arrivals (with a clock the test turns), which file systems send no events, durations, the
heartbeat, jobs for files found below watched folders, and the day's report."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from carevoice.errors import Cause, UsageError
from carevoice.results import FileResult, FileStatus
from carevoice.run.discovery import find_jobs, find_jobs_among
from carevoice.run.rules import Reason
from carevoice.settings import parse_duration
from carevoice.watch.arrivals import Arrivals, Hold, Retry, Sighting, State, Watched, settle
from carevoice.watch.day_report import DayReport, day_report_path
from carevoice.watch.events import mount_of, without_events
from carevoice.watch.heartbeat import (
    Beat,
    Phase,
    beating_elsewhere,
    health,
    read_beat,
    write_beat,
)

A = Sighting(size=100, mtime_ns=1, inode=7, device=1)
GROWN = Sighting(size=200, mtime_ns=2, inode=7, device=1)
REPLACED = Sighting(size=100, mtime_ns=1, inode=8, device=1)  # renamed over: a new inode


@pytest.mark.parametrize(
    ("previous", "now", "now_s", "state", "since_s", "check_at_s"),
    [
        (None, A, 10.0, State.SETTLING, 10.0, 20.0),  # first seen: wait the whole settle time
        (Watched(A, 10.0), A, 15.0, State.SETTLING, 10.0, 20.0),  # unchanged, not long enough
        (Watched(A, 10.0), A, 20.0, State.READY, 10.0, None),  # unchanged for exactly the settle time
        (Watched(A, 10.0), GROWN, 19.9, State.SETTLING, 19.9, 29.9),  # still growing: the clock starts again
        (Watched(A, 10.0), REPLACED, 25.0, State.SETTLING, 25.0, 35.0),  # same size and time, other file
        (Watched(A, 10.0), None, 25.0, State.GONE, None, None),  # deleted before it settled
    ],
)
def test_settle_rule(previous, now, now_s, state, since_s, check_at_s) -> None:
    verdict = settle(previous, now, now_s, settle_s=10.0)
    assert verdict.state is state
    assert verdict.reason
    assert (verdict.watched.since_s if verdict.watched else None) == since_s
    assert verdict.check_at_s == check_at_s


def test_settle_time_zero_takes_a_file_at_once() -> None:
    assert settle(None, A, 5.0, settle_s=0).state is State.READY


class Folder:
    """Files as a stat sees them, and a clock, both turned by the test."""

    def __init__(self) -> None:
        self.files: dict[Path, Sighting] = {}
        self.now_s = 0.0

    def book(self, settle_s: float = 10.0, incomplete_wait_s: float = 600.0, retry_after_s: tuple[float, ...] = (), **hold) -> Arrivals:  # type: ignore[no-untyped-def]
        return Arrivals(settle_s, incomplete_wait_s, clock=lambda: self.now_s, stat=self.files.get, retry_after_s=retry_after_s, **hold)


def test_a_file_is_ready_only_after_it_stopped_changing() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book()
    folder.files[path] = A
    book.observe(path)
    for step_s, sighting in ((4, GROWN), (8, Sighting(300, 3, 7, 1))):  # still being written
        folder.now_s = step_s
        folder.files[path] = sighting
        book.observe(path)
        assert book.due() == ([], [])
    folder.now_s = 17.9  # 9.9 s after the last change: not yet, though 17.9 s after it appeared
    assert book.due() == ([], [])
    assert book.next_check_s() == 18.0
    folder.now_s = 18.0
    assert book.due() == ([path], [])
    assert book.take(path)
    assert book.due() == ([], []) and book.waiting == 0


def test_a_handled_file_comes_back_only_when_it_changes() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1)
    folder.files[path] = A
    book.observe(path)
    folder.now_s = 1
    assert book.due()[0] == [path] and book.take(path)
    book.observe(path)  # a walk or a metadata event sees it again, unchanged
    folder.now_s = 5
    assert book.due() == ([], [])
    folder.files[path] = REPLACED  # a new version renamed into place
    book.observe(path)
    folder.now_s = 6
    assert book.due()[0] == [path]


def test_a_file_that_changed_after_it_was_found_ready_is_not_taken() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1)
    folder.files[path] = A
    book.observe(path)
    folder.now_s = 1
    assert book.due()[0] == [path]
    folder.files[path] = GROWN
    assert not book.take(path)
    folder.now_s = 1.5
    assert book.due()[0] == []  # settles again, from the change
    folder.now_s = 2
    assert book.due()[0] == [path] and book.take(path)


def test_a_file_removed_before_it_settled_is_forgotten() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1)
    folder.files[path] = A
    book.observe(path)
    del folder.files[path]
    folder.now_s = 2
    assert book.due() == ([], []) and book.waiting == 0


def test_an_incomplete_file_waits_for_a_change_and_is_given_up_once() -> None:
    folder, path, other = Folder(), Path("in/half.wav"), Path("in/stalled.wav")
    book = folder.book(settle_s=1, incomplete_wait_s=100)
    for p in (path, other):
        folder.files[p] = A
        book.observe(p)
    folder.now_s = 1
    assert book.due()[0] == [path, other]
    for p in (path, other):
        assert book.take(p)
        book.found_incomplete(p, "the file is truncated: …")
    book.observe(path)  # unchanged: nothing to do
    assert book.due() == ([], []) and book.waiting == 2
    folder.now_s = 50
    folder.files[path] = GROWN  # the upload goes on
    book.observe(path)
    folder.now_s = 51
    assert book.due() == ([path], [])
    folder.now_s = 101  # the other one never changed
    ready, gave_up = book.due()
    assert ready == [path] and [(g.path, g.error) for g in gave_up] == [(other, "the file is truncated: …")]
    folder.now_s = 500
    assert book.due()[1] == []  # reported once
    book.observe(other)
    assert book.due() == ([path], [])  # and not taken again while it stays as it is


def test_a_file_failed_for_a_passing_cause_comes_back_unchanged_after_each_wait_then_waits_for_a_change() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1, retry_after_s=(60, 120))
    folder.files[path] = A
    book.observe(path)
    folder.now_s = 1
    assert book.due()[0] == [path] and book.take(path)
    assert book.retry_later(path) == Retry(60, "tried again in 60 s, unchanged (try 2 of 3)")  # the engine failed it
    book.observe(path)  # a walk sees it, unchanged: it still waits
    assert book.waiting == 1 and book.next_check_s() == 61
    folder.now_s = 60.9
    assert book.due() == ([], [])
    folder.now_s = 61
    assert book.due()[0] == [path] and book.take(path)  # as it is: no second settle time
    assert book.retry_later(path).after_s == 120
    folder.now_s = 181
    assert book.due()[0] == [path] and book.take(path)
    assert book.retry_later(path) == Retry(None, "failed 3 times: tried again once it changes, or at a restart")  # waits for a change
    folder.now_s = 10_000
    book.observe(path)
    assert book.due() == ([], []) and book.waiting == 0
    folder.files[path] = REPLACED  # a new version: its tries start again
    book.observe(path)
    folder.now_s = 10_001
    assert book.due()[0] == [path] and book.take(path)
    assert book.retry_later(path).after_s == 60


def test_a_file_changed_while_it_waits_for_a_retry_settles_as_a_new_version() -> None:
    folder, path, gone = Folder(), Path("in/a.wav"), Path("in/b.wav")
    book = folder.book(settle_s=1, retry_after_s=(60,))
    for p in (path, gone):
        folder.files[p] = A
        book.observe(p)
    folder.now_s = 1
    for p in book.due()[0]:
        assert book.take(p) and book.retry_later(p).after_s == 60
    folder.now_s = 10
    folder.files[path] = GROWN
    book.observe(path)
    del folder.files[gone]
    book.keep_only({path})  # a walk: the other one is gone, and forgotten
    folder.now_s = 11
    assert book.due()[0] == [path] and book.take(path)  # settled from its change, not at its retry time
    assert book.retry_later(path).after_s == 60  # a new version's first failure
    assert gone not in book.retrying and gone not in book.tries


def test_a_file_that_changed_before_its_failure_came_back_is_tried_again_once_it_settles() -> None:
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1, retry_after_s=(60,))
    folder.files[path] = A
    book.observe(path)
    folder.now_s = 1
    assert book.due()[0] == [path] and book.take(path)
    folder.files[path] = GROWN  # replaced while the engine worked on it
    book.observe(path)
    assert book.retry_later(path) == Retry(1, "changed meanwhile: tried again once it settles") and path in book.settling


def test_a_whole_walk_forgets_what_is_gone() -> None:
    folder = Folder()
    book = folder.book(settle_s=1)
    paths = [Path(f"in/{n}.wav") for n in "abc"]
    for p in paths:
        folder.files[p] = A
        book.observe(p)
    folder.now_s = 1
    for p in book.due()[0]:
        book.take(p)
    book.keep_only({paths[0]})
    assert set(book.handled) == {paths[0]}


MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/nas rw,relatime shared:9 - nfs4 nas:/export rw,vers=4.2
31 30 8:2 / /mnt/nas/local\040disk rw shared:10 - xfs /dev/sdb1 rw
32 22 0:41 / /mnt/share rw - cifs //server/care rw
33 22 0:42 / /home/nurse/phone rw - fuse.sshfs phone: rw
34 22 0:43 / /data rw - overlay overlay rw
"""


@pytest.mark.parametrize(
    ("path", "point", "fstype", "events"),
    [
        ("/srv/inbox", "/", "ext4", True),
        ("/mnt/nas/recordings", "/mnt/nas", "nfs4", False),
        ("/mnt/nas/local disk/in", "/mnt/nas/local disk", "xfs", True),  # a local disk mounted below the NFS one
        ("/mnt/share", "/mnt/share", "cifs", False),
        ("/mnt/shared", "/", "ext4", True),  # a prefix of the name is not the mount
        ("/home/nurse/phone/rec", "/home/nurse/phone", "fuse.sshfs", False),
        ("/data/in", "/data", "overlay", True),
    ],
)
def test_which_file_systems_send_no_events(path: str, point: str, fstype: str, events: bool, monkeypatch) -> None:
    monkeypatch.setattr(os.path, "realpath", lambda p: str(p))
    assert mount_of(Path(path), MOUNTINFO) == (point, fstype)
    assert without_events(fstype) is not events


@pytest.mark.parametrize(
    ("text", "seconds"), [("10", 10.0), ("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), (" 3S ", 3.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--settle") == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "5 d", "nan", "inf"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(UsageError, match="--settle .* is not a duration") as caught:
        parse_duration(text, "--settle")
    assert "10s" in caught.value.hint


def _beat(phase: Phase, updated_unix: float, pid: int = 4242) -> Beat:
    return Beat(pid, phase, updated_unix, started_unix=0.0, done=3, failed=1, waiting=2)


@pytest.mark.parametrize(
    ("beat", "ok", "says"),
    [
        (None, False, "no heartbeat"),
        (_beat(Phase.IDLE, 990.0), True, "idle, beat 10 s ago: 3 transcribed, 1 failed, 2 waiting"),
        (_beat(Phase.BUSY, 1000.0 - 301), False, "has not beaten for 301 s (limit 300 s) while busy"),
        (_beat(Phase.STOPPED, 999.0), False, "stopped 1 s ago"),
        (_beat(Phase.STARTING, 800.0), True, "starting"),
        (_beat(Phase.STARTING, 1000.0 - 1700), True, "starting"),  # a model download: no beat for half an hour
        (_beat(Phase.STARTING, 1000.0 - 1801), False, "limit 1800 s) while starting — it is stuck, or its model has not loaded"),
        (replace(_beat(Phase.IDLE, 999.0), engine_failed=4), True, "idle"),
        (replace(_beat(Phase.BUSY, 999.0), engine_failed=5), False, "its engine failed 5 different files in a row — restart it"),
    ],
)
def test_health_from_a_heartbeat(beat, ok: bool, says: str) -> None:
    healthy, line = health(beat, now_unix=1000.0, max_age_s=300.0)
    assert healthy is ok and says in line


def test_a_heartbeat_round_trips_and_a_broken_one_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "beat.json"
    beat = _beat(Phase.BUSY, 123.5)
    write_beat(path, beat)
    assert read_beat(path) == beat
    assert json.loads(path.read_text())["phase"] == "busy"
    path.write_text("{not json")
    assert read_beat(path) is None
    assert read_beat(tmp_path / "none.json") is None


def test_only_a_live_carevoice_elsewhere_holds_the_heartbeat() -> None:
    mine = _beat(Phase.IDLE, 1000.0, pid=os.getpid())
    assert beating_elsewhere(mine, 1001.0, 15.0) is None  # this process (a restarted container's pid 1)
    dead = _beat(Phase.IDLE, 1000.0, pid=2**22 + 12345)  # above the kernel's pid limit: no such process
    assert beating_elsewhere(dead, 1001.0, 15.0) is None
    assert beating_elsewhere(_beat(Phase.STOPPED, 1000.0, pid=1), 1001.0, 15.0) is None
    assert beating_elsewhere(_beat(Phase.IDLE, 900.0, pid=1), 1001.0, 15.0) is None  # stale


def test_jobs_among_watched_files_match_a_walk(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "ward").mkdir(parents=True)
    for name in ("a.wav", "ward/b.mp3", "ward/visit.wav", "ward/visit.m4a", "ward/notes.txt"):
        (root / name).write_bytes(b"x")
    out = tmp_path / "out"
    walked = find_jobs((root,), out)
    among = find_jobs_among([root / "a.wav", root / "ward/b.mp3", root / "ward/visit.wav"], (root,), out)
    assert among.jobs == [j for j in walked.jobs if j.source.name != "visit.m4a"]
    assert [(p.path, p.message) for p in among.problems] == [(p.path, p.message) for p in walked.problems if p.path.suffix == ".wav"]
    assert "outputs would collide" in among.problems[0].message
    assert find_jobs_among([tmp_path / "elsewhere.wav"], (root,), out).jobs == []


def test_the_day_report_counts_current_files_and_a_restart_adds_to_it(tmp_path: Path) -> None:
    facts = {"run_id": "r1", "model": "tiny.en", "device": "cpu (int8)", "options": {}}
    report = DayReport(tmp_path, facts, clock=lambda: 0.0)
    report.add(FileResult(Path("in/a.wav"), FileStatus.DONE, duration_s=3.0))
    report.add(FileResult(Path("in/b.wav"), FileStatus.FAILED, error="cannot decode audio"))
    report.add(FileResult(Path("in/c.wav"), FileStatus.SKIPPED, note=Reason.CURRENT.value))
    path = report.write(stopping=True)
    assert path == day_report_path(tmp_path, report.day)
    again = DayReport(tmp_path, {**facts, "run_id": "r2"}, clock=lambda: 0.0)
    again.add(FileResult(Path("in/d.wav"), FileStatus.DONE, duration_s=2.0))
    again.write()
    data = json.loads(path.read_text())
    assert data["counts"] == {"done": 2, "no_speech": 0, "skipped": 0, "failed": 1, "tried_again": 0}
    assert data["audio_s"] == 5.0
    assert [(r["run_id"], r["already_transcribed"]) for r in data["runs"]] == [("r1", 1), ("r2", 0)] and "stopped" in data["runs"][0]
    lines = [json.loads(line) for line in (tmp_path / data["files"]).read_text().splitlines()]
    assert [(f["file"], f["status"]) for f in lines] == [("in/a.wav", "done"), ("in/b.wav", "failed"), ("in/d.wav", "done")]
    assert all("at" in f for f in lines)


def test_a_file_seen_changing_while_it_was_decoded_is_not_held_as_incomplete() -> None:
    """The upload went on while the first try decoded it: it settles again and is taken whole; no
    stale "incomplete" entry may later give it up as abandoned."""
    folder, path = Folder(), Path("in/a.wav")
    book = folder.book(settle_s=1, incomplete_wait_s=100)
    folder.files[path] = A
    book.observe(path)
    folder.now_s = 1
    assert book.due()[0] == [path] and book.take(path)
    folder.files[path] = GROWN  # seen (an event) while the decode ran
    book.observe(path)
    book.found_incomplete(path, "the recording changed while it was read")  # the decode's verdict comes after
    folder.now_s = 2
    assert book.due() == ([path], []) and book.take(path)
    folder.now_s = 500
    assert book.due() == ([], []) and book.waiting == 0


WRITTEN = Hold("still open for writing by pid 41 (rsync)", 10.0)
UNSIZED = Hold("its format does not state its length", 50.0)


@pytest.mark.parametrize(
    "steps",
    [
        [  # (now_s, the file changes to, the hold says, asked with unchanged_s, ready, told, next_check_s)
            (10, None, WRITTEN, 10, False, WRITTEN, 20),
            (15, None, WRITTEN, None, False, None, 20),  # not asked again before its time: no busy loop, no scan of /proc
            (20, None, WRITTEN, 20, False, None, 30),  # the same reason: told once
            (30, None, None, 30, True, None, None),  # the writer closed it
        ],
        [
            (10, None, UNSIZED, 10, False, UNSIZED, 60),
            (60, None, None, 60, True, None, None),
        ],
        [
            (10, None, UNSIZED, 10, False, UNSIZED, 60),
            (30, GROWN, None, None, False, None, 40),  # the stalled upload goes on: it settles again from the change
            (40, None, UNSIZED, 10, False, UNSIZED, 90),  # a new version: told again
            (90, None, None, 60, True, None, None),
        ],
        [
            (10, None, UNSIZED, 10, False, UNSIZED, 60),
            (60, None, WRITTEN, 60, False, WRITTEN, 70),  # another reason: told
            (70, None, None, 70, True, None, None),
        ],
    ],
    ids=["a-local-writer", "no-stated-length", "changed-while-held", "one-reason-then-another"],
)
def test_a_settled_file_waits_while_its_hold_says_so(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    folder, path = Folder(), Path("in/a.wav")
    says: dict[Path, Hold] = {}
    asked: list[dict[Path, float]] = []

    def hold(unchanged_s: dict[Path, float]) -> dict[Path, Hold]:
        asked.append(unchanged_s)
        return {p: says[p] for p in unchanged_s if p in says}

    book = folder.book(settle_s=10, hold=hold)
    folder.files[path] = A
    book.observe(path)
    for now_s, change, held, unchanged_s, ready, told, next_s in steps:
        folder.now_s = now_s
        if change is not None:
            folder.files[path] = change
            book.observe(path)
        says.clear()
        says.update({path: held} if held else {})
        asked.clear()
        assert book.due() == ([path] if ready else [], []), now_s
        assert asked == ([{path: unchanged_s}] if unchanged_s is not None else []), now_s
        assert book.newly_held() == ([(path, told.reason)] if told else []), now_s
        if ready:
            assert book.take(path)
        assert book.next_check_s() == next_s, now_s
        assert next_s is None or next_s > now_s  # never a time already past: the loop would spin
    assert book.waiting == 0


def test_only_the_files_that_settled_are_held_and_the_others_are_ready() -> None:
    folder, free, held, young = Folder(), Path("in/a.wav"), Path("in/b.mp3"), Path("in/c.wav")
    book = folder.book(settle_s=10, hold=lambda unchanged_s: {held: UNSIZED} if held in unchanged_s else {})
    for path in (free, held):
        folder.files[path] = A
        book.observe(path)
    folder.now_s = 5
    folder.files[young] = A
    book.observe(young)
    folder.now_s = 10
    assert book.due() == ([free], []) and book.newly_held() == [(held, UNSIZED.reason)] and book.take(free)
    assert book.next_check_s() == 15  # the young file's settle time comes before the held one's recheck
    assert book.waiting == 2


def test_collisions_under_output_dir_span_every_watched_folder(tmp_path: Path) -> None:
    one, two, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    for folder in (one / "ward", two / "ward"):
        folder.mkdir(parents=True)
    for name in ("one/ward/visit.wav", "two/ward/visit.m4a", "two/ward/other.wav"):
        (tmp_path / name).write_bytes(b"x")
    walked = find_jobs((one, two), out)
    among = find_jobs_among([one / "ward/visit.wav", two / "ward/other.wav"], (one, two), out)
    assert [j.source for j in among.jobs] == [two / "ward/other.wav"]
    assert [(p.path, p.message) for p in among.problems] == [(p.path, p.message) for p in walked.problems if p.path.suffix == ".wav"]
    assert find_jobs_among([one / "ward/visit.wav"], (one, two)).jobs  # beside each recording, no collision


def test_the_day_report_rolls_over_at_midnight_even_when_idle(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    when = [datetime(2026, 12, 1, 23, 59, 30, tzinfo=timezone.utc)]
    report = DayReport(tmp_path, {"run_id": "r1", "model": "m", "device": "cpu", "options": {}}, clock=lambda: 0.0, now=lambda: when[0])
    report.add(FileResult(Path("in/a.wav"), FileStatus.DONE, duration_s=3.0))
    assert not report.new_day()
    when[0] += timedelta(minutes=1)
    assert report.new_day() and report.day == "2026-12-02"
    report.write(stopping=True)
    first = json.loads(day_report_path(tmp_path, "2026-12-01").read_text())
    assert first["counts"]["done"] == 1 and first["runs"][0]["stopped"].startswith("2026-12-02T00:00")
    second = json.loads(day_report_path(tmp_path, "2026-12-02").read_text())
    assert second["counts"]["done"] == 0 and second["runs"][0]["started"].startswith("2026-12-02T00:00")


def test_a_restart_counts_the_day_from_its_lines(tmp_path: Path) -> None:
    """A killed watcher's summary lags its lines (written at most once a minute): the next start
    counts what the lines say, and skips a line cut by the kill."""
    facts = {"run_id": "r1", "model": "m", "device": "cpu", "options": {}}
    report = DayReport(tmp_path, facts, clock=lambda: 0.0)
    report.write()
    for name in "ab":
        report.add(FileResult(Path(f"in/{name}.wav"), FileStatus.DONE, duration_s=2.0))
    with open(tmp_path / report.to_dict()["files"], "a") as lines:
        lines.write('{"file": "in/c.wav", "sta')  # killed mid-line
    again = DayReport(tmp_path, {**facts, "run_id": "r2"}, clock=lambda: 0.0)
    assert again.counts["done"] == 2 and again.audio_s == 4.0
    again.add(FileResult(Path("in/d.wav"), FileStatus.FAILED, error="cannot decode audio"))
    assert DayReport(tmp_path, facts, clock=lambda: 0.0).counts == {"done": 2, "no_speech": 0, "skipped": 0, "failed": 1, "tried_again": 0}


def test_a_failure_tried_again_is_counted_apart_and_its_line_says_when(tmp_path: Path) -> None:
    facts = {"run_id": "r1", "model": "m", "device": "cuda:0 (float16)", "options": {}}
    report = DayReport(tmp_path, facts, clock=lambda: 0.0)
    engine = FileResult(Path("in/a.wav"), FileStatus.FAILED, error="out of memory on cuda:0", cause=Cause.ENGINE)
    report.add(engine, tried_again_in_s=60.0)
    assert report.counts["tried_again"] == 1
    report.add(engine)  # the tries used up: a failure (its last line; each recording counts once)
    report.add(FileResult(Path("in/b.wav"), FileStatus.DONE, duration_s=2.0))
    expected = {"done": 1, "no_speech": 0, "skipped": 0, "failed": 1, "tried_again": 0}
    assert report.counts == expected
    lines = [json.loads(line) for line in (tmp_path / report.to_dict()["files"]).read_text().splitlines()]
    assert [line.get("tried_again_in_s") for line in lines] == [60.0, None, None]
    assert DayReport(tmp_path, {**facts, "run_id": "r2"}, clock=lambda: 0.0).counts == expected  # a restart recounts it so


def test_a_file_gone_while_it_settles_or_as_it_is_taken_leaves_nothing_in_the_book() -> None:
    """Found by review: the names of files removed before they were taken stayed for months."""
    now = [0.0]
    present = {Path("in/a.wav"), Path("in/b.wav")}
    book = Arrivals(settle_s=1.0, incomplete_wait_s=60.0, clock=lambda: now[0], stat=lambda p: Sighting(1, 1, 1, 1) if p in present else None)
    for path in sorted(present):
        book.observe(path)
    now[0] = 2.0
    ready, _ = book.due()
    present.discard(Path("in/b.wav"))  # gone between due() and take()
    assert [book.take(p) for p in ready] == [True, False]
    book.observe(Path("in/c.wav"))  # gone before it settled
    now[0] = 4.0
    assert book.due() == ([], [])
    assert book.siblings(Path("in"), "b") == [] and book.siblings(Path("in"), "c") == []
    assert book.siblings.names == {(Path("in"), "a"): {"a.wav"}}


def test_a_walk_looks_again_only_at_blocked_files_whose_folder_changed(tmp_path: Path) -> None:
    """Found by review: every walk (every 5 s on a polled share) planned every blocked file again,
    hashing a changed recording each time. Events name their folders; a walk compares their stat."""
    now = [0.0]
    book = Arrivals(settle_s=0.0, incomplete_wait_s=60.0, clock=lambda: now[0], stat=lambda p: Sighting(1, 1, 1, 1))
    blocked = tmp_path / "visit.wav"
    book.observe(blocked)
    assert book.due()[0] == [blocked] and book.take(blocked)
    assert book.block(blocked, "visit.txt is in the way", (tmp_path,)) is True
    assert book.block(blocked, "visit.txt is in the way", (tmp_path,)) is False  # said already
    assert book.look_again() == 0  # a walk: nothing changed there
    assert book.look_again({tmp_path / "elsewhere"}) == 0  # an event in another folder
    (tmp_path / "visit.txt").write_text("moved in and out")
    (tmp_path / "visit.txt").unlink()
    os.utime(tmp_path, ns=(1, 1))  # the folder's times move (the test's own writes may land within one tick)
    assert book.look_again() == 1
    assert book.due()[0] == [blocked]
