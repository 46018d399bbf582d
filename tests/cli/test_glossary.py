"""Issue 25 §2: a ward glossary (--glossary FILE, or glossary = "..." in a carevoice.toml) is read
once, refused in one line naming the file when it cannot serve, and recorded by its terms among the
options that shape the text: a changed glossary redoes, the same terms under another name do not.
Real audio and ffmpeg; a FakeEngine (tests/doubles.py): only the options are under test here (the
decoder's side is tests/engine/test_hot_words.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CliResult, invoke_cli
from doubles import FakeEngine

from carevoice.run.records import read_record

CALL = "hfdatasets__vctk_p225_001_mic1.flac"
CPU = ("--device", "cpu")
TERMS = ["Metformin", "nephrology", "腎小球"]


def run(*args: object) -> CliResult:
    return invoke_cli("transcribe", *args, *CPU)


def line_for(result: CliResult, path: Path) -> str:
    (line,) = [ln for ln in result.stderr.splitlines() if f"{path} (" in ln]
    return line


def ward(tmp_path: Path, data_dir: Path) -> Path:
    folder = tmp_path / "ward"
    folder.mkdir()
    shutil.copyfile(data_dir / CALL, folder / "a.flac")
    return folder


def test_a_glossary_is_recorded_by_its_terms_and_only_a_change_of_terms_redoes(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    folder = ward(tmp_path, data_dir)
    plain = run(folder)
    assert plain.exit_code == 0, plain.stderr
    record = read_record(folder / "a")
    assert record is not None and "glossary" not in record.text  # a record from before glossaries stays current

    glossary = tmp_path / "ward.txt"
    glossary.write_text("# the ward's words\nMetformin\n\nnephrology\n腎小球\n", encoding="utf-8")
    added = run(folder, "--glossary", glossary)
    assert added.exit_code == 0, added.stderr
    assert line_for(added, folder / "a.flac").endswith("; redo: --glossary added)"), added.stderr
    record = read_record(folder / "a")
    assert record is not None and record.text["glossary"] == TERMS
    assert json.loads((folder / "a.json").read_text(encoding="utf-8"))["options"]["glossary"] == TERMS

    # The same terms under another name, with other comments, spaces and a repeat: nothing to redo.
    renamed = tmp_path / "copy of ward.txt"
    renamed.write_text("\ufeff  Metformin \n# kept by the ward sister\nnephrology\n腎小球\nMetformin\n", encoding="utf-8")
    same = run(folder, "--glossary", renamed)
    assert same.exit_code == 0, same.stderr
    assert line_for(same, folder / "a.flac").startswith("skipped"), same.stderr

    glossary.write_text("Metformin\nnephrology\n腎小球\ninsulin\n", encoding="utf-8")
    changed = run(folder, "--glossary", glossary)
    assert line_for(changed, folder / "a.flac").endswith("; redo: --glossary changed)"), changed.stderr
    dropped = run(folder)
    assert line_for(dropped, folder / "a.flac").endswith("; redo: --glossary dropped)"), dropped.stderr
    assert "insulin" not in changed.stderr + dropped.stderr  # the terms are in the record, not in the lines


def test_a_folders_glossary_is_found_beside_its_file_wherever_the_run_starts(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_engines: list[FakeEngine]
) -> None:
    folder = ward(tmp_path, data_dir)
    (folder / "carevoice.toml").write_text('glossary = "words/ward.txt"\n', encoding="utf-8")
    (folder / "words").mkdir()
    (folder / "words" / "ward.txt").write_text("\n".join(TERMS) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the file's folder
    plan = run(folder, "--dry-run")
    assert f"--glossary {folder / 'words' / 'ward.txt'} (3 terms) (from {folder / 'carevoice.toml'})" in plan.stdout, (
        plan.stdout + plan.stderr
    )
    done = run(folder)
    assert done.exit_code == 0, done.stderr
    record = read_record(folder / "a")
    assert record is not None and record.text["glossary"] == TERMS


def test_a_glossary_that_cannot_serve_is_one_line_naming_it_before_any_model_loads(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    folder = ward(tmp_path, data_dir)
    glossary = tmp_path / "ward.txt"
    for content, expected in (
        (None, f"error: glossary {glossary}: cannot read it (No such file or directory)"),
        ("Metformin\n".encode("utf-16"), f"error: glossary {glossary} is not UTF-8 text"),
        (b"# only a comment\n\n", f"error: glossary {glossary} holds no terms"),
        (
            "\n".join(f"腎小球{i}" for i in range(30)).encode(),
            f"error: glossary {glossary} is 380 bytes, more than Whisper's prompt holds (223 bytes",
        ),
    ):
        glossary.unlink(missing_ok=True)
        if content is not None:
            glossary.write_bytes(content)
        result = run(folder, "--glossary", glossary)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.splitlines()[0].startswith(expected), result.stderr
        assert fake_engines == [] and not list(folder.glob("*.txt"))


def test_watch_takes_the_glossary_option(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("watch", "--help")
    assert "--glossary" in result.stdout
