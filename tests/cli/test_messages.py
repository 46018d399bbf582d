"""Issue 23 §4 — messages that send people the wrong way: a file that is no recording at all is
told apart from a recording cut short by what it holds, not by its name; a transcript named on the
command line is said to be one; the header counts every file the summary reports, and the summary
says what happened in words (no speed where nothing was decoded).

The real CLI, real ffmpeg and the real tiny.en model: each test asserts the exit code, the lines a
user sees and what is on disk.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import encode, invoke_cli

from carevoice.engine.cpus import cpu_budget_here
from carevoice.run.audio import Ffmpeg

ENGINE = ("-m", "tiny.en", "--device", "cpu")
STELLA = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
EIGHTEEN = "lhotse__LJ002-0020.wav"  # "in eighteen thirteen"
NOT_A_RECORDING_HINT = "check that the right file was saved under this name"
SPEED = r" · \d+ s of audio in \d+ s, \d+\.\d× real time · cpu \(int8\), tiny\.en$"

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
HTML = b"\xef\xbb\xbf\n  <!DOCTYPE html>\n<html><head><title>Rota</title></head><body>week 12</body></html>\n"


def docx() -> bytes:
    """An office document as a phone's share menu saves one: a ZIP archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def lines_naming(stderr: str, path: Path) -> list[str]:
    return [line for line in stderr.splitlines() if str(path) in line]


