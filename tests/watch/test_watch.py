"""`carevoice watch` end to end: the real CLI in a child process, real ffmpeg, the real tiny.en
model, and files copied into its folder the ways uploads really arrive (in pieces, renamed into
place, replaced by a new version, deleted before they settle, corrupt, cut off half way).

Every transcript is compared with what `carevoice transcribe` writes for the same recording, and
the waiting is for lines the watcher writes (with a generous deadline), never for a fixed time:
an upload written slower than the test expects only means the watcher waits for the rest.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DATA_DIR, invoke_cli
from doubles import h200s
from watchers import CLIPS, DEADLINE_S, ENGINE, Watcher, done, driven, reference, start, transcript, upload  # noqa: F401  (reference, start: fixtures)

from carevoice import interrupts
from carevoice.results import FileResult
from carevoice.run import writers
from carevoice.run.locks import lock_path, try_lock
from carevoice.run.writers import HOST_TAG, TEMP_SUFFIX
from carevoice.settings import (
    DecodeSettings,
    Device,
    EngineSettings,
    OutputFormat,
    TranscribeSettings,
    WatchSettings,
)
from carevoice.watch.heartbeat import ENGINE_FAILING_FILES, Phase, health, read_beat
from carevoice.watch.log import WatchLog
from carevoice.watch.service import Service


@pytest.mark.slow
def test_uploads_of_every_kind_are_each_transcribed_once_as_they_settle(tmp_path: Path, start, reference) -> None:
    inbox, reports = tmp_path / "inbox", tmp_path / "reports"
    (inbox / "ward 3").mkdir(parents=True)
    (inbox / "jfk.wav").write_bytes(upload("jfk"))  # waiting when the service starts
    (inbox / "finished.wav").write_bytes(upload("press"))
    assert invoke_cli("transcribe", inbox / "finished.wav", *ENGINE, "-q").exit_code == 0  # done before the service existed
    finished_outputs = {p.name: p.stat().st_mtime_ns for p in inbox.glob("finished.*")}

    watcher = start(inbox, "--settle", "1.5s", "--gather", "0.2s", "--report-dir", reports)
    watcher.wait_for(r"listening for file-system events")
    watcher.wait_for(done("jfk.wav"))
    assert transcript(inbox, "jfk") == reference[CLIPS["jfk"]]

    # Below a hidden folder (a report folder, a sync tool's staging area): left alone, as a walk leaves it.
    (inbox / ".staging").mkdir()
    (inbox / ".staging" / "draft.wav").write_bytes(upload("press"))

    # In pieces, the way a slow upload grows (its WAV header says the whole length from the start).
    data = upload("review")
    with open(inbox / "ward 3" / "review.wav", "wb") as handle:
        for start_byte in range(0, len(data), len(data) // 6 + 1):
            handle.write(data[start_byte : start_byte + len(data) // 6 + 1])
            handle.flush()
            time.sleep(0.2)
    watcher.wait_for(done("ward 3/review.wav"))
    assert transcript(inbox / "ward 3", "review") == reference[CLIPS["review"]]

    # Written under another name, then renamed into place: taken once, under its final name.
    (inbox / "upload.part").write_bytes(upload("dashwood"))
    os.rename(inbox / "upload.part", inbox / "dashwood.wav")
    watcher.wait_for(done("dashwood.wav"))

    # A file that is gone before it settled, and a corrupt one: neither stops the service.
    (inbox / "mistake.wav").write_bytes(upload("stella"))
    os.unlink(inbox / "mistake.wav")
    (inbox / "broken.wav").write_bytes(b"RIFF" + os.urandom(20_000))
    watcher.wait_for(r"error: \S*/broken\.wav: .*— ")

    # Cut off half way: waits for the rest of the upload instead of failing, then is transcribed whole.
    whole = upload("dashwood")
    (inbox / "half.wav").write_bytes(whole[: len(whole) // 2])
    watcher.wait_for(r"waiting \S*/half\.wav: the file is truncated: .* — tried again once it changes")
    with open(inbox / "half.wav", "ab") as handle:
        handle.write(whole[len(whole) // 2 :])
    watcher.wait_for(done("half.wav"))
    assert transcript(inbox, "half") == reference[CLIPS["dashwood"]]

    # Removed and written again under the same name (rm; cp): one batch of events may hold the
    # removal after the addition; what is on disk decides.
    os.unlink(inbox / "ward 3" / "review.wav")
    (inbox / "ward 3" / "review.wav").write_bytes(upload("stella"))
    line = watcher.wait_for(done("ward 3/review.wav"))
    assert "redo: recording changed since it was transcribed" in line
    assert transcript(inbox / "ward 3", "review") == reference[CLIPS["stella"]]

    # A new version of a recording already transcribed, renamed over it: redone, and says why.
    (inbox / ".jfk.wav.tmp").write_bytes(upload("eighteen"))
    os.replace(inbox / ".jfk.wav.tmp", inbox / "jfk.wav")
    line = watcher.wait_for(done("jfk.wav"))
    assert "redo: recording changed since it was transcribed" in line
    assert transcript(inbox, "jfk") == reference[CLIPS["eighteen"]]

    code, _ = watcher.stop()
    assert code == 0, "\n".join(watcher.lines)
    assert watcher.lines[-1].endswith("stopped (SIGTERM): 6 transcribed, 1 failed since start; a restart resumes")
    for name, times in {"jfk.wav": 2, "review.wav": 2, "dashwood.wav": 1, "half.wav": 1, "finished.wav": 0, "mistake.wav": 0, "upload.part": 0, "draft.wav": 0}.items():
        assert watcher.count(done(name)) == times, f"{name}:\n" + "\n".join(watcher.lines)
    assert watcher.count("mistake") == 0 and not list(inbox.glob("mistake.*"))
    assert watcher.count("draft") == 0 and list((inbox / ".staging").iterdir()) == [inbox / ".staging" / "draft.wav"]
    assert {p.name: p.stat().st_mtime_ns for p in inbox.glob("finished.*")} == finished_outputs  # not touched
    assert not list(inbox.glob("broken.*[!v]"))  # no outputs for the corrupt file
    beat = read_beat(tmp_path / "heartbeat.json")
    assert beat is not None and beat.phase is Phase.STOPPED and (beat.done, beat.failed) == (6, 1)
    day = json.loads(next(reports.glob("carevoice-watch-*.json")).read_text())
    # Recordings, each once: jfk.wav and review.wav were transcribed twice (replaced by new versions).
    assert day["counts"] == {"done": 4, "no_speech": 0, "skipped": 0, "failed": 1, "tried_again": 0} and day["runs"][0]["already_transcribed"] == 1
    files = [json.loads(line) for line in (reports / day["files"]).read_text().splitlines()]
    assert sorted(Path(f["file"]).name for f in files) == ["broken.wav", "dashwood.wav", "half.wav", "jfk.wav", "jfk.wav", "review.wav", "review.wav"]
    text = json.dumps(day) + json.dumps(files) + "\n".join(watcher.lines)
    for words in reference.values():  # never a transcript's words in the logs or the report
        assert words.strip() and words.strip() not in text


@pytest.mark.slow
def test_sigterm_mid_file_stops_after_it_and_a_restart_resumes(tmp_path: Path, start, reference) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    long_wav = inbox / "long.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *[a for _ in range(6) for a in ("-i", str(DATA_DIR / CLIPS["jfk"]))],
         "-filter_complex", "concat=n=6:v=0:a=1", str(long_wav)],
        check=True,
    )  # fmt: skip
    (inbox / "short.wav").write_bytes(upload("eighteen"))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(long_wav, alone / "long.wav")
    assert invoke_cli("transcribe", alone / "long.wav", *ENGINE, "-q").exit_code == 0  # what an uninterrupted run writes
    watcher = start(inbox, "--settle", "0.5s", "--decode-workers", "1", "--batch-size", "2")
    watcher.wait_for(r"transcribing 2 file\(s\)")
    code, took_s = watcher.stop()
    assert code == 0, "\n".join(watcher.lines)
    assert "stopped (SIGTERM)" in watcher.lines[-1]
    print(f"stopped {took_s:.2f} s after SIGTERM")
    finished = watcher.count(done("long.wav"))
    assert bool(list(inbox.glob("long.*[!v]"))) == bool(finished)  # whole outputs, or none: never half a file's
    assert read_beat(tmp_path / "heartbeat.json").phase is Phase.STOPPED

    again = start(inbox, "--settle", "0.5s")
    again.wait_for(r"watching ")
    if not finished:
        again.seen(done("long.wav"))
    if not watcher.count(done("short.wav")):
        again.seen(done("short.wav"))
    assert again.stop()[0] == 0
    assert transcript(inbox, "long") == transcript(alone, "long")
    assert transcript(inbox, "short") == reference[CLIPS["eighteen"]]
    assert again.count(done("short.wav")) + watcher.count(done("short.wav")) == 1  # a restart does not redo what finished


# Three short clips that share the 10 s window: with --batch-size 2 the first two are one batch, the third the next.
THREE_SHORT = {"a.wav": "eighteen", "b.wav": "press", "c.flac": "stella"}


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {DEADLINE_S:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_during_a_batch_finishes_it_says_so_and_exits_and_a_restart_does_not_redo_it(tmp_path: Path, start, reference) -> None:
    """Fault 10 of issue 22: "stopped" was printed at once, the batch in the engine was dropped (and
    redone at the next start), and the process lived on until the engine let go of it."""
    inbox, gates = tmp_path / "inbox", tmp_path / "gates"
    inbox.mkdir()
    gates.mkdir()
    for name, clip in THREE_SHORT.items():
        (inbox / name).write_bytes(upload(clip))
    watcher = start(inbox, "--settle", "0.5s", "--batch-size", "2", "--decode-workers", "1", launcher=driven("gate", gates))
    watcher.wait_for(r"transcribing 3 file\(s\)")
    wait_for_file(gates / "entered-1")  # the first batch (a, b) is in the engine, held there
    watcher.child.send_signal(signal.SIGTERM)
    line = watcher.wait_for(r"stopp")
    assert re.search(r"stopping \(SIGTERM\): finishing the batch in progress \(2 files\), .*; a second signal drops the batch", line), line
    assert watcher.child.poll() is None  # it waits for the batch
    (gates / "open-1").touch()  # the batch ends
    watcher.wait_for(r"stopped \(SIGTERM\): 2 transcribed, 0 failed since start")
    stopped = time.monotonic()
    assert watcher.end() == 0, "\n".join(watcher.lines)
    print(f"exited {time.monotonic() - stopped:.2f} s after its stopped line")
    # Exited with nothing else let through the gate: no engine thread is left in a batch (one would never end).
    assert not (gates / "entered-2").exists()
    service = [ln for ln in watcher.lines if re.search(r" (done|stopp)", ln)]
    order = [re.sub(r"^\S+ ", "", ln).split(" (")[0] for ln in service]
    assert order[-4:] == ["stopping", f"done {inbox / 'a.wav'}", f"done {inbox / 'b.wav'}", "stopped"], "\n".join(watcher.lines)
    assert transcript(inbox, "a") == reference[CLIPS["eighteen"]] and transcript(inbox, "b") == reference[CLIPS["press"]]
    assert not list(inbox.glob("c.*[!c]"))  # nothing of the file whose batch never ran
    assert read_beat(tmp_path / "heartbeat.json").phase is Phase.STOPPED

    again = start(inbox, "--settle", "0.5s")
    again.wait_for(r"2 file\(s\) already transcribed")
    again.wait_for(done("c.flac"))
    assert again.stop()[0] == 0
    assert again.count(done("a.wav")) + again.count(done("b.wav")) == 0  # the batch that finished is not redone
    assert transcript(inbox, "c") == reference[CLIPS["stella"]]


@pytest.mark.slow
def test_a_crash_writes_its_traceback_to_stderr_and_beside_the_heartbeat_and_exits_1(tmp_path: Path, start) -> None:
    """Fault 10: an unexpected exception left only "internal error: X — rerun with --traceback", which a
    service's operator cannot do. The first batch (a, b) is written; the second raises a bug."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, clip in THREE_SHORT.items():
        (inbox / name).write_bytes(upload(clip))
    watcher = start(inbox, "--settle", "0.5s", "--batch-size", "2", "--decode-workers", "1", launcher=driven("bug", 2))
    assert watcher.end() == 1, "\n".join(watcher.lines)
    crash = tmp_path / "heartbeat.crash.txt"
    lines = "\n".join(watcher.lines)
    assert watcher.lines[-1] == f"internal error: ZeroDivisionError — its traceback is above and in {crash}; report it", lines
    assert crash.is_file(), lines
    header, saved = crash.read_text(encoding="utf-8").split("\n", 1)
    assert re.fullmatch(rf"carevoice \S+ \(pid {watcher.child.pid}\) crashed at \S+:", header), header
    assert saved.startswith("Traceback (most recent call last):") and saved.rstrip().endswith("ZeroDivisionError: float division by zero")
    assert "carevoice/run/pipeline.py" in saved
    assert saved.rstrip() in lines  # the same traceback on stderr, for the journal or `docker logs`
    assert watcher.count(done("a.wav")) == watcher.count(done("b.wav")) == 1 and watcher.count("stopped") == 0
    for stem in ("a", "b"):  # no transcript text in what a crash leaves (the values of locals are never shown)
        words = transcript(inbox, stem).strip()
        assert words and words not in saved and words not in lines


