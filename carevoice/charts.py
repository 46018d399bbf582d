"""Charts with matplotlib (the ``plot`` extra): report and bench data (plain dicts, as in their
JSON) -> figures -> SVG or PNG bytes. Nothing here reads files or prints.

matplotlib is imported only here, and only when a chart is drawn: ``import carevoice.cli`` and a
run without charts never load it. Figures are made with :class:`matplotlib.figure.Figure`
directly (no pyplot: no global state, no GUI backend, safe in any thread).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from carevoice.errors import SetupError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PLOT_EXTRA_HINT = "pip install 'carevoice[plot]'"
# Colour-blind-safe (Okabe-Ito), one per series in a fixed order.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",  # text stays text: smaller files, searchable
    "svg.hashsalt": "carevoice",  # the same data gives the same bytes
}


def available() -> bool:
    """matplotlib can be imported (the ``plot`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    """A figure and its axes (as ``Figure.subplots`` returns them), in CareVoice's style.

    Raises:
        SetupError: matplotlib is not installed.
    """
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise SetupError("charts need matplotlib, which is not installed", f"install it: {PLOT_EXTRA_HINT}") from None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = figure.subplots(rows, cols, **subplots)
    return figure, axes


def render(figure: Figure, fmt: str, dpi: int = 110) -> bytes:
    """The figure as ``svg`` or ``png`` bytes (no creation date inside: the same figure, the same bytes)."""
    import matplotlib

    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def _time_axis(t_s: Sequence[float]) -> tuple[list[float], str]:
    """Times in the unit that suits the run's length."""
    end = max(t_s, default=0.0)
    if end < 180:
        return list(t_s), "wall time (s)"
    if end < 3 * 3600:
        return [t / 60 for t in t_s], "wall time (min)"
    return [t / 3600 for t in t_s], "wall time (h)"


def throughput_chart(timeline: dict[str, list[Any]], title: str) -> Figure:
    """Audio done (and files done, right axis) over the run's wall time, from the report's ``timeline``."""
    figure, audio_axes = new_figure(7.5, 3.0)
    times, time_label = _time_axis(timeline["t_s"])
    audio = timeline["audio_done_s"]
    scale, unit = (60.0, "min") if max(audio, default=0.0) >= 180 else (1.0, "s")
    if max(audio, default=0.0) >= 3 * 3600:
        scale, unit = 3600.0, "h"
    audio_axes.plot(times, [a / scale for a in audio], color=COLOURS[0], drawstyle="steps-post", label="audio transcribed")
    audio_axes.set_xlabel(time_label)
    audio_axes.set_ylabel(f"audio transcribed ({unit})", color=COLOURS[0])
    audio_axes.set_ylim(bottom=0)
    audio_axes.set_xlim(left=0)
    files_axes = audio_axes.twinx()
    files_axes.plot(times, timeline["files_done"], color=COLOURS[1], drawstyle="steps-post", linestyle="--", label="files finished")
    files_axes.set_ylabel("files finished", color=COLOURS[1])
    files_axes.set_ylim(bottom=0)
    files_axes.grid(False)
    files_axes.spines["right"].set_visible(True)
    lines = audio_axes.get_lines() + files_axes.get_lines()
    audio_axes.legend(lines, [line.get_label() for line in lines], loc="upper left", frameon=False)
    audio_axes.set_title(title, loc="left")
    return figure


def gpu_chart(series: Sequence[dict[str, Any]], title: str, memory_total_mib: dict[int, float | None] | None = None) -> Figure:
    """Each GPU's utilisation (top) and memory used (bottom) over time, from a GpuStats ``series``."""
    figure, (util_axes, memory_axes) = new_figure(7.5, 4.2, rows=2, sharex=True)
    for position, gpu in enumerate(series):
        colour = COLOURS[position % len(COLOURS)]
        times, time_label = _time_axis(gpu["t_s"])
        marker = "." if len(times) < 30 else None  # a few readings, or some n/a, still show
        util_axes.plot(times, [u if u is not None else float("nan") for u in gpu["util_pct"]], color=colour, marker=marker, label=f"GPU {gpu['index']}")
        memory = [m / 1024 if m is not None else float("nan") for m in gpu["memory_used_mib"]]
        memory_axes.plot(times, memory, color=colour, label=f"GPU {gpu['index']}")
        total = (memory_total_mib or {}).get(gpu["index"])
        if total:
            memory_axes.axhline(total / 1024, color=colour, linestyle=":", linewidth=1)
        memory_axes.set_xlabel(time_label)
    _percent_axes(util_axes, "GPU utilisation (%)")
    memory_axes.set_ylabel("GPU memory used (GiB)")
    memory_axes.set_ylim(bottom=0)
    memory_axes.set_xlim(left=0)
    util_axes.legend(loc="upper right", frameon=False, ncols=min(4, max(1, len(series))))
    util_axes.set_title(title, loc="left")
    return figure


def _percent_axes(axes: Axes, label: str) -> None:
    axes.set_ylim(0, 105)
    axes.set_ylabel(label)
