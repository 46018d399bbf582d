"""Planning, tidying and claims: what a run does with each file (planning.plan_files, from real
records, stats and bytes on disk; it reads only), what it clears before it acts (tidying.tidy), and
the per-file locks taken while it runs (claims.Claims) — real files, real locks, records written by
the writers."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import unprivileged

from carevoice.errors import Cause
from carevoice.results import FileResult, FileStatus
from carevoice.run.claims import Claims
from carevoice.run.discovery import Job
from carevoice.run.locks import lock_path, try_lock
from carevoice.run.planning import plan_files, run_facts
from carevoice.run.records import Provenance, identify, read_record
from carevoice.run.rules import Action, Reason
from carevoice.run.tidying import tidy
from carevoice.run.writers import HOST_TAG, TEMP_SUFFIX, output_path, write_outputs
from carevoice.settings import DEFAULT_FORMATS, DecodeSettings, TranscribeSettings
from carevoice.transcript import Segment, Transcript

TRANSCRIPT = Transcript("en", 1.0, 2.0, (Segment(0, 0.0, 2.0, " Hello.", -0.1, 0.0, 1.0),))


def job(folder: Path, name: str, content: bytes = b"RIFF....WAVE") -> Job:
    source = folder / name
    if not source.exists():
        source.write_bytes(content)
    return Job(source, source.with_suffix(""), name)


def settings(folder: Path, **kwargs: object) -> TranscribeSettings:
    return TranscribeSettings(inputs=(folder,), **kwargs)  # type: ignore[arg-type]


def run_of(folder: Path, **kwargs: object) -> object:
    return run_facts(settings(folder, **kwargs), "base", "m1", 1)


def transcribed(entry: Job, run_id: str = "earlier") -> None:
    """As CareVoice writes a file it transcribed, with the default options and model "base"."""
    provenance = Provenance(run_id, "base", "m1", 1, DecodeSettings().text_options(), identify(entry.source), True)
    write_outputs(entry.output_stem, DEFAULT_FORMATS, TRANSCRIPT, provenance)


def actions(planned: list) -> list[tuple[str, Action, Reason]]:  # type: ignore[type-arg]
    return [(p.job.source.name, p.decision.action, p.decision.reason) for p in planned]


def test_planning_reads_the_records_and_says_what_to_do_with_each_file(tmp_path: Path) -> None:
    finished, edited, fresh, replaced = (job(tmp_path, n) for n in ("finished.wav", "edited.wav", "fresh.wav", "replaced.wav"))
    for done in (finished, edited, replaced):
        transcribed(done)
    output_path(edited.output_stem, DEFAULT_FORMATS[0]).write_text("a person's corrections\n", encoding="utf-8")
    replaced.source.write_bytes(b"RIFF....WAVE another recording")
    planned = plan_files([finished, edited, fresh, replaced], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
    assert actions(planned) == [
        ("finished.wav", Action.SKIP, Reason.CURRENT),
        ("edited.wav", Action.SKIP, Reason.EDITED),
        ("fresh.wav", Action.TRANSCRIBE, Reason.NEW),
        ("replaced.wav", Action.REDO, Reason.RECORDING_CHANGED),
    ]
    assert [p.result() for p in planned if p.settled] == [
        FileResult(  # with its outputs and length from its record, for the report
            finished.source, FileStatus.SKIPPED, outputs=tuple(finished.output_stem.with_suffix(f".{e}") for e in ("txt", "srt", "json")),
            duration_s=2.0, note="already transcribed with these options",
        ),  # fmt: skip
        FileResult(  # a person's correction of the same recording's transcript: kept, and no failure
            edited.source, FileStatus.SKIPPED, outputs=tuple(edited.output_stem.with_suffix(f".{e}") for e in ("txt", "srt", "json")),
            duration_s=2.0, note="kept txt as a person edited it",
        ),  # fmt: skip
    ]


def test_an_unchanged_recording_is_not_read_and_a_touched_one_is_read_once(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    transcribed(entry)
    os.utime(entry.source, ns=(1, 1))  # touched: stat differs, bytes the same
    (planned,) = plan_files([entry], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
    assert planned.decision.action is Action.SKIP
    tidy([planned])
    record = read_record(entry.output_stem)
    assert record is not None and record.input is not None and record.input.same_stat(os.stat(entry.source))  # refreshed
    entry.source.chmod(0)  # now the bytes cannot be read: a plan that needs only the stat does not notice
    try:
        if os.geteuid() != 0:
            (again,) = plan_files([entry], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
            assert again.decision.action is Action.SKIP
    finally:
        entry.source.chmod(0o644)


def test_planning_touches_nothing_so_a_dry_run_is_a_plan(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    transcribed(entry)
    os.utime(entry.source, ns=(1, 1))
    stale_temp = tmp_path / f".a.txt.999999999@{HOST_TAG}.x{TEMP_SUFFIX}"
    stale_temp.write_bytes(b"half")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    (planned,) = plan_files([entry], settings(tmp_path, dry_run=True), run_of(tmp_path))  # type: ignore[arg-type]
    assert planned.decision.action is Action.SKIP
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_an_output_that_would_replace_a_recording_is_refused_whatever_the_options(tmp_path: Path) -> None:
    recording, impostor = job(tmp_path, "visit.mp3"), job(tmp_path, "visit.txt")  # "visit.txt" is really audio
    (planned,) = plan_files([recording], settings(tmp_path, overwrite=True), run_of(tmp_path, overwrite=True), every_input=[recording, impostor])  # type: ignore[arg-type]
    assert planned.decision.action is Action.FAIL
    assert planned.problem == "its output visit.txt would replace an input recording — rename the recording so that its extension says what it is"


def test_a_folder_that_cannot_be_written_fails_its_files_before_any_work_and_says_it_may_pass(open_folder: Path) -> None:
    """As a user whom permissions apply to (root writes into read-only folders). The cause lets
    `carevoice watch` try the file again: fixing the folder's permissions changes no file."""
    locked = open_folder / "locked"
    locked.mkdir()
    entry = job(locked, "a.wav")
    locked.chmod(0o555)
    with unprivileged():
        (planned,) = plan_files([entry], settings(locked), run_of(locked))  # type: ignore[arg-type]
    assert planned.problem.startswith(f"cannot write to {locked} — make the folder writable")
    assert planned.result() == FileResult(entry.source, FileStatus.FAILED, error=planned.problem, cause=Cause.FOLDER)