@pytest.mark.slow
def test_polling_finds_files_without_file_system_events(tmp_path: Path, start, reference) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--poll", "0.3s", "--settle", "0.5s")
    watcher.wait_for(r"walking the folders every 0\.3 s \(--poll\); no file-system events")
    watcher.wait_for(r"watching ")
    fds = Path(f"/proc/{watcher.child.pid}/fd")
    assert "anon_inode:inotify" not in {os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()}
    (inbox / "sub").mkdir()
    (inbox / "sub" / "stella.flac").write_bytes(upload("stella"))
    watcher.wait_for(done("sub/stella.flac"))
    assert transcript(inbox / "sub", "stella") == reference[CLIPS["stella"]]
    assert watcher.stop(signal.SIGINT)[0] == 0  # Ctrl-C ends it as SIGTERM does
    assert "stopped (Ctrl-C): 1 transcribed, 0 failed" in watcher.lines[-1]


@pytest.mark.slow
def test_a_short_soak_of_arrivals_in_bursts(tmp_path: Path, start, reference) -> None:
    """40 files: 10 waiting at start (one batch: they settle together), then 30 in bursts of 10 into
    sub-folders; each is transcribed exactly once, correctly, and the day's report has them all."""
    inbox, reports = tmp_path / "inbox", tmp_path / "reports"
    inbox.mkdir()
    names = list(CLIPS)
    expected: dict[Path, str] = {}
    for i in range(10):
        source = CLIPS[names[i % len(names)]]
        expected[inbox / f"start-{i:02}{Path(source).suffix}"] = source
    for path, source in expected.items():
        path.write_bytes((DATA_DIR / source).read_bytes())
    watcher = start(inbox, "--settle", "1s", "--gather", "0.5s", "--report-dir", reports)
    watcher.wait_for(r"transcribing 10 file\(s\)")  # all ten settled at once: one set of shared batches
    for burst in range(3):
        folder = inbox / f"burst-{burst}"
        folder.mkdir()
        for i in range(10):
            name = names[(burst + i) % len(names)]
            source = CLIPS[name]
            target = folder / f"{i:02}{Path(source).suffix}"
            target.write_bytes(upload(name))
            expected[target] = source
    for path in expected:
        watcher.seen(done(str(path.relative_to(inbox))))
    assert watcher.stop()[0] == 0
    for path, source in expected.items():
        assert transcript(path.parent, path.stem) == reference[source], path
        assert watcher.count(done(str(path.relative_to(inbox)))) == 1
    day = json.loads(next(reports.glob("carevoice-watch-*.json")).read_text())
    assert day["counts"]["done"] == 40 and day["counts"]["failed"] == 0
    batches = [int(m.group(1)) for line in watcher.lines if (m := re.search(r"transcribing (\d+) file", line))]
    assert sum(batches) == 40


