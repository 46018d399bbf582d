"""Issue 8 — nothing in the single-machine path depends on Ray: importing the CLI and a normal
transcribe never import it, and `--ray` without Ray installed is a setup error (exit 3) that
says what to install; the checks of the cluster's size run against a stand-in for Ray. Runs in
the default suite, with or without Ray installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import DATA_DIR, invoke_cli

CLIP = "hfdatasets__vctk_p225_001_mic1.flac"

NO_RAY_DRIVER = r"""
import sys
from carevoice.cli.app import app
assert "ray" not in sys.modules, "import carevoice.cli.app imported ray"
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
leaked = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("ray modules:", leaked)
"""


def test_the_cli_and_a_local_transcribe_never_import_ray(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / CLIP, tmp_path / "a.flac")
    done = subprocess.run(
        [sys.executable, "-c", NO_RAY_DRIVER, "transcribe", str(tmp_path), "-m", "tiny.en", "--device", "cpu", "-f", "txt"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ray modules: []"
    assert "1 transcribed · " in done.stderr
    assert (tmp_path / "a.txt").read_text(encoding="utf-8").strip()


def test_ray_without_ray_installed_is_a_setup_error_with_the_pip_command(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / CLIP, tmp_path / "a.flac")
    blocker = tmp_path / "no-ray"
    blocker.mkdir()
    # Shadows an installed Ray, as if it were missing.
    (blocker / "ray.py").write_text("raise ImportError('No module named ray')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    done = subprocess.run(
        [sys.executable, "-m", "carevoice", "transcribe", str(tmp_path / "a.flac"), "-m", "tiny.en", "--device", "cpu", "--ray", "local"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == [
        "error: --ray needs Ray, which is not installed",
        '  → install it: pip install "carevoice[ray]"  (or: pip install "ray[data]")',
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "no-ray"]


def test_ray_options_without_ray_are_usage_errors(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / CLIP, tmp_path / "a.flac")
    done = subprocess.run(
        [sys.executable, "-m", "carevoice", "transcribe", str(tmp_path), "-m", "tiny.en", "--ray-actors", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --ray-actors and --ray-files-per-task need --ray", "  → add --ray ADDRESS (e.g. --ray auto)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


class FakeRay:
    """Stands in for ray where only the cluster's size matters: start_ray_run's checks, no cluster."""

    def __init__(self, resources: dict[str, float]) -> None:
        self.resources, self.shutdowns = resources, 0
        context = SimpleNamespace(enable_progress_bars=True, execution_options=SimpleNamespace(preserve_order=False))
        self.data = SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: context))

    def init(self, **options: Any) -> None:
        pass

    def shutdown(self) -> None:
        self.shutdowns += 1

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True}]


def test_more_gpu_actors_than_the_cluster_has_gpus_is_a_setup_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each GPU actor holds one GPU: asking for more than the cluster has would wait for ever."""
    from carevoice.run import distributed

    shutil.copy(DATA_DIR / CLIP, tmp_path / "a.flac")
    fake = FakeRay({"CPU": 16.0, "GPU": 2.0})
    monkeypatch.setattr(distributed, "_import_ray", lambda: fake)
    result = invoke_cli("transcribe", tmp_path, "-m", "tiny.en", "--device", "cuda", "--ray", "127.0.0.1:6379", "--ray-actors", "3")
    assert result.exit_code == 3, result.stderr
    assert result.stderr.splitlines() == [
        "error: --ray-actors 3: the Ray cluster has 2 GPU(s), and each actor needs one",
        "  → lower --ray-actors, or add GPU nodes",
    ]
    assert fake.shutdowns == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


NATIVE_STDERR = r"""
import contextlib, os, sys
from pathlib import Path
from carevoice.run.distributed import native_stderr_to

log, empty = Path(sys.argv[1]), Path(sys.argv[2])
fds = sorted(os.listdir("/proc/self/fd"))
with native_stderr_to(log), contextlib.redirect_stdout(sys.stderr):
    os.write(2, b"E core_worker.cc: a C++ line\n")  # Ray's core worker writes to fd 2
    print("Task failed, retrying")  # Ray's cluster events on stdout: to the terminal's stderr
    print("progress", file=sys.stderr)
try:
    with native_stderr_to(log):
        os.write(2, b"second line\n")
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass

def results():
    with native_stderr_to(empty):
        yield 1
        yield 2

run = results()
next(run)
run.close()  # a run stopped early
os.write(2, b"after: fd 2 is the terminal again\n")
print("after: sys.stderr too", file=sys.stderr)
print("same fds:", sorted(os.listdir("/proc/self/fd")) == fds)
"""


def test_ray_s_native_stderr_goes_to_its_log_and_everything_is_put_back(tmp_path: Path) -> None:
    log, empty = tmp_path / "ray.log", tmp_path / "empty.log"
    done = subprocess.run([sys.executable, "-c", NATIVE_STDERR, str(log), str(empty)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert log.read_text(encoding="utf-8") == "E core_worker.cc: a C++ line\nsecond line\n"
    assert oct(log.stat().st_mode & 0o777) == "0o600"  # Ray's lines name the user's files
    assert done.stderr.splitlines() == ["Task failed, retrying", "progress", "after: fd 2 is the terminal again", "after: sys.stderr too"]
    assert done.stdout == "same fds: True\n"
    assert not empty.exists()  # nothing was written to it: not left behind
