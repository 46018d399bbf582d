"""Issue 5 — interruption and crashes: Ctrl-C and SIGTERM at any moment leave every file whole or
untouched, say what finished and exit 130/143; SIGKILL never leaves a half-written file under a final
name, and the next run cleans up and does exactly the missing work; two runs on one folder never
transcribe a file twice. The real-kill tests drive `python -m carevoice` with the real tiny.en model
and compare every output byte for byte with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import invoke_cli

from carevoice import interrupts
from carevoice.errors import ExitCode, Interrupted
from carevoice.run import writers
from carevoice.run.locks import LOCK_SUFFIX, lock_path, remove_stale_locks, try_lock
from carevoice.run.records import read_record
from carevoice.run.writers import TEMP_SUFFIX

ENGINE = ("-m", "tiny.en", "--device", "cpu")
FORMATS = ("txt", "srt", "json")
# Six short clips (1.5-3.9 s): three engine calls at --batch-size 2, so a run has several write phases.
CLIPS = {
    "a.flac": "hfdatasets__vctk_p225_001_mic1.flac",
    "b.wav": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
    "c.wav": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav",
    "d.flac": "hfdatasets__vctk_p225_002_mic1.flac",
    "e.wav": "lhotse__LJ002-0035.wav",
    "f.mp3": "mfa__common_voice_en_22058266.mp3",
}
RUN_OPTIONS = (*ENGINE, "--batch-size", "2", "-f", ",".join(FORMATS))


def outputs_of(folder: Path, name: str) -> list[Path]:
    stem = (folder / name).with_suffix("")
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in FORMATS]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((TEMP_SUFFIX, LOCK_SUFFIX)))


def complete(folder: Path, name: str) -> bool:
    record = read_record((folder / name).with_suffix(""))
    return bool(record and record.complete)


def visible_outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lstrip(".") in FORMATS and not p.name.startswith(".")}


def carevoice(*args: object) -> list[str]:
    return [sys.executable, "-m", "carevoice", *map(str, args)]


# --- the deferring signal handlers, in-process ------------------------------------------------------


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, Interrupted), (signal.SIGINT, KeyboardInterrupt)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_deferred_section_is_raised_when_it_ends(signum: int, raised: type[BaseException]) -> None:
    restore = interrupts.install()
    reached_end_of_section = False
    try:
        with pytest.raises(raised) as caught:
            with interrupts.deferred():
                os.kill(os.getpid(), signum)
                time.sleep(0.05)  # the handler has run by now; it only took note
                reached_end_of_section = True
        assert reached_end_of_section
        if raised is Interrupted:
            assert caught.value.exit_code is ExitCode.TERMINATED  # type: ignore[attr-defined]
        with pytest.raises(raised):
            os.kill(os.getpid(), signum)  # outside a section: at once
            time.sleep(1)
    finally:
        restore()


@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, Interrupted), (signal.SIGINT, KeyboardInterrupt)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_whose_exception_a_finalizer_dropped_is_raised_by_the_next_check(
    signum: int, raised: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler raises in whatever the main thread runs; inside a finalizer Python drops the
    exception ("Exception ignored"). A watcher lost its SIGTERM that way (1 stop in 9 hung)."""

    class SignalsWhenCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    reported: list[object] = []  # what Python reports as "Exception ignored"
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    restore = interrupts.install()
    try:
        interrupts.check()  # no signal yet: nothing to raise
        SignalsWhenCollected()  # collected at once
        dropped = True  # the finalizer's exception did not reach this code
        with pytest.raises(raised):
            interrupts.check()
        with pytest.raises(raised):
            interrupts.check()  # the command was asked to stop: every later turn of a loop stops too
        with interrupts.deferred():
            interrupts.check()  # inside a section it waits, as the handler does
        with pytest.raises(raised):
            interrupts.check()
    finally:
        restore()
    assert dropped
    interrupts.check()  # the handlers restored: the signal belonged to that command only
    assert reported == []  # ours, raised again by check(): no error to report
    assert sys.unraisablehook == reported.append  # restored with the handlers


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(("at_writes", "finished_files"), [((2,), 3), ((2, 7), 2)], ids=["one-signal", "a-second-signal"])
def test_a_signal_while_a_file_is_written_lets_that_file_finish_and_counts_it(
    signum: int, code: int, at_writes: tuple[int, ...], finished_files: int, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal is sent from inside the first file's txt write (after its record, before srt/json).
    The three files are one batch (8 chunks a batch on the CPU), all back from the engine: one signal
    lets the run finish them (issue 22: a stop finishes the batch in progress). A second signal, sent
    inside the second file's txt write, stops the run once that file is written."""
    for name in ("a.flac", "b.wav", "c.wav"):
        shutil.copy(data_dir / CLIPS[name], tmp_path / name)
    real_write = writers.atomic_write
    writes: list[str] = []

    def signal_during_writes(path: Path, data: bytes) -> None:
        writes.append(path.name)
        if len(writes) in at_writes:
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
        real_write(path, data)

    monkeypatch.setattr(writers, "atomic_write", signal_during_writes)
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "-f", ",".join(FORMATS))
    assert result.exit_code == code, result.stderr
    finished = [n for n in ("a.flac", "b.wav", "c.wav") if complete(tmp_path, n)]
    # One file's outputs are 5 writes (record, txt, srt, json, complete record): the 2nd and 7th are txt's.
    assert len(finished) == finished_files
    assert [writes[i - 1] for i in at_writes] == [f"{Path(n).stem}.txt" for n in finished[: len(at_writes)]]
    for name in finished:
        assert all(p.is_file() for p in outputs_of(tmp_path, name))
        assert [ln for ln in result.stderr.splitlines() if name in ln][0].startswith(f"done {tmp_path / name} (")
    for name in {"a.flac", "b.wav", "c.wav"} - set(finished):
        assert not any(p.exists() for p in outputs_of(tmp_path, name)), name
    assert result.stderr.splitlines()[-1].startswith(f"interrupted: {finished_files} transcribed · ")
    assert leftovers(tmp_path) == []


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie is dead, waiting for its (new) parent to reap it


