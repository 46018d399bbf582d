"""Issue 22: inputs and folders below a folder this user may not enter (what systemd's
ProtectHome=yes does to /home), through the real CLI run as a user whom permissions apply to
(conftest.as_another_user: root enters everything). One clear line naming the folder and what to
do: a usage error (exit 2) for a folder to watch or write to, a failed file for an input of a batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, as_another_user

ENGINE = ("-m", "tiny.en", "--device", "cpu")
CALL = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
HINT = "let this user enter it (x permission); a systemd unit with ProtectHome=yes cannot enter /home: use ProtectHome=read-only and ReadWritePaths="


def carevoice(*args: object, cache: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as another user, with a cache that user can write (the session's is root's)."""
    env = {**os.environ, "CAREVOICE_CACHE_DIR": str(cache), "HOME": str(cache), "HF_HOME": str(cache / "hf")}
    command = [*as_another_user(), sys.executable, "-m", "carevoice", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300, check=False)


@pytest.fixture
def home(open_folder: Path, data_dir: Path) -> Path:
    """``home/ward/inbox/visit.flac`` with ``home`` closed to everyone but root, and ``ok.flac`` beside ``home``."""
    inbox = open_folder / "home" / "ward" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copyfile(data_dir / CALL, inbox / "visit.flac")
    shutil.copyfile(data_dir / CALL, open_folder / "ok.flac")
    (open_folder / "cache").mkdir(mode=0o777)
    for path in (inbox, open_folder / "cache"):
        path.chmod(0o777)
    (open_folder / "home").chmod(0o000)
    return open_folder / "home"


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line or line.startswith("  → ")]


@pytest.mark.parametrize("given", ["ward/inbox/visit.flac", "ward/inbox"], ids=["a file", "a folder"])
def test_transcribe_fails_an_input_it_cannot_reach_and_goes_on(home: Path, given: str) -> None:
    blocked, ok = home / given, home.parent / "ok.flac"
    done = carevoice("transcribe", blocked, ok, *ENGINE, cache=home.parent / "cache")
    assert done.returncode == 1, done.stderr
    assert errors(done.stderr) == [f"error: {blocked}: cannot enter folder {home} (permission denied) — {HINT}"]
    assert f"done {ok} (" in done.stderr and (home.parent / "ok.txt").is_file()


def test_watch_of_a_folder_it_cannot_enter_is_a_usage_error(home: Path) -> None:
    inbox = home / "ward" / "inbox"
    done = carevoice("watch", inbox, "--heartbeat", home.parent / "beat.json", *ENGINE, cache=home.parent / "cache")
    assert done.returncode == 2, done.stderr
    assert errors(done.stderr) == [f"error: cannot watch {inbox}: cannot enter folder {home} (permission denied)", f"  → {HINT}"]


def test_an_output_folder_it_cannot_enter_is_a_usage_error(home: Path) -> None:
    out = home / "ward" / "transcripts"
    done = carevoice("transcribe", home.parent / "ok.flac", "-o", out, *ENGINE, cache=home.parent / "cache")
    assert done.returncode == 2, done.stderr
    assert errors(done.stderr) == [f"error: --output-dir {out}: cannot enter folder {home} (permission denied)", f"  → {HINT}"]
