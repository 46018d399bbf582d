"""discovery.py: paths -> sorted, de-duplicated jobs, output names, problems (no audio is decoded)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import unprivileged

from carevoice.run.discovery import Discovery, find_audio_files, find_jobs, links_inside


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded here")


def sources(found: Discovery) -> list[Path]:
    return [job.source for job in found.jobs]


def problems(found: Discovery) -> dict[Path, str]:
    return {p.path: p.message for p in found.problems}


def test_folder_walk_is_recursive_sorted_and_uses_the_allow_list(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    touch(
        rec / "b.mp3",
        rec / "a.WAV",
        rec / "day2" / "c.webm",
        rec / "day1" / "deep" / "d.m4a",
        rec / "notes.txt",
        rec / "photo.jpg",
        rec / "Makefile",
    )
    found = find_jobs((rec,))
    assert sources(found) == [
        rec / "a.WAV",
        rec / "b.mp3",
        rec / "day1" / "deep" / "d.m4a",
        rec / "day2" / "c.webm",
    ]
    assert found.problems == []
    assert [job.output_stem for job in found.jobs] == [
        rec / "a",
        rec / "b",
        rec / "day1" / "deep" / "d",
        rec / "day2" / "c",
    ]
    assert [job.display for job in found.jobs] == [str(s) for s in sources(found)]


def test_no_recursive_stays_in_the_folder(tmp_path: Path) -> None:
    touch(tmp_path / "top.wav", tmp_path / "sub" / "below.wav")
    assert sources(find_jobs((tmp_path,), recursive=False)) == [tmp_path / "top.wav"]
    assert sources(find_jobs((tmp_path,), recursive=True)) == [tmp_path / "sub" / "below.wav", tmp_path / "top.wav"]


def test_hidden_files_and_folders_are_skipped_in_a_walk(tmp_path: Path) -> None:
    touch(
        tmp_path / "visible.wav",
        tmp_path / ".hidden.wav",
        tmp_path / ".cache" / "inside.wav",
        tmp_path / ".visible.carevoice.json",
    )
    found = find_jobs((tmp_path,))
    assert sources(found) == [tmp_path / "visible.wav"]
    assert found.problems == []


def test_an_explicit_file_is_tried_whatever_its_name(tmp_path: Path) -> None:
    odd = tmp_path / "recording.data"
    hidden = tmp_path / ".secret.wav"
    bare = tmp_path / "voicemail"
    touch(odd, hidden, bare)
    found = find_jobs((odd, hidden, bare))
    assert sources(found) == [hidden, odd, bare]
    assert [job.output_stem for job in found.jobs] == [tmp_path / ".secret", tmp_path / "recording", bare]


def test_the_same_file_named_twice_runs_once(tmp_path: Path) -> None:
    clip = tmp_path / "rec" / "a.wav"
    touch(clip)
    spelled_differently = tmp_path / "rec" / "." / "a.wav"
    found = find_jobs((clip, clip, spelled_differently))
    assert sources(found) == [clip]
    assert found.problems == []


def test_a_file_and_its_folder_run_the_file_once(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    touch(rec / "a.wav", rec / "b.wav")
    for inputs in ((rec / "a.wav", rec), (rec, rec / "a.wav"), (rec, rec)):
        found = find_jobs(inputs)
        assert sorted(s.name for s in sources(found)) == ["a.wav", "b.wav"], inputs
        assert found.problems == []


def test_a_file_named_with_its_folder_keeps_its_mirrored_output_whatever_the_order(tmp_path: Path) -> None:
    rec, out = tmp_path / "rec", tmp_path / "out"
    touch(rec / "day1" / "a.wav")
    for inputs in ((rec / "day1" / "a.wav", rec), (rec, rec / "day1" / "a.wav")):
        found = find_jobs(inputs, output_dir=out)
        assert [job.output_stem for job in found.jobs] == [out / "day1" / "a"], inputs


def test_a_symlinked_file_and_its_target_run_once(tmp_path: Path) -> None:
    touch(tmp_path / "rec" / "a.wav")
    (tmp_path / "rec" / "link.wav").symlink_to(tmp_path / "rec" / "a.wav")
    assert sources(find_jobs((tmp_path / "rec",))) == [tmp_path / "rec" / "a.wav"]


@pytest.mark.parametrize("link", ["aaa", "zzz"], ids=["met-before-its-target", "met-after-its-target"])
def test_a_folder_linked_inside_the_folder_is_walked_where_it_really_is(tmp_path: Path, link: str) -> None:
    """One name per recording, whatever the order of the walk: `carevoice watch` names files from
    events by their real place, and a second name would mean a second transcript under -o."""
    rec, out = tmp_path / "rec", tmp_path / "out"
    touch(rec / "archive" / "ward" / "a.wav", tmp_path / "elsewhere" / "b.wav", rec / ".hidden" / "c.wav")
    (rec / link).symlink_to(rec / "archive" / "ward")
    (rec / "outside").symlink_to(tmp_path / "elsewhere")  # a folder elsewhere: reached only through the link
    (rec / "shown").symlink_to(rec / ".hidden")  # a hidden folder: reached only through the link
    found = find_jobs((rec,), out)
    assert sources(found) == [rec / "archive" / "ward" / "a.wav", rec / "outside" / "b.wav", rec / "shown" / "c.wav"]
    assert [j.output_stem for j in found.jobs] == [out / "archive" / "ward" / "a", out / "outside" / "b", out / "shown" / "c"]
    assert links_inside(rec / link, rec) and not links_inside(rec / "outside", rec) and not links_inside(rec / "shown", rec)


def test_symlink_loops_do_not_hang(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    touch(rec / "a.wav", rec / "sub" / "b.wav")
    # Two ways back up: without a guard the walk doubles at every level (the kernel's limit of
    # 40 links per lookup would only end it after 2**40 folders).
    (rec / "sub" / "up").symlink_to(rec)
    (rec / "sub" / "up2").symlink_to(rec)
    (rec / "self").symlink_to(rec / "self")  # a link to itself: broken (ELOOP), and not audio
    results: list[Discovery] = []
    walker = threading.Thread(target=lambda: results.append(find_jobs((rec,))), daemon=True)
    walker.start()
    walker.join(timeout=10)
    assert not walker.is_alive(), "find_jobs did not finish: a symlink loop hangs discovery"
    assert sources(results[0]) == [rec / "a.wav", rec / "sub" / "b.wav"]
    assert results[0].problems == []


def test_broken_symlinks_are_reported(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    touch(rec / "good.wav")
    (rec / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    (rec / "gone.txt").symlink_to(tmp_path / "deleted.txt")  # not audio: silently not a candidate
    explicit = tmp_path / "explicit.mp3"
    explicit.symlink_to(tmp_path / "nowhere.mp3")
    found = find_jobs((rec, explicit))
    assert sources(found) == [rec / "good.wav"]
    assert problems(found) == {
        explicit: "broken symbolic link — check the path",
        rec / "gone.wav": "broken symbolic link — fix or remove the link",
    }


def test_a_missing_input_is_reported(tmp_path: Path) -> None:
    found = find_jobs((tmp_path / "typo.wav",))
    assert found.jobs == []
    assert problems(found) == {tmp_path / "typo.wav": "no such file or directory — check the path"}


def test_special_files_are_reported(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    in_walk = find_jobs((tmp_path,))
    named = find_jobs((fifo,))
    assert in_walk.jobs == [] and named.jobs == []
    assert "not a regular file" in problems(in_walk)[fifo]
    assert "not a regular file" in problems(named)[fifo]


def test_colliding_outputs_are_reported_for_both_inputs(tmp_path: Path) -> None:
    touch(tmp_path / "visit.wav", tmp_path / "visit.mp3", tmp_path / "other.wav")
    found = find_jobs((tmp_path,))
    assert sources(found) == [tmp_path / "other.wav"]
    reported = problems(found)
    assert sorted(reported) == [tmp_path / "visit.mp3", tmp_path / "visit.wav"]
    for message in reported.values():
        assert str(tmp_path / "visit.wav") in message and str(tmp_path / "visit.mp3") in message
        assert "collide" in message and "\n" not in message


def test_output_dir_mirrors_the_tree(tmp_path: Path) -> None:
    rec, out = tmp_path / "rec", tmp_path / "out"
    touch(rec / "a.wav", rec / "day1" / "b.ogg", rec / "day1" / "deep" / "c.flac")
    single = tmp_path / "elsewhere" / "d.wav"
    touch(single)
    found = find_jobs((rec, single), output_dir=out)
    assert {job.source: job.output_stem for job in found.jobs} == {
        rec / "a.wav": out / "a",
        rec / "day1" / "b.ogg": out / "day1" / "b",
        rec / "day1" / "deep" / "c.flac": out / "day1" / "deep" / "c",
        single: out / "d",
    }
    assert found.problems == []


def test_output_dir_collisions_across_folders_are_reported(tmp_path: Path) -> None:
    touch(tmp_path / "monday" / "visit.wav", tmp_path / "tuesday" / "visit.wav")
    found = find_jobs((tmp_path / "monday" / "visit.wav", tmp_path / "tuesday" / "visit.wav"), output_dir=tmp_path / "out")
    assert found.jobs == []
    assert sorted(problems(found)) == [tmp_path / "monday" / "visit.wav", tmp_path / "tuesday" / "visit.wav"]
    # Next to each input they do not collide.
    assert len(find_jobs((tmp_path / "monday" / "visit.wav", tmp_path / "tuesday" / "visit.wav")).jobs) == 2


def test_an_unreadable_folder_is_reported(open_folder: Path) -> None:
    locked = open_folder / "locked"
    touch(locked / "a.wav", open_folder / "b.wav")
    locked.chmod(0)
    with unprivileged():  # root reads every folder
        found = find_jobs((open_folder,))
    assert sources(found) == [open_folder / "b.wav"]
    assert "cannot list folder" in problems(found)[locked]


def test_a_link_into_a_folder_that_cannot_be_listed_is_followed(open_folder: Path) -> None:
    """The walk cannot reach the folder as itself, so the link is its only way in."""
    rec = open_folder / "rec"
    touch(rec / "locked" / "inner" / "a.wav")
    (rec / "ward").symlink_to(rec / "locked" / "inner")
    for folder in (rec, rec / "locked" / "inner"):
        folder.chmod(0o755)
    (rec / "locked").chmod(0o111)  # searchable, not listable (by its owner either)
    with unprivileged():  # root reads every folder
        found = find_jobs((rec,))
    assert sources(found) == [rec / "ward" / "a.wav"]


def test_an_input_below_a_folder_this_user_cannot_enter_names_that_folder(open_folder: Path) -> None:
    """What systemd's ProtectHome=yes does to /home: one problem naming the folder, the rest goes on."""
    touch(open_folder / "home" / "ward" / "a.wav", open_folder / "b.wav")
    (open_folder / "home").chmod(0)
    given = (open_folder / "home" / "ward" / "a.wav", open_folder / "home" / "ward", open_folder / "b.wav")
    with unprivileged():
        found = find_jobs(given)
    assert sources(found) == [open_folder / "b.wav"]
    barred = f"cannot enter folder {open_folder / 'home'} (permission denied) — let this user enter it (x permission); "
    assert {path: message.startswith(barred) for path, message in problems(found).items()} == {given[0]: True, given[1]: True}


def test_a_folder_walked_on_its_own_inside_a_watched_one_skips_links_as_the_whole_walk_does(tmp_path: Path) -> None:
    """`carevoice watch` walks a folder moved in by itself: its links into the watched folder lead to
    files the whole walk names where they really are."""
    rec = tmp_path / "rec"
    touch(rec / "other" / "x.wav", rec / "new" / "y.wav")
    (rec / "new" / "l").symlink_to(rec / "other")
    assert sorted(find_audio_files((rec,))[0]) == [rec / "new" / "y.wav", rec / "other" / "x.wav"]
    assert sorted(find_audio_files((rec / "new",), within=rec)[0]) == [rec / "new" / "y.wav"]
    assert find_audio_files((rec / "new" / "l",), within=rec)[0] == []  # the link moved in itself: its folder is walked as itself
    assert sorted(find_audio_files((rec / "new",))[0]) == [rec / "new" / "l" / "x.wav", rec / "new" / "y.wav"]  # on its own, the link leads out
