"""Issue 14 — reruns a folder can rely on, end to end: real recordings, real ffmpeg, the real tiny.en
(base for Mandarin), the real CLI. Each story checks the exit code, the per-file line, the record and
every output on disk."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, encode, invoke_cli, word_error_rate

from carevoice.engine.policy import ENGINE_REVISION
from carevoice.files import sha256_of
from carevoice.run import writers
from carevoice.run.locks import lock_path, try_lock
from carevoice.run.records import read_record, record_path

ENGINE = ("-m", "tiny.en", "--device", "cpu")
CALL = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
ASK = "hfdatasets__vctk_p225_002_mic1.flac"  # "Ask her to bring these things with her from the store."
ILL = "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"
PRESS = "lhotse__LJ002-0035.wav"  # "eight the press yard"


def run(*args: object) -> CliResult:
    return invoke_cli("transcribe", *args, *ENGINE)


def folder_with(tmp_path: Path, data_dir: Path, **files: str) -> Path:
    folder = tmp_path / "visits"
    folder.mkdir()
    for name, source in files.items():
        shutil.copyfile(data_dir / source, folder / name)
    return folder


def text_of(folder: Path, stem: str) -> str:
    return (folder / f"{stem}.txt").read_text(encoding="utf-8")


def line_for(result: CliResult, path: Path) -> str:
    (line,) = [ln for ln in result.stderr.splitlines() if str(path) in ln]
    return line


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every visible output's bytes and mtime_ns (touching or rewriting one changes it)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.suffix in (".txt", ".srt", ".vtt", ".json", ".tsv")}


# --- story 1: a replaced recording ----------------------------------------------------------------


def test_a_replaced_recording_is_transcribed_again_and_says_why(tmp_path: Path, data_dir: Path, references: dict[str, dict[str, str]]) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL, "b.flac": ASK})
    first = run(folder)
    assert first.exit_code == 0, first.stderr
    assert word_error_rate(references[CALL]["reference_text"], text_of(folder, "a")) <= 0.34
    b_before = snapshot(folder)
    shutil.copyfile(data_dir / ILL, folder / "a.flac")  # a re-export: another recording under the same name

    second = run(folder)
    assert second.exit_code == 0, second.stderr
    assert line_for(second, folder / "a.flac").endswith("; redo: recording changed since it was transcribed)")
    assert line_for(second, folder / "b.flac").startswith(f"skipped {folder / 'b.flac'} (already transcribed with these options")
    assert word_error_rate(references[ILL]["reference_text"], text_of(folder, "a")) <= 0.3  # the words of the new recording
    for fmt in ("srt", "json"):
        assert "Stella" not in (folder / f"a.{fmt}").read_text(encoding="utf-8")
    assert {k: v for k, v in snapshot(folder).items() if k.startswith("b.")} == {k: v for k, v in b_before.items() if k.startswith("b.")}
    record = read_record(folder / "a")
    assert record is not None and record.input is not None and record.input.sha256 == sha256_of(folder / "a.flac")


def test_a_touch_or_a_copy_with_the_same_bytes_is_no_change(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0
    before = snapshot(folder)
    os.utime(folder / "a.flac")  # touch
    touched = run(folder)
    assert touched.exit_code == 0 and "skipped" in line_for(touched, folder / "a.flac")
    refreshed = read_record(folder / "a")
    assert refreshed is not None and refreshed.input is not None
    assert refreshed.input.same_stat(os.stat(folder / "a.flac"))  # the next run reads nothing
    shutil.copyfile(data_dir / CALL, folder / "a.flac.new")
    os.replace(folder / "a.flac.new", folder / "a.flac")  # the same bytes, a new file (new inode)
    copied = run(folder)
    assert copied.exit_code == 0 and "skipped" in line_for(copied, folder / "a.flac")
    assert snapshot(folder) == before


def test_a_same_size_replacement_with_its_mtime_put_back_is_still_caught(tmp_path: Path, data_dir: Path, ffmpeg_bin) -> None:  # type: ignore[no-untyped-def]
    """A copy tool that keeps sizes and mtimes (rsync -t, cp -p) cannot hide a new recording: ctime
    and the inode change, and then the bytes decide."""
    folder = folder_with(tmp_path, data_dir, **{"a.wav": PRESS})
    assert run(folder).exit_code == 0
    old = os.stat(folder / "a.wav")
    other = encode(ffmpeg_bin, data_dir / "lhotse__LJ002-0020.wav", tmp_path / "other.wav", "-c:a", "pcm_s16le")
    data = other.read_bytes()[: old.st_size].ljust(old.st_size, b"\0")  # same size; a cut WAV is fine here
    (folder / "a.wav").write_bytes(data)
    os.utime(folder / "a.wav", ns=(old.st_atime_ns, old.st_mtime_ns))
    again = invoke_cli("transcribe", folder, *ENGINE, "--dry-run")
    assert again.exit_code == 0
    assert f"redo {folder / 'a.wav'} (recording changed since it was transcribed" in again.stdout


# --- story 2: changing -f ------------------------------------------------------------------------


def test_changing_formats_keeps_every_output_carevoice_wrote(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0  # txt, srt, json
    default = snapshot(folder)

    vtt = run(folder, "-f", "vtt")
    assert vtt.exit_code == 0, vtt.stderr
    assert "no model loaded" in vtt.stderr  # written from the recorded JSON
    assert line_for(vtt, folder / "a.flac").endswith("; redo: a format not written before was asked for; wrote vtt only)")
    now = snapshot(folder)
    assert {k: v for k, v in now.items() if k != "a.vtt"} == default  # nothing else touched
    assert now["a.vtt"][0].startswith(b"WEBVTT")

    again = run(folder)  # the default again: everything is CareVoice's and current
    assert again.exit_code == 0, again.stderr
    assert "skipped" in line_for(again, folder / "a.flac")
    txt_only = run(folder, "-f", "txt")
    assert txt_only.exit_code == 0 and "skipped" in line_for(txt_only, folder / "a.flac")
    assert snapshot(folder) == now
    record = read_record(folder / "a")
    assert record is not None and sorted(record.outputs) == ["json", "srt", "txt", "vtt"]
    tsv = run(folder, "-f", "txt,tsv")  # no word timestamps asked for: the tsv still renders from the JSON's
    assert tsv.exit_code == 0 and "no model loaded" in tsv.stderr
    assert read_record(folder / "a").outputs["tsv"].words  # type: ignore[union-attr]  # and says so


def test_a_deleted_output_is_written_again_and_nothing_else(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0
    before = snapshot(folder)
    (folder / "a.srt").unlink()
    again = run(folder)
    assert again.exit_code == 0
    assert line_for(again, folder / "a.flac").endswith("; redo: an output is missing; wrote srt only)")
    assert snapshot(folder)["a.srt"][0] == before["a.srt"][0]
    assert {k: v for k, v in snapshot(folder).items() if k != "a.srt"} == {k: v for k, v in before.items() if k != "a.srt"}


def test_srt_after_a_txt_only_run_transcribes_again_for_the_srt_alone(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder, "-f", "txt").exit_code == 0
    txt = snapshot(folder)["a.txt"]
    srt = run(folder, "-f", "srt")
    assert srt.exit_code == 0, srt.stderr
    assert "no model loaded" not in srt.stderr  # no JSON to render from: the words are aligned anew
    assert snapshot(folder)["a.txt"] == txt and (folder / "a.srt").is_file()
    assert "skipped" in line_for(run(folder, "-f", "txt,srt"), folder / "a.flac")


def test_a_replaced_recording_takes_an_old_vtt_with_it(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0 and run(folder, "-f", "vtt").exit_code == 0
    shutil.copyfile(data_dir / ASK, folder / "a.flac")
    redo = run(folder)  # txt, srt, json: the vtt would describe the old recording
    assert redo.exit_code == 0, redo.stderr
    assert not (folder / "a.vtt").exists()
    assert sorted(read_record(folder / "a").outputs) == ["json", "srt", "txt"]  # type: ignore[union-attr]


CONFLICT = r"\w+ \(edited \d{4}-\d\d-\d\d \d{4}, conflict( \d+)?\)\.\w+"  # a conflict copy's name


def conflict_copies(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if re.fullmatch(CONFLICT, p.name)}


def test_a_replaced_recording_whose_transcript_a_nurse_corrected_keeps_her_edit_aside_and_describes_the_new_recording(
    tmp_path: Path, data_dir: Path, references: dict[str, dict[str, str]]
) -> None:
    """Issue 23: the edit is never lost or overwritten, and nothing of the old recording stays under the new one's name."""
    folder = folder_with(tmp_path, data_dir, **{"visit.flac": CALL})
    assert run(folder).exit_code == 0
    edit = "Please call Stella — Mrs Jones' daughter, room 12.\r\n".encode()
    (folder / "visit.txt").write_bytes(edit)
    shutil.copyfile(data_dir / ILL, folder / "visit.flac")  # another recording (another patient) under the same name

    second = run(folder, "--json")
    assert second.exit_code == 0, second.stderr
    (copy,) = conflict_copies(folder)
    assert re.fullmatch(r"visit \(edited \d{4}-\d\d-\d\d \d{4}, conflict\)\.txt", copy) and (folder / copy).read_bytes() == edit
    assert word_error_rate(references[ILL]["reference_text"], text_of(folder, "visit")) <= 0.3  # the new recording's words
    for fmt in ("txt", "srt", "json"):
        assert "Stella" not in (folder / f"visit.{fmt}").read_text(encoding="utf-8")
    assert sorted(read_record(folder / "visit").outputs) == ["json", "srt", "txt"]  # type: ignore[union-attr]
    (entry,) = json.loads(second.stdout)["files"]
    assert (entry["status"], entry["conflict"]) == ("done", str(folder / copy))
    assert copy in entry["needs_person"]
    assert copy in line_for(second, folder / "visit.flac")

    third = run(folder)  # the copy is no recording, and no output of one: nothing to do
    assert third.exit_code == 0 and "skipped" in line_for(third, folder / "visit.flac")
    assert (folder / copy).read_bytes() == edit

    # Replaced again, its new transcript edited again: a second copy, the first one untouched.
    again = b"second correction\n"
    (folder / "visit.txt").write_bytes(again)
    shutil.copyfile(data_dir / ASK, folder / "visit.flac")
    fourth = run(folder)
    assert fourth.exit_code == 0, fourth.stderr
    copies = conflict_copies(folder)
    assert sorted(copies.values()) == sorted([edit, again]) and copies[copy] == edit
    assert word_error_rate(references[ASK]["reference_text"], text_of(folder, "visit")) <= 0.34


