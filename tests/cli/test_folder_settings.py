"""Issue 23 §2 and §4: folder settings that stick (carevoice.toml), redo reasons that name the
option, and a --dry-run whose plan goes to stdout with an exit code that says whether a file would
fail. Real audio and ffmpeg; a FakeEngine (tests/doubles.py) where only the options are under test,
and the real tiny.en for the watcher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CliResult, invoke_cli
from doubles import FakeEngine
from watchers import done, driven, start  # noqa: F401  (a fixture)

from carevoice.engine.models import resolve_model
from carevoice.run.records import read_record

CALL = "hfdatasets__vctk_p225_001_mic1.flac"
ASK = "hfdatasets__vctk_p225_002_mic1.flac"
PRESS = "lhotse__LJ002-0035.wav"
CPU = ("--device", "cpu")


def run(*args: object) -> CliResult:
    return invoke_cli("transcribe", *args, *CPU)


def line_for(result: CliResult, path: Path) -> str:
    (line,) = [ln for ln in result.stderr.splitlines() if f"{path} (" in ln]
    return line


def wards(tmp_path: Path, data_dir: Path) -> Path:
    """parent/ (model large-v3 for the whole floor) holding ward-tw/ (zh-TW) and ward-b/ (no file of its own)."""
    parent = tmp_path / "floor"
    for ward in ("ward-tw", "ward-b"):
        (parent / ward).mkdir(parents=True)
        for name, source in (("a.flac", CALL), ("b.flac", ASK)):
            shutil.copyfile(data_dir / source, parent / ward / name)
    (parent / "carevoice.toml").write_text('model = "large-v3"\nbeam_size = 3\n', encoding="utf-8")
    (parent / "ward-tw" / "carevoice.toml").write_text('language = "zh-TW"\nbeam_size = 2\n', encoding="utf-8")
    return parent


def text_options(folder: Path, stem: str) -> dict:
    record = read_record(folder / stem)
    assert record is not None, f"no record for {folder / stem}"
    return {"model": record.model, **record.text}


def test_a_colleagues_plain_run_on_the_parent_keeps_the_wards_choice(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)
    ward = parent / "ward-tw"
    first = run(ward)
    assert first.exit_code == 0, first.stderr
    # The nearer file wins key by key: the ward's language and beam, the floor's model.
    tw = {"model": "large-v3", "task": "transcribe", "language": "zh", "beam_size": 2, "zh_script": "tw"}
    assert text_options(ward, "a") == text_options(ward, "b") == tw

    loaded_before = len(fake_engines)
    colleague = run(parent)  # no option at all, on the folder above
    assert colleague.exit_code == 0, colleague.stderr
    for stem in ("a", "b"):
        assert line_for(colleague, ward / f"{stem}.flac").startswith("skipped"), colleague.stderr
        assert text_options(ward, stem) == tw
        # The other ward, in the same run, gets its own folders' settings: the floor's.
        assert text_options(parent / "ward-b", stem) == {
            "model": "large-v3",
            "task": "transcribe",
            "language": None,
            "beam_size": 3,
            "zh_script": "auto",
        }
    assert "redo" not in colleague.stderr
    assert len(fake_engines) == loaded_before + 1  # one model for both groups: loaded once


def test_the_command_line_wins_over_the_folders_file_and_the_redo_names_the_option(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)
    ward = parent / "ward-tw"
    assert run(ward).exit_code == 0
    again = run(ward, "--zh-script", "simplified")
    assert again.exit_code == 0, again.stderr
    assert line_for(again, ward / "a.flac").endswith("; redo: --zh-script tw → simplified)"), again.stderr
    assert text_options(ward, "a")["zh_script"] == "simplified"
    model = run(ward, "--zh-script", "simplified", "-m", "large-v2")
    assert line_for(model, ward / "a.flac").endswith("; redo: --model large-v3 → large-v2)"), model.stderr
    english = run(ward, "--zh-script", "simplified", "-m", "large-v2", "-l", "en")
    assert line_for(english, ward / "a.flac").endswith("; redo: --language zh → en)"), english.stderr


def test_a_run_over_two_wards_counts_what_it_completed_from_saved_transcripts(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)  # two groups: the wards' options differ
    first = run(parent, "-f", "json")
    assert first.exit_code == 0, first.stderr
    added = run(parent, "-f", "json,txt")  # txt renders from each recorded JSON: nothing is transcribed
    assert added.exit_code == 0, added.stderr
    assert added.stderr.splitlines()[-1] == "4 completed from their saved transcripts", added.stderr


def test_a_bad_folder_file_is_a_usage_error_naming_file_and_key_before_any_model_loads(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)
    bad = parent / "ward-b" / "carevoice.toml"
    for text, expected in (
        ('languag = "en"\n', f"error: {bad}: unknown key 'languag'"),
        ("beam_size = 0\n", f"error: {bad}: beam_size = 0: give a whole number, 1 or more"),
        ('zh_script = "traditional"\n', f"error: {bad}: zh_script = 'traditional': give one of auto, keep, tw, hk, simplified"),
        ('language = "klingon"\n', f"error: {bad}: language = 'klingon': --language 'klingon' is not a language Whisper knows"),
        ("model = \n", f"error: {bad} is not valid TOML"),
        # Values of another type, and a name no file system can look up: one line too, not a crash.
        ('zh_script = ["tw"]\n', f"error: {bad}: zh_script = ['tw']: give one of auto"),
        ("task = {a = 1}\n", f"error: {bad}: task = {{'a': 1}}: give one of transcribe, translate"),
        (f'model = "{"m" * 300}"\n', f"error: {bad}: model = '{'m' * 300}': give a model name"),
    ):
        bad.write_text(text, encoding="utf-8")
        result = run(parent)
        assert result.exit_code == 2, (text, result.stderr)
        assert result.stderr.splitlines()[0].startswith(expected), result.stderr
        assert fake_engines == []
        assert not list(parent.rglob("*.txt"))


def test_a_model_folder_in_a_folders_file_is_found_from_that_file_wherever_the_run_starts(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)
    (parent / "carevoice.toml").write_text('model = "./models/ward"\n', encoding="utf-8")
    tiny = resolve_model("tiny.en", tmp_path / "cache")  # the offline package's model folder
    (parent / "models").mkdir()
    (parent / "models" / "ward").symlink_to(tiny.load_from, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # not the file's folder: ./models/ward is still the floor's
    plan = run(parent / "ward-b", "--dry-run")
    assert f"--model {parent / 'models' / 'ward'} (from {parent / 'carevoice.toml'})" in plan.stdout, plan.stdout + plan.stderr


def test_a_dry_run_prints_its_plan_on_stdout_with_each_options_source_and_exits_1_when_a_file_would_fail(
    tmp_path: Path, data_dir: Path, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)
    ward = parent / "ward-tw"
    clean = run(ward, "--dry-run", "-f", "txt")
    assert clean.exit_code == 0, clean.stderr
    assert f"transcribe {ward / 'a.flac'} (writes txt)" in clean.stdout
    assert "a.flac" not in clean.stderr
    options = next(ln for ln in clean.stdout.splitlines() if ln.startswith("options for 2 file(s):"))
    assert f"--language zh (from {ward / 'carevoice.toml'})" in options
    assert f"--zh-script tw (from --language zh-TW, {ward / 'carevoice.toml'})" in options
    assert f"--model large-v3 (from {parent / 'carevoice.toml'})" in options
    assert "--format txt (from command line)" in options and "--task transcribe (from default)" in options

    shutil.copyfile(data_dir / PRESS, ward / "twin.wav")
    shutil.copyfile(data_dir / PRESS, ward / "twin.mp3")  # both would write twin.txt
    failing = run(ward, "--dry-run")
    assert failing.exit_code == 1, failing.stderr
    assert f"fail {ward / 'twin.wav'}" in failing.stdout
    assert failing.stdout.splitlines()[-1].startswith("dry run: 2 transcribe, 0 skip, 0 redo, 0 add, 2 fail")
    plan = run(ward, "--dry-run", "--json")  # with --json, stdout is the JSON alone
    assert plan.exit_code == 1 and json.loads(plan.stdout)["counts"]["fail"] == 2
    assert fake_engines == [] and not list(ward.glob("*.txt"))


def test_the_locale_chooses_the_script_only_where_no_option_folder_file_or_tag_does(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, fake_engines: list[FakeEngine]
) -> None:
    parent = wards(tmp_path, data_dir)  # ward-tw's file says zh-TW; ward-b's folders say no script
    (parent / "ward-s").mkdir()
    shutil.copyfile(data_dir / PRESS, parent / "ward-s" / "c.wav")
    (parent / "ward-s" / "carevoice.toml").write_text('zh_script = "simplified"\n', encoding="utf-8")
    monkeypatch.setenv("LANG", "zh_HK.UTF-8")
    plan = run(parent, "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    sources = sorted(ln for ln in plan.stdout.splitlines() if ln.startswith("options for"))
    assert len(sources) == 3, plan.stdout
    assert any("--zh-script hk (from locale LANG=zh_HK.UTF-8)" in ln for ln in sources), sources
    assert any(f"--zh-script simplified (from {parent / 'ward-s' / 'carevoice.toml'})" in ln for ln in sources), sources
    assert any(f"--zh-script tw (from --language zh-TW, {parent / 'ward-tw' / 'carevoice.toml'})" in ln for ln in sources), sources
    assert fake_engines == []  # a dry run loads nothing
    done_run = run(parent, "-f", "txt,json")
    assert done_run.exit_code == 0, done_run.stderr
    assert {d.name: text_options(d, stem)["zh_script"] for d, stem in ((parent / "ward-tw", "a"), (parent / "ward-b", "a"), (parent / "ward-s", "c"))} == {
        "ward-tw": "tw", "ward-b": "hk", "ward-s": "simplified"
    }  # fmt: skip
    # A -l tag said for this run wins over a folder's zh_script (the command line wins).
    tagged = run(parent / "ward-s", "-l", "zh-TW", "--dry-run")
    assert "--zh-script tw (from --language zh-TW, command line)" in tagged.stdout, tagged.stdout


def test_watch_honours_the_folders_file(tmp_path: Path, data_dir: Path, start) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "night").mkdir(parents=True)
    (inbox / "night" / "carevoice.toml").write_text("beam_size = 1\n", encoding="utf-8")
    shutil.copyfile(data_dir / PRESS, inbox / "night" / "press.wav")
    shutil.copyfile(data_dir / PRESS, inbox / "day.wav")
    watcher = start(inbox, "--settle", "0.5s", "--gather", "0.2s")
    watcher.seen(done("night/press.wav"))
    watcher.seen(done("day.wav"))
    assert watcher.stop()[0] == 0
    assert text_options(inbox / "night", "press")["beam_size"] == 1
    assert text_options(inbox, "day")["beam_size"] == 5


def test_watch_fails_the_files_of_a_folder_whose_model_cannot_load_and_goes_on(tmp_path: Path, data_dir: Path, start) -> None:
    """A ward's carevoice.toml names a model folder that is not there, another one that holds no
    model: their recordings fail with a line naming the file and the model, the other folders' are
    transcribed, and a ward's recording is tried again once its carevoice.toml is fixed."""
    inbox = tmp_path / "inbox"
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no model here\n", encoding="utf-8")
    for ward, model in (("gone", tmp_path / "no-such-model"), ("junk", not_a_model)):
        (inbox / ward).mkdir(parents=True)
        (inbox / ward / "carevoice.toml").write_text(f'model = "{model}"\n', encoding="utf-8")
        shutil.copyfile(data_dir / PRESS, inbox / ward / "press.wav")
    shutil.copyfile(data_dir / PRESS, inbox / "day.wav")
    # No -m: the folders choose (a FakeEngine for every model that loads: the words do not matter here).
    watcher = start(inbox, "--settle", "0.5s", "--gather", "0.2s", launcher=driven("bug", 10**9), engine=CPU)
    for ward, model in (("gone", tmp_path / "no-such-model"), ("junk", not_a_model)):
        line = watcher.seen(rf"{inbox / ward / 'press.wav'}: ")
        assert str(inbox / ward / "carevoice.toml") in line and str(model) in line, line
    watcher.seen(done("day.wav"))
    assert not (inbox / "gone" / "press.txt").exists()

    (inbox / "gone" / "carevoice.toml").write_text('model = "tiny.en"\n', encoding="utf-8")  # the ward fixes its file
    watcher.seen(done("gone/press.wav"))
    assert watcher.stop()[0] == 0
    assert text_options(inbox / "gone", "press")["model"] == "tiny.en"
    assert not (inbox / "junk" / "press.txt").exists()
