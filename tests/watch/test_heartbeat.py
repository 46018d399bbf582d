"""`carevoice health` on a heartbeat whose process is gone: a killed watcher is unhealthy at once
where its pid can be looked for (the same host and pid namespace), and judged by its beat's age
alone where it cannot (a beat from another host or container, or written before beats said where)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from carevoice.files import pid_space
from carevoice.watch.heartbeat import Beat, Phase, health, read_beat, write_beat, writer_alive

DEADLINE_S = 60.0
ELSEWHERE = "ward-pc boot 0b7e5d2a-0000-4000-8000-000000000000 pid:[4026531836]"  # another host's pid space
# A process that writes its heartbeat as a watcher does (its own pid, its pid space), then waits.
BEATING = """
import os, sys, time
from pathlib import Path
from carevoice.files import pid_space
from carevoice.watch.heartbeat import Beat, Phase, write_beat
write_beat(Path(sys.argv[1]), Beat(os.getpid(), Phase.IDLE, time.time(), time.time(), done=2, pid_space=pid_space()))
print("beating", flush=True)
time.sleep(600)
"""


@pytest.fixture
def beating(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A live carevoice process (its command line says so) that has written its heartbeat."""
    path = tmp_path / "heartbeat.json"
    child = subprocess.Popen([sys.executable, "-c", BEATING, path, "carevoice"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "beating\n"
        yield child, path
    finally:
        child.kill()
        child.wait()


def test_a_killed_watcher_is_unhealthy_at_once(beating, run_cli) -> None:
    child, path = beating
    result = run_cli("health", "--heartbeat", path)
    assert result.exit_code == 0 and f"watcher (pid {child.pid}) idle" in result.stdout, result.stderr
    child.kill()
    child.wait()
    result = run_cli("health", "--heartbeat", path)
    assert result.exit_code == 1, result.stdout
    assert f"the watcher (pid {child.pid}) is not running: it ended without stopping (killed, out of memory?)" in result.stderr
    assert "see its log, and restart it" in result.stderr


def test_a_killed_watcher_not_yet_reaped_is_not_running(beating, run_cli) -> None:
    """Killed, its exit not yet collected by its parent (a zombie): the pid still exists."""
    child, path = beating
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it has ended, leaving it unreaped
    assert os.path.exists(f"/proc/{child.pid}")
    result = run_cli("health", "--heartbeat", path)
    assert result.exit_code == 1 and "is not running" in result.stderr, result.stdout


def test_a_pid_taken_by_another_program_is_not_the_watcher(tmp_path: Path, run_cli) -> None:
    other = subprocess.Popen(["sleep", "600"])
    try:
        write_beat(tmp_path / "hb.json", Beat(other.pid, Phase.BUSY, time.time(), time.time(), pid_space=pid_space()))
        result = run_cli("health", "--heartbeat", tmp_path / "hb.json")
    finally:
        other.kill()
        other.wait()
    assert result.exit_code == 1 and f"the watcher (pid {other.pid}) is not running" in result.stderr


@pytest.mark.parametrize("written_in", [ELSEWHERE, ""], ids=["another host or container", "a beat from before pid spaces"])
def test_a_beat_whose_pid_cannot_be_looked_for_is_judged_by_its_age(tmp_path: Path, run_cli, written_in: str) -> None:
    """A health run from the host on a container's heartbeat in a mounted volume: the pid names
    another process here, or none; the watcher may well be alive."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now (until the kernel hands it out again)
    beat = Beat(gone.pid, Phase.BUSY, time.time() - 5, time.time() - 50, done=4, pid_space=written_in)
    write_beat(tmp_path / "hb.json", beat)
    assert writer_alive(read_beat(tmp_path / "hb.json")) is None
    result = run_cli("health", "--heartbeat", tmp_path / "hb.json")
    assert result.exit_code == 0 and f"watcher (pid {gone.pid}) busy, beat 5 s ago" in result.stdout, result.stderr
    write_beat(tmp_path / "hb.json", replace(beat, updated_unix=time.time() - 400))
    result = run_cli("health", "--heartbeat", tmp_path / "hb.json")
    assert result.exit_code == 1 and "has not beaten for 400 s" in result.stderr


def _beat(phase: Phase) -> Beat:
    return Beat(4242, phase, 990.0, started_unix=0.0, pid_space=ELSEWHERE)


@pytest.mark.parametrize(
    ("beat", "alive", "ok", "says"),
    [
        (_beat(Phase.IDLE), True, True, "idle, beat 10 s ago"),
        (_beat(Phase.IDLE), None, True, "idle, beat 10 s ago"),
        (_beat(Phase.IDLE), False, False, "is not running: it ended without stopping (killed, out of memory?) after its last beat 10 s"),
        (_beat(Phase.BUSY), False, False, "is not running"),
        (_beat(Phase.STARTING), False, False, "is not running"),  # no half hour's grace for a dead model load
        (_beat(Phase.STOPPED), False, False, "stopped 10 s ago"),  # it said it stopped: that says more
    ],
)
def test_health_of_a_beat_whose_process_is_known_gone(beat: Beat, alive: bool | None, ok: bool, says: str) -> None:
    healthy, line = health(beat, now_unix=1000.0, max_age_s=300.0, alive=alive)
    assert healthy is ok and says in line


def test_a_beat_says_where_its_pid_is_the_watcher_and_this_process_is_not_it(tmp_path: Path) -> None:
    here = Beat(os.getpid(), Phase.IDLE, time.time(), time.time(), pid_space=pid_space())
    write_beat(tmp_path / "hb.json", here)
    assert read_beat(tmp_path / "hb.json") == here and pid_space()
    assert writer_alive(here) is False  # health itself is never the watcher (a pid taken again)
    assert writer_alive(replace(here, pid=1)) is False  # init, not a carevoice
    assert writer_alive(None) is None