def test_an_interrupt_stops_running_ffmpeg_at_once(tmp_path: Path, data_dir: Path) -> None:
    """ffmpeg runs in its own session (a terminal's Ctrl-C does not reach it), so CareVoice must stop
    it itself; here it is a wrapper that hangs, with a child, until its 60 s timeout."""
    pids = tmp_path / "pids"
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nsleep 300 &\necho $! >> "{pids}"\nwait\n', encoding="utf-8")
    fake.chmod(0o755)
    folder = tmp_path / "visits"
    folder.mkdir()
    shutil.copy(data_dir / CLIPS["a.flac"], folder / "a.flac")
    child = subprocess.Popen(carevoice("transcribe", folder, *ENGINE), stderr=subprocess.PIPE, text=True, env={**os.environ, "CAREVOICE_FFMPEG": str(fake)})
    for _ in range(600):
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        time.sleep(0.1)
    started_pids = [int(p) for p in pids.read_text().split()]
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == ExitCode.TERMINATED, stderr
    assert time.monotonic() - sent < 30, "the interrupted run waited for ffmpeg"
    assert stderr.splitlines()[-1] == "interrupted: nothing transcribed"
    for _ in range(50):
        if all(_gone(pid) for pid in started_pids):
            break
        time.sleep(0.1)
    assert all(_gone(pid) for pid in started_pids), "ffmpeg (or its child) outlived the interrupted run"
    assert leftovers(folder) == []


# --- SIGKILL at every step of writing one file's outputs ------------------------------------------

# Runs CareVoice with a fake engine (the writes are under test, not the model) and SIGKILLs itself just
# before or just after the k-th rename of a finished temporary file onto its final name.
KILL_DRIVER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])  # tests/, for the doubles
from doubles import fake_load
from carevoice.engine.whisper import Engine

Engine.load = fake_load()
kill_at, when = int(sys.argv[2]), sys.argv[3]
real_replace, count = os.replace, 0

def replace(src, dst):
    global count
    count += 1
    if count == kill_at and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
    if count == kill_at and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
