"""Issue 8 — `--shard K/N`: N copies of one command over a shared folder, with no coordination.

Shards are chosen by a stable hash of each file's path below the folder it was found in (or its
name when it was named itself), so every machine agrees whatever the order, the mount point or the
current folder; the N shards cover every file exactly once; collisions are decided on all inputs;
a shard killed half-way is finished by running it again. The pipeline logic is under test here, so
a fake engine stands in for the model (real ffmpeg, real files); the outputs of a real model through
the same pipeline are covered by test_transcribe_cli and test_batching.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA_DIR, invoke_cli
from doubles import FakeEngine

from carevoice.run.discovery import find_jobs, select_shard, shard_of
from carevoice.run.records import read_record
from carevoice.run.writers import (
    FOREIGN_TEMP_AGE_S,
    HOST_TAG,
    TEMP_SUFFIX,
    remove_stale_temp_files,
)

ENGINE = ("-m", "tiny.en", "--device", "cpu")
FORMATS = ("txt", "srt", "json")
SOURCES = (
    "hfdatasets__vctk_p225_001_mic1.flac",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
    "hfdatasets__vctk_p225_002_mic1.flac",
    "mfa__common_voice_en_22058266.mp3",
)
# Eleven inputs in nested folders, two of which collide (visit.wav + visit.mp3 both write visit.*).
TREE = {
    "ward-a/n01.flac": SOURCES[0],
    "ward-a/n02.wav": SOURCES[1],
    "ward-a/n03.flac": SOURCES[2],
    "ward-a/deep/n04.mp3": SOURCES[3],
    "ward-b/n01.flac": SOURCES[2],
    "ward-b/n05.wav": SOURCES[1],
    "ward-b/n06.mp3": SOURCES[3],
    "n07.flac": SOURCES[0],
    "n08.wav": SOURCES[1],
    "visit.wav": SOURCES[1],
    "visit.mp3": SOURCES[3],
}
COLLIDING = {"visit.wav", "visit.mp3"}


def make_tree(root: Path) -> Path:
    for name, source in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA_DIR / source, root / name)
    return root


def visible_outputs(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix.lstrip(".") in FORMATS and not p.name.startswith(".")
    }


def files_in(record: dict[str, Any], folder: Path) -> dict[str, str]:
    return {Path(f["file"]).relative_to(folder).as_posix(): f["status"] for f in record["files"]}


# --- the hash ------------------------------------------------------------------------------------


def test_the_shard_of_a_name_is_pinned_across_versions_and_machines() -> None:
    """sha256 of the key, not Python's per-process hash(): these values must never change."""
    assert [shard_of("ward-a/n01.flac", 4), shard_of("n07.flac", 4), shard_of("visit.wav", 3)] == [2, 1, 2]
    names = [f"rec-{i:04d}.wav" for i in range(4000)]
    sizes = [sum(shard_of(n, 4) == k for n in names) for k in range(4)]
    assert sum(sizes) == 4000 and min(sizes) > 900  # an even spread, not the listing order


def test_membership_does_not_depend_on_order_form_mount_or_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = make_tree(tmp_path / "host-a" / "recordings")
    there = tmp_path / "host-b" / "mnt" / "data"  # the same share mounted elsewhere on another machine
    shutil.copytree(here, there)
    link = tmp_path / "link"
    link.symlink_to(here, target_is_directory=True)

    def members(*inputs: Path) -> dict[int, list[str]]:
        found = find_jobs(tuple(inputs))
        return {k: sorted(j.key for j in select_shard(found, k, 3).jobs) for k in range(3)}

    reference = members(here)
    assert sum(len(keys) for keys in reference.values()) == len(TREE) - len(COLLIDING)
    assert sum(bool(keys) for keys in reference.values()) >= 2  # the tree really spreads over shards
    monkeypatch.chdir(here.parent)
    assert members(Path("recordings")) == reference
    assert members(Path("recordings/./")) == reference
    assert members(there) == reference
    assert members(link) == reference
    monkeypatch.chdir(here / "ward-a")
    assert members(Path(".")) != reference  # keys are below the named folder: name the same folder on every shard
    # Files named one by one are known by their names, whatever the order and the current folder.
    named = [here / "n07.flac", here / "n08.wav", here / "ward-a" / "n02.wav"]
    forward = members(*named)
    monkeypatch.chdir(tmp_path)
    assert members(*(Path(os.path.relpath(p)) for p in reversed(named))) == forward
    assert sorted(k for keys in forward.values() for k in keys) == ["n02.wav", "n07.flac", "n08.wav"]


# --- end to end ----------------------------------------------------------------------------------


def test_n_shards_cover_every_file_exactly_once(tmp_path: Path, fake_engines: list[FakeEngine]) -> None:
    folder = make_tree(tmp_path / "recordings")
    whole = make_tree(tmp_path / "whole")
    unsharded = invoke_cli("transcribe", whole, *ENGINE, "--json")
    assert unsharded.exit_code == 1  # the collision
    seen: dict[str, list[tuple[int, str]]] = {}
    for k in range(3):
        result = invoke_cli("transcribe", folder, *ENGINE, "--shard", f"{k}/3", "--json")
        record = json.loads(result.stdout)
        mine = files_in(record, folder)
        assert record["shard"] == {"index": k, "count": 3, "files": len(mine), "of": len(TREE)}
        assert f"shard {k}/3 (numbered from 0): {len(mine)} of {len(TREE)} file(s)" in result.stderr
        assert result.exit_code == (1 if COLLIDING & set(mine) else 0), result.stderr
        for name, status in mine.items():
            seen.setdefault(name, []).append((k, status))
    assert sorted(seen) == sorted(TREE)
    assert all(len(owners) == 1 for owners in seen.values()), seen
    assert len({owners[0][0] for owners in seen.values()}) == 3  # every shard had work
    for name, [(_, status)] in seen.items():
        assert status == ("failed" if name in COLLIDING else "done"), name
    # Together the shards wrote exactly what one unsharded run writes (and nothing for the collision).
    assert visible_outputs(folder) == visible_outputs(whole)
    assert not any(n.startswith("visit.") for n in visible_outputs(folder))


