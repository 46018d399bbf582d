"""A model folder must be complete to load offline: refused before loading, naming the file it lacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult

from carevoice.commands import doctor
from carevoice.commands.doctor import CheckStatus, Context
from carevoice.engine.models import missing_model_files, resolve_model
from carevoice.errors import SetupError
from carevoice.settings import DoctorSettings, EngineSettings


def tiny_copy(tmp_path: Path, leave_out: str = "", vocabulary_size: int | None = None) -> Path:
    """The packaged tiny.en as a folder of links, without ``leave_out`` (and with a vocabulary of
    ``vocabulary_size`` lines when given)."""
    source = Path(resolve_model("tiny.en", tmp_path / "cache").load_from)
    folder = tmp_path / "model"
    folder.mkdir()
    for item in source.iterdir():
        if item.name != leave_out:
            (folder / item.name).symlink_to(item)
    if vocabulary_size is not None:
        (folder / "vocabulary.txt").unlink()
        (folder / "vocabulary.txt").write_text("".join(f"t{i}\n" for i in range(vocabulary_size)), encoding="utf-8")
    return folder


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json", "vocabulary.txt", "model.bin"])
def test_a_folder_missing_a_file_is_refused_naming_it(name: str, tmp_path: Path) -> None:
    folder = tiny_copy(tmp_path, leave_out=name)
    with pytest.raises(SetupError) as caught:
        resolve_model(str(folder), tmp_path / "cache")
    assert caught.value.message.startswith(f"{folder} has no {name}")
    assert "carevoice models pull" in caught.value.hint


def test_a_128_mel_folder_needs_its_preprocessor_config(tmp_path: Path) -> None:
    folder = tiny_copy(tmp_path, vocabulary_size=51866)  # large-v3's vocabulary: 128 mel bins
    with pytest.raises(SetupError) as caught:
        resolve_model(str(folder), tmp_path / "cache")
    assert caught.value.message == f"{folder} has no preprocessor_config.json (a 128-mel model: vocabulary of 51866 tokens)"
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}), encoding="utf-8")
    assert missing_model_files(folder) == []


def test_an_80_mel_folder_needs_no_preprocessor_config(tmp_path: Path) -> None:
    assert missing_model_files(tiny_copy(tmp_path, vocabulary_size=51865)) == []


def test_cli_refuses_a_folder_without_tokenizer_before_loading(run_cli: Callable[..., CliResult], data_dir: Path, tmp_path: Path) -> None:
    folder = tiny_copy(tmp_path, leave_out="tokenizer.json")
    clip = tmp_path / "a.wav"
    clip.write_bytes((data_dir / "lhotse__LJ002-0020.wav").read_bytes())
    result = run_cli("transcribe", clip, "-m", folder, "--device", "cpu")
    assert result.exit_code == 3
    assert f"error: {folder} has no tokenizer.json (faster-whisper would download another model's tokenizer for it)" in result.stderr
    assert "carevoice models pull" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "model"]  # no transcript


def test_doctor_fails_the_model_check_of_an_incomplete_folder(tmp_path: Path) -> None:
    folder = tiny_copy(tmp_path, leave_out="tokenizer.json")
    settings = DoctorSettings(output_dir=tmp_path, engine=EngineSettings(model=str(folder), cache_dir=tmp_path / "cache"))
    result = doctor.check_model(Context(settings))
    assert result.status is CheckStatus.FAIL
    assert (
        result.detail == f"{str(folder)!r}: {folder} has no tokenizer.json (faster-whisper would download another model's tokenizer for it)"
    )
    assert "carevoice models pull" in result.hint
