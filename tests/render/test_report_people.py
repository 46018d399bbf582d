"""The report for a team lead (issue 23, section 5): one line at the top, the recordings that need a
person first (failures, no speech heard, a person's edit kept aside), each with a fix a nurse can
follow and the exact technical line kept below it; a folder of runs that keeps last night's page;
and a page that reads on a phone (390 px, no word broken letter by letter).

The pages are made from FileResult values built here (the outcomes themselves are other parts' work)
and, for the folder of runs, from real CLI runs.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from browsers import browser, needs_browser  # noqa: F401  (browser: a fixture)
from conftest import invoke_cli

from carevoice.errors import Cause
from carevoice.render.attention import advise, attention_groups, verdict_line
from carevoice.render.html_report import render_report_html
from carevoice.render.summaries import RunSummary, write_report
from carevoice.results import FileResult, FileStatus

ENGINE = ("-m", "tiny.en", "--device", "cpu")
LONG_NAME = "night-shift_ward-7b_bed-12_handover-recording_2026-12-06_0312_continued-after-interruption_final.m4a"
TRUNCATED = "the file is truncated: its index (moov atom) is missing — copy the complete file again from the recorder"
NOT_AUDIO = "cannot decode audio (ffmpeg: Invalid data found when processing input) — check that the file is a playable recording"


def night(folder: Path) -> list[FileResult]:
    """One of every outcome a team lead meets, with a long file name and a long error among them."""
    return [
        FileResult(folder / "a-done.wav", FileStatus.DONE, outputs=(folder / "a-done.txt",), duration_s=61.0, elapsed_s=4.0, language="en"),
        FileResult(folder / "b-whisper.flac", FileStatus.NO_SPEECH, outputs=(folder / "b-whisper.txt",), duration_s=12.0, elapsed_s=2.0),
        FileResult(folder / "c-upload.m4a", FileStatus.FAILED, error=TRUNCATED, cause=Cause.INCOMPLETE),
        FileResult(folder / "d-pdf.mp3", FileStatus.FAILED, error=NOT_AUDIO),
        FileResult(folder / "e-visit.wav", FileStatus.DONE, outputs=(folder / "e-visit.txt",), duration_s=30.0, elapsed_s=3.0,
                   conflict=folder / "e-visit (edited 2026-12-05).txt"),
        FileResult(folder / LONG_NAME, FileStatus.FAILED, error=f"cannot write outputs in {folder / 'a' / 'very' / 'deep' / 'folder' / 'of' / 'the' / 'shared' / 'drive'} "
                   "(No space left on device) — check free disk space and that the folder is writable, then rerun (finished files are kept)",
                   cause=Cause.FOLDER),
        # A person's file found in the way as the outputs are written: the folder's cause (a watcher looks again once it changes).
        FileResult(folder / "g-typed.wav", FileStatus.FAILED, error="g-typed.txt exists and was not written by CareVoice (or was edited) — move it away",
                   cause=Cause.FOLDER),
        FileResult(folder / "f-earlier.wav", FileStatus.SKIPPED, outputs=(folder / "f-earlier.txt",), duration_s=45.0, note="already transcribed with these options"),
    ]  # fmt: skip


def report_of(results: list[FileResult], **extra: Any) -> dict[str, Any]:
    summary = RunSummary(results=results, wall_s=20.0, device="cpu", model="tiny.en")
    summary.extra.update({"started": "2026-12-06T08:24:00+01:00", "options": {"model": "tiny.en", "format": ["txt"]}, **extra})
    return summary.to_dict()


def test_each_kind_of_trouble_gets_a_plain_fix_and_keeps_its_technical_line(tmp_path: Path) -> None:
    files = report_of(night(tmp_path))["files"]
    advice = {Path(f["file"]).name: advise(f) for f in files}
    assert advice["a-done.wav"] is None and advice["f-earlier.wav"] is None
    assert advice["c-upload.m4a"].kind == "incomplete" and "copy" in advice["c-upload.m4a"].action.lower()
    assert advice["d-pdf.mp3"].kind == "not_a_recording"
    assert advice["b-whisper.flac"].kind == "no_speech" and "listen" in advice["b-whisper.flac"].action.lower()
    assert advice["e-visit.wav"].kind == "conflict" and "compare" in advice["e-visit.wav"].action
    assert advice[LONG_NAME].kind == "folder"
    assert advice["g-typed.wav"].kind == "edited_output"  # not "the folder is full"
    for name, item in advice.items():
        if item is None:
            continue
        # A nurse's fix: no command line, no option, no ffmpeg.
        assert not re.search(r"ffmpeg|--\w|`", item.title + item.action), (name, item)
    # Failures first, then no speech heard, then a person's edit.
    assert [g.kind for g in attention_groups(files)] == ["incomplete", "not_a_recording", "edited_output", "folder", "no_speech", "conflict"]


def test_an_unknown_failure_still_gets_a_way_forward() -> None:
    item = advise({"file": "x.wav", "status": "failed", "error": "something nobody foresaw — report it"})
    assert item is not None and item.kind == "other" and item.action


def test_the_top_line_says_all_good_or_how_many_need_a_person(tmp_path: Path) -> None:
    assert verdict_line(report_of(night(tmp_path))) == "6 recordings need a person"
    good = [r for r in night(tmp_path) if r.needs_person is None]
    assert verdict_line(report_of(good)) == "All good: 1 recording transcribed, 1 already done"
    assert verdict_line(report_of(good[:1])) == "All good: 1 recording transcribed"
    assert verdict_line(report_of([])) == "All good: nothing to do"


def test_the_page_opens_with_the_line_and_the_list(tmp_path: Path) -> None:
    page = render_report_html(report_of(night(tmp_path)), tmp_path / "run.html")
    body = page[page.index("<body>") :]
    verdict = body.index('id="verdict"')
    attention = body.index('id="attention"')
    assert verdict < attention < body.index('id="files"') < body.index('id="details"') < body.index('id="charts"')
    assert "6 recordings need a person" in body[verdict:attention]
    # The exact technical line is there, below the plain fix (in a details element).
    listed = body[attention : body.index('id="files"')]
    assert "<details" in listed and "moov atom" in listed
    assert 'href="./e-visit%20%28edited%202026-12-05%29.txt"' in listed  # the person's edit, a click away


def test_skipped_rows_carry_their_length_and_outputs_and_times_say_what_they_are(tmp_path: Path) -> None:
    page = render_report_html(report_of(night(tmp_path)), tmp_path / "run.html")
    data = json.loads(re.search(r'<script type="application/json" id="cv-data">(.*?)</script>', page, re.DOTALL).group(1))  # type: ignore[union-attr]
    skipped = next(r for r in data["rows"] if r[0].endswith("f-earlier.wav"))
    assert skipped[3] == 45.0 and [o[0] for o in skipped[6]] == ["txt"]
    assert "own time: its decoding, its share of the batches" in page  # the time column says what it measures


def runs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("carevoice-report-*.html"))


def test_a_folder_keeps_every_night_and_lists_them_newest_first(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    first = RunSummary(results=night(tmp_path), wall_s=20.0)
    first.extra["started"] = "2026-12-05T08:24:10+01:00"
    second = RunSummary(results=[r for r in night(tmp_path) if r.needs_person is None], wall_s=5.0)
    second.extra["started"] = "2026-12-06T08:24:59+01:00"
    written = [write_report(reports, first), write_report(reports, second), write_report(reports, second)]
    assert [p.name for p in written] == [
        "carevoice-report-2026-12-05T0824.html", "carevoice-report-2026-12-06T0824.html", "carevoice-report-2026-12-06T0824-2.html"
    ]  # fmt: skip
    assert runs_in(reports) == sorted(p.name for p in written)
    index = (reports / "index.html").read_text(encoding="utf-8")
    order = [index.index(f'href="./{p.name}"') for p in reversed(written)]
    assert order == sorted(order)  # newest first
    assert "6 recordings need a person" in index and "All good" in index


def test_an_explicit_file_name_is_still_written_in_place(tmp_path: Path) -> None:
    summary = RunSummary(results=night(tmp_path), wall_s=1.0)
    summary.extra["started"] = datetime(2026, 12, 6, 8, 24).astimezone().isoformat()
    assert write_report(tmp_path / "run.html", summary) == tmp_path / "run.html"
    assert write_report(tmp_path / "run.json", summary) == tmp_path / "run.json"
    assert json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["counts"]["failed"] == 4
    assert runs_in(tmp_path) == [] and not (tmp_path / "index.html").exists()


def test_the_cli_writes_a_page_per_run_into_a_report_folder(tmp_path: Path, data_dir: Path) -> None:
    folder, reports = tmp_path / "visits", tmp_path / "reports"
    folder.mkdir()
    reports.mkdir()
    shutil.copy(data_dir / "lhotse__LJ002-0020.wav", folder / "a.wav")
    for _ in range(2):
        result = invoke_cli("transcribe", folder, *ENGINE, "-f", "txt", "--report", reports)
        assert result.exit_code == 0, result.stderr
    pages = runs_in(reports)
    assert len(pages) == 2, pages
    said = re.search(r"report: (\S+)", " ".join(result.stderr.split()))
    assert said is not None and Path(said.group(1)).parent == reports, result.stderr  # the second run says where its page is
    assert "All good: 1 already done" in Path(said.group(1)).read_text(encoding="utf-8")
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert all(f'href="./{name}"' in index for name in pages)


# --- on a phone -------------------------------------------------------------------------------

# Every word of the page's visible text, with the lines it is spread over (character by character).
WORD_LINES = """
() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent;
    if (!node.parentElement || node.parentElement.closest("script,style,details:not([open]) > :not(summary)")) continue;
    for (const m of text.matchAll(/\\S+/g)) {
      const lines = [];
      for (let i = m.index; i < m.index + m[0].length; i++) {
        const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
        const rect = r.getBoundingClientRect();
        if (rect.width === 0 && rect.height === 0) continue;
        const top = Math.round(rect.top);
        if (!lines.length || Math.abs(lines[lines.length - 1][0] - top) > 3) lines.push([top, 0]);
        lines[lines.length - 1][1] += 1;
      }
      if (lines.length) out.push([m[0], lines.map(l => l[1])]);
    }
  }
  return out;
}
"""


def broken_words(words: list[tuple[str, list[int]]]) -> list[tuple[str, list[int]]]:
    """Words no one can read: split other than after a hyphen, underscore, slash or dot, where a
    word of up to 14 characters is split at all, or a longer one (a file name, a path) leaves a
    piece shorter than 10 characters before its last line."""

    def readable(word: str, pieces: list[int]) -> bool:
        ends = [sum(pieces[: i + 1]) for i in range(len(pieces) - 1)]
        if all(word[end - 1] in "-_/." for end in ends):
            return True
        return len(word) > 14 and min(pieces[:-1]) >= 10

    return [(w, n) for w, n in words if len(n) > 1 and not readable(w, n)]


@needs_browser
def test_on_a_phone_nothing_is_broken_letter_by_letter(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "night.html"
    path.write_text(render_report_html(report_of(night(tmp_path)), path), encoding="utf-8")
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(path.as_uri())
    page.eval_on_selector_all("#attention details", "ds => ds.forEach(d => d.open = true)")  # the technical lines too
    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000 and problems == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the side
    words = page.evaluate(WORD_LINES)
    assert len(words) > 150 and any(w == LONG_NAME for w, _ in words)  # the scan saw the page, long name included
    assert broken_words(words) == []
    assert page.inner_text("#verdict") == "6 recordings need a person"


def test_a_files_time_is_its_own_not_its_batchs(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from doubles import fake_load

    from carevoice.engine.whisper import Engine

    batch_s = 6.0  # long enough that four short files' decoding and writing (well under 1 s each) stay inside the slack below
    monkeypatch.setattr(Engine, "load", fake_load(delay_s=batch_s))
    for name in ("a", "b", "c", "d"):
        shutil.copy(data_dir / "lhotse__LJ002-0020.wav", tmp_path / f"{name}.wav")
    result = invoke_cli("transcribe", tmp_path, *ENGINE, "--batch-size", "8", "-f", "txt", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["engine_calls"] == 1  # the four files shared one batch
    times = [f["elapsed_s"] for f in report["files"]]
    # The batch's time is counted once, shared among its files (each a quarter, plus its own
    # decoding and writing), not once per file: that would be 4 × batch_s or more.
    assert batch_s <= sum(times) < 2 * batch_s, times