def test_a_collision_is_reported_whichever_shards_the_two_files_fall_in(tmp_path: Path, fake_engines: list[FakeEngine]) -> None:
    folder = make_tree(tmp_path / "recordings")
    owners = {name: shard_of(name, 7) for name in COLLIDING}
    assert len(set(owners.values())) == 2  # two different shards: neither sees the other's file
    for name, k in owners.items():
        result = invoke_cli("transcribe", folder, *ENGINE, "--shard", f"{k}/7", "-q")
        assert result.exit_code == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: {folder / name}: outputs would collide with another input ({folder / 'visit.mp3'}, "
            f"{folder / 'visit.wav'} all write visit.*) — rename one, or transcribe them separately with different --output-dir"
        ]
    assert not list(folder.glob("visit.txt"))


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "x", "1", "1/2/3", "a/b", ""])
def test_a_bad_shard_is_a_usage_error_before_anything_runs(tmp_path: Path, text: str) -> None:
    shutil.copy(DATA_DIR / SOURCES[0], tmp_path / "a.flac")
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "--shard", text)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --shard")
    assert "numbered from 0" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


def test_a_shard_with_no_files_succeeds_and_says_so(tmp_path: Path, fake_engines: list[FakeEngine]) -> None:
    shutil.copy(DATA_DIR / SOURCES[0], tmp_path / "a.flac")
    empty = next(k for k in range(50) if k != shard_of("a.flac", 50))
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "--shard", f"{empty}/50")
    assert result.exit_code == 0, result.stderr
    assert f"shard {empty}/50 (numbered from 0): 0 of 1 file(s)" in result.stderr
    assert result.stderr.splitlines()[-1] == "nothing transcribed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


KILL_DRIVER = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])  # tests/, for the doubles
from doubles import fake_load
from carevoice.engine.whisper import Engine

Engine.load = fake_load()
kill_at, count = int(sys.argv[2]), 0
real_replace = os.replace

def replace(src, dst):
    global count
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # in the middle of a file's five renames
    real_replace(src, dst)

os.replace = replace
sys.argv = ["carevoice", *sys.argv[3:]]
from carevoice.cli.app import main
main()
"""


def test_a_killed_shard_run_again_finishes_only_what_is_missing(tmp_path: Path, fake_engines: list[FakeEngine]) -> None:
    folder = make_tree(tmp_path / "recordings")
    whole = make_tree(tmp_path / "whole")
    assert invoke_cli("transcribe", whole, *ENGINE).exit_code == 1  # the reference (with its collision)
    shard = max(range(2), key=lambda k: sum(shard_of(n, 2) == k for n in TREE if n not in COLLIDING))
    mine = sorted(n for n in TREE if shard_of(n, 2) == shard and n not in COLLIDING)
    assert len(mine) >= 3

    # One file's outputs are five renames (record, txt, srt, json, record): die in the second file.
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, str(Path(__file__).parents[1]), "8", "transcribe", folder, *ENGINE, "--shard", f"{shard}/2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    finished = [n for n in mine if (record := read_record((folder / n).with_suffix(""))) is not None and record.complete]
    assert len(finished) == 1
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob(f"{Path(finished[0]).stem}.*") if p.suffix != Path(finished[0]).suffix}
    assert len(stamps) == len(FORMATS)

    again = invoke_cli("transcribe", folder, *ENGINE, "--shard", f"{shard}/2", "--json")
    record = files_in(json.loads(again.stdout), folder)
    assert again.exit_code == (1 if COLLIDING & set(record) else 0), again.stderr
    assert {n: s for n, s in record.items() if n not in COLLIDING} == {
        n: ("skipped" if n in finished else "done") for n in mine
    }
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished file was left alone
    other = [n for n in TREE if shard_of(n, 2) != shard and n not in COLLIDING]
    assert other and not any((folder / n).with_suffix(".txt").exists() for n in other)  # not this shard's work
    assert invoke_cli("transcribe", folder, *ENGINE, "--shard", f"{1 - shard}/2").exit_code in (0, 1)
    assert visible_outputs(folder) == visible_outputs(whole)
    assert not [p for p in folder.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_temporary_files_of_writers_on_other_machines_are_kept_until_old(tmp_path: Path) -> None:
    """A shard on another host writes into the same folder: its pid means nothing here."""
    other_host = "0badc0de" if HOST_TAG != "0badc0de" else "feedf00d"
    dead_pid = 2**22 + 1
    writing = tmp_path / f".a.txt.{os.getpid() + 1}@{other_host}.abc{TEMP_SUFFIX}"
    abandoned = tmp_path / f".b.txt.{os.getpid() + 1}@{other_host}.def{TEMP_SUFFIX}"
    ours_dead = tmp_path / f".c.txt.{dead_pid}@{HOST_TAG}.ghi{TEMP_SUFFIX}"
    for path in (writing, abandoned, ours_dead):
        path.write_text("x", encoding="utf-8")
    old = abandoned.stat().st_mtime - FOREIGN_TEMP_AGE_S - 60
    os.utime(abandoned, (old, old))
    assert remove_stale_temp_files(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [writing.name]