def test_watch_takes_folders_only(tmp_path: Path, run_cli) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes(upload("press"))
    result = run_cli("watch", clip, *ENGINE, "--heartbeat", tmp_path / "hb.json")
    assert result.exit_code == 2
    assert f"{clip} is not a folder" in result.stderr and "carevoice transcribe" in result.stderr
    assert not (tmp_path / "hb.json").exists()


@pytest.mark.parametrize(
    "option", [("--settle", "soon"), ("--poll", "0"), ("--gather", "-1s"), ("--settle-unsized", "1m?"), ("--settle-unsized", "5s")]
)
def test_bad_watch_durations_are_usage_errors(tmp_path: Path, run_cli, option) -> None:
    result = run_cli("watch", tmp_path, *ENGINE, *option, "--heartbeat", tmp_path / "hb.json")
    assert result.exit_code == 2, result.stderr
    assert option[0] in result.stderr


def test_a_second_watcher_on_the_same_heartbeat_is_refused(tmp_path: Path, run_cli) -> None:
    from carevoice.watch.heartbeat import Beat, write_beat

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "carevoice"])  # a live "carevoice" process
    try:
        write_beat(tmp_path / "hb.json", Beat(holder.pid, Phase.IDLE, time.time(), time.time()))
        result = run_cli("watch", tmp_path, *ENGINE, "--heartbeat", tmp_path / "hb.json")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert f"another carevoice watch (pid {holder.pid}) writes the heartbeat" in result.stderr
    assert read_beat(tmp_path / "hb.json").pid == holder.pid  # its heartbeat is left alone