sys.argv = ["carevoice", *sys.argv[4:]]
from carevoice.cli.app import main
main()
"""


def run_driver(kill_at: int, when: str, *args: object) -> subprocess.CompletedProcess[str]:
    tests = Path(__file__).parents[1]
    return subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, str(tests), str(kill_at), when, *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def fake_reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fake-reference")
    shutil.copy(data_dir / CLIPS["a.flac"], folder / "a.flac")
    done = run_driver(0, "never", "transcribe", folder, *ENGINE, "-f", ",".join(FORMATS))
    assert done.returncode == 0, done.stderr
    return visible_outputs(folder)


# One file's outputs are 5 renames: record (incomplete), txt, srt, json, record (complete).
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_sigkill_at_any_write_leaves_no_half_file_and_the_rerun_finishes_it(
    kill_at: int, when: str, tmp_path: Path, data_dir: Path, fake_reference: dict[str, bytes]
) -> None:
    shutil.copy(data_dir / CLIPS["a.flac"], tmp_path / "a.flac")
    killed = run_driver(kill_at, when, "transcribe", tmp_path, *ENGINE, "-f", ",".join(FORMATS))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    for name, data in visible_outputs(tmp_path).items():
        assert data == fake_reference[name], f"{name} is not whole after SIGKILL"
    temps = [n for n in leftovers(tmp_path) if n.endswith(TEMP_SUFFIX)]
    assert len(temps) == (1 if when == "before" else 0)  # the fsynced temp of the write that was cut
    assert complete(tmp_path, "a.flac") == (kill_at == 5 and when == "after")
    was_complete = complete(tmp_path, "a.flac")

    rerun = run_driver(0, "never", "transcribe", tmp_path, *ENGINE, "-f", ",".join(FORMATS))
    assert rerun.returncode == 0, rerun.stderr
    expected = "skipped" if was_complete else "done"
    assert rerun.stderr.splitlines()[-1].startswith("1 already up to date" if was_complete else "1 transcribed · ")
    assert [ln.split()[0] for ln in rerun.stderr.splitlines() if "a.flac" in ln] == [expected]
    assert visible_outputs(tmp_path) == fake_reference
    assert leftovers(tmp_path) == [] and complete(tmp_path, "a.flac")


# --- the real thing: random Ctrl-C, SIGTERM and SIGKILL, then byte-for-byte comparison ------------


@dataclass
class Reference:
    folder: Path
    outputs: dict[str, bytes]
    wall_s: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Reference:
    """One uninterrupted run over the six clips."""
    folder = tmp_path_factory.mktemp("reference")
    for name, clip in CLIPS.items():
        shutil.copy(data_dir / clip, folder / name)
    started = time.monotonic()
    done = subprocess.run(carevoice("transcribe", folder, *RUN_OPTIONS), capture_output=True, text=True, timeout=600)
    wall_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    outputs = visible_outputs(folder)
    assert len(outputs) == len(CLIPS) * len(FORMATS)
    return Reference(folder, outputs, wall_s)


def copy_inputs(target: Path, data_dir: Path) -> None:
    target.mkdir()
    for name, clip in CLIPS.items():
        shutil.copy(data_dir / clip, target / name)


def assert_outputs_whole(folder: Path, reference: Reference, context: str) -> None:
    for name, data in visible_outputs(folder).items():
        assert data == reference.outputs[name], f"{name} differs from the uninterrupted run ({context})"


ALLOWED_EXITS = {
    signal.SIGINT: {int(ExitCode.INTERRUPTED), -signal.SIGINT, 0},  # -2: before Python reached CareVoice's code
    signal.SIGTERM: {int(ExitCode.TERMINATED), -signal.SIGTERM, 0},
    signal.SIGKILL: {-signal.SIGKILL, 0},  # 0: the run had finished
}


def finish_and_compare(folder: Path, reference: Reference, report: Path) -> None:
    """Rerun to the end: it must do exactly the missing files, and leave the uninterrupted run's bytes."""
    missing = {name for name in CLIPS if not complete(folder, name)}
    final = subprocess.run(carevoice("transcribe", folder, *RUN_OPTIONS, "--report", report), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    statuses = {Path(f["file"]).name: f["status"] for f in json.loads(report.read_text(encoding="utf-8"))["files"]}
    assert {n for n, s in statuses.items() if s == "done"} == missing  # exactly the missing work
    assert {n for n, s in statuses.items() if s == "skipped"} == set(CLIPS) - missing
    assert visible_outputs(folder) == reference.outputs
    assert leftovers(folder) == []
    for name in CLIPS:
        ours, theirs = (read_record((f / name).with_suffix("")) for f in (folder, reference.folder))
        assert ours and theirs and ours.complete and (ours.model, ours.model_sha256, ours.text) == (theirs.model, theirs.model_sha256, theirs.text)
        assert ours.input is not None and theirs.input is not None and ours.input.sha256 == theirs.input.sha256
        assert {k: v.sha256 for k, v in ours.outputs.items()} == {k: v.sha256 for k, v in theirs.outputs.items()}


# Runs the real CLI (real tiny.en) and sends itself a signal at a point the test chooses:
#   after-file:N      just after the N-th file's outputs and record are written
#   rename:K:before   just before the K-th rename of a finished temporary file onto its final name
#   rename:K:after    just after it
POINT_DRIVER = r"""
import os, signal, sys
from carevoice.run import pipeline
point, signum = sys.argv[1], getattr(signal, sys.argv[2])
kind, _, where = point.partition(":")

def fire():
    os.kill(os.getpid(), signum)

if kind == "after-file":
    real_write, written = pipeline.write_outputs, [0]
    def write_outputs(*args, **kwargs):
        paths = real_write(*args, **kwargs)
        written[0] += 1
        if written[0] == int(where):
            fire()
        return paths
    pipeline.write_outputs = write_outputs
else:
    count, when = where.split(":")
    real_replace, renames, folder = os.replace, [0], os.path.abspath(sys.argv[4])
    def replace(src, dst):
        ours = os.path.abspath(dst).startswith(folder + os.sep)  # not the model cache's files
        renames[0] += ours
        if ours and renames[0] == int(count) and when == "before":
            fire()
        real_replace(src, dst)
        if ours and renames[0] == int(count) and when == "after":
            fire()
    os.replace = replace
sys.argv = ["carevoice", *sys.argv[3:]]
from carevoice.cli.app import main
main()
"""

EXIT_OF = {signal.SIGINT: int(ExitCode.INTERRUPTED), signal.SIGTERM: int(ExitCode.TERMINATED), signal.SIGKILL: -signal.SIGKILL}
# (point, files complete after a SIGKILL there): with --batch-size 2 the six clips go in three batches of two, in
# job order (a.flac b.wav | c.wav d.flac | e.wav f.mp3), and each file's outputs are 5 renames
# (record, txt, srt, json, complete record).
KILL_POINTS = {
    "after-file:1": 1,  # between the two files of one batch
    "after-file:2": 2,  # between two batches
    "rename:8:after": 1,  # inside the second file's writes: its srt is in place, its json not yet
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_a_chosen_point_then_a_rerun_gives_the_uninterrupted_run_byte_for_byte(
    point: str, signum: signal.Signals, tmp_path: Path, data_dir: Path, reference: Reference
) -> None:
    """What docs/reruns.md promises of a resumed run: the files finished before the interrupt are kept
    as they are, the rest are transcribed, and every output is byte for byte the uninterrupted run's
    (text, times, probabilities, the JSON's every digit); the record lists the same outputs. Files
    that a stop let finish (the batch in progress) are byte for byte the uninterrupted run's too."""
    folder = tmp_path / "visits"
    copy_inputs(folder, data_dir)
    killed = subprocess.run(
        [sys.executable, "-c", POINT_DRIVER, point, signum.name, "transcribe", folder, *RUN_OPTIONS],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == EXIT_OF[signum], killed.stderr
    finished = [n for n in CLIPS if complete(folder, n)]
    if signum is signal.SIGKILL:
        assert finished == list(CLIPS)[: KILL_POINTS[point]]
    else:
        # SIGINT/SIGTERM finish the batch of the file being written, and any batch on the engine then
        # (the next one may be, or may still wait for it): whole batches of two, in job order.
        assert finished == list(CLIPS)[: len(finished)] and len(finished) % 2 == 0 and len(finished) >= 2, finished
    assert_outputs_whole(folder, reference, f"{signum.name} at {point}")
    if signum is not signal.SIGKILL:
        assert killed.stderr.splitlines()[-1].startswith(f"interrupted: {len(finished)} transcribed · ")
        for name in finished:
            assert any(ln.startswith(f"done {folder / name} (") for ln in killed.stderr.splitlines()), name
        assert leftovers(folder) == []
    finish_and_compare(folder, reference, tmp_path / "finish.json")


@pytest.mark.soak
def test_random_interrupts_and_kills_then_a_rerun_match_an_uninterrupted_run_byte_for_byte(
    tmp_path: Path, data_dir: Path, reference: Reference
) -> None:
    """Runs over one folder are interrupted one after the other at random moments, each picking up
    what the last left; once a folder is finished it is checked and a fresh copy takes its place."""
    rng = random.Random(int(os.environ.get("CAREVOICE_KILL_SEED", "20250")))
    plan = [signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGINT]
    chains = 1
    folder = tmp_path / "visits-1"
    copy_inputs(folder, data_dir)
    history = []
    for signum in plan:
        delay_s = rng.uniform(0.1, reference.wall_s)
        left_before = set(leftovers(folder))  # a SIGKILLed run's temp and lock files, until a run plans again
        child = subprocess.Popen(carevoice("transcribe", folder, *RUN_OPTIONS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay_s)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=300)
        history.append((signum.name, round(delay_s, 2), child.returncode, sum(complete(folder, n) for n in CLIPS)))
        context = f"{signum.name} after {delay_s:.2f} s, exit {child.returncode}; so far {history}"
        if child.returncode == 1 and "Fatal Python error: init_import_site" in stderr:
            continue  # Ctrl-C while the interpreter itself was starting, before any CareVoice code
        assert child.returncode in ALLOWED_EXITS[signum], f"{context}\n{stderr}"
        assert stdout == ""
        assert_outputs_whole(folder, reference, context)
        if child.returncode in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
            assert stderr.splitlines()[-1].startswith("interrupted"), context
        if signum is not signal.SIGKILL:
            assert set(leftovers(folder)) <= left_before, context  # it added no temp or lock file of its own
            for name in CLIPS:  # whole or untouched: all of a file's outputs, and its record complete, or none
                present = [p.exists() for p in outputs_of(folder, name)]
                assert present in ([True] * 3, [False] * 3) and complete(folder, name) == all(present), (name, context)
        if all(complete(folder, name) for name in CLIPS):
            finish_and_compare(folder, reference, tmp_path / f"finish-{chains}.json")
            chains += 1
            folder = tmp_path / f"visits-{chains}"
            copy_inputs(folder, data_dir)
    print("kills (signal, after s, exit, files complete):", history)
    finish_and_compare(folder, reference, tmp_path / f"finish-{chains}.json")
    partial = [h for h in history if 0 < h[3] < len(CLIPS)]
    assert partial, f"no kill left a folder part-done: {history}"  # the resume path was exercised


# --- two runs on one folder at once ---------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_on_one_folder_transcribe_each_file_once(tmp_path: Path, data_dir: Path, reference: Reference) -> None:
    folder = tmp_path / "visits"
    copy_inputs(folder, data_dir)
    reports = [tmp_path / "first.json", tmp_path / "second.json"]
    children = [
        subprocess.Popen(carevoice("transcribe", folder, *RUN_OPTIONS, "--decode-workers", "1", "--report", r), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in reports
    ]
    results = [child.communicate(timeout=600) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    records = [json.loads(r.read_text(encoding="utf-8")) for r in reports]
    done_by = {name: [i for i, rec in enumerate(records) for f in rec["files"] if Path(f["file"]).name == name and f["status"] == "done"] for name in CLIPS}
    print("transcribed by run:", done_by)
    assert all(len(runs) == 1 for runs in done_by.values()), done_by  # once each, never twice
    for rec in records:
        for entry in rec["files"]:
            if entry["status"] == "skipped":
                assert entry["note"] in ("being transcribed by another CareVoice process", "transcribed by another CareVoice process meanwhile")
    assert visible_outputs(folder) == reference.outputs
    assert leftovers(folder) == []


# --- the lock itself -------------------------------------------------------------------------------

HOLD_LOCK = r"""
import sys, time
from pathlib import Path
from carevoice.run.locks import try_lock
lock = try_lock(Path(sys.argv[1]))
print("held" if lock else "busy", flush=True)
if lock and sys.argv[2] == "hold":
    time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_busy_until_it_is_released_or_dies(tmp_path: Path) -> None:
    stem = tmp_path / "out" / "visit"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(stem), "hold"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert try_lock(stem) is None  # busy: the other process works on it
        assert remove_stale_locks(stem.parent) == 0 and lock_path(stem).exists()
    finally:
        holder.kill()  # SIGKILL: the kernel drops its flock
        holder.wait()
    assert lock_path(stem).exists()  # left behind by the killed holder ...
    assert remove_stale_locks(stem.parent) == 1 and not lock_path(stem).exists()  # ... and cleaned up
    lock = try_lock(stem)
    assert lock is not None
    probe = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(stem), "probe"], capture_output=True, text=True)
    assert probe.stdout.strip() == "busy"
    lock.release()
    assert not lock_path(stem).exists()
    probe = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(stem), "probe"], capture_output=True, text=True)
    assert probe.stdout.strip() == "held"
    lock.release()  # twice is harmless
