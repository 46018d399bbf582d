"""models.py: --model values resolve offline first; the packaged base model is assembled once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult

from carevoice.engine import models
from carevoice.engine.models import (
    MODEL_FILES,
    ModelRef,
    assemble_split_model,
    resolve_model,
)
from carevoice.errors import SetupError
from carevoice.settings import default_cache_dir


def package_data(package: str) -> Path:
    folder = models._package_dir(package)
    assert folder is not None, f"{package} is not installed (pip install -e '.[models,test]')"
    return folder / "data"


def test_base_is_assembled_once_with_the_right_size() -> None:
    cache = default_cache_dir()  # the session's cache (conftest): shared with the transcribe tests
    parts = [package_data(models.BASE_PARTS[0]) / "model.bin.part1", package_data(models.BASE_PARTS[1]) / "model.bin.part2"]
    first = resolve_model("base", cache)
    model_bin = Path(first.load_from) / "model.bin"
    stamp = model_bin.stat()
    second = resolve_model("base", cache)
    assert second == first
    assert (model_bin.stat().st_mtime_ns, model_bin.stat().st_ino) == (stamp.st_mtime_ns, stamp.st_ino)  # not rewritten
    assert stamp.st_size == sum(p.stat().st_size for p in parts)
    with open(model_bin, "rb") as assembled, open(parts[1], "rb") as tail:
        assembled.seek(parts[0].stat().st_size)
        assert assembled.read(1 << 16) == tail.read(1 << 16)  # the second half follows the first
    for name in MODEL_FILES:
        assert (Path(first.load_from) / name).read_bytes() == (package_data(models.BASE_PARTS[0]) / name).read_bytes()
    assert Path(first.load_from).parent == cache / "models"
    assert (first.model_id, first.is_local) == ("base", True)
    assert "PyPI" in first.origin
    assert [p.name for p in (cache / "models").iterdir() if p.name.startswith(".")] == []  # no temporary folders left


@pytest.fixture
def split_model(tmp_path: Path) -> tuple[list[Path], Path]:
    """Two small 'halves' and the files that go with them."""
    source = tmp_path / "package"
    source.mkdir()
    parts = [source / "model.bin.part1", source / "model.bin.part2"]
    parts[0].write_bytes(b"A" * 1000)
    parts[1].write_bytes(b"B" * 500)
    for name in MODEL_FILES:
        (source / name).write_text(f"{name} contents\n", encoding="utf-8")
    return parts, source


def test_assembly_concatenates_and_copies_the_model_files(split_model: tuple[list[Path], Path], tmp_path: Path) -> None:
    parts, source = split_model
    target = assemble_split_model(parts, source, tmp_path / "cache")
    assert (target / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 500
    assert sorted(p.name for p in target.iterdir()) == sorted(["model.bin", *MODEL_FILES])
    assert (target / "config.json").read_text(encoding="utf-8") == "config.json contents\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary folder left


def test_assembly_happens_once(split_model: tuple[list[Path], Path], tmp_path: Path) -> None:
    parts, source = split_model
    first = assemble_split_model(parts, source, tmp_path / "cache")
    stamp = (first / "model.bin").stat()
    second = assemble_split_model(parts, source, tmp_path / "cache")
    assert second == first
    assert (second / "model.bin").stat().st_mtime_ns == stamp.st_mtime_ns
    assert (second / "model.bin").stat().st_ino == stamp.st_ino


def test_a_damaged_cached_model_is_rebuilt(split_model: tuple[list[Path], Path], tmp_path: Path) -> None:
    parts, source = split_model
    target = assemble_split_model(parts, source, tmp_path / "cache")
    (target / "model.bin").write_bytes(b"A" * 700)  # e.g. a disk that filled up under an older version
    again = assemble_split_model(parts, source, tmp_path / "cache")
    assert again == target
    assert (again / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 500
    assert sorted(p.name for p in again.parent.iterdir()) == [again.name]


def test_an_unwritable_cache_is_a_setup_error(split_model: tuple[list[Path], Path], tmp_path: Path) -> None:
    parts, source = split_model
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be\n", encoding="utf-8")
    with pytest.raises(SetupError) as caught:
        assemble_split_model(parts, source, blocker)
    assert "cannot assemble the default model" in caught.value.message
    assert "CAREVOICE_CACHE_DIR" in caught.value.hint


def test_tiny_en_comes_from_its_package(tmp_path: Path) -> None:
    ref = resolve_model("tiny.en", tmp_path)
    assert (ref.model_id, ref.is_local) == ("tiny.en", True)
    assert (Path(ref.load_from) / "model.bin").is_file()
    assert list(tmp_path.iterdir()) == []  # nothing assembled or copied


@pytest.mark.parametrize("name", ["/nonexistent/model", "./missing-model", "~/no-such-model-dir", "a/b/c"])
def test_a_missing_model_folder_is_a_setup_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(SetupError) as caught:
        resolve_model(name, tmp_path)
    assert "does not exist" in caught.value.message and name in caught.value.message
    assert caught.value.hint


def test_a_folder_without_model_bin_is_a_setup_error(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SetupError) as caught:
        resolve_model(str(folder), tmp_path)
    assert caught.value.message == f"{folder} has no model.bin; also missing: tokenizer.json, vocabulary.txt"
    assert "model.bin, config.json, tokenizer.json" in caught.value.hint


def test_a_model_folder_is_used_as_is(tmp_path: Path) -> None:
    folder = tmp_path / "whisper-ct2"
    folder.mkdir()
    for name in ("model.bin", *MODEL_FILES):
        (folder / name).write_bytes(b"not loaded here")
    assert resolve_model(str(folder), tmp_path / "cache") == ModelRef(str(folder), "local:whisper-ct2", "local directory")


@pytest.mark.parametrize("name", ["large-v3", "turbo", "Systran/faster-whisper-small"])
def test_other_names_are_hub_references(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    ref = resolve_model(name, tmp_path)
    assert (ref.load_from, ref.model_id, ref.is_local) == (name, name, False)
    assert "hub" in ref.origin.lower()
    assert list(tmp_path.iterdir()) == []  # nothing downloaded: resolving never loads


def test_packaged_names_fall_back_to_the_hub_without_their_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_package_dir", lambda package: None)
    assert resolve_model("tiny.en", tmp_path) == ModelRef("tiny.en", "tiny.en", "Hugging Face hub (downloaded once, then cached)")
    assert not resolve_model("base", tmp_path).is_local


def test_cli_names_a_missing_model_and_exits_3(
    run_cli: Callable[..., CliResult], data_dir: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes((data_dir / "lhotse__LJ002-0020.wav").read_bytes())
    result = run_cli("transcribe", clip, "-m", tmp_path / "no-such-model")
    assert result.exit_code == 3
    assert f"error: model folder {tmp_path / 'no-such-model'} does not exist" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_cli_explains_a_model_folder_that_cannot_be_loaded(
    run_cli: Callable[..., CliResult], data_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"\0" * 64)
    good = Path(resolve_model("tiny.en", tmp_path / "cache").load_from)
    for name in MODEL_FILES:
        (broken / name).symlink_to(good / name)  # complete, but its weights are not a model
    clip = tmp_path / "a.wav"
    clip.write_bytes((data_dir / "lhotse__LJ002-0020.wav").read_bytes())
    result = run_cli("transcribe", clip, "-m", broken, "--device", "cpu")
    assert result.exit_code == 3
    assert "error: cannot load model 'local:broken-model' on cpu" in result.stderr
    assert "CTranslate2 Whisper model" in result.stderr  # the hint
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "broken-model"]