def test_health_exit_codes(tmp_path: Path, run_cli) -> None:
    from carevoice.watch.heartbeat import Beat, write_beat

    beat_path = tmp_path / "hb.json"
    result = run_cli("health", "--heartbeat", beat_path)
    assert result.exit_code == 1 and "no heartbeat" in result.stderr
    write_beat(beat_path, Beat(123, Phase.BUSY, time.time() - 5, time.time() - 50, done=4))
    result = run_cli("health", "--heartbeat", beat_path)
    assert result.exit_code == 0 and "busy, beat 5 s ago: 4 transcribed" in result.stdout
    result = run_cli("health", "--heartbeat", beat_path, "--max-age", "2")
    assert result.exit_code == 1 and "has not beaten for 5 s" in result.stderr


def test_health_calls_a_killed_watcher_dead_at_once(tmp_path: Path, start, run_cli) -> None:
    """SIGKILL (or the OOM killer) leaves a heartbeat as fresh as a live watcher's: health looks for
    the process that wrote it, here (same host, same pid namespace)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.5s")
    watcher.wait_for(r"watching ")
    result = run_cli("health", "--heartbeat", watcher.heartbeat)
    assert result.exit_code == 0, result.stderr
    watcher.kill()
    result = run_cli("health", "--heartbeat", watcher.heartbeat)
    assert result.exit_code == 1, result.stdout
    assert f"the watcher (pid {watcher.child.pid}) is not running" in result.stderr


@pytest.mark.slow
def test_files_that_settle_within_the_gather_window_share_their_batches(tmp_path: Path, start, reference) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.5s", "--gather", "10s")
    watcher.wait_for(r"watching ")
    (inbox / "first.wav").write_bytes(upload("eighteen"))
    (inbox / "later").mkdir()
    time.sleep(1.0)  # the first is ready (settled) before the second arrives: only the gather window joins them
    (inbox / "later" / "second.wav").write_bytes(upload("press"))
    watcher.wait_for(r"transcribing 2 file\(s\)")
    watcher.seen(done("first.wav"))
    watcher.seen(done("later/second.wav"))
    assert watcher.stop()[0] == 0
    assert transcript(inbox, "first") == reference[CLIPS["eighteen"]]
    assert transcript(inbox / "later", "second") == reference[CLIPS["press"]]


@pytest.mark.slow
def test_no_recursive_leaves_a_folder_moved_in_alone(tmp_path: Path, start, reference) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    (elsewhere / "visits").mkdir(parents=True)
    (elsewhere / "visits" / "nested.wav").write_bytes(upload("press"))
    watcher = start(inbox, "--no-recursive", "--settle", "0.5s")
    watcher.wait_for(r"watching ")
    os.rename(elsewhere / "visits", inbox / "visits")  # a folder moved in whole
    (inbox / "top.wav").write_bytes(upload("eighteen"))
    watcher.wait_for(done("top.wav"))
    assert watcher.stop()[0] == 0
    assert transcript(inbox, "top") == reference[CLIPS["eighteen"]]
    assert watcher.count("nested") == 0 and sorted(p.name for p in (inbox / "visits").iterdir()) == ["nested.wav"]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "link"), [("archive/ward", "ward"), ("real", "l")], ids=["events-name-the-target", "events-name-the-link"])
def test_a_folder_linked_into_the_drop_folder_is_one_folder_whichever_way_a_file_arrives(
    tmp_path: Path, start, reference, target: str, link: str
) -> None:
    """``link`` points to ``target``, both in the drop folder. inotify names a file through whichever
    of the two its watch was set up by (watchfiles 1.3.0 names ``archive/ward`` by the target and
    ``real`` by the link), and a walk's order would decide too: yet each recording must have one
    name, its real place, so one transcript under -o, the one `transcribe` writes, and a restart
    finds it done."""
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / target).mkdir(parents=True)
    (inbox / link).symlink_to(Path(target).relative_to(Path(link).parent))
    (inbox / link / "a.wav").write_bytes(upload("jfk"))
    assert invoke_cli("transcribe", inbox, *ENGINE, "-o", out, "-q").exit_code == 0  # done before the service existed
    watcher = start(inbox, "--settle", "0.5s", "--gather", "0s", "-o", out)
    watcher.wait_for(r"1 file\(s\) already transcribed")
    (inbox / link / "b.wav").write_bytes(upload("press"))  # through the link
    assert f"{inbox / target / 'b.wav'} (" in watcher.wait_for(done("b.wav"))
    (inbox / target / "c.wav").write_bytes(upload("eighteen"))  # to the folder itself
    assert f"{inbox / target / 'c.wav'} (" in watcher.wait_for(done("c.wav"))
    assert watcher.stop()[0] == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == [f"{target}/{n}.txt" for n in "abc"]
    assert transcript(out / target, "b") == reference[CLIPS["press"]]
    assert watcher.count(r"^\S+ (done|failed|skipped) ") == 2
    again = start(inbox, "--settle", "0.5s", "-o", out)
    again.wait_for(r"3 file\(s\) already transcribed")
    assert again.stop()[0] == 0 and again.count(r"^\S+ (done|failed) ") == 0


def test_a_report_dir_that_cannot_be_made_is_a_usage_error(tmp_path: Path, run_cli) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    result = run_cli("watch", tmp_path, *ENGINE, "--report-dir", tmp_path / "a-file" / "reports", "--heartbeat", tmp_path / "hb.json")
    assert result.exit_code == 2
    assert "cannot create --report-dir" in result.stderr and "choose a folder this user can write" in result.stderr
    assert not (tmp_path / "hb.json").exists()


# --- in-process: a failing engine (the CUDA double, tests/doubles.py), a full disk, a lost signal ---


class InProcess:
    """A Service run in this process until a callback stops it (:func:`stop_service`), with its lines.
    A watchdog stops it after DEADLINE_S, and the test then fails."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.fired = False

    def run(self, settings: WatchSettings, on_note=lambda text: None, on_result=lambda file: None) -> None:  # type: ignore[no-untyped-def]
        def note(text: str) -> None:
            self.lines.append(text)
            on_note(text)

        def result(file: FileResult) -> None:
            self.lines.append(f"{file.status.value} {file.source.name} {file.error or ''}")
            on_result(file)

        watchdog = threading.Timer(DEADLINE_S, self._fire)
        restore = interrupts.install()
        watchdog.start()
        try:
            log = WatchLog(
                note, result, lambda path, why: self.lines.append(f"waiting {path.name}"),
                lambda ref, device, choice: note(f"model {ref.model_id} from {ref.origin} on {device}"),
            )  # fmt: skip
            assert Service(settings, log).run() == 0
        finally:
            watchdog.cancel()
            restore()
        assert not self.fired, "the service did not stop by itself:\n" + "\n".join(self.lines)

    def _fire(self) -> None:
        self.fired = True
        stop_service()

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in self.lines)


