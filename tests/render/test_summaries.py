"""The summary line a run ends with (issue 23 §4): what happened, in words a nurse reads — what
was transcribed, what was already up to date, what failed, what needs a person — and a speed only
when audio was really decoded (outputs completed from a saved transcript decode nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carevoice.render.summaries import RunSummary, summary_line
from carevoice.results import FileResult, FileStatus


def result(name: str, status: FileStatus, duration_s: float = 0.0, **fields: object) -> FileResult:
    return FileResult(Path(name), status, duration_s=duration_s, **fields)  # type: ignore[arg-type]


DONE_60 = result("a.wav", FileStatus.DONE, 60.0)
SKIPPED = result("s.wav", FileStatus.SKIPPED, note="already transcribed with these options")
FAILED = result(
    "f.m4a", FileStatus.FAILED, error="not a recording: it is a PDF document — check that the right file was saved under this name"
)
QUIET = result("q.wav", FileStatus.NO_SPEECH, 30.0)
EDITED = result("e.wav", FileStatus.DONE, 60.0, conflict=Path("e (edited by a person).txt"))


@pytest.mark.parametrize(
    ("summary", "line"),
    [
        # Every file up to date: nothing was decoded, so no hours of audio and no speed.
        (RunSummary(results=[SKIPPED] * 3, wall_s=0.04, device="", model="tiny.en"), "3 already up to date"),
        # Outputs added from the saved transcript: done at once, no "290× real time".
        (
            RunSummary(results=[result("r.wav", FileStatus.DONE, 290.0)], wall_s=1.0, model="tiny.en", rendered_files=1, rendered_audio_s=290.0),
            "1 completed from its saved transcript",
        ),
        (
            RunSummary(results=[DONE_60, QUIET, SKIPPED, FAILED, EDITED], wall_s=10.0, device="cpu (int8)", model="tiny.en"),
            (
                "2 transcribed, 1 no speech heard — listen to it, 1 already up to date, 1 failed · 3 need a person · "
                "2.5 min of audio in 10 s, 15.0× real time · cpu (int8), tiny.en"
            ),
        ),
        (
            RunSummary(results=[DONE_60, QUIET, QUIET, FAILED], wall_s=6.0, device="cpu (int8)", model="tiny.en"),
            "1 transcribed, 2 no speech heard — listen to them, 1 failed · 3 need a person · 2.0 min of audio in 6 s, 20.0× real time · cpu (int8), tiny.en",
        ),
        (
            RunSummary(results=[FAILED] * 2, wall_s=3.0, device="cpu (int8)", model="tiny.en"),
            "2 failed · 2 need a person",
        ),
        (
            RunSummary(
                results=[DONE_60, result("r.wav", FileStatus.DONE, 290.0), SKIPPED, SKIPPED],
                wall_s=4.0, device="cpu (int8)", model="tiny.en", rendered_files=1, rendered_audio_s=290.0,
            ),
            "1 transcribed, 1 completed from its saved transcript, 2 already up to date · 60 s of audio in 4 s, 15.0× real time · cpu (int8), tiny.en",
        ),
        (RunSummary(results=[DONE_60], wall_s=5.0, device="cpu (int8)", model="tiny.en", interrupted=True),
         "[yellow]interrupted[/yellow]: 1 transcribed · 60 s of audio in 5 s, 12.0× real time · cpu (int8), tiny.en"),
        (RunSummary(results=[], wall_s=0.1, model="tiny.en"), "nothing transcribed"),
    ],
)  # fmt: skip
def test_the_summary_says_what_happened_in_words(summary: RunSummary, line: str) -> None:
    assert summary_line(summary) == line


def test_the_record_counts_only_decoded_audio_in_its_speed() -> None:
    """The JSON record (and the page made from it): rendered audio is not transcribed audio."""
    summary = RunSummary(
        results=[DONE_60, result("r.wav", FileStatus.DONE, 290.0), QUIET], wall_s=9.0, rendered_files=1, rendered_audio_s=290.0
    )
    record = summary.to_dict()
    assert (record["audio_s"], record["rtfx"], record["rendered_files"], record["rendered_audio_s"]) == (90.0, 10.0, 1, 290.0)
