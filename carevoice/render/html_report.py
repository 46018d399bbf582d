"""A run's JSON report (RunSummary.to_dict) -> one self-contained HTML page (``--report run.html``).

The page is made from the very dict the JSON report holds, so its numbers are the JSON's. It
needs nothing beyond itself (no network, no CDN: a Content-Security-Policy forbids fetching
anything) and opens from a shared drive: links to recordings and outputs are relative to the
report. Like everything it is made from, it never holds transcript text: file names, numbers,
languages and one-line reasons only.

It is written for a team lead first, on a desk or a phone: one line (all good, or how many
recordings need a person), then those recordings by kind, each kind with a fix a nurse can follow
and each file with its exact technical line folded below (carevoice.render.attention); then every
file in a table, sorted, filtered and paged in the browser from embedded JSON (so 10,000 rows stay
fast: only a page of rows is ever in the DOM); then the engineering detail: throughput, chunks,
engine calls, options, skipped files by reason and the charts (carevoice.render.charts).
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from carevoice.engine.nvml import gib
from carevoice.render import charts
from carevoice.render.attention import AttentionGroup, advise, attention_groups, verdict_line
from carevoice.render.words import duration_text

PAGE_ROWS = 250  # table rows per page
GROUP_FILES_SHOWN = 25  # files listed under one kind of trouble (the table lists them all)
TIME_NOTE = (
    "each file's own time: its decoding, its share of the batches it was transcribed in together with other files, "
    "and its writing (not the time it waited its turn); a file already done takes none"
)
RUN_META = "carevoice-run"  # a <meta> near the top of the page: what a folder's index says of the run


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
    return "; ".join(part for part in (entry.get("needs_person"), entry.get("note"), entry.get("why")) if part)


def table_rows(files: list[dict[str, Any]], base: Path) -> list[list[Any]]:
    """The per-file table as compact rows for the page's script (see its column indices)."""
    rows = []
    for entry in files:
        outputs = [[Path(o).suffix.lstrip(".") or Path(o).name, link(o, base)] for o in entry.get("outputs") or ()]
        rows.append(
            [entry["file"], link(entry["file"], base), entry["status"], entry["duration_s"], entry.get("language") or "",
             entry["elapsed_s"], outputs, _reason(entry), advise(entry) is not None]
        )  # fmt: skip
    return rows


def _stat(label: str, shown: str, key: str, value: Any) -> str:
    return (
        f'<div class="stat"><div class="value" data-key="{html.escape(key)}" data-value="{html.escape(json.dumps(value))}">'
        f"{html.escape(shown)}</div><div class=\"label\">{html.escape(label)}</div></div>"
    )


def _counts(report: dict[str, Any]) -> str:
    """What happened, in a nurse's words."""
    counts = report["counts"]
    stats = [
        _stat("transcribed", str(counts["done"]), "counts.done", counts["done"]),
        _stat("no speech heard", str(counts["no_speech"]), "counts.no_speech", counts["no_speech"]),
        _stat("already done", str(counts["skipped"]), "counts.skipped", counts["skipped"]),
        _stat("failed", str(counts["failed"]), "counts.failed", counts["failed"]),
        _stat("audio transcribed", duration_text(report["audio_s"]), "audio_s", report["audio_s"]),
    ]
    return f'<section id="counts"><div class="stats">{"".join(stats)}</div></section>'