def stop_service() -> None:
    """SIGTERM to this process: inside a file's recording it waits for the record, then stops the service."""
    os.kill(os.getpid(), signal.SIGTERM)


def in_process_settings(inbox: Path, tmp_path: Path, device: Device = Device.CPU, **options: object) -> WatchSettings:
    transcribe = TranscribeSettings(
        inputs=(inbox,), formats=(OutputFormat.TXT, OutputFormat.JSON),
        engine=EngineSettings(model="tiny.en", device=device), decode=DecodeSettings(word_timestamps=True),
    )  # fmt: skip
    return WatchSettings(transcribe=transcribe, settle_s=0.0, gather_s=0.0, heartbeat=tmp_path / "heartbeat.json", **options)  # type: ignore[arg-type]


def test_files_the_engine_failed_are_tried_again_and_a_failing_engine_is_unhealthy(tmp_path: Path, fake_cuda, fake_nvml) -> None:
    """Once the model is loaded, another tenant takes the GPU's memory: every batch runs out of it, so
    the engine fails each of five files; the heartbeat then says unhealthy. The memory comes free
    before the first retry, which transcribes them all, as `transcribe` does, and the health is back."""
    gpu = h200s(1)[0]
    fake_nvml([gpu])
    fake_cuda([gpu])
    inbox, again = tmp_path / "inbox", tmp_path / "again"
    inbox.mkdir()
    again.mkdir()
    names = [f"v{i}.wav" for i in range(ENGINE_FAILING_FILES)]
    for name, clip in zip(names, ["jfk", "review", "eighteen", "dashwood", "press"]):
        (inbox / name).write_bytes(upload(clip))
        (again / name).write_bytes(upload(clip))
    settings = in_process_settings(inbox, tmp_path, Device.CUDA, retry_after_s=(0.5, 0.5))
    service = InProcess()
    healths: list[tuple[bool, str]] = []  # at the start of each set of files

    def on_note(text: str) -> None:
        if text.startswith("model tiny.en"):
            gpu.oom_from_batch = 1  # loaded (and warmed up): now every batch runs out of memory
        if text.startswith("transcribing "):
            healths.append(health(read_beat(settings.heartbeat), time.time(), 300.0))
        if sum("(try 2 of 3)" in line for line in service.lines) == len(names):
            gpu.oom_from_batch = None  # the other job ends before the first retry

    service.run(settings, on_note, on_result=lambda file: service.count("done ") == len(names) and stop_service())
    lines = "\n".join(service.lines)
    failed = [line for line in service.lines if line.startswith("failed ")]
    assert len(failed) == len(names) and all("out of memory on cuda" in line for line in failed), lines
    assert sorted(line.split()[1] for line in service.lines if line.startswith("done ")) == names, lines
    assert healths[0][0] and not healths[1][0], healths  # healthy at the start; after five engine failures, not
    assert f"its engine failed {len(names)} different files in a row" in healths[1][1]
    assert read_beat(settings.heartbeat).engine_failed == 0  # a file done: the count starts again
    assert service.lines[-1] == f"stopped (SIGTERM): {len(names)} transcribed, 0 failed since start; a restart resumes"  # failed, then done
    result_cli = invoke_cli("transcribe", again, "-m", "tiny.en", "--device", "cuda", "-f", "txt,json", "-q")
    assert result_cli.exit_code == 0, result_cli.stderr
    for name in names:
        stem = Path(name).stem
        assert transcript(inbox, stem) == transcript(again, stem), name