def test_what_is_no_recording_is_told_from_a_recording_cut_short_by_its_content(tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    whole = encode(ffmpeg_bin, data_dir / EIGHTEEN, tmp_path / "whole.m4a", "-c:a", "aac").read_bytes()
    photo = tmp_path / "photo.jpg"
    subprocess.run(
        [ffmpeg_bin.path, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=red:s=32x32", "-frames:v", "1", photo], check=True
    )
    files = {  # name: (content, what the line says after the name)
        "scan.m4a": (PDF, f"not a recording: it is a PDF document — {NOT_A_RECORDING_HINT}"),
        "scan-copy.mp3": (PDF, f"not a recording: it is a PDF document — {NOT_A_RECORDING_HINT}"),
        "photo.m4a": (photo.read_bytes(), f"not a recording: it is a JPEG picture — {NOT_A_RECORDING_HINT}"),
        "letter.m4a": (docx(), f"not a recording: it is a ZIP archive or office document (.docx, .xlsx, .odt) — {NOT_A_RECORDING_HINT}"),
        "rota.wav": (HTML, f"not a recording: it is a web page — {NOT_A_RECORDING_HINT}"),
        "notes.ogg": (
            b"patient reports chest pain since Tuesday; bloods taken, GP informed at 14:00\n",
            f"not a recording: it is a text file — {NOT_A_RECORDING_HINT}",
        ),
        "cut-off.m4a": (
            whole[: len(whole) // 2],
            "the file is truncated: its index (moov atom) is missing — copy the complete file again from the recorder",
        ),
    }
    for name, (content, _) in files.items():
        (inbox / name).write_bytes(content)

    result = invoke_cli("transcribe", inbox, *ENGINE)

    assert result.exit_code == 1
    for name, (content, said) in files.items():
        lines = lines_naming(result.stderr, inbox / name)
        assert len(lines) == 1 and lines[0].startswith(f"error: {inbox / name}: {said}"), result.stderr
        assert (inbox / name).read_bytes() == content
    # No outputs: only the hidden notes that remember a failure for the next plan (docs/reruns.md).
    assert sorted(p.name for p in inbox.iterdir() if not p.name.endswith(".carevoice-failed.json")) == sorted(files)
    assert "chest pain" not in result.stderr


@pytest.fixture
def transcribed(tmp_path: Path, data_dir: Path) -> Path:
    """visit.flac with its txt, srt and json, as a finished run leaves them."""
    recording = tmp_path / "visit.flac"
    shutil.copy(data_dir / STELLA, recording)
    first = invoke_cli("transcribe", recording, *ENGINE, "-f", "txt,srt,json")
    assert first.exit_code == 0, first.stderr
    return recording


@pytest.mark.parametrize("suffix", [".txt", ".srt", ".json"])
@pytest.mark.parametrize("overwrite", [(), ("--overwrite",)])
def test_a_transcript_named_on_the_command_line_is_said_to_be_one(transcribed: Path, suffix: str, overwrite: tuple[str, ...]) -> None:
    named = transcribed.with_suffix(suffix)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in transcribed.parent.iterdir()}

    result = invoke_cli("transcribe", named, *ENGINE, *overwrite)

    assert result.exit_code == 1
    assert lines_naming(result.stderr, named) == [
        f"error: {named}: not a recording: {suffix} is what CareVoice writes (a transcript) — name the recording instead: {transcribed}"
    ]
    assert result.stderr.splitlines()[-1] == "1 failed · 1 needs a person"
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in transcribed.parent.iterdir()} == before


def test_a_text_file_named_without_a_recording_beside_it_says_what_to_name(tmp_path: Path) -> None:
    notes = tmp_path / "handover.txt"
    notes.write_text("bed 4: call the family\n", encoding="utf-8")
    result = invoke_cli("transcribe", notes, *ENGINE)
    assert result.exit_code == 1
    assert lines_naming(result.stderr, notes) == [
        f"error: {notes}: not a recording: .txt is what CareVoice writes (a transcript) — name the recording instead (.wav, .mp3, .m4a …)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["handover.txt"]
    assert "call the family" not in result.stderr


def test_the_header_counts_every_file_and_the_summary_says_what_happened(tmp_path: Path, data_dir: Path) -> None:
    ward = tmp_path / "ward"
    ward.mkdir()
    for name in ("a.flac", "b.flac", "c.flac"):
        shutil.copy(data_dir / STELLA, ward / name)
    assert invoke_cli("transcribe", ward / "c.flac", *ENGINE, "-q").exit_code == 0
    (ward / "b.txt").write_text("a person's own notes\n", encoding="utf-8")  # blocks b.flac before any work

    first = invoke_cli("transcribe", ward, *ENGINE)

    assert first.exit_code == 1
    lines = first.stderr.splitlines()
    assert lines[0].startswith("1 of 3 file(s) to transcribe (1 already up to date, 1 failed before any work) on cpu "), first.stderr
    assert f"; {cpu_budget_here().reason}); model " in lines[0], lines[0]  # what threads are sized by: a container's limit, not the host's
    assert re.fullmatch(r"1 transcribed, 1 already up to date, 1 failed · 1 needs a person" + SPEED, lines[-1]), lines[-1]
    assert (ward / "a.txt").is_file() and (ward / "b.txt").read_text(encoding="utf-8") == "a person's own notes\n"

    again = invoke_cli("transcribe", ward, *ENGINE)  # nothing decoded: no hours of audio, no speed
    assert again.exit_code == 1
    assert again.stderr.splitlines()[-1] == "2 already up to date, 1 failed · 1 needs a person"

    (ward / "b.txt").unlink()
    done = invoke_cli("transcribe", ward / "a.flac", ward / "c.flac", *ENGINE)
    assert done.exit_code == 0 and done.stderr.splitlines() == [f"skipped {ward / 'a.flac'} (already transcribed with these options)",
                                                              f"skipped {ward / 'c.flac'} (already transcribed with these options)",
                                                              "2 already up to date"]  # fmt: skip


def test_outputs_completed_from_the_saved_transcript_are_not_counted_as_transcribed_audio(transcribed: Path) -> None:
    result = invoke_cli("transcribe", transcribed, *ENGINE, "-f", "txt,srt,json,vtt")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "1 completed from its saved transcript"
    assert transcribed.with_suffix(".vtt").is_file()
