"""A run's JSON report (RunSummary.to_dict) -> one self-contained HTML page (``--report run.html``).

The page is made from the very dict the JSON report holds, so its numbers are the JSON's. It
needs nothing beyond itself (no network, no CDN: a Content-Security-Policy forbids fetching
anything) and opens from a shared drive: links to recordings and outputs are relative to the
report. Like everything it is made from, it never holds transcript text: file names, numbers,
languages and one-line reasons only.

Sections: summary, failures grouped by cause (each with its fix and files), skipped files by
reason, charts (carevoice.render.charts: throughput, and each GPU's utilisation and memory on CUDA runs),
and the per-file table, sorted, filtered and paged in the browser from embedded JSON (so 10,000
rows stay fast: only a page of rows is ever in the DOM).
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from carevoice.engine.nvml import gib
from carevoice.render import charts
from carevoice.render.words import duration_text

PAGE_ROWS = 250  # table rows per page
GROUP_FILES_SHOWN = 10  # files listed under one failure cause (the table lists them all)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class FailureGroup:
    """Files that failed for one cause (numbers in the message aside, e.g. a timeout's seconds)."""

    cause: str
    fix: str
    files: list[str] = field(default_factory=list)


def split_error(error: str) -> tuple[str, str]:
    """``"cause — fix"`` (CareVoiceError's one line) -> (cause, fix); no fix: (error, "")."""
    cause, _, fix = error.partition(" — ")
    return cause.strip(), fix.strip()


def failure_groups(files: list[dict[str, Any]]) -> list[FailureGroup]:
    """The failed files grouped by cause, the largest group first (then by cause)."""
    groups: dict[tuple[str, str], FailureGroup] = {}
    for entry in files:
        if entry["status"] != "failed":
            continue
        cause, fix = split_error(entry.get("error") or "failed")
        key = (_NUMBER.sub("#", cause), fix)
        groups.setdefault(key, FailureGroup(cause, fix)).files.append(entry["file"])
    return sorted(groups.values(), key=lambda g: (-len(g.files), g.cause))


def skip_reasons(files: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for entry in files:
        if entry["status"] == "skipped":
            note = entry.get("note") or "skipped"
            counts[note] = counts.get(note, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def link(path: str, base: Path) -> str:
    """A relative URL from the report's folder to ``path`` (percent-encoded: a name can never
    read as a scheme such as ``javascript:``)."""
    target = Path(path)
    absolute = target if target.is_absolute() else Path.cwd() / target
    try:
        relative = os.path.relpath(absolute, base)
    except ValueError:  # another drive (Windows): no relative path exists
        return absolute.as_uri()
    return "./" + quote(Path(relative).as_posix(), safe="/")


def _reason(entry: dict[str, Any]) -> str:
    if entry["status"] == "failed":
        return entry.get("error") or "failed"
    return "; ".join(part for part in (entry.get("note"), entry.get("why")) if part)


def table_rows(files: list[dict[str, Any]], base: Path) -> list[list[Any]]:
    """The per-file table as compact rows for the page's script (see COLUMNS)."""
    rows = []
    for entry in files:
        outputs = [[Path(o).suffix.lstrip(".") or Path(o).name, link(o, base)] for o in entry.get("outputs") or ()]
        rows.append(
            [entry["file"], link(entry["file"], base), entry["status"], entry["duration_s"], entry.get("language") or "",
             entry["elapsed_s"], outputs, _reason(entry)]
        )  # fmt: skip
    return rows


def _stat(label: str, shown: str, key: str, value: Any) -> str:
    return (
        f'<div class="stat"><div class="value" data-key="{html.escape(key)}" data-value="{html.escape(json.dumps(value))}">'
        f"{html.escape(shown)}</div><div class=\"label\">{html.escape(label)}</div></div>"
    )


def _summary(report: dict[str, Any]) -> str:
    counts = report["counts"]
    stats = [
        _stat("transcribed", str(counts["done"]), "counts.done", counts["done"]),
        _stat("no speech heard", str(counts["no_speech"]), "counts.no_speech", counts["no_speech"]),
        _stat("skipped", str(counts["skipped"]), "counts.skipped", counts["skipped"]),
        _stat("failed", str(counts["failed"]), "counts.failed", counts["failed"]),
        _stat("audio transcribed", duration_text(report["audio_s"]), "audio_s", report["audio_s"]),
        _stat("wall time", duration_text(report["wall_s"]), "wall_s", report["wall_s"]),
        _stat("× real time", f"{report['rtfx']:.1f}×", "rtfx", report["rtfx"]),
        _stat("files per second", f"{report['files_per_s']:.2f}", "files_per_s", report["files_per_s"]),
    ]
    facts = [
        ("device", report.get("device") or "none (nothing to transcribe)"),
        ("model", report.get("model") or ""),
        ("CareVoice", report.get("carevoice_version") or ""),
        ("started", report.get("started") or ""),
        ("chunks / engine calls", f"{report.get('chunks', 0)} / {report.get('engine_calls', 0)}"),
    ]
    gpu_mean = _gpu_summary(report.get("gpu"))
    if gpu_mean:
        facts.append(("GPU", gpu_mean))
    for name, value in (report.get("options") or {}).items():
        if value in (None, [], ""):
            continue
        shown = ("yes" if value else "no") if isinstance(value, bool) else ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        facts.append((f"--{name.replace('_', '-')}", shown))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f'<section id="summary"><div class="stats">{"".join(stats)}</div><table class="facts">{rows}</table></section>'


def _gpu_summary(gpu: dict[str, Any] | None) -> str:
    if not gpu:
        return ""
    if not gpu.get("available"):
        return f"not sampled ({gpu.get('reason') or 'NVML unavailable'})"
    parts = []
    for device in gpu.get("devices") or ():
        util = "n/a" if device["util_mean_pct"] is None else f"{device['util_mean_pct']:.0f}%"
        peak = device["memory_used_peak_mib"]
        parts.append(f"GPU {device['index']}: utilisation mean {util}, memory peak {'n/a' if peak is None else f'{gib(peak)} GiB'}")
    return "; ".join(parts)


def _failures(report: dict[str, Any], base: Path) -> str:
    groups = failure_groups(report["files"])
    if not groups:
        return '<section id="failures"><h2>Failures</h2><p class="ok">No file failed.</p></section>'
    items = []
    for group in groups:
        shown = "".join(f'<li><a href="{html.escape(link(f, base))}">{html.escape(f)}</a></li>' for f in group.files[:GROUP_FILES_SHOWN])
        more = len(group.files) - GROUP_FILES_SHOWN
        if more > 0:
            shown += f'<li class="more">and {more} more: filter the table below by "failed"</li>'
        fix = f'<p class="fix">Fix: {html.escape(group.fix)}</p>' if group.fix else ""
        items.append(
            f'<details class="group" open><summary><span class="count">{len(group.files)}</span> {html.escape(group.cause)}</summary>'
            f"{fix}<ul>{shown}</ul></details>"
        )
    return f'<section id="failures"><h2>Failures by cause</h2>{"".join(items)}</section>'


def _skipped(report: dict[str, Any]) -> str:
    reasons = skip_reasons(report["files"])
    if not reasons:
        return ""
    rows = "".join(f'<tr><td class="num">{n}</td><td>{html.escape(note)}</td></tr>' for note, n in reasons)
    return f'<section id="skipped"><h2>Skipped</h2><table class="facts">{rows}</table></section>'


def _image(svg: bytes, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="{charts.data_uri(svg)}"></figure>'


def _charts(report: dict[str, Any]) -> str:
    if not charts.available():
        return f'<section id="charts"><h2>Charts</h2><p class="note">Charts need matplotlib: {html.escape(charts.PLOT_EXTRA_HINT)}</p></section>'
    try:
        figures = _figures(report)
    except Exception as exc:  # a chart that cannot be drawn must not cost the run its report
        figures = [f'<p class="note">The charts could not be drawn ({html.escape(type(exc).__name__)}); the numbers are all below.</p>']
    return f'<section id="charts"><h2>Charts</h2>{"".join(figures)}</section>'


def _figures(report: dict[str, Any]) -> list[str]:
    figures = []
    timeline = report.get("timeline") or {}
    if len(timeline.get("t_s") or ()) >= 2:
        figure = charts.throughput_chart(timeline, f"Throughput: {report['rtfx']:.1f}× real time over {duration_text(report['wall_s'])}")
        figures.append(_image(charts.render(figure, "svg"), "audio transcribed and files finished over wall time"))
    gpu = report.get("gpu") or {}
    if gpu.get("series"):
        totals = {d["index"]: d.get("memory_total_mib") for d in gpu.get("devices") or ()}
        figure = charts.gpu_chart(gpu["series"], "GPU utilisation and memory (NVML)", totals)
        figures.append(_image(charts.render(figure, "svg"), "each GPU's utilisation and memory used over wall time"))
    elif gpu:
        figures.append(f'<p class="note">GPU not sampled: {html.escape(gpu.get("reason") or "no readings")}</p>')
    if not figures:
        figures.append('<p class="note">Too short a run to chart.</p>')
    return figures


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_report_html(report: dict[str, Any], report_path: Path) -> str:
    """The page for a run's report dict (RunSummary.to_dict(), options and timeline included).

    Args:
        report: The JSON report's dict.
        report_path: Where the page will be written (links are relative to its folder).

    """
    base = report_path.absolute().parent
    title = "CareVoice run" + (" (interrupted)" if report.get("interrupted") else "")
    banner = '<p class="banner">This run was interrupted: rerun the same command to finish the missing files.</p>' if report.get("interrupted") else ""
    data = {"rows": table_rows(report["files"], base), "pageRows": PAGE_ROWS}
    return PAGE.format(
        title=html.escape(title),
        banner=banner,
        summary=_summary(report),
        failures=_failures(report, base),
        skipped=_skipped(report),
        charts=_charts(report),
        files=len(report["files"]),
        data=_json_for_script(data),
        style=STYLE,
        script=SCRIPT,
    )


STYLE = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#fff; --done:#1a7f37; --skipped:#6e7781; --failed:#cf222e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; padding: 1.5rem; max-width: 1200px; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; } h2 { font-size: 1.15rem; margin: 2rem 0 .75rem; }
.banner { background:#fff8c5; border:1px solid #d4a72c; padding:.5rem .75rem; border-radius:6px; }
.stats { display:flex; flex-wrap:wrap; gap:.75rem; margin-bottom:1rem; }
.stat { border:1px solid var(--line); border-radius:8px; padding:.6rem .9rem; min-width:8.5rem; }
.stat .value { font-size:1.4rem; font-weight:600; font-variant-numeric: tabular-nums; } .stat .label { color:var(--muted); }
table.facts { border-collapse:collapse; } table.facts th { text-align:left; color:var(--muted); font-weight:500; padding:.15rem 1rem .15rem 0; vertical-align:top; }
table.facts td { padding:.15rem 0; word-break: break-word; } table.facts td.num, td.num { text-align:right; padding-right:1rem; font-variant-numeric: tabular-nums; }
details.group { border:1px solid var(--line); border-left:4px solid var(--failed); border-radius:6px; padding:.5rem .75rem; margin:.5rem 0; }
details.group summary { cursor:pointer; font-weight:600; } .count { display:inline-block; min-width:2.2rem; color:var(--failed); }
.fix { margin:.4rem 0; } .ok { color:var(--done); } .note { color:var(--muted); } li.more { color:var(--muted); list-style:none; }
figure { margin:0 0 1rem; } figure img { width:100%; max-width:960px; height:auto; border:1px solid var(--line); border-radius:6px; }
.controls { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; margin-bottom:.5rem; }
.controls input[type=search] { flex:1; min-width:16rem; padding:.35rem .5rem; font:inherit; }
.controls select, .controls button { font:inherit; padding:.3rem .5rem; }
#files table { width:100%; border-collapse:collapse; table-layout:fixed; }
#files th, #files td { border-bottom:1px solid var(--line); padding:.3rem .4rem; text-align:left; vertical-align:top; overflow-wrap:anywhere; }
#files th { position:sticky; top:0; background:var(--bg); cursor:pointer; user-select:none; white-space:nowrap; }
#files th[aria-sort=ascending]::after { content:" ▲"; } #files th[aria-sort=descending]::after { content:" ▼"; }
#files td.num { text-align:right; } col.c-file { width:30%; } col.c-status { width:8%; } col.c-num { width:9%; } col.c-lang { width:9%; } col.c-out { width:11%; } col.c-reason { width:24%; }
.status-done { color:var(--done); } .status-skipped { color:var(--skipped); } .status-failed { color:var(--failed); font-weight:600; }
td a + a { margin-left:.4rem; } #shown { color:var(--muted); }
@media print { .controls, #pager { display:none; } }
"""

# Builds each cell with textContent and each link with an attribute: nothing from the data is ever parsed as HTML.
SCRIPT = """
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("cv-data").textContent);
  const rows = data.rows, pageRows = data.pageRows;
  const FILE = 0, HREF = 1, STATUS = 2, AUDIO = 3, LANG = 4, ELAPSED = 5, OUTPUTS = 6, REASON = 7;
  const sortKeys = { file: FILE, status: STATUS, audio: AUDIO, language: LANG, elapsed: ELAPSED, outputs: OUTPUTS, reason: REASON };
  const state = { key: "file", dir: 1, text: "", status: "", page: 0 };
  const body = document.getElementById("rows"), shown = document.getElementById("shown");
  const filter = document.getElementById("filter"), status = document.getElementById("status-filter");
  const prev = document.getElementById("prev"), next = document.getElementById("next");
  const headers = document.querySelectorAll("#files th[data-sort]");
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function compare(a, b) {
    const i = sortKeys[state.key];
    let x = a[i], y = b[i];
    if (i === OUTPUTS) { x = x.length; y = y.length; }
    const order = typeof x === "number" ? x - y : collator.compare(String(x), String(y));
    return (order || collator.compare(a[FILE], b[FILE])) * state.dir;
  }
  function matching() {
    const text = state.text.toLowerCase();
    return rows.filter(function (r) {
      if (state.status && r[STATUS] !== state.status) return false;
      if (!text) return true;
      return r[FILE].toLowerCase().includes(text) || r[REASON].toLowerCase().includes(text) || r[LANG].toLowerCase() === text;
    });
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function render() {
    const list = matching().sort(compare);
    const pages = Math.max(1, Math.ceil(list.length / pageRows));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * pageRows, page = list.slice(start, start + pageRows);
    const fragment = document.createDocumentFragment();
    for (const r of page) {
      const tr = document.createElement("tr");
      const name = cell(tr, "", "file");
      const a = document.createElement("a");
      a.href = r[HREF]; a.textContent = r[FILE];
      name.appendChild(a);
      cell(tr, r[STATUS], "status-" + r[STATUS]);
      cell(tr, r[AUDIO].toFixed(1), "num");
      cell(tr, r[LANG]);
      cell(tr, r[ELAPSED].toFixed(1), "num");
      const outs = cell(tr, "");
      for (const o of r[OUTPUTS]) {
        const link = document.createElement("a");
        link.href = o[1]; link.textContent = o[0];
        outs.appendChild(link);
      }
      cell(tr, r[REASON]);
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    shown.textContent = list.length === 0 ? "no file matches" :
      "files " + (start + 1) + "–" + (start + page.length) + " of " + list.length + (list.length !== rows.length ? " matching (" + rows.length + " in all)" : "");
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    headers.forEach(function (th) {
      th.setAttribute("aria-sort", th.dataset.sort === state.key ? (state.dir > 0 ? "ascending" : "descending") : "none");
    });
  }
  headers.forEach(function (th) {
    th.addEventListener("click", function () {
      if (state.key === th.dataset.sort) { state.dir = -state.dir; } else { state.key = th.dataset.sort; state.dir = 1; }
      state.page = 0; render();
    });
  });
  filter.addEventListener("input", function () { state.text = filter.value.trim(); state.page = 0; render(); });
  status.addEventListener("change", function () { state.status = status.value; state.page = 0; render(); });
  prev.addEventListener("click", function () { state.page -= 1; render(); });
  next.addEventListener("click", function () { state.page += 1; render(); });
  render();
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="generator" content="CareVoice">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
{banner}
{summary}
{failures}
{skipped}
{charts}
<section id="files">
<h2>Files ({files})</h2>
<div class="controls">
<input id="filter" type="search" placeholder="Filter by name, reason or language code" aria-label="Filter files">
<select id="status-filter" aria-label="Status"><option value="">every status</option><option value="done">done</option><option value="skipped">skipped</option><option value="failed">failed</option></select>
<button id="prev" type="button">‹ previous</button><button id="next" type="button">next ›</button>
<span id="shown"></span>
</div>
<table>
<colgroup><col class="c-file"><col class="c-status"><col class="c-num"><col class="c-lang"><col class="c-num"><col class="c-out"><col class="c-reason"></colgroup>
<thead><tr><th data-sort="file">file</th><th data-sort="status">status</th><th data-sort="audio">audio (s)</th><th data-sort="language">language</th><th data-sort="elapsed">elapsed (s)</th><th data-sort="outputs">outputs</th><th data-sort="reason">reason</th></tr></thead>
<tbody id="rows"></tbody>
</table>
</section>
<script type="application/json" id="cv-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""