def test_a_recording_replaced_by_one_that_cannot_be_transcribed_takes_the_old_transcript_away(tmp_path: Path, data_dir: Path) -> None:
    """Issue 23: nothing of the old recording stays under the new one's name, even when the new one fails."""
    folder = folder_with(tmp_path, data_dir, **{"visit.flac": CALL})
    assert run(folder).exit_code == 0
    edit = b"corrected by a nurse\n"
    (folder / "visit.txt").write_bytes(edit)
    (folder / "visit.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)  # a broken upload under the same name
    failed = run(folder, "--json")
    assert failed.exit_code == 1, failed.stderr
    (copy,) = conflict_copies(folder)
    assert (folder / copy).read_bytes() == edit  # the person's edit, kept
    left = sorted(p.name for p in folder.iterdir() if p.name != copy)
    assert left == [".visit.carevoice-failed.json", "visit.flac"]  # no srt, json or record of the old recording
    (entry,) = json.loads(failed.stdout)["files"]
    assert (entry["status"], entry["conflict"]) == ("failed", str(folder / copy))
    shutil.copyfile(data_dir / ILL, folder / "visit.flac")  # the right file, copied again: transcribed as new
    again = run(folder)
    assert again.exit_code == 0 and line_for(again, folder / "visit.flac").startswith("done"), again.stderr
    assert (folder / copy).read_bytes() == edit


def test_an_edited_old_vtt_of_a_replaced_recording_is_kept_aside_instead_of_describing_the_wrong_recording(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder, "-f", "txt,vtt").exit_code == 0
    correction = b"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na nurse's correction\n"
    (folder / "a.vtt").write_bytes(correction)
    shutil.copyfile(data_dir / ASK, folder / "a.flac")
    redo = run(folder, "-f", "txt")
    assert redo.exit_code == 0, redo.stderr
    assert not (folder / "a.vtt").exists() and "Stella" not in text_of(folder, "a")
    assert list(conflict_copies(folder).values()) == [correction]
    assert "conflict" in line_for(redo, folder / "a.flac")


def test_overwrite_replaces_an_edited_transcript_of_the_same_recording_and_keeps_the_edit_aside(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder, "-f", "txt").exit_code == 0
    (folder / "a.txt").write_bytes(b"a nurse's correction\n")
    kept = run(folder, "-f", "txt")  # the same recording: the edit describes it, is protected, and is no failure
    assert kept.exit_code == 0 and line_for(kept, folder / "a.flac").startswith("skipped") and "kept txt as a person edited it" in kept.stderr
    assert conflict_copies(folder) == {} and text_of(folder, "a") == "a nurse's correction\n"
    forced = run(folder, "-f", "txt", "--overwrite")
    assert forced.exit_code == 0 and "Stella" in text_of(folder, "a")
    assert list(conflict_copies(folder).values()) == [b"a nurse's correction\n"]


# --- story 3: languages --------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["english", "English", "en-US", "en_GB"])
def test_a_language_name_or_tag_means_its_code(given: str, tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    result = run(folder, "-l", given)
    assert result.exit_code == 0, result.stderr
    assert f"--language {given} → en" in result.stderr
    assert json.loads((folder / "a.json").read_text(encoding="utf-8"))["options"]["language"] == "en"


def test_zh_tw_on_an_english_only_model_is_a_usage_error_before_any_work(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    result = run(folder, "-l", "zh-TW")
    assert result.exit_code == 2
    assert "error: --language zh: the model tiny.en knows only English" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.flac"]


def test_an_unknown_language_is_a_usage_error_with_the_closest_codes(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    result = run(folder, "-l", "englsh")
    assert result.exit_code == 2
    assert "error: --language 'englsh' is not a language Whisper knows" in result.stderr
    assert "did you mean en (english)" in result.stderr
    assert "report it" not in result.stderr


def test_zh_tw_transcribes_mandarin_in_traditional_characters(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.wav": "funasr__asr_example.wav"})
    result = invoke_cli("transcribe", folder, "-m", "base", "--device", "cpu", "-l", "zh-TW")
    assert result.exit_code == 0, result.stderr
    assert "--language zh-TW → zh, --zh-script tw" in result.stderr
    record = json.loads((folder / "a.json").read_text(encoding="utf-8"))
    assert record["options"]["language"] == "zh" and record["options"]["zh_script"] == "tw"
    assert "體" in text_of(folder, "a") and "体" not in text_of(folder, "a")  # 体验 → 體驗
    explicit = invoke_cli("transcribe", folder, "-m", "base", "--device", "cpu", "-l", "zh-TW", "--zh-script", "simplified")
    assert explicit.exit_code == 0 and "redo: --zh-script tw → simplified" in line_for(explicit, folder / "a.wav")
    assert "体" in text_of(folder, "a")


# --- the record and its identities -----------------------------------------------------------------


def test_the_record_names_the_recording_the_model_and_the_engine(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0
    raw = json.loads(record_path(folder / "a").read_text(encoding="ascii"))
    st = os.stat(folder / "a.flac")
    assert raw["input"] == {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev,
        "sha256": sha256_of(folder / "a.flac"),
    }  # fmt: skip
    weights = Path(
        __import__("carevoice.engine.models", fromlist=["x"]).resolve_model("tiny.en", Path(os.environ["CAREVOICE_CACHE_DIR"])).load_from
    )
    assert raw["model"] == {"id": "tiny.en", "sha256": sha256_of(weights / "model.bin")}
    assert raw["engine_revision"] == ENGINE_REVISION and raw["carevoice"] and len(raw["run_id"]) == 32
    assert raw["text"] == {"task": "transcribe", "language": None, "beam_size": 5, "zh_script": "auto"}
    for fmt, entry in raw["outputs"].items():
        assert entry["sha256"] == sha256_of(folder / f"a.{fmt}") and entry["stat"]["inode"] == os.stat(folder / f"a.{fmt}").st_ino


def test_a_model_with_other_weights_under_the_same_name_redoes_the_files(tmp_path: Path, data_dir: Path) -> None:
    from carevoice.engine.models import resolve_model

    source = Path(resolve_model("tiny.en", Path(os.environ["CAREVOICE_CACHE_DIR"])).load_from)
    model = tmp_path / "tiny"
    shutil.copytree(source, model)
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert invoke_cli("transcribe", folder, "-m", model, "--device", "cpu").exit_code == 0
    weights = bytearray((model / "model.bin").read_bytes())
    weights[-100] ^= 0x01  # one bit of one weight
    (model / "model.bin").write_bytes(bytes(weights))
    again = invoke_cli("transcribe", folder, "-m", model, "--device", "cpu")
    assert again.exit_code == 0, again.stderr
    assert line_for(again, folder / "a.flac").endswith("; redo: model changed)")


def test_a_newer_engine_or_other_options_redo_the_files(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0
    raw = json.loads(record_path(folder / "a").read_text(encoding="ascii"))
    raw["engine_revision"] = ENGINE_REVISION - 1  # as an older CareVoice wrote it
    record_path(folder / "a").write_text(json.dumps(raw), encoding="ascii")
    newer = run(folder)
    assert newer.exit_code == 0 and line_for(newer, folder / "a.flac").endswith(
        "; redo: CareVoice's engine changed since it was transcribed)"
    )
    beam = run(folder, "--beam-size", "2")
    assert beam.exit_code == 0 and line_for(beam, folder / "a.flac").endswith("; redo: --beam-size 5 → 2)")


# --- shared folders: several users, one folder ------------------------------------------------------

NOBODY = 65534
as_root_only = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")

# Runs as root, imports what it needs, then becomes the other user (the interpreter's own files may
# be root's alone, as under /root/.pyenv) and tries the lock.
LOCK_PROBE = r"""
import os, sys, time
from pathlib import Path
from carevoice.run.locks import try_lock
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[3]))
lock = try_lock(Path(sys.argv[1]))
print("held" if lock else "busy", flush=True)
if lock and sys.argv[2] == "hold":
    time.sleep(120)
if lock:
    lock.release()
"""


def as_nobody(*args: str, hold: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LOCK_PROBE, *args, "hold" if hold else "probe", str(NOBODY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may write in (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="carevoice-shared-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@as_root_only
def test_a_lock_another_user_left_unreadable_is_taken_when_nobody_holds_it(shared_folder: Path) -> None:
    stem = shared_folder / "visit"
    lock_path(stem).write_bytes(b"")
    lock_path(stem).chmod(0o600)  # root's, made with umask 077: the other user cannot even read it
    probe = as_nobody(str(stem))
    out, err = probe.communicate(timeout=60)
    assert (probe.returncode, out.strip()) == (0, "held"), err  # a killed run's lock is no failure
    assert not lock_path(stem).exists()  # and it was tidied up on release


@as_root_only
def test_a_live_lock_of_another_user_means_busy_even_when_unreadable(shared_folder: Path) -> None:
    stem = shared_folder / "visit"
    mine = try_lock(stem)
    assert mine is not None
    lock_path(stem).chmod(0o600)
    try:
        probe = as_nobody(str(stem))
        out, err = probe.communicate(timeout=60)
        assert (probe.returncode, out.strip()) == (0, "busy"), err
    finally:
        mine.release()


@as_root_only
def test_a_file_another_user_is_transcribing_is_skipped_not_failed(shared_folder: Path, data_dir: Path) -> None:
    shutil.copyfile(data_dir / CALL, shared_folder / "a.flac")
    holder = as_nobody(str(shared_folder / "a"), hold=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run(shared_folder)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 0, result.stderr
    assert (
        line_for(result, shared_folder / "a.flac") == f"skipped {shared_folder / 'a.flac'} (being transcribed by another CareVoice process)"
    )


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644)])
def test_outputs_and_records_get_the_mode_the_umask_gives(umask: int, mode: int, tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    done = subprocess.run(
        [sys.executable, "-m", "carevoice", "transcribe", str(folder), *ENGINE],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr
    for path in (folder / "a.txt", folder / "a.srt", folder / "a.json", record_path(folder / "a")):
        assert path.stat().st_mode & 0o777 == mode, path


# --- names and containers --------------------------------------------------------------------------


def test_a_recording_named_with_80_cjk_characters_gets_its_outputs_record_and_lock(tmp_path: Path, data_dir: Path) -> None:
    name = "護理記錄" * 20  # 240 bytes of UTF-8: the hidden names would pass the 255 a file name may have
    folder = folder_with(tmp_path, data_dir, **{f"{name}.flac": CALL})
    first = run(folder)
    assert first.exit_code == 0, first.stderr
    assert (folder / f"{name}.txt").is_file() and (folder / f"{name}.json").is_file()
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and len(hidden[0].encode()) <= 255 and hidden[0].endswith(".carevoice.json")
    assert read_record(folder / name) is not None
    again = run(folder)
    assert again.exit_code == 0 and "skipped" in line_for(again, folder / f"{name}.flac")


def test_an_output_name_too_long_to_exist_is_a_clear_error_naming_the_limit(tmp_path: Path, data_dir: Path) -> None:
    name = "護" * 83 + "ab"  # 251 bytes: "<name>.wav" fits in 255 bytes, "<name>.json" does not
    folder = folder_with(tmp_path, data_dir, **{f"{name}.wav": PRESS})
    result = run(folder, "-f", "txt,json")
    assert result.exit_code == 1
    assert f"its output name {name}.json is 256 bytes, over the 255 a file name may have — shorten the recording's name" in result.stderr
    assert run(folder, "-f", "txt").exit_code == 0 and (folder / f"{name}.txt").is_file()


def test_a_video_whose_sound_ends_before_its_picture_is_not_truncated(tmp_path: Path, data_dir: Path, ffmpeg_bin) -> None:  # type: ignore[no-untyped-def]
    video = tmp_path / "visit.mp4"
    subprocess.run(
        [ffmpeg_bin.path, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=8:size=160x120:rate=10",
         "-i", str(data_dir / CALL), "-c:v", "mpeg4", "-c:a", "aac", "-movflags", "+faststart", str(video)],
        check=True,
    )  # fmt: skip
    result = run(video)
    assert result.exit_code == 0, result.stderr
    assert "Stella" in text_of(tmp_path, "visit")


# --- exit codes and reports -------------------------------------------------------------------------


def test_naming_only_missing_files_is_nothing_to_do(tmp_path: Path) -> None:
    result = run(tmp_path / "gone.wav", tmp_path / "also-gone.m4a")
    assert result.exit_code == 2
    assert f"error: nothing to transcribe: no such file or folder ({tmp_path / 'also-gone.m4a'}, {tmp_path / 'gone.wav'})" in result.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_an_interrupt_keeps_its_exit_code_when_the_report_cannot_be_written(
    signum: int, code: int, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL, "b.flac": ASK})
    (tmp_path / "not-a-folder").write_text("", encoding="utf-8")
    real_write = writers.atomic_write

    def interrupted_write(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.suffix == ".txt":
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(writers, "atomic_write", interrupted_write)
    result = run(folder, "--report", tmp_path / "not-a-folder" / "run.json")
    assert result.exit_code == code, result.stderr
    # Both files are one batch, back from the engine when the signal comes: the stop finishes it.
    assert "error: cannot write --report" in result.stderr and result.stderr.splitlines()[-2].startswith("interrupted: 2 transcribed")


def test_an_unexpected_error_while_results_arrive_keeps_the_summary_and_the_report(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray task that fails for good raises out of the results: what finished before is still
    summed up and reported."""
    from carevoice.results import FileResult, FileStatus
    from carevoice.run import runs

    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL, "b.flac": ASK})
    real_start = runs.start_run

    class FailingBackend:
        def __init__(self, real: Any) -> None:
            self.real = real
            self.engine, self.engines, self.stats, self.log_path = real.engine, real.engines, real.stats, None

        def run(
            self, jobs: list[Any], on_result: Any = lambda r: None, on_progress: Any = None, on_stop: Any = None
        ) -> Iterator[FileResult]:
            for result in self.real.run(jobs[:1], on_result, on_progress, on_stop):
                yield result
            raise RuntimeError("RayTaskError(ActorDiedError): the actor died unexpectedly")

    def start_run(settings: Any) -> Any:
        started = real_start(settings)
        started.transcriber = FailingBackend(started.transcriber)
        return started

    monkeypatch.setattr(runs, "start_run", start_run)
    report = tmp_path / "run.json"
    result = run(folder, "--report", report)
    assert result.exit_code == 1
    assert "internal error: RuntimeError — rerun with --traceback and report it" in result.stderr
    assert any(ln.startswith("1 transcribed · ") for ln in result.stderr.splitlines())
    files = json.loads(report.read_text(encoding="utf-8"))["files"]
    assert [(Path(f["file"]).name, f["status"]) for f in files] == [("a.flac", FileStatus.DONE.value)]


# --- --dry-run --------------------------------------------------------------------------------------


def everything(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_a_dry_run_says_what_the_real_run_then_does_and_touches_nothing(tmp_path: Path, data_dir: Path) -> None:
    folder = folder_with(
        tmp_path, data_dir, **{"same.flac": CALL, "replaced.flac": CALL, "missing.flac": ASK, "edited.flac": CALL, "touched.flac": ASK}
    )
    assert run(folder).exit_code == 0
    shutil.copyfile(data_dir / ASK, folder / "replaced.flac")
    (folder / "missing.srt").unlink()
    (folder / "edited.txt").write_text("corrected by the ward nurse\n", encoding="utf-8")
    os.utime(folder / "touched.flac")
    shutil.copyfile(data_dir / ILL, folder / "new.wav")
    shutil.copyfile(data_dir / PRESS, folder / "twin.wav")
    shutil.copyfile(data_dir / PRESS, folder / "twin.mp3")  # both would write twin.txt: neither is done
    before = everything(folder)

    plan = run(folder, "--dry-run", "--json")
    assert plan.exit_code == 1, plan.stderr  # two files would fail
    assert everything(folder) == before  # no record refreshed, no lock, no temporary file, nothing written
    planned = {Path(f["file"]).name: (f["action"], f["reason"]) for f in json.loads(plan.stdout)["files"]}
    assert planned == {
        "new.wav": ("transcribe", "new"),
        "same.flac": ("skip", "current"),
        "touched.flac": ("skip", "current"),
        "replaced.flac": ("redo", "recording_changed"),
        "missing.flac": ("add", "output_missing"),
        "edited.flac": ("skip", "edited"),  # a person's correction of its transcript: kept, no failure
        "twin.wav": ("fail", "problem"),
        "twin.mp3": ("fail", "problem"),
    }
    assert plan.stderr.splitlines()[-1] == "dry run: 1 transcribe, 3 skip, 1 redo, 1 add, 2 fail (of 8 file(s)); nothing was changed"
    assert f"redo {folder / 'replaced.flac'} (recording changed since it was transcribed; writes txt, srt, json)" in plan.stderr

    report = tmp_path / "run.json"
    real = run(folder, "--report", report)
    assert real.exit_code == 1
    status_of = {"transcribe": "done", "redo": "done", "add": "done", "skip": "skipped", "fail": "failed"}
    done = {Path(f["file"]).name: f["status"] for f in json.loads(report.read_text(encoding="utf-8"))["files"]}
    assert done == {name: status_of[action] for name, (action, _) in planned.items()}


def test_the_record_names_what_else_shaped_the_words_and_a_new_build_redoes_nothing(tmp_path: Path, data_dir: Path) -> None:
    """Library versions, the decoder (a FLAC: the decode workers' libav, not the ffmpeg program) and the
    arithmetic path are recorded (docs/reruns.md: a rebuild or another machine may change some words);
    they are not compared: finished files stay."""
    import importlib.metadata

    from carevoice.engine.build import blas_threads, this_cpu, usable_cpus
    from carevoice.run.pyav_worker import library_version

    folder = folder_with(tmp_path, data_dir, **{"a.flac": CALL})
    assert run(folder).exit_code == 0
    raw = json.loads(record_path(folder / "a").read_text(encoding="ascii"))
    assert raw["build"] == {
        "ctranslate2": importlib.metadata.version("ctranslate2"),
        "faster-whisper": importlib.metadata.version("faster-whisper"),
        "onnxruntime": importlib.metadata.version("onnxruntime"),
        "numpy": importlib.metadata.version("numpy"),
        "blas_threads": blas_threads(os.environ, usable_cpus()),
        "ffmpeg": library_version(),
        "engines": [f"cpu int8 {this_cpu()}"],
    }
    assert raw["build"]["ffmpeg"].startswith("FFmpeg ") and "(PyAV " in raw["build"]["ffmpeg"]
    raw["build"] = {**raw["build"], "ctranslate2": "4.7.1", "engines": ["cpu int8 AVX2"]}  # made elsewhere, earlier
    record_path(folder / "a").write_text(json.dumps(raw, indent=1), encoding="ascii")
    before = snapshot(folder)
    again = run(folder)
    assert again.exit_code == 0, again.stderr
    assert line_for(again, folder / "a.flac").startswith("skipped")
    assert snapshot(folder) == before
    (folder / "a.srt").unlink()  # rendered again from the JSON: its words are still the old build's
    assert run(folder).exit_code == 0
    assert read_record(folder / "a").build["engines"] == ["cpu int8 AVX2"]  # type: ignore[union-attr]
