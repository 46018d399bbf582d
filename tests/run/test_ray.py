"""Issue 8 — `transcribe --ray`: a real local Ray cluster on loopback (a head and one more worker
node, CPU only), the real tiny.en model, real clips. Every output must be byte-identical to the
single-process run, the report must list every file once, and killing an actor mid-run must lose
no file and transcribe none twice.

Marked `ray` (slow: a cluster start and model loads in every actor); `.ci/run` runs them with
`pytest -m ray` after installing the `ray` extra. Without Ray installed they are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATA_DIR, comparable_outputs, read_manifest

from carevoice.run.records import RECORD_SUFFIX

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")

# Eight short English clips and one file that is not audio.
CLIPS = sorted(
    (row for row in read_manifest(DATA_DIR / "manifest.tsv") if row["language"] == "en"),
    key=lambda row: float(row["duration_s"]),
)[:8]
# Not audio. It sorts last on purpose: a file that fails to decode still fills a row of its Ray
# task, and anywhere else it would shift the task boundaries off the batch boundaries. Batches must
# match the local run's for outputs to match bit for bit (CTranslate2's numbers for a chunk move in
# the last digits with its batch-mates; see carevoice/distributed.py).
BROKEN = "zz-broken.wav"
FILES_PER_TASK = 2  # one batch (--batch-size 2) per Ray task
COMMON = ("-m", "tiny.en", "--device", "cpu", "-f", "all", "--batch-size", "2", "--json")
RAY_BIN = Path(sys.executable).with_name("ray")

# Loaded by every Python process of the test cluster (PYTHONPATH): when CAREVOICE_TEST_CALL_LOG is
# set, each engine call and each finished file of carevoice.run.pipeline is appended to that log as
# "<pid> <event> <file>" (O_APPEND: one write per line, so lines never interleave). The production
# code knows nothing of it.
SITECUSTOMIZE = r'''
import os, sys
_LOG = os.environ.get("CAREVOICE_TEST_CALL_LOG")

def _append(event, path):
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {event} {os.fsencode(str(path)).hex()}\n".encode())
    finally:
        os.close(fd)

def _patch(pipeline):
    infer_batch, run = pipeline.infer_batch, pipeline.Transcriber.run

    def logged_infer_batch(engine, batch, options):
        outcome = infer_batch(engine, batch, options)
        for chunk in batch:
            _append("infer", chunk.file.job.source)
        return outcome

    def logged_run(self, jobs, on_result=lambda result: None):
        def note(result):  # called as soon as a file's outputs are written
            if result.status.value == "done":
                _append("written", result.source)
            on_result(result)

        return run(self, jobs, note)

    pipeline.infer_batch, pipeline.Transcriber.run = logged_infer_batch, logged_run

if _LOG:
    import importlib.abc, importlib.util

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "carevoice.run.pipeline":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Hook())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head (2 logical CPUs) and one worker node (2 logical CPUs) on loopback; always stopped."""
    # Ray's socket paths must stay short: a temp dir of our own, not pytest's deep one.
    root = Path(tempfile.mkdtemp(prefix="cv-ray-", dir="/tmp"))
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = root / "calls.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "CAREVOICE_TEST_CALL_LOG": str(log),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HOME": str(root),  # Ray keeps state (an auth token) under ~/.ray: not the user's
        "RAY_DEDUP_LOGS": "0",
    }
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=2", "--num-gpus=0", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY_BIN, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={root / 'ray'}",
             "--include-dashboard=false", *common],
            env=env, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        subprocess.run(
            [RAY_BIN, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
            env=env, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        yield Cluster(address, {**env, "RAY_ADDRESS": address}, log)
    finally:
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def copy_clips(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for clip in CLIPS:
        shutil.copy(DATA_DIR / clip["file"], folder / clip["file"])
    (folder / BROKEN).write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    return folder


def every_file(folder: Path) -> dict[str, bytes]:
    """Every output and hidden record, by name (recordings excluded; records without run id and stats,
    and without the decoder's name: Ray's CPU tasks decode every file with the ffmpeg program, a
    single process PCM, FLAC and MP3 with its PyAV workers, whose samples are the same bit for bit)."""
    files = comparable_outputs(folder, {c["file"] for c in CLIPS} | {BROKEN})
    for name, data in files.items():
        if name.endswith(RECORD_SUFFIX):
            record = json.loads(data)
            record["build"].pop("ffmpeg")
            files[name] = json.dumps(record, sort_keys=True).encode("ascii")
    return files


def carevoice(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carevoice", *map(str, args)], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """The single-process run of the same folder."""
    folder = copy_clips(tmp_path_factory.mktemp("local") / "clips")
    done = carevoice("transcribe", folder, *COMMON)
    assert done.returncode == 1 and done.stdout, done.stderr  # the broken file
    return folder, json.loads(done.stdout)


def calls(log: Path) -> list[tuple[int, str, str]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text(encoding="ascii").splitlines():
        pid, event, path = line.split()
        rows.append((int(pid), event, Path(os.fsdecode(bytes.fromhex(path))).name))
    return rows


def statuses(record: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {Path(f["file"]).name: f["status"] for f in record["files"]}


def test_a_ray_run_writes_what_the_single_process_run_writes(cluster: Cluster, reference: tuple[Path, dict], tmp_path: Path) -> None:  # type: ignore[type-arg]
    local, local_record = reference
    folder = copy_clips(tmp_path / "clips")
    cluster.log.unlink(missing_ok=True)
    done = carevoice(
        "transcribe", folder, *COMMON, "--ray", cluster.address, "--ray-actors", "2", "--ray-files-per-task", FILES_PER_TASK,
        env=cluster.env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    names = [Path(f["file"]).name for f in record["files"]]
    assert sorted(names) == sorted([c["file"] for c in CLIPS] + [BROKEN])  # every file, once
    assert statuses(record) == statuses(local_record)
    assert record["counts"] == {"done": 8, "no_speech": 0, "skipped": 0, "failed": 1}
    assert record["device"] == "ray:cpu ×2 (int8)"
    counters = ("engine_calls", "chunks", "widened_chunks", "continued_chunks", "redecoded_chunks")
    assert {c: record[c] for c in counters} == {c: local_record[c] for c in counters}  # the same batches, the same work
    assert sum(record["engine_calls_per_engine"]) == record["engine_calls"]
    broken = [f for f in record["files"] if f["file"].endswith(BROKEN)][0]
    assert broken["error"] == [f for f in local_record["files"] if f["file"].endswith(BROKEN)][0]["error"]
    assert f"error: {folder / BROKEN}: " in done.stderr
    assert done.stderr.splitlines()[-1].startswith("8 transcribed, 1 failed · 1 needs a person · ")
    # Ray's C++ log lines (its core worker's "constructor arguments in the object store" error) go
    # to a log file that the run names, not into the user's terminal.
    assert "core_worker" not in done.stderr
    named = [line for line in done.stderr.splitlines() if line.startswith("Ray's own messages: ")]
    assert len(named) == 1 and "core_worker" in Path(named[0].split(": ", 1)[1]).read_text(encoding="utf-8")
    assert every_file(folder) == every_file(local)  # outputs and hidden records, byte for byte
    events = calls(cluster.log)
    assert sorted(name for _, e, name in events if e == "written") == sorted(c["file"] for c in CLIPS)
    assert len({pid for pid, e, _ in events if e == "infer"}) == 2  # both actors ran batches


def test_a_ray_run_says_which_file_kept_a_persons_edit_aside(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    shutil.copy(DATA_DIR / CLIPS[0]["file"], folder / "visit.wav")
    first = carevoice("transcribe", folder, "-m", "tiny.en", "--device", "cpu", "-f", "txt")
    assert first.returncode == 0, first.stderr
    (folder / "visit.txt").write_text("corrected by a nurse\n", encoding="utf-8")
    shutil.copy(DATA_DIR / CLIPS[1]["file"], folder / "visit.wav")  # another recording under the same name
    done = carevoice("transcribe", folder, "-m", "tiny.en", "--device", "cpu", "-f", "txt", "--json", "--ray", cluster.address, env=cluster.env)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)["files"]
    (aside,) = [p for p in folder.iterdir() if "conflict" in p.name]
    assert aside.read_text(encoding="utf-8") == "corrected by a nurse\n"
    assert (entry["status"], entry["conflict"]) == ("done", str(aside)) and aside.name in entry["needs_person"]


def test_a_killed_actor_loses_no_file_and_transcribes_none_twice(cluster: Cluster, reference: tuple[Path, dict], tmp_path: Path) -> None:  # type: ignore[type-arg]
    """One actor process is SIGKILLed right after it wrote the files of its first task (while it
    works on its next one); Ray restarts it and retries what it had in hand.

    "Transcribed twice" means: a file written (finished) more than once, or an engine call on a
    file by a process that was not killed after another such call or after the file was written.
    Engine work that the killed actor did on files it had not yet written is lost with it and is
    done again once — that is what a kill costs, not a duplicate.

    The kill falls between tasks so that the retried task forms the batches a run without the kill
    forms, and the outputs can be compared bit for bit. A kill between two files of one batch would
    leave the rest of that batch to run in a smaller batch on the retry: whole, correct, transcribed
    once, but with the last digits of its numbers moved by the new batch-mates (see BROKEN above).
    """
    local, _ = reference
    folder = copy_clips(tmp_path / "clips")
    cluster.log.unlink(missing_ok=True)
    driver = subprocess.Popen(
        [sys.executable, "-m", "carevoice", "transcribe", folder, *COMMON, "--ray", cluster.address,
         "--ray-actors", "2", "--ray-files-per-task", str(FILES_PER_TASK)],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and driver.poll() is None and time.monotonic() < deadline:
        written = Counter(pid for pid, event, _ in calls(cluster.log) if event == "written")
        finished_a_task = [pid for pid, count in written.items() if count >= FILES_PER_TASK]
        if finished_a_task:
            victim = finished_a_task[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    stdout, stderr = driver.communicate(timeout=600)
    assert victim is not None, "no actor finished a file before the run ended"
    assert driver.returncode == 1, stderr
    record = json.loads(stdout)
    assert len(record["files"]) == len(CLIPS) + 1 and len(set(f["file"] for f in record["files"])) == len(record["files"])
    assert record["counts"] == {"done": 8, "no_speech": 0, "skipped": 0, "failed": 1}
    assert every_file(folder) == every_file(local)  # whole and identical

    events = calls(cluster.log)
    assert any(pid == victim for pid, _, _ in events)
    written = Counter(name for _, event, name in events if event == "written")
    assert written == Counter({c["file"]: 1 for c in CLIPS})  # each file finished exactly once
    for clip in CLIPS:
        name = clip["file"]
        survivors = [i for i, (pid, event, n) in enumerate(events) if n == name and event == "infer" and pid != victim]
        assert len(survivors) <= 1, f"{name} ran through the engine {len(survivors)} times"
        finished_at = next(i for i, (_, event, n) in enumerate(events) if n == name and event == "written")
        assert all(i < finished_at for i in survivors), f"{name} ran through the engine after it was written"