def _details(report: dict[str, Any]) -> str:
    """The engineering detail: speed, device, model, chunks, options, skipped files by reason."""
    stats = [
        _stat("wall time", duration_text(report["wall_s"]), "wall_s", report["wall_s"]),
        _stat("× real time", f"{report['rtfx']:.1f}×", "rtfx", report["rtfx"]),
        _stat("files per second", f"{report['files_per_s']:.2f}", "files_per_s", report["files_per_s"]),
    ]
    facts = [
        ("device", report.get("device") or "none (nothing to transcribe)"),
        ("model", report.get("model") or ""),
        ("CareVoice", report.get("carevoice_version") or ""),
        ("started", _when(report.get("started") or "")),
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
    facts += [(f"skipped: {note}", str(n)) for note, n in skip_reasons(report["files"])]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return (
        f'<section id="details"><h2>Run details</h2><div class="stats">{"".join(stats)}</div><table class="facts">{rows}</table></section>'
    )


def _when(iso: str) -> str:
    """``2026-12-06T08:24:00+01:00`` as ``2026-12-06 08:24:00 +01:00``: it wraps between its parts."""
    return re.sub(r"([+-]\d\d:\d\d|Z)$", r" \1", iso.replace("T", " ", 1))


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


def _anchor(path: str, base: Path, text: str, cls: str = "") -> str:
    attribute = f' class="{cls}"' if cls else ""
    return f'<a{attribute} href="{html.escape(link(path, base))}">{html.escape(text)}</a>'


def _attention_item(entry: dict[str, Any], base: Path) -> str:
    """One recording to look at: its name (and folder), what else to open, its technical line folded."""
    path = Path(entry["file"])
    parts = [_anchor(entry["file"], base, path.name, "file")]
    if str(path.parent) not in ("", "."):
        parts.append(f'<span class="folder">in {html.escape(str(path.parent))}</span>')
    if entry.get("conflict"):
        parts.append(f'<span class="opens">kept edit: {_anchor(entry["conflict"], base, Path(entry["conflict"]).name)}</span>')
    if entry.get("outputs"):
        parts.append(f'<span class="opens">transcript: {" · ".join(_anchor(o, base, Path(o).name) for o in entry["outputs"])}</span>')
    technical = entry.get("error") or entry.get("needs_person") or ""
    parts.append(f'<details class="tech"><summary>technical line</summary><code>{html.escape(technical)}</code></details>')
    return f"<li>{''.join(parts)}</li>"


def _attention(groups: list[AttentionGroup], base: Path) -> str:
    if not groups:
        return ""
    items = []
    for group in groups:
        shown = "".join(_attention_item(entry, base) for entry in group.files[:GROUP_FILES_SHOWN])
        more = len(group.files) - GROUP_FILES_SHOWN
        if more > 0:
            shown += f'<li class="more">and {more} more: choose "needs a person" in the table below</li>'
        advice = group.advice
        items.append(
            f'<details class="group kind-{advice.kind}" open><summary><span class="count">{len(group.files)}</span> {html.escape(advice.title)}</summary>'
            f'<p class="fix">What to do: {html.escape(advice.action)}</p><ul class="people">{shown}</ul></details>'
        )
    needing = sum(len(g.files) for g in groups)
    return f'<section id="attention"><h2>Needs a person ({needing})</h2>{"".join(items)}</section>'


def _image(svg: bytes, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="{charts.data_uri(svg)}"></figure>'


def _charts(report: dict[str, Any]) -> str:
    if not charts.available():
        return f'<section id="charts"><h2>Charts</h2><p class="note">Charts need matplotlib: {html.escape(charts.PLOT_EXTRA_HINT)}</p></section>'
    try:
        figures = _figures(report)
    except Exception as exc:  # a chart that cannot be drawn must not cost the run its report
        figures = [f'<p class="note">The charts could not be drawn ({html.escape(type(exc).__name__)}); the numbers are all above.</p>']
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


def run_facts(report: dict[str, Any]) -> dict[str, Any]:
    """What a folder's index shows of a run (kept in the page's RUN_META <meta>)."""
    return {"started": report.get("started") or "", "verdict": verdict_line(report), "counts": report["counts"],
            "interrupted": bool(report.get("interrupted"))}  # fmt: skip


def started_text(report: dict[str, Any]) -> str:
    """When a run started, to the minute, as its page and the index of pages show it ("" when not known)."""
    return str(report.get("started") or "")[:16].replace("T", " ")


def render_report_html(report: dict[str, Any], report_path: Path) -> str:
    """The page for a run's report dict (RunSummary.to_dict(), options and timeline included).

    Args:
        report: The JSON report's dict.
        report_path: Where the page will be written (links are relative to its folder).

    """
    base = report_path.absolute().parent
    started = started_text(report)
    title = "CareVoice run" + (f" · {started}" if started else "") + (" (interrupted)" if report.get("interrupted") else "")
    banner = (
        '<p class="banner">This run was interrupted: run the same command again to finish the missing files.</p>'
        if report.get("interrupted")
        else ""
    )
    groups = attention_groups(report["files"])
    data = {"rows": table_rows(report["files"], base), "pageRows": PAGE_ROWS}
    return PAGE.format(
        title=html.escape(title),
        meta_name=RUN_META,
        meta=html.escape(json.dumps(run_facts(report), ensure_ascii=False)),
        verdict_class="attention" if groups else "ok",
        verdict=html.escape(verdict_line(report)),
        banner=banner,
        counts=_counts(report),
        attention=_attention(groups, base),
        details=_details(report),
        charts=_charts(report),
        files=len(report["files"]),
        time_note=html.escape(TIME_NOTE),
        data=_json_for_script(data),
        style=STYLE,
        script=SCRIPT,
    )


STYLE = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#fff; --done:#1a7f37; --skipped:#6e7781; --failed:#cf222e; --attention:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; padding: 1.5rem; max-width: 1200px; overflow-wrap: break-word; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; font-weight: 600; } h2 { font-size: 1.15rem; margin: 2rem 0 .75rem; }
.verdict { font-size: 1.5rem; font-weight: 700; margin: 0 0 1rem; padding: .6rem .9rem; border-radius: 8px; }
.verdict.ok { color: var(--done); background: #dafbe1; } .verdict.attention { color: #82071e; background: #ffebe9; }
.banner { background:#fff8c5; border:1px solid #d4a72c; padding:.5rem .75rem; border-radius:6px; }
.stats { display:flex; flex-wrap:wrap; gap:.75rem; margin-bottom:1rem; }
.stat { border:1px solid var(--line); border-radius:8px; padding:.6rem .9rem; min-width:8.5rem; }
.stat .value { font-size:1.4rem; font-weight:600; font-variant-numeric: tabular-nums; } .stat .label { color:var(--muted); }
table.facts { border-collapse:collapse; } table.facts th { text-align:left; color:var(--muted); font-weight:500; padding:.15rem 1rem .15rem 0; vertical-align:top; }
table.facts td { padding:.15rem 0; overflow-wrap:anywhere; } td.num { text-align:right; padding-right:1rem; font-variant-numeric: tabular-nums; }
details.group { border:1px solid var(--line); border-left:4px solid var(--failed); border-radius:6px; padding:.5rem .75rem; margin:.5rem 0; }
details.kind-no_speech, details.kind-conflict { border-left-color: var(--attention); }
details.group > summary { cursor:pointer; font-weight:600; font-size:1.05rem; } .count { display:inline-block; min-width:2rem; color:var(--failed); }
.fix { margin:.4rem 0; } .ok { color:var(--done); } .note { color:var(--muted); } li.more { color:var(--muted); list-style:none; }
ul.people { padding-left:1.1rem; margin:.25rem 0; } ul.people li { margin:.45rem 0; overflow-wrap:anywhere; }
ul.people .file { font-weight:600; } .folder, .opens { display:block; color:var(--muted); font-size:.9em; }
details.tech summary { cursor:pointer; color:var(--muted); font-size:.9em; } details.tech code { display:block; font-size:.85em; white-space:pre-wrap; overflow-wrap:anywhere; }
figure { margin:0 0 1rem; } figure img { width:100%; max-width:960px; height:auto; border:1px solid var(--line); border-radius:6px; }
.controls { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; margin-bottom:.5rem; }
.controls input[type=search] { flex:1; min-width:14rem; padding:.35rem .5rem; font:inherit; }
.controls select, .controls button { font:inherit; padding:.3rem .5rem; }
#files table { width:100%; border-collapse:collapse; table-layout:fixed; }
#files th, #files td { border-bottom:1px solid var(--line); padding:.3rem .4rem; text-align:left; vertical-align:top; overflow-wrap:anywhere; }
#files th { position:sticky; top:0; background:var(--bg); cursor:pointer; user-select:none; white-space:nowrap; }
#files th[aria-sort=ascending]::after { content:" ▲"; } #files th[aria-sort=descending]::after { content:" ▼"; }
#files td.num { text-align:right; } col.c-file { width:30%; } col.c-status { width:9%; } col.c-num { width:8%; } col.c-lang { width:8%; } col.c-out { width:11%; } col.c-reason { width:26%; }
.status-done { color:var(--done); } .status-skipped { color:var(--skipped); } .status-failed { color:var(--failed); font-weight:600; } .status-no_speech { color:var(--attention); font-weight:600; }
td a + a { margin-left:.4rem; } #shown { color:var(--muted); }
/* A phone: each file becomes a card (name, then its facts on a line), nothing squeezed into a narrow column. */
@media (max-width: 640px) {
  body { padding: .75rem; }
  .stat { min-width: 6.5rem; padding: .45rem .65rem; } .stat .value { font-size: 1.2rem; }
  #files table, #files tbody, #files tr { display:block; } #files colgroup, #files thead { display:none; }
  #files tr { border-bottom:1px solid var(--line); padding:.4rem 0; }
  #files td { display:inline-block; border:0; padding:.1rem .8rem .1rem 0; }
  #files td.file, #files td.reason { display:block; } #files td.num { text-align:left; }
  #files td[data-label]::before { content: attr(data-label) " "; color: var(--muted); }
}
@media print { .controls, #pager { display:none; } }
"""

# Builds each cell with textContent and each link with an attribute: nothing from the data is ever parsed as HTML.
SCRIPT = """
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("cv-data").textContent);
  const rows = data.rows, pageRows = data.pageRows;
  const FILE = 0, HREF = 1, STATUS = 2, AUDIO = 3, LANG = 4, ELAPSED = 5, OUTPUTS = 6, REASON = 7, NEEDS = 8;
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
      if (state.status === "needs") { if (!r[NEEDS]) return false; } else if (state.status && r[STATUS] !== state.status) return false;
      if (!text) return true;
      return r[FILE].toLowerCase().includes(text) || r[REASON].toLowerCase().includes(text) || r[LANG].toLowerCase() === text;
    });
  }
  function cell(tr, text, cls, label) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (label) td.dataset.label = label;
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
      cell(tr, r[STATUS].replace("_", " "), "status-" + r[STATUS]);
      cell(tr, r[STATUS] === "skipped" && !r[AUDIO] ? "—" : r[AUDIO].toFixed(1), "num", "audio (s)");
      cell(tr, r[LANG], "", r[LANG] ? "language" : "");
      cell(tr, r[ELAPSED].toFixed(1), "num", "time (s)");
      const outs = cell(tr, "");
      for (const o of r[OUTPUTS]) {
        const link = document.createElement("a");
        link.href = o[1]; link.textContent = o[0];
        outs.appendChild(link);
      }
      cell(tr, r[REASON], "reason");
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
<meta name="{meta_name}" content="{meta}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="generator" content="CareVoice">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p id="verdict" class="verdict {verdict_class}">{verdict}</p>
{banner}
{counts}
{attention}
<section id="files">
<h2>Files ({files})</h2>
<div class="controls">
<input id="filter" type="search" placeholder="Filter by name, reason or language" aria-label="Filter files">
<select id="status-filter" aria-label="Status"><option value="">every status</option><option value="needs">needs a person</option><option value="done">done</option><option value="no_speech">no speech heard</option><option value="skipped">skipped (already done)</option><option value="failed">failed</option></select>
<button id="prev" type="button">‹ previous</button><button id="next" type="button">next ›</button>
<span id="shown"></span>
</div>
<table>
<colgroup><col class="c-file"><col class="c-status"><col class="c-num"><col class="c-lang"><col class="c-num"><col class="c-out"><col class="c-reason"></colgroup>
<thead><tr><th data-sort="file">file</th><th data-sort="status">status</th><th data-sort="audio">audio (s)</th><th data-sort="language">language</th><th data-sort="elapsed" title="{time_note}">time (s)</th><th data-sort="outputs">outputs</th><th data-sort="reason">reason</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<p class="note">time: {time_note}.</p>
</section>
{details}
{charts}
<script type="application/json" id="cv-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""
