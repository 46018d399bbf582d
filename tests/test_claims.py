"""Claims: which planned files a run may write (plan_jobs), and the per-file locks taken while it runs
(Claims) — on real files, real locks and real records written by the writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carevoice.claims import Claims, plan_jobs
from carevoice.discovery import Job
from carevoice.locks import lock_path, try_lock
from carevoice.results import FileResult, FileStatus
from carevoice.settings import DEFAULT_FORMATS, DecodeSettings, TranscribeSettings
from carevoice.transcript import Segment, Transcript
from carevoice.writers import HOST_TAG, TEMP_SUFFIX, output_path, record_path, write_outputs

FINGERPRINT = DecodeSettings().fingerprint("base")
TRANSCRIPT = Transcript("en", 1.0, 2.0, (Segment(0, 0.0, 2.0, " Hello.", -0.1, 0.0, 1.0),))


def job(folder: Path, name: str) -> Job:
    source = folder / name
    if not source.exists():
        source.write_bytes(b"RIFF....WAVE")
    return Job(source, source.with_suffix(""), name)


def settings(folder: Path, **kwargs: object) -> TranscribeSettings:
    return TranscribeSettings(inputs=(folder,), **kwargs)  # type: ignore[arg-type]


def test_planning_sets_aside_finished_and_blocked_files_and_runs_the_rest(tmp_path: Path) -> None:
    finished, edited, fresh = job(tmp_path, "finished.wav"), job(tmp_path, "edited.wav"), job(tmp_path, "fresh.wav")
    for done in (finished, edited):
        write_outputs(done.output_stem, DEFAULT_FORMATS, TRANSCRIPT, FINGERPRINT)
    output_path(edited.output_stem, DEFAULT_FORMATS[0]).write_text("a person's corrections\n", encoding="utf-8")
    to_run, settled = plan_jobs([finished, edited, fresh], settings(tmp_path), FINGERPRINT)
    assert to_run == [fresh]
    assert settled == [
        FileResult(finished.source, FileStatus.SKIPPED, note="already transcribed with these options"),
        FileResult(
            edited.source,
            FileStatus.FAILED,
            error="edited.txt exists and was not written by CareVoice (or was edited) — move it away or pass --overwrite",
        ),
    ]
    with_overwrite, _ = plan_jobs([finished, edited, fresh], settings(tmp_path, overwrite=True), FINGERPRINT)
    assert with_overwrite == [finished, edited, fresh]
    other_options, _ = plan_jobs([finished], settings(tmp_path), DecodeSettings(beam_size=1).fingerprint("base"))
    assert other_options == [finished]


def test_an_output_that_would_replace_a_recording_is_refused_whatever_the_options(tmp_path: Path) -> None:
    recording, impostor = job(tmp_path, "visit.mp3"), job(tmp_path, "visit.txt")  # "visit.txt" is really audio
    _, settled = plan_jobs([recording], settings(tmp_path, overwrite=True), FINGERPRINT, every_input=[recording, impostor])
    assert settled[0].status is FileStatus.FAILED
    assert settled[0].error == "its output visit.txt would replace an input recording — rename the recording so that its extension says what it is"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_that_cannot_be_written_fails_its_files_before_any_work(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    entry = job(locked, "a.wav")
    locked.chmod(0o555)
    try:
        _, settled = plan_jobs([entry], settings(locked), FINGERPRINT)
    finally:
        locked.chmod(0o755)
    assert settled[0].error is not None and settled[0].error.startswith(f"cannot write to {locked} — make the folder writable")


def test_planning_clears_what_killed_runs_left_behind(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    dead_writer = tmp_path / f".a.txt.999999999@{HOST_TAG}.x{TEMP_SUFFIX}"  # a temporary file of a dead process here
    dead_writer.write_bytes(b"half")
    lock_path(entry.output_stem).write_bytes(b"")  # a lock file no process holds
    to_run, _ = plan_jobs([entry], settings(tmp_path), FINGERPRINT)
    assert to_run == [entry]
    assert not dead_writer.exists() and not lock_path(entry.output_stem).exists()


def test_a_claim_holds_the_file_until_released_and_another_process_s_lock_means_skip(tmp_path: Path) -> None:
    mine, theirs = job(tmp_path, "mine.wav"), job(tmp_path, "theirs.wav")
    held_elsewhere = try_lock(theirs.output_stem)  # another open file: flock refuses a second one, even in one process
    assert held_elsewhere is not None
    claims = Claims(DEFAULT_FORMATS, overwrite=False, fingerprint=FINGERPRINT)
    try:
        assert claims.claim(mine) is None
        assert try_lock(mine.output_stem) is None  # held while the file is transcribed
        assert claims.claim(theirs) == FileResult(theirs.source, FileStatus.SKIPPED, note="another CareVoice process is transcribing it")
        claims.release(mine)
        again = try_lock(mine.output_stem)
        assert again is not None
        again.release()
    finally:
        held_elsewhere.release()
        claims.release_all()


def test_a_file_finished_by_another_process_since_planning_is_left_alone(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    claims = Claims(DEFAULT_FORMATS, overwrite=False, fingerprint=FINGERPRINT)
    write_outputs(entry.output_stem, DEFAULT_FORMATS, TRANSCRIPT, FINGERPRINT)  # someone else, after planning
    assert claims.claim(entry) == FileResult(entry.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
    lock = try_lock(entry.output_stem)
    assert lock is not None  # and the claim let go of it
    lock.release()


def test_with_overwrite_only_a_file_finished_after_the_run_started_counts_as_someone_else_s(tmp_path: Path) -> None:
    before, after = job(tmp_path, "before.wav"), job(tmp_path, "after.wav")
    for done in (before, after):
        write_outputs(done.output_stem, DEFAULT_FORMATS, TRANSCRIPT, FINGERPRINT)
    started_ns = record_path(before.output_stem).stat().st_mtime_ns + 1
    os.utime(record_path(after.output_stem), ns=(started_ns + 10**9, started_ns + 10**9))  # written a second into the run
    claims = Claims(DEFAULT_FORMATS, overwrite=True, fingerprint=FINGERPRINT, started_ns=started_ns)
    try:
        assert claims.claim(before) is None  # finished before this run: redone, as asked
        assert claims.claim(after) == FileResult(after.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
    finally:
        claims.release_all()
    lock = try_lock(before.output_stem)
    assert lock is not None
    lock.release()
