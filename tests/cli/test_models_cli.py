"""`carevoice models` and `models pull`, against a hub on loopback (HF_ENDPOINT): the real hub is never reached."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, CliResult, run_on_terminal
from doubles import FakeGpu
from hubs import Hub, commit_of, copy_without, hub_file, hub_handler, proxy_handler, serving, with_timestamp_tokens

from carevoice.engine.models import resolve_model

TINY_REPO = "Systran/faster-whisper-tiny.en"
BREEZE_REPO = "phate334/Breeze-ASR-25-int8-CT2"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Hub-shaped copies: tiny.en (its package) and a Breeze stand-in (the packaged base without its
    tokenizer.json, whose tokenizer comes from 'openai/whisper-large-v2')."""
    cache = tmp_path_factory.mktemp("hub-source")
    tiny = Path(resolve_model("tiny.en", cache).load_from)
    base = Path(resolve_model("base", cache).load_from)
    breeze = copy_without(base, cache / "breeze", "tokenizer.json")
    return {
        TINY_REPO: {f.name: hub_file(f) for f in tiny.iterdir()},
        BREEZE_REPO: {f.name: hub_file(f) for f in breeze.iterdir()},
        "openai/whisper-large-v2": {"tokenizer.json": hub_file(base / "tokenizer.json")},
    }


