"""How the HTML run report scales: a night's run of N files (default 10,000) -> ``--report run.html``.

Builds the RunSummary a real run would hold after 8 hours (N FileResults: every 50th failed, every
7th skipped; a timeline with a point every 0.5 s, bounded as the CLI bounds it; two GPUs read every
0.5 s), writes it with report.write_report exactly as the CLI does, and times that; then opens the
page in headless Chromium (Debian's chromium, through Playwright) and times the first table, a sort
and a filter in the browser.

Usage: python benchmarks/report_scale.py [--files 10000] [--keep run.html]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

NIGHT_S = 8 * 3600.0


def night_summary(files: int):  # type: ignore[no-untyped-def]
    from carevoice.engine.gpu_stats import GpuStats, summarise, time_series
    from carevoice.engine.nvml import GpuSample
    from carevoice.render.progress import Timeline
    from carevoice.render.summaries import RunSummary
    from carevoice.results import FileResult, FileStatus

    results = []
    for i in range(files):
        source = Path(f"/srv/recordings/ward-{i % 12:02d}/2026-11-30/visit-{i:05d}.m4a")
        duration = 3.0 + (i * 7919) % 57
        if i % 50 == 0:
            results.append(FileResult(source, FileStatus.FAILED, duration_s=0.0, elapsed_s=0.2,
                                      error=f"ffmpeg did not finish within {30 + i % 3} s and was stopped — the file may be damaged; check that it plays"))  # fmt: skip
        elif i % 7 == 0:
            results.append(FileResult(source, FileStatus.SKIPPED, note="already transcribed with these options"))
        else:
            outputs = tuple(source.with_suffix(f".{e}") for e in ("txt", "srt", "json"))
            results.append(FileResult(source, FileStatus.DONE, outputs=outputs, duration_s=duration, elapsed_s=duration / 9, language="en" if i % 4 else "zh"))
    summary = RunSummary(results=results, wall_s=NIGHT_S, device="cuda ×2 (float16)", model="large-v3", engine_calls=files // 8, chunks=files)
    timeline = Timeline(origin=0.0)
    done_s = 0.0
    for step in range(int(NIGHT_S / 0.5)):
        done_s += 5.2
        timeline.add(done_s, step * files // int(NIGHT_S / 0.5), now=step * 0.5)
    timeline.close()
    readings = [(k * 0.5, tuple(GpuSample(g, 60.0 + (k + 17 * g) % 40, 20_000.0 + g * 300, 81_920.0) for g in (0, 1))) for k in range(int(NIGHT_S / 0.5))]
    gpu = GpuStats(True, "", 0.5, NIGHT_S, summarise([r for _, r in readings]), time_series(readings))
    summary.extra.update(started="2026-11-30T20:00:00+00:00", gpu=gpu.to_dict(), timeline=timeline.to_dict())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="also copy the page here")
    args = parser.parse_args()

    from carevoice.render.summaries import write_report

    summary = night_summary(args.files)
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "run.html"
        started = time.perf_counter()
        write_report(page, summary)
        write_s = time.perf_counter() - started
        json_path = Path(folder) / "run.json"
        write_report(json_path, summary)
        print(f"{args.files} files: run.html written in {write_s:.2f} s, {page.stat().st_size / 1e6:.2f} MB "
              f"(run.json {json_path.stat().st_size / 1e6:.2f} MB)")  # fmt: skip
        if args.keep:
            shutil.copy(page, args.keep)
        browser_timings(page)


def browser_timings(page_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        print("no chromium: browser timings skipped")
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector("#rows tr")
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        page.click('th[data-sort="audio"]')
        sort_s = time.perf_counter() - started
        started = time.perf_counter()
        page.fill("#filter", "ward-03")
        filter_s = time.perf_counter() - started
        print(f"chromium: page open with its first 250 rows {load_s:.2f} s, sort by audio {sort_s * 1000:.0f} ms, "
              f"filter {filter_s * 1000:.0f} ms ({page.inner_text('#shown')})")  # fmt: skip
        browser.close()


if __name__ == "__main__":
    main()