def test_tidying_clears_what_killed_runs_left_behind(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    dead_writer = tmp_path / f".a.txt.999999999@{HOST_TAG}.x{TEMP_SUFFIX}"  # a temporary file of a dead process here
    dead_writer.write_bytes(b"half")
    lock_path(entry.output_stem).write_bytes(b"")  # a lock file no process holds
    (planned,) = plan_files([entry], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
    assert planned.decision.action is Action.TRANSCRIBE
    assert dead_writer.exists() and lock_path(entry.output_stem).exists()  # planning reads only
    tidy([planned])
    assert not dead_writer.exists() and not lock_path(entry.output_stem).exists()


def test_a_claim_holds_the_file_until_released_and_another_process_s_lock_means_skip(tmp_path: Path) -> None:
    mine, theirs = job(tmp_path, "mine.wav"), job(tmp_path, "theirs.wav")
    held_elsewhere = try_lock(theirs.output_stem)  # another open file: flock refuses a second one, even in one process
    assert held_elsewhere is not None
    claims = Claims(run_of(tmp_path), "this-run")  # type: ignore[arg-type]
    try:
        assert claims.claim(mine) is None
        assert claims.claimed[mine.source].decision.action is Action.TRANSCRIBE
        assert try_lock(mine.output_stem) is None  # held while the file is transcribed
        assert claims.claim(theirs) == FileResult(theirs.source, FileStatus.SKIPPED, note="being transcribed by another CareVoice process")
        claims.release(mine)
        again = try_lock(mine.output_stem)
        assert again is not None
        again.release()
    finally:
        held_elsewhere.release()
        claims.release_all()


def test_a_file_finished_by_another_process_since_planning_is_left_alone(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    claims = Claims(run_of(tmp_path), "this-run", {entry.source: ""})  # type: ignore[arg-type]
    transcribed(entry, run_id="another-run")  # someone else, after planning
    assert claims.claim(entry) == FileResult(entry.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
    lock = try_lock(entry.output_stem)
    assert lock is not None  # and the claim let go of it
    lock.release()


def test_with_overwrite_only_a_record_written_by_another_run_since_planning_means_done(tmp_path: Path) -> None:
    """No clocks: which run wrote a record says it (NFS clocks may differ from this machine's)."""
    before, after, retried = job(tmp_path, "before.wav"), job(tmp_path, "after.wav"), job(tmp_path, "retried.wav")
    transcribed(before, run_id="last-week")
    transcribed(after, run_id="a-colleague-now")
    transcribed(retried, run_id="this-run")  # an earlier attempt of this very run (a retried Ray task)
    seen = {before.source: "last-week", after.source: "last-week", retried.source: ""}
    claims = Claims(run_of(tmp_path, overwrite=True), "this-run", seen)  # type: ignore[arg-type]
    try:
        assert claims.claim(before) is None  # finished before this run: redone, as asked
        assert claims.claimed[before.source].decision.reason is Reason.OVERWRITE
        for done in (after, retried):
            assert claims.claim(done) == FileResult(done.source, FileStatus.SKIPPED, note="transcribed by another CareVoice process meanwhile")
    finally:
        claims.release_all()


def test_a_touched_recording_s_record_is_not_refreshed_while_another_process_holds_the_file(tmp_path: Path) -> None:
    entry = job(tmp_path, "a.wav")
    transcribed(entry)
    before = (tmp_path / ".a.carevoice.json").read_bytes()
    os.utime(entry.source, ns=(1, 1))
    other = try_lock(entry.output_stem)  # another run is writing this file right now
    assert other is not None
    try:
        (planned,) = plan_files([entry], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
    finally:
        other.release()
    assert planned.decision.action is Action.SKIP
    assert (tmp_path / ".a.carevoice.json").read_bytes() == before  # left to the run that holds it


def test_a_corrupt_record_fails_its_file_without_stopping_the_plan(tmp_path: Path) -> None:
    broken, fresh = job(tmp_path, "broken.wav"), job(tmp_path, "fresh.wav")
    transcribed(broken)
    record = tmp_path / ".broken.carevoice.json"
    record.write_text(record.read_text(encoding="ascii").replace('"engine_revision": 1', '"engine_revision": "x"'), encoding="ascii")
    planned = plan_files([broken, fresh], settings(tmp_path), run_of(tmp_path))  # type: ignore[arg-type]
    assert actions(planned) == [("broken.wav", Action.FAIL, Reason.FOREIGN_OUTPUT), ("fresh.wav", Action.TRANSCRIBE, Reason.NEW)]


def test_planning_says_after_each_file_how_many_it_has_planned(tmp_path: Path) -> None:
    """A watcher beats while it plans a whole folder after a restart (a liveness probe must not kill it)."""
    finished, fresh, blocked = job(tmp_path, "finished.wav"), job(tmp_path, "fresh.wav"), job(tmp_path, "visit.mp3")
    transcribed(finished)
    (tmp_path / "visit.txt").write_text("a person's notes\n", encoding="utf-8")
    counts: list[int] = []
    planned = plan_files([finished, fresh, blocked], settings(tmp_path), run_of(tmp_path), on_planned=counts.append)  # type: ignore[arg-type]
    assert actions(planned) == [
        ("finished.wav", Action.SKIP, Reason.CURRENT),
        ("fresh.wav", Action.TRANSCRIBE, Reason.NEW),
        ("visit.mp3", Action.FAIL, Reason.FOREIGN_OUTPUT),
    ]
    assert counts == [1, 2, 3]
