"""Shared fixtures: real ffmpeg, real offline models, real audio. Nothing here needs a network or a GPU."""

from __future__ import annotations

import csv
import fcntl
import functools
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jiwer
import pytest
from doubles import fake_cuda, fake_engines, fake_nvml  # noqa: F401  (the doubles' fixtures, for every test)
from typer.testing import CliRunner

from carevoice.cli.app import app
from carevoice.run.audio import Ffmpeg, find_ffmpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).parent / "data"
CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared" / "corpus"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Models are assembled into a per-session cache, never the user's."""
    os.environ["CAREVOICE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"  # a test must never reach a model hub
    # The locale chooses the Chinese script when nothing else does: tests that want one set it themselves.
    for name in ("LC_ALL", "LC_MESSAGES"):
        os.environ.pop(name, None)
    os.environ["LANG"] = "C.UTF-8"


@pytest.fixture(scope="session")
def ffmpeg_bin() -> Ffmpeg:
    return find_ffmpeg()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS_DIR / "manifest.tsv").is_file():
        pytest.fail(f"shared corpus missing at {CORPUS_DIR}: CI and development machines have it")
    return CORPUS_DIR


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="session")
def references() -> dict[str, dict[str, str]]:
    """tests/data/manifest.tsv rows by file name (reference text, language, licence)."""
    return {row["file"]: row for row in read_manifest(DATA_DIR / "manifest.tsv")}


def encode(ffmpeg: Ffmpeg, source: Path, target: Path, *codec_args: str) -> Path:
    """Re-encode audio with the real ffmpeg (test setup only)."""
    subprocess.run(
        [ffmpeg.path, "-nostdin", "-v", "error", "-y", "-i", str(source), *codec_args, str(target)], check=True
    )
    return target


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def invoke_cli(*args: object) -> CliResult:
    """Invoke `carevoice` in-process (usable from session-scoped fixtures too)."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """Invoke `carevoice` in-process; returns exit code, stdout and stderr separately."""
    return invoke_cli


def normalised_words(text: str) -> list[str]:
    """Lowercase words without punctuation, for WER comparisons ("Cold-hearted," -> cold hearted)."""
    text = re.sub(r"['’]", "", text.lower())
    return re.sub(r"[^\w\s]", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after normalised_words on both sides."""
    return float(jiwer.wer(" ".join(normalised_words(reference)), " ".join(normalised_words(hypothesis))))


def comparable_outputs(folder: Path, recordings: set[str] | frozenset[str]) -> dict[str, bytes]:
    """Every output and hidden record in a folder, by name (the recordings excluded); of a record,
    all but what differs between two runs by nature: the run's id and the files' stats (of a failure's
    note, only its error)."""
    import json

    from carevoice.run.failures import FAILED_SUFFIX
    from carevoice.run.records import RECORD_SUFFIX

    files = {}
    for p in sorted(folder.iterdir()):
        if p.name in recordings:
            continue
        if p.name.endswith(RECORD_SUFFIX):
            record = json.loads(p.read_text(encoding="ascii"))
            record.pop("run_id")
            record["input"] = record["input"]["sha256"]
            for entry in record["outputs"].values():
                entry.pop("stat")
            files[p.name] = json.dumps(record, sort_keys=True).encode("ascii")
        elif p.name.endswith(FAILED_SUFFIX):  # a failure's note: what failed, not when, in which run or with which stat
            note = json.loads(p.read_text(encoding="ascii"))
            files[p.name] = json.dumps({"error": note["error"]}, sort_keys=True).encode("ascii")
        else:
            files[p.name] = p.read_bytes()
    return files


# --- another user: root may read, write and enter everything ---------------------------------------

NOBODY = 65534  # the unprivileged uid and gid the permission tests act as when they run as root


@functools.cache
def _unprivileged_prefix() -> tuple[tuple[str, ...], str]:
    """(prefix, "") when the prefix starts a CareVoice that permissions apply to; ((), why not) else."""
    if os.geteuid() != 0:
        return (), ""  # already a user whom permissions apply to
    if shutil.which("setpriv") is None:
        return (), "running as root without setpriv (util-linux) to act as another user"
    prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import carevoice.cli.app"], check=False, capture_output=True, text=True, cwd=REPO_ROOT
    )
    if probe.returncode != 0:
        return (), f"uid {NOBODY} cannot start CareVoice here: {probe.stderr.strip()[-200:]}"
    return prefix, ""


def as_another_user() -> tuple[str, ...]:
    """The command prefix that starts a child whom file permissions apply to: setpriv to uid and gid
    65534 with no groups when the tests run as root, nothing when they do not. Skips the test,
    saying why, when neither works (root without setpriv, or a Python that user cannot read)."""
    prefix, why_not = _unprivileged_prefix()
    if why_not:
        pytest.skip(why_not)
    return prefix


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block in this process as a user whom file permissions apply to: uid and gid 65534,
    no groups, when the tests run as root (the saved uid stays 0, so root comes back after it);
    nothing changes for an unprivileged user. Paths the block uses must be reachable by that user
    (:func:`open_folder`: pytest's own temporary folders are root's alone)."""
    if os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, 0)
    os.setresuid(NOBODY, NOBODY, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)
        os.setgroups(groups)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A new folder every user may enter and write in (for tests acting as another user); removed
    afterwards, whatever modes the test left inside it."""
    folder = Path(tempfile.mkdtemp(prefix="carevoice-open-"))
    folder.chmod(0o777)
    yield folder
    folder.chmod(0o777)
    for below, dirs, _ in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(below, name), 0o777)
    shutil.rmtree(folder, ignore_errors=True)


ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z])")


def run_on_terminal(args: list[str], cwd: Path | None = None, columns: int = 120) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (so rich draws its live progress, as in a user's shell);
    returns (exit, stdout, what the terminal showed with ANSI removed and each redraw on a line of its own)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    stdout: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout.append(child.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    reader.join()
    code = child.wait(timeout=600)
    terminal = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "\n")
    return code, b"".join(stdout).decode("utf-8"), terminal