def test_one_file_the_engine_always_fails_is_given_up_and_leaves_the_watcher_healthy(tmp_path: Path, fake_cuda, fake_nvml) -> None:
    """Its retries are one file's failures, not five: a restart loop on one bad recording must not start."""
    gpu = h200s(1)[0]
    fake_nvml([gpu])
    fake_cuda([gpu])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(upload("jfk"))
    settings = in_process_settings(inbox, tmp_path, Device.CUDA, retry_after_s=(0.1,) * (ENGINE_FAILING_FILES + 1))
    service = InProcess()

    def on_note(text: str) -> None:
        if text.startswith("model tiny.en"):
            gpu.oom_from_batch = 1
        if text.endswith("failed 7 times: tried again once it changes, or at a restart"):
            stop_service()

    service.run(settings, on_note)
    assert service.count("failed a.wav out of memory") == 7, "\n".join(service.lines)
    beat = read_beat(settings.heartbeat)
    assert beat is not None and beat.engine_failed == 1
    assert health(replace(beat, phase=Phase.IDLE), beat.updated_unix, 300.0)[0]
    assert service.lines[-1] == "stopped (SIGTERM): 0 transcribed, 1 failed since start; a restart resumes"  # one recording, once


def test_a_file_whose_folder_was_full_is_tried_again_and_done(tmp_path: Path, reference, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.wav").write_bytes(upload("jfk"))
    real_write = writers.atomic_write
    full: list[Path] = []

    def full_once(path: Path, data: bytes) -> None:
        if path.parent == inbox and not full:
            full.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(writers, "atomic_write", full_once)
    service = InProcess()
    service.run(in_process_settings(inbox, tmp_path, retry_after_s=(0.2,)), on_result=lambda file: file.status.value == "done" and stop_service())
    assert service.lines[3:7] == [
        "transcribing 1 file(s)",
        f"failed a.wav cannot write outputs in {inbox} (No space left on device) — check free disk space and that the folder is writable, "
        "then rerun (finished files are kept)",
        f"{inbox / 'a.wav'}: tried again in 0.2 s, unchanged (try 2 of 2)",
        "transcribing 1 file(s)",
    ], "\n".join(service.lines)
    assert service.count("done a.wav") == 1 and transcript(inbox, "a") == reference[CLIPS["jfk"]]


def test_what_killed_runs_left_is_cleared_where_a_set_of_files_is_written(tmp_path: Path, reference) -> None:
    """As transcribe does before a run, the watcher clears a dead writer's temporary file and a lock
    nobody holds in the folders it writes (run.tidying), and leaves what a live process holds."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dead_writer = inbox / f".a.txt.999999999@{HOST_TAG}.x{TEMP_SUFFIX}"  # pid 999999999: no such process
    dead_writer.write_bytes(b"half a transcript")
    stale_lock = lock_path(inbox / "old")  # a killed run's lock: the file exists, nobody holds it
    stale_lock.write_bytes(b"")
    live = try_lock(inbox / "busy")  # another process at work on busy.*
    assert live is not None
    try:
        (inbox / "a.wav").write_bytes(upload("jfk"))
        service = InProcess()
        service.run(in_process_settings(inbox, tmp_path), on_result=lambda file: file.status.value == "done" and stop_service())
        assert service.count("done a.wav") == 1 and transcript(inbox, "a") == reference[CLIPS["jfk"]]
        assert not dead_writer.exists() and not stale_lock.exists()
        assert lock_path(inbox / "busy").exists()
    finally:
        live.release()


@pytest.mark.parametrize("when", ["transcribing ", "watching "], ids=["in-the-batch-runner", "in-the-watch-loop"])
def test_a_stop_signal_whose_exception_a_finalizer_dropped_still_stops_the_watcher(tmp_path: Path, when: str) -> None:
    """SIGTERM landing while the garbage collector ran a finalizer lost its exception, and a watcher
    went on as if never asked to stop (CI saw one hang). Here it lands in one on purpose: while a
    file is transcribed (the batch runner's loop must stop), and while the watcher waits (its own)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    if when == "transcribing ":
        (inbox / "a.wav").write_bytes(upload("jfk"))

    class SignalsWhenCollected:
        def __del__(self) -> None:
            stop_service()
            time.sleep(0.05)  # the handler raises here, inside the finalizer, and Python drops it

    service = InProcess()
    service.run(in_process_settings(inbox, tmp_path), on_note=lambda text: text.startswith(when) and SignalsWhenCollected())
    assert service.lines[-1].startswith("stopped (SIGTERM)"), "\n".join(service.lines)


# --- uploads in formats that do not state their length (issue 22, fault 8) ---


@pytest.fixture(scope="module")
def unsized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    """Recordings whose container does not say how long they are, by upload name: (bytes, what
    `carevoice transcribe` writes for the whole file). A copy of either cut at 40 % decodes, without
    a complaint, as a short whole recording."""
    folder = tmp_path_factory.mktemp("unsized")
    jfk = str(DATA_DIR / CLIPS["jfk"])
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-i", jfk]
    streamed = subprocess.run([*ffmpeg, "-f", "wav", "pipe:"], check=True, capture_output=True).stdout
    (folder / "stream.wav").write_bytes(streamed)  # what a streaming recorder writes: RIFF and data lengths 0xFFFFFFFF
    subprocess.run([*ffmpeg, "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", str(folder / "cbr.mp3")], check=True)
    result = invoke_cli("transcribe", folder, *ENGINE, "-q")
    assert result.exit_code == 0, result.stderr
    return {name: ((folder / name).read_bytes(), transcript(folder, Path(name).stem)) for name in ("stream.wav", "cbr.mp3")}


def first_line_about(watcher: Watcher, path: Path) -> str:
    """The first line that says the file waits, or that it was transcribed."""
    return watcher.wait_for(rf"(waiting|done) {re.escape(str(path))}\b")


@pytest.mark.slow
def test_a_streamed_wav_still_open_for_writing_waits_for_its_writer(tmp_path: Path, start, unsized) -> None:
    """The copy stalls at 40 %, longer than --settle, with this process still holding it open for
    writing: the watcher says so and waits, where it used to transcribe the 40 % and log `done`."""
    data, whole_text = unsized["stream.wav"]
    assert data[4:8] == b"\xff\xff\xff\xff" and data[data.index(b"data") + 4 :][:4] == b"\xff\xff\xff\xff"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start(inbox, "--settle", "0.5s", "--settle-unsized", "0.5s", "--gather", "0s")  # only the writer can hold it
    watcher.wait_for(r"watching ")
    cut = len(data) * 4 // 10
    with open(inbox / "stream.wav", "wb") as upload:
        upload.write(data[:cut])
        upload.flush()
        line = first_line_about(watcher, inbox / "stream.wav")
        assert f"waiting {inbox / 'stream.wav'}: still open for writing by pid {os.getpid()} " in line, "\n".join(watcher.lines)
        upload.write(data[cut:])
    watcher.wait_for(done("stream.wav"))
    assert watcher.stop()[0] == 0
    assert watcher.count(done("stream.wav")) == 1, "\n".join(watcher.lines)
    assert transcript(inbox, "stream") == whole_text


@pytest.mark.slow
def test_a_cbr_mp3_whose_copy_stalls_waits_for_the_longer_settle(tmp_path: Path, start, unsized) -> None:
    """A CBR MP3 without a Xing header, copied from another host (no local writer) that stalls at
    40 % longer than --settle: it waits for --settle-unsized, where it used to be transcribed from its 40 %."""
    data, whole_text = unsized["cbr.mp3"]
    assert not {b"Xing", b"Info", b"VBRI"} & {data[i : i + 4] for i in range(4096)}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # 20 s: far above the stall here (the time from the watcher's line to the next write), so it cannot decide the test
    watcher = start(inbox, "--settle", "0.5s", "--settle-unsized", "20s", "--gather", "0s")
    watcher.wait_for(r"watching ")
    cut = len(data) * 4 // 10
    (inbox / "cbr.mp3").write_bytes(data[:cut])  # written and closed: no local process holds it
    line = first_line_about(watcher, inbox / "cbr.mp3")  # found settled: where it used to be taken
    assert f"waiting {inbox / 'cbr.mp3'}: its format does not state its length" in line, "\n".join(watcher.lines)
    with open(inbox / "cbr.mp3", "ab") as upload:
        upload.write(data[cut:])
    watcher.wait_for(done("cbr.mp3"))
    assert watcher.stop()[0] == 0
    assert watcher.count(done("cbr.mp3")) == 1, "\n".join(watcher.lines)
    assert transcript(inbox, "cbr") == whole_text
