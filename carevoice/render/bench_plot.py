"""`carevoice bench --plot`: a bench's --json record -> one figure (PNG, SVG, or a self-contained HTML
page with the figure and a table) written beside its data. Nothing here prints or exits.

The figure is drawn from the --json record alone, the same dict that lands in ``<stem>.data.json``:
whoever has the data file can check every bar against it, and redraw it. matplotlib is reached only
through :mod:`carevoice.render.charts`.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carevoice.engine.gpu_stats import busiest
from carevoice.engine.nvml import gib
from carevoice.errors import OutputError, SetupError, UsageError
from carevoice.render import charts
from carevoice.run import writers

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DATA_SUFFIX = ".data.json"
REASON_CHARS = 60  # an unavailable row's reason in the figure; the HTML table has it whole
CPU_NAME_CHARS, GPU_NAMES_CHARS = 50, 60  # longer CPU model names and GPU lists are cut: the title must fit
FIGURE_WIDTH_IN = 8.0
MODE_NAMES = {"carevoice": "CareVoice", "faster-whisper": "faster-whisper"}
MEASURE_NAMES = {"e2e": "end to end", "inference": "inference only"}
UNAVAILABLE_COLOUR = "#666666"


class PlotFormat(str, Enum):
    """What `--plot` can write, by the path's extension."""

    PNG = "png"
    SVG = "svg"
    HTML = "html"


_EXTENSIONS = [f".{f.value}" for f in PlotFormat]
ACCEPTED = f"{', '.join(_EXTENSIONS[:-1])} or {_EXTENSIONS[-1]}"  # ".png, .svg or .html", for messages


@dataclass(frozen=True)
class PlotFiles:
    """Where a plot and its data were written."""

    plot: Path
    data: Path


def plot_format(path: Path) -> PlotFormat:
    """The format a `--plot` path asks for, from its extension (any case).

    Raises:
        UsageError: not .png, .svg or .html.
    """
    suffix = path.suffix.lower()
    try:
        return PlotFormat(suffix[1:])
    except ValueError:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise UsageError(f"--plot {path}: cannot draw {kind} — name a {ACCEPTED} file") from None


def plot_data_path(path: Path) -> Path:
    """Where the plot's data goes: bench.png -> bench.data.json, beside it."""
    return path.with_name(path.stem + DATA_SUFFIX)


def check_plot_path(path: Path) -> PlotFormat:
    """Everything about `--plot` that can fail before the (slow) bench runs.

    Raises:
        UsageError: unsupported extension, the path is a folder, or its folder is missing or read-only.
        SetupError: matplotlib (the ``plot`` extra) is not installed.
    """
    fmt = plot_format(path)
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"--plot {path} is a folder — name a file in it, e.g. {path / ('bench.' + fmt.value)}")
    if not folder.is_dir():
        raise UsageError(f"--plot {path}: folder {folder} does not exist — create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--plot {path}: folder {folder} is not writable — choose another path")
    if not charts.available():
        raise SetupError("--plot needs matplotlib, which is not installed", f"install it: {charts.PLOT_EXTRA_HINT}")
    return fmt


