"""``--report FOLDER``: a folder of run pages that keeps every night. Each run's page gets a name of
its own (``carevoice-report-2026-12-06T0824.html``, the run's local start; ``-2``, ``-3`` … when a
minute holds more than one run), and ``index.html`` lists the pages, newest first, each with its
top line ("All good …" or "N recordings need a person").

The index is made again after each run from the pages in the folder; what it says of a run is read
from a small <meta> at the top of that run's page (html_report.RUN_META), so no other file is kept.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from carevoice.render.html_report import RUN_META, render_report_html, started_text
from carevoice.run import writers

PAGE_PREFIX = "carevoice-report-"
INDEX_NAME = "index.html"
HEAD_BYTES = 4096  # a page's <meta> comes first: the index never reads a whole page
PAGE_NAME = re.compile(re.escape(PAGE_PREFIX) + r"(\d{4}-\d\d-\d\dT\d{4})(?:-(\d+))?\.html")
META = re.compile(r'<meta name="' + re.escape(RUN_META) + r'" content="([^"]*)">')


def page_name(started: datetime, number: int = 1) -> str:
    """The page of a run started then; ``number``: the how-manieth run of that minute."""
    return f"{PAGE_PREFIX}{started.strftime('%Y-%m-%dT%H%M')}{'' if number == 1 else f'-{number}'}.html"


def started_at(report: dict[str, Any]) -> datetime:
    """When the run started (its report's ``started``), else now."""
    try:
        return datetime.fromisoformat(report["started"])
    except (KeyError, TypeError, ValueError):
        return datetime.now().astimezone()


def reserve_page(folder: Path, started: datetime) -> Path:
    """A page name in ``folder`` no other run has: created empty, exclusively, so two runs in the
    same minute (or on two machines) never write the same page."""
    for number in itertools.count(1):
        path = folder / page_name(started, number)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")  # itertools.count never ends


def write_run_page(folder: Path, report: dict[str, Any]) -> Path:
    """Write a run's page under a name of its own in ``folder``, then the folder's index; returns the page.

    Raises:
        OSError, OutputError: the folder refused the page or the index.
    """
    page = reserve_page(folder, started_at(report))
    writers.atomic_write(page, render_report_html(report, page).encode("utf-8"))
    writers.atomic_write(folder / INDEX_NAME, render_index(folder).encode("utf-8"))
    return page


def run_pages(folder: Path) -> list[Path]:
    """The run pages in ``folder``, newest first."""
    found = [(m.group(1), int(m.group(2) or 1), entry) for entry in folder.iterdir() if (m := PAGE_NAME.fullmatch(entry.name))]
    return [path for _, _, path in sorted(found, reverse=True)]


def read_run(page: Path) -> dict[str, Any] | None:
    """What a page says of its run (None: not readable, or written before pages said it)."""
    try:
        with open(page, "rb") as handle:
            head = handle.read(HEAD_BYTES).decode("utf-8", "replace")
        match = META.search(head)
        return json.loads(html.unescape(match.group(1))) if match else None
    except (OSError, ValueError):
        return None


def render_index(folder: Path) -> str:
    """The folder's index page: every run page, newest first, with its top line."""
    items = []
    for page in run_pages(folder):
        run = read_run(page) or {}
        verdict = str(run.get("verdict") or "")
        kind = "ok" if verdict.startswith("All good") else "attention" if verdict else "unknown"
        started = started_text(run) or page.name
        interrupted = " (interrupted)" if run.get("interrupted") else ""
        items.append(
            f'<li class="{kind}"><a href="./{html.escape(page.name)}">{html.escape(started)}{interrupted}</a>'
            f'<span class="verdict">{html.escape(verdict or "(no summary in this page)")}</span></li>'
        )
    listing = "".join(items) or '<li class="unknown">No run yet.</li>'
    return INDEX.format(runs=listing, count=len(items))


INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="CareVoice">
<title>CareVoice runs</title>
<style>
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; margin: 0 auto; padding: 1rem; max-width: 48rem; }}
h1 {{ font-size: 1.4rem; }} ul {{ list-style: none; padding: 0; }}
li {{ border: 1px solid #d0d7de; border-left: 4px solid #6e7781; border-radius: 6px; padding: .5rem .75rem; margin: .5rem 0; }}
li.ok {{ border-left-color: #1a7f37; }} li.attention {{ border-left-color: #cf222e; }}
li a {{ font-weight: 600; }} .verdict {{ display: block; }} li.attention .verdict {{ color: #82071e; font-weight: 600; }}
</style>
</head>
<body>
<h1>CareVoice runs ({count})</h1>
<p>Newest first. Each page says which recordings need a person.</p>
<ul>{runs}</ul>
</body>
</html>
"""