@pytest.fixture
def hub(hub_repos: dict[str, dict[str, object]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    served = Hub(hub_repos)  # type: ignore[arg-type]
    with serving(hub_handler(served)) as url:
        served.url = url
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("CAREVOICE_CACHE_DIR", str(tmp_path / "cache"))
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        yield served


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_downloads_a_complete_verified_model_that_then_works_offline(
    hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path, data_dir: Path
) -> None:
    result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "cache" / "models" / "tiny.en"
    assert f"tiny.en is in {folder}" in result.stderr
    for name, f in hub.repos[TINY_REPO].items():
        assert sha256(folder / name) == f.sha256
    record = json.loads((folder / "carevoice-pull.json").read_text())
    assert (record["repo"], record["endpoint"]) == (TINY_REPO, hub.url)
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [".tiny.en.lock", "tiny.en"]  # no staging left

    hub.requests.clear()
    again = run_cli("models", "pull", "tiny.en")
    assert again.exit_code == 0 and hub.requests == []  # already there: no network


def test_a_download_cut_half_way_resumes_with_a_range_request(hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    size = hub.repos[TINY_REPO]["model.bin"].size
    hub.drops["model.bin"] = 3  # every try of this pull is cut: it stops, keeping what arrived
    first = run_cli("models", "pull", "tiny.en")
    assert first.exit_code == 3
    assert "cannot download model.bin of Systran/faster-whisper-tiny.en" in first.stderr
    assert "run the same command again: it resumes" in first.stderr
    assert not (tmp_path / "cache" / "models" / "tiny.en").exists()  # no folder until it is complete
    part = tmp_path / "cache" / "models" / ".tiny.en.download" / "model.bin.part"
    kept = part.stat().st_size
    assert size // 2 <= kept < size
    ranges = hub.downloads("model.bin")
    assert ranges[0] is None and all(r is not None for r in ranges[1:])  # it resumed within the run too

    hub.requests.clear()
    second = run_cli("models", "pull", "tiny.en")
    assert second.exit_code == 0, second.stderr
    assert hub.downloads("model.bin") == [f"bytes={kept}-"]
    assert sha256(tmp_path / "cache" / "models" / "tiny.en" / "model.bin") == hub.repos[TINY_REPO]["model.bin"].sha256


def test_a_pull_that_finds_the_model_pulled_once_it_holds_the_lock_downloads_nothing(
    hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache" / "models" / "tiny.en"
    take_lock = fcntl.flock

    def another_pull_finishes_first(fd: int, operation: int) -> None:
        """Another pull of tiny.en completed after this one looked for the folder, before it took the lock."""
        if not folder.exists():
            folder.mkdir(parents=True)
            for name, f in hub.repos[TINY_REPO].items():
                shutil.copy(f.path, folder / name)
        take_lock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", another_pull_finishes_first)
    result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 0, result.stderr
    assert f"tiny.en is in {folder}" in result.stderr
    assert hub.requests == []  # nothing downloaded again
    assert sorted(p.name for p in folder.iterdir()) == sorted(hub.repos[TINY_REPO])


@pytest.mark.parametrize("record", ['{"commit": ', "[]", "\udcff"], ids=["truncated", "not-an-object", "not-utf8"])
def test_a_corrupt_staging_record_counts_as_another_revision(
    hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path, record: str
) -> None:
    staging = tmp_path / "cache" / "models" / ".tiny.en.download"
    staging.mkdir(parents=True)
    (staging / "carevoice-pull.json").write_bytes(record.encode("utf-8", "surrogateescape"))
    (staging / "model.bin.part").write_bytes(b"parts of who knows what")
    result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 0, result.stderr
    assert hub.downloads("model.bin") == [None]  # from the start: the part was thrown away
    assert sha256(tmp_path / "cache" / "models" / "tiny.en" / "model.bin") == hub.repos[TINY_REPO]["model.bin"].sha256


def test_a_corrupted_file_is_refused_and_nothing_usable_is_left(hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    hub.corrupt.add("model.bin")
    result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 3
    assert "model.bin of Systran/faster-whisper-tiny.en from" in result.stderr
    assert "is not the file the hub lists (its hash is" in result.stderr and "deleted" in result.stderr
    models = tmp_path / "cache" / "models"
    assert not (models / "tiny.en").exists()
    assert not (models / ".tiny.en.download" / "model.bin.part").exists() and not (models / ".tiny.en.download" / "model.bin").exists()
    listing = run_cli("models", "--json")
    assert {m["name"]: m["state"] for m in json.loads(listing.stdout)["models"]}["tiny"] == "not in cache"


def test_breeze_is_completed_with_the_large_v2_tokenizer(
    hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path, data_dir: Path
) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes((data_dir / "lhotse__LJ002-0020.wav").read_bytes())
    missing = run_cli("transcribe", clip, "-m", "breeze-asr-25")
    assert missing.exit_code == 3
    assert "model breeze-asr-25 is not in the cache" in missing.stderr and "carevoice models pull breeze-asr-25" in missing.stderr
    result = run_cli("models", "pull", "breeze-asr-25")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "cache" / "models" / "breeze-asr-25"
    assert sha256(folder / "tokenizer.json") == hub.repos["openai/whisper-large-v2"]["tokenizer.json"].sha256
    ref = resolve_model("breeze-asr-25", tmp_path / "cache")
    assert (ref.load_from, ref.is_local) == (str(folder), True)


def test_a_tokenizer_that_lists_the_timestamp_tokens_fits_too(hub: Hub, run_cli: Callable[..., CliResult], tmp_path: Path) -> None:
    large_v2 = hub.repos["openai/whisper-large-v2"]["tokenizer.json"]
    newer = hub_file(with_timestamp_tokens(large_v2.path, tmp_path / "tokenizer.json"))
    hub.repos = {**hub.repos, "openai/whisper-large-v2": {"tokenizer.json": newer}}
    result = run_cli("models", "pull", "breeze-asr-25")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "cache" / "models" / "breeze-asr-25"
    assert sha256(folder / "tokenizer.json") == newer.sha256


def test_pull_goes_through_the_proxy_the_environment_names(
    hub: Hub, run_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    with serving(proxy_handler(seen)) as proxy:
        monkeypatch.setenv("http_proxy", proxy)
        result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 0, result.stderr
    assert f"{hub.url}/api/models/{TINY_REPO}/revision/main?blobs=true" in seen
    assert f"{hub.url}/{TINY_REPO}/resolve/{commit_of(TINY_REPO)}/model.bin" in seen


def test_an_unreachable_hub_says_what_to_do(hub: Hub, run_cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    result = run_cli("models", "pull", "tiny.en")
    assert result.exit_code == 3
    assert "cannot download the file list of Systran/faster-whisper-tiny.en from http://127.0.0.1:9" in result.stderr
    assert "HF_ENDPOINT" in result.stderr and "https_proxy" in result.stderr


def test_the_progress_bar_is_drawn_on_a_terminal(hub: Hub) -> None:
    code, stdout, terminal = run_on_terminal([sys.executable, "-m", "carevoice", "models", "pull", "tiny.en"], cwd=REPO_ROOT)
    assert code == 0, terminal
    assert "pulling tiny.en" in terminal
    assert "78.1/78.1 MB" in terminal  # rich's DownloadColumn at the end
    assert stdout == ""


@pytest.mark.parametrize(
    ("gpus", "language", "recommended"),
    [
        ([FakeGpu(name="NVIDIA GeForce RTX 5070 Ti", memory_total_mib=16_303.0)], "zh-TW", "breeze-asr-25"),
        ([FakeGpu(name="NVIDIA GeForce RTX 5070 Ti", memory_total_mib=16_303.0)], "en", "turbo"),
        ([FakeGpu(name="NVIDIA T1000", memory_total_mib=4_096.0)], "en", "small.en"),
        ([FakeGpu(name="NVIDIA T1000", memory_total_mib=4_096.0)], "zh-TW", "small"),
        ([], "zh-TW", "base"),
        ([], "en", "base.en"),
    ],
)
def test_models_lists_the_catalogue_and_recommends_one(
    hub: Hub, run_cli: Callable[..., CliResult], fake_nvml: Callable[..., object], gpus: list[FakeGpu], language: str, recommended: str
) -> None:
    fake_nvml(gpus)
    result = run_cli("models", "--json", "--language", language)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["recommended"]["name"] == recommended
    states = {m["name"]: m["state"] for m in record["models"]}
    assert states["tiny.en"] == states["base"] == "ready"  # the packaged ones
    assert states["breeze-asr-25"] == "not in cache"
    table = run_cli("models", "--language", language)
    assert table.exit_code == 0
    assert f"* recommended for {language} on this" in table.stdout
    assert any(line.startswith("*") and recommended in line.split() for line in table.stdout.splitlines())
    assert hub.requests == []  # listing never reaches the hub


def test_an_unknown_hub_name_is_still_fetched_by_faster_whisper_when_asked(tmp_path: Path) -> None:
    ref = resolve_model("large-v3", tmp_path)
    assert (ref.load_from, ref.is_local) == ("large-v3", False)