def short_reason(reason: str | None, limit: int = REASON_CHARS) -> str:
    """An unavailable row's reason on one short line (first line, spaces collapsed, cut with …)."""
    lines = (reason or "").strip().splitlines()
    return _cut(" ".join(lines[0].split()) if lines else "no reason recorded", limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _row_name(row: Mapping[str, Any]) -> str:
    return f"{MODE_NAMES.get(row['mode'], row['mode'])} · {str(row['device']).upper()}"


def _compute_note(record: Mapping[str, Any]) -> str:
    """The compute types that ran, per device ("int8 on CPU, float16 on CUDA"), or what was asked for."""
    ran = {row["device"]: row["compute_type"] for row in record["rows"] if row["available"] and row["compute_type"]}
    if ran:
        return ", ".join(f"{compute} on {device.upper()}" for device, compute in ran.items())
    return f"compute type {record['settings'].get('compute_type') or 'default'} (nothing ran)"


def _gpu_names(record: Mapping[str, Any]) -> str:
    hardware = record["hardware"]
    names: list[str] = list(hardware.get("gpus") or [])
    if not names:
        nvml = hardware.get("nvml") or {}
        why = nvml.get("reason") if not nvml.get("available", False) else "NVML found no device"
        return f"none seen ({short_reason(why, 40)})" if why else "none seen"
    counted = {name: names.count(name) for name in names}
    return ", ".join(name if count == 1 else f"{count}× {name}" for name, count in counted.items())


def bench_title(record: Mapping[str, Any]) -> str:
    """Two lines: what was timed (model, compute types, audio, runs), and on what (CPU, GPUs)."""
    s, hw = record["settings"], record["hardware"]
    files = len(record["files"])
    first = (
        f"carevoice bench · model {s['model_id']} · {_compute_note(record)} · beam {s['beam_size']} · "
        f"{files} file{'s' if files != 1 else ''}, {record['audio_s']:.1f} s of audio · median of {s['runs']} run(s)"
    )
    cores = hw.get("cpu_cores_usable") or hw.get("cpu_cores")
    cpu = f"CPU {_cut(str(hw.get('cpu') or '?'), CPU_NAME_CHARS)}" + (f" ({cores} cores)" if cores else "")
    second = f"{cpu} · GPU {_cut(_gpu_names(record), GPU_NAMES_CHARS)}"
    return f"{first}\n{second}"


def _gpu_rows(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """CUDA rows that have at least one GPU reading."""
    return [
        row
        for row in record["rows"]
        if row.get("gpu") and row["gpu"].get("available") and any(series.get("t_s") for series in row["gpu"].get("series") or ())
    ]


def gpu_note(record: Mapping[str, Any]) -> str | None:
    """Why the figure has no GPU utilisation to show, or None when some CUDA row has readings."""
    if _gpu_rows(record):
        return None
    cuda = [row for row in record["rows"] if row["device"] == "cuda"]
    if not cuda:
        return "no GPU sampled: no CUDA rows in this bench (--devices)"
    ran = [row for row in cuda if row["available"]]
    if not ran:
        return f"no GPU sampled: CUDA not available: {short_reason(cuda[0]['reason'])}"
    stats = next((row["gpu"] for row in ran if row.get("gpu")), None)
    if stats is None:
        return "no GPU sampled: the CUDA rows carry no GPU statistics"
    if not stats.get("available"):
        return f"no GPU sampled: NVML unavailable: {short_reason(stats.get('reason'))}"
    return "no GPU sampled: no NVML reading during the timed runs"


def _speedup_note(record: Mapping[str, Any]) -> str | None:
    """Why there is no GPU/CPU speedup, when the bench could have had one."""
    if any(s["label"].startswith("GPU/CPU") for s in record["speedups"]):
        return None
    devices = {row["device"] for row in record["rows"]}
    missing = [device for device in ("cuda", "cpu") if device not in devices]
    if missing:
        return f"GPU/CPU: not measured (no {' or '.join(d.upper() for d in missing)} rows in this bench)"
    broken = next((row for row in record["rows"] if not row["available"]), None)
    why = f"{broken['device'].upper()} not available: {short_reason(broken['reason'], 45)}" if broken else "no pair of rows ran"
    return f"GPU/CPU: not measured ({why})"


def _grouped_bars(
    axes: Axes,
    names: Sequence[str],
    values: Sequence[Mapping[str, float | None]],
    show: Callable[[float], str],
    notes: Sequence[str | None],
) -> None:
    """Horizontal bars, one group per name (top to bottom) and one bar per measure; a group with a
    note shows the note instead of bars."""
    height = 0.38
    top = max((v for group in values for v in group.values() if v is not None), default=0.0)
    for m, measure in enumerate(MEASURE_NAMES):
        offset = (m - 0.5) * height
        ys = [i + offset for i in range(len(names))]
        widths = [group.get(measure) or 0.0 for group in values]
        axes.barh(ys, widths, height=height, color=charts.COLOURS[m], label=MEASURE_NAMES[measure])
        for y, group in zip(ys, values):
            value = group.get(measure)
            if value is not None:
                axes.text(value + top * 0.01, y, show(value), va="center", ha="left", fontsize=8)
    for i, note in enumerate(notes):
        if note:
            axes.text(0.01, i, note, transform=axes.get_yaxis_transform(), va="center", ha="left", fontsize=8,
                      color=UNAVAILABLE_COLOUR, style="italic")  # fmt: skip
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_ylim(len(names) - 0.5, -0.5)  # first group on top
    axes.set_xlim(0, top * 1.15 if top else 1.0)
    axes.grid(False, axis="y")


def _draw_rtfx(axes: Axes, record: Mapping[str, Any]) -> None:
    rows = record["rows"]
    names = []
    for row in rows:
        detail = ", ".join(part for part in (row["compute_type"], f"batch {row['batch_size']}" if row["batch_size"] else None) if part)
        names.append(_row_name(row) + (f"\n{detail}" if detail else ""))
    values = [{m: row[m]["rtfx"] if row["available"] else None for m in MEASURE_NAMES} for row in rows]
    notes = [None if row["available"] else f"not available: {short_reason(row['reason'])}" for row in rows]
    _grouped_bars(axes, names, values, lambda v: f"{v:.1f}", notes)
    axes.set_xlabel(
        "RTFx: audio seconds per wall-clock second (median run; higher is faster)\n"
        "end to end: ffmpeg decode, VAD, inference, writing · inference only: on audio decoded beforehand",
        fontsize=8,
    )
    axes.set_title("Speed per device and runner", loc="left", fontsize=9)
    # Above the bars, right of the title: inside, it covered the bars. Its colours hold for the speedups too.
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, fontsize=7, borderaxespad=0.2)


def _draw_speedups(axes: Axes, record: Mapping[str, Any]) -> None:
    by_label: dict[str, dict[str, float | None]] = {}
    for speedup in record["speedups"]:
        by_label.setdefault(speedup["label"], {})[speedup["measure"]] = speedup["ratio"]
    names, values, notes = list(by_label), list(by_label.values()), [None] * len(by_label)
    note = _speedup_note(record)
    if note:
        names, values, notes = [*names, "GPU/CPU"], [*values, {}], [*notes, note]
    if not names:
        names, values, notes = ["–"], [{}], ["no speedup: fewer than two rows ran"]
    _grouped_bars(axes, names, values, lambda v: f"{v:.2f}×", notes)
    axes.axvline(1.0, color="#333333", linewidth=0.8, linestyle=":")
    axes.set_xlabel("speedup: slower row's median wall time / faster row's (× faster)", fontsize=8)
    axes.set_title("Speedups (same files, same model)", loc="left", fontsize=9)


def _draw_gpu(util_axes: Axes, memory_axes: Axes, record: Mapping[str, Any]) -> None:
    """Utilisation and memory of each CUDA row's GPUs, over that row's timed runs."""
    rows = _gpu_rows(record)
    scale, unit = charts.time_unit(max((t for row in rows for series in row["gpu"]["series"] for t in series["t_s"]), default=0.0))
    colour_index = 0
    for row in rows:
        totals = {d["index"]: d.get("memory_total_mib") for d in row["gpu"].get("devices") or ()}
        for series in row["gpu"]["series"]:
            colour = charts.COLOURS[colour_index % len(charts.COLOURS)]
            colour_index += 1
            total_mib = totals.get(series["index"])
            total = f", {gib(total_mib, '.0f')} GiB total" if total_mib else ""
            charts.plot_gpu_series(util_axes, memory_axes, series, colour, f"{_row_name(row)} (GPU {series['index']}{total})", scale)
        e2e_s = sum(row["e2e"]["runs_s"])  # the end-to-end runs come first, then the inference-only ones
        if e2e_s and row["inference"]["runs_s"]:
            util_axes.axvline(e2e_s / scale, color=colour, linewidth=0.8, linestyle="--")
            util_axes.text(e2e_s / scale, 102, " inference only →", fontsize=7, color=colour, va="bottom")
    util_axes.set_ylim(0, 110)
    util_axes.set_ylabel("GPU utilisation (%)", fontsize=8)
    util_axes.set_title("NVML GPU use during the timed runs (end to end, then inference only)", loc="left", fontsize=9)
    util_axes.legend(loc="lower right", frameon=False, fontsize=7)
    util_axes.tick_params(labelbottom=False)
    memory_axes.sharex(util_axes)
    memory_axes.set_ylim(bottom=0)
    memory_axes.set_ylabel("GPU memory used (GiB)", fontsize=8)
    memory_axes.set_xlabel(f"time since the row's timed runs began ({unit})", fontsize=8)
    memory_axes.set_xlim(left=0)


def bench_figure(record: Mapping[str, Any]) -> Figure:
    """The bench record (as --json prints it) as one figure: RTFx per row, speedups, GPU use.

    Unavailable rows keep their place and say why. Without GPU readings the GPU part is one line
    saying why (:func:`gpu_note`), so every bench has the same three parts.

    Raises:
        SetupError: matplotlib is not installed.
    """
    note = gpu_note(record)
    speed_groups = len({s["label"] for s in record["speedups"]}) + (1 if _speedup_note(record) else 0)
    heights = [0.55 * len(record["rows"]) + 0.9, 0.45 * max(1, speed_groups) + 0.8]
    heights += [0.45] if note else [1.7, 1.5]
    figure, axes = charts.new_figure(FIGURE_WIDTH_IN, sum(heights) + 0.7, rows=len(heights), height_ratios=heights)
    _draw_rtfx(axes[0], record)
    _draw_speedups(axes[1], record)
    if note:
        axes[2].axis("off")
        axes[2].text(0.0, 0.5, note, transform=axes[2].transAxes, va="center", ha="left", fontsize=8, color=UNAVAILABLE_COLOUR)
    else:
        _draw_gpu(axes[2], axes[3], record)
    figure.suptitle(bench_title(record), x=0.01, ha="left", fontsize=9)
    return figure


def _number(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _gpu_cells(row: Mapping[str, Any]) -> tuple[str, str]:
    top = busiest((row.get("gpu") or {}).get("devices") or [], lambda d: (d.get("util_mean_pct"), d.get("memory_used_peak_mib")))
    if top is None:
        return "–", "–"
    memory = top.get("memory_used_peak_mib")
    return _number(top.get("util_mean_pct"), ".0f"), "–" if memory is None else gib(memory)


def bench_html(record: Mapping[str, Any], svg: bytes, data_name: str) -> str:
    """One self-contained page: the figure (inline SVG as a data: URI) and the numbers as tables.

    The page loads nothing (its Content-Security-Policy forbids it); every text is HTML-escaped.
    """
    e = html.escape
    s = record["settings"]
    head = ("mode", "device", "compute", "batch", "load s", "e2e s median (min)", "RTFx e2e", "RTFx inference", "files/s",
            "GPU util mean %", "GPU mem peak GiB", "status")  # fmt: skip
    rows = []
    for row in record["rows"]:
        e2e, inference = row["e2e"], row["inference"]
        util, memory = _gpu_cells(row)
        cells = (
            MODE_NAMES.get(row["mode"], row["mode"]), row["device"], row["compute_type"] or "–", _number(row["batch_size"], "d"),
            _number(row["load_s"], ".2f"), f"{_number(e2e['median_s'], '.2f')} ({_number(e2e['min_s'], '.2f')})",
            _number(e2e["rtfx"], ".1f"), _number(inference["rtfx"], ".1f"), _number(e2e["files_per_s"], ".2f"), util, memory,
            "ok" if row["available"] else f"not available: {row['reason'] or ''}",
        )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    speedups = [
        f"<tr><td>{e(sp['label'])}</td><td>{e(MEASURE_NAMES.get(sp['measure'], sp['measure']))}</td><td>{sp['ratio']:.2f}×</td></tr>"
        for sp in record["speedups"]
    ] or ["<tr><td colspan=3>none: fewer than two comparable rows ran</td></tr>"]
    title = bench_title(record)
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>carevoice bench · {e(str(s['model_id']))}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child, td:last-child {{ text-align: left; }}
.facts {{ color: #555; }}
</style>
</head>
<body>
<h1>{e(title.splitlines()[0])}</h1>
<p class="facts">{e(title.splitlines()[1])} · {e(str(record['hardware'].get('platform') or ''))} · {e(str(record['created']))}</p>
<img alt="{e(title)}" src="{charts.data_uri(svg)}">
<h2>Timings</h2>
<table>
<tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{chr(10).join(rows)}
</table>
<h2>Speedups (ratio of median wall times)</h2>
<table>
<tr><th>pair</th><th>measure</th><th>ratio</th></tr>
{chr(10).join(speedups)}
</table>
<p class="facts">{e(versions)} · every number and the raw run times: <code>{e(data_name)}</code> (the bench's --json record)</p>
</body>
</html>
"""


def render_bench_plot(record: Mapping[str, Any], fmt: PlotFormat, data_name: str = "bench.data.json") -> bytes:
    """The plot file's bytes in the given format (``data_name`` is named in the HTML page).

    Raises:
        SetupError: matplotlib is not installed.
    """
    figure = bench_figure(record)
    if fmt is PlotFormat.HTML:
        return bench_html(record, charts.render(figure, "svg"), data_name).encode("utf-8")
    return charts.render(figure, fmt.value)


def write_bench_plot(path: Path, record: Mapping[str, Any]) -> PlotFiles:
    """Draw the bench record into ``path`` and write the record beside it as ``<stem>.data.json``
    (the same JSON --json prints), each atomically.

    Raises:
        UsageError: unsupported extension.
        SetupError: matplotlib is not installed.
        OutputError: a file could not be written.
    """

    fmt = plot_format(path)
    data_path = plot_data_path(path)
    plot = render_bench_plot(record, fmt, data_path.name)
    data = (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    for target, content in ((data_path, data), (path, plot)):
        try:
            writers.atomic_write(target, content)
        except OSError as exc:
            raise OutputError(f"cannot write --plot file {target} ({exc.strerror or type(exc).__name__})",
                              "choose a writable path for --plot; the timings are in the table above") from None  # fmt: skip
    return PlotFiles(path, data_path)
