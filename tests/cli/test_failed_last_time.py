"""Issue 23 §4: a file that failed last time is remembered (``.<name>.carevoice-failed.json``), so
that the plan says ``try again`` (and a dry run predicts the failure) while the recording is
unchanged, and ``transcribe`` once it changed. Real audio and ffmpeg, the real CLI; a FakeEngine
(tests/doubles.py) where the words do not matter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import CliResult, invoke_cli
from doubles import FakeEngine, fake_load

from carevoice.engine.whisper import Engine
from carevoice.errors import EngineError

CALL = "hfdatasets__vctk_p225_001_mic1.flac"
PRESS = "lhotse__LJ002-0035.wav"
CPU = ("--device", "cpu")
NOT_A_RECORDING = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 12  # a document saved under a recording's name
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d"


def run(*args: object) -> CliResult:
    return invoke_cli("transcribe", *args, *CPU)


def line_for(text: str, path: Path) -> str:
    (line,) = [ln for ln in text.splitlines() if f"{path} (" in ln or f"{path}: " in ln]
    return line


def hidden(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


def test_a_file_that_failed_is_tried_again_only_as_a_prediction_until_it_is_replaced(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    visit = folder / "visit.wav"
    visit.write_bytes(NOT_A_RECORDING)
    shutil.copyfile(data_dir / CALL, folder / "good.flac")

    first = run(folder)
    assert first.exit_code == 1, first.stderr
    error = line_for(first.stderr, visit).removeprefix(f"error: {visit}: ")
    assert error and "\n" not in error
    note = json.loads((folder / ".visit.carevoice-failed.json").read_text(encoding="utf-8"))
    assert note["error"] == error and note["input"]["size"] == len(NOT_A_RECORDING)

    plan = run(folder, "--dry-run")
    assert plan.exit_code == 1, plan.stdout  # nothing changed: it will fail again
    line = line_for(plan.stdout, visit)
    assert re.fullmatch(
        rf"try again {re.escape(str(visit))} \(failed last time, {WHEN}: {re.escape(error)}; writes txt, srt, json\)", line
    ), line
    assert line_for(plan.stdout, folder / "good.flac").startswith("skip ")
    assert (
        plan.stdout.splitlines()[-1]
        == "dry run: 0 transcribe, 1 skip, 0 redo, 0 add, 1 try again, 0 fail (of 2 file(s)); nothing was changed"
    )
    assert ".visit.carevoice-failed.json" in hidden(folder)  # the dry run touched nothing, and planned no hidden file

    again = run(folder)
    assert again.exit_code == 1 and line_for(again.stderr, visit) == f"error: {visit}: {error}"

    shutil.copyfile(data_dir / PRESS, visit)  # the recording copied again, whole this time
    replanned = run(folder, "--dry-run")
    assert replanned.exit_code == 0, replanned.stdout
    assert line_for(replanned.stdout, visit) == f"transcribe {visit} (changed since it failed last time; writes txt, srt, json)"

    done = run(folder)
    assert done.exit_code == 0, done.stderr
    assert line_for(done.stderr, visit).startswith(f"done {visit} (")
    assert line_for(done.stderr, visit).endswith("; transcribe: changed since it failed last time)")
    assert (folder / "visit.txt").exists()
    assert hidden(folder) == {".visit.carevoice.json", ".good.carevoice.json"}  # the note is gone once it is done


def test_a_file_failed_by_an_engine_bug_is_tried_again_by_the_next_carevoice_and_says_so(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    shutil.copyfile(data_dir / CALL, folder / "a.flac")
    # A bug in this CareVoice's engine that fails each file it is handed (no cause: it fails again until fixed).
    monkeypatch.setattr(Engine, "load", fake_load(refuse=EngineError("the engine gave no result", "report it")))
    first = run(folder, "--json")
    assert first.exit_code == 1
    (failed,) = json.loads(first.stdout)["files"]
    assert failed["status"] == "failed" and failed["error"]

    monkeypatch.setattr(Engine, "load", fake_load())  # CareVoice fixed
    fixed = run(folder, "--json")
    assert fixed.exit_code == 0, fixed.stderr
    (done,) = json.loads(fixed.stdout)["files"]
    assert done["status"] == "done"
    assert re.fullmatch(rf"try again: failed last time, {WHEN}: {re.escape(failed['error'])}", done["why"]), done["why"]
    assert hidden(folder) == {".a.carevoice.json"}


def test_an_empty_file_is_not_remembered_as_failed(tmp_path: Path, fake_engines: list[FakeEngine]) -> None:
    """An empty or truncated file is incomplete (an upload under way): not the recording's last word."""
    folder = tmp_path / "visits"
    folder.mkdir()
    (folder / "empty.wav").write_bytes(b"")
    assert run(folder).exit_code == 1
    assert hidden(folder) == set()
    plan = run(folder, "--dry-run")
    assert line_for(plan.stdout, folder / "empty.wav").startswith("transcribe ")
