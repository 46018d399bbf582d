"""The long soaks of `carevoice watch` (opt in: `pytest -m soak`; CAREVOICE_SOAK_MINUTES, default 60).

Arrivals: benchmarks/watch_soak.py drops thousands of English corpus clips into a watched folder
in bursts (half renamed into place, half written in pieces) while the watcher's RSS is sampled.
Every file must be transcribed exactly once and none fail, the watcher must stop on SIGTERM with
exit 0, and its memory must stay flat once warm: what the service keeps for each file it has seen
(its place in the book of arrivals) is a few hundred bytes, so the mean RSS of the run's last sixth
may be at most RSS_GROWTH_LIMIT (benchmarks/watch_soak.py) times that of its third sixth (batches
of different sizes move it by tens of MiB either way).

Faults: benchmarks/watch_faults.py mixes arrivals with every fault of issue 22 (removals and rewrites
in gather windows, re-exports, blocking outputs moved away, stalled uploads of formats that do not
state their length, folders made unwritable and unenterable, SIGTERM and SIGKILL restarts, polled
watchers) and judges the end: each of its checks must pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

ROOT = REPO_ROOT


@pytest.mark.soak
def test_an_hour_of_arrivals_keeps_memory_flat(tmp_path: Path) -> None:
    minutes = float(os.environ.get("CAREVOICE_SOAK_MINUTES", "60"))
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "watch_soak.py"), "--minutes", str(minutes), "--every", "5", "--out", str(tmp_path)],
        check=True,
        timeout=minutes * 60 + 1200,
    )
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["files_uploaded"] >= 40 * minutes  # thousands in an hour
    assert result["files_done"] == result["files_uploaded"]
    assert (result["files_failed"], result["files_done_twice"], result["files_never_done"]) == (0, 0, 0)
    assert result["watcher_exit"] == 0
    assert result["rss_mib"]["last_sixth_over_third_sixth"] <= result["rss_mib"]["limit"], result["rss_series"]


@pytest.mark.soak
def test_an_hour_of_faults_ends_with_each_recordings_own_transcript(tmp_path: Path) -> None:
    minutes = float(os.environ.get("CAREVOICE_SOAK_MINUTES", "60"))
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "watch_faults.py"), "--minutes", str(minutes), "--out", str(tmp_path)],
        check=False,
        timeout=minutes * 60 + 1800,  # then the files unblocked last get one walk (300 s) each, and the checks run
    )
    assert (tmp_path / "faults.json").exists(), f"the soak ended (exit {run.returncode}) before its checks"
    result = json.loads((tmp_path / "faults.json").read_text())
    assert result["counts"]["recordings"] >= 6 * minutes  # an episode every 5 s, but for the idle windows
    failed = {name: check for name, check in result["checks"].items() if not check["passed"]}
    assert not failed, (tmp_path / "faults.md").read_text() + json.dumps(failed, indent=1)
    assert run.returncode == 0
