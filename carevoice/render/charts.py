"""Charts with matplotlib (the ``plot`` extra): report and bench data (plain dicts, as in their
JSON) -> figures -> SVG or PNG bytes. Nothing here reads files or prints.

matplotlib is imported only here, and only when a chart is drawn: ``import carevoice.cli.app`` and a
run without charts never load it. Figures are made with :class:`matplotlib.figure.Figure`
directly (no pyplot: no global state, no GUI backend, safe in any thread).
"""

from __future__ import annotations

import base64
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
        import matplotlib  # noqa: F401  (the plot extra: a page without charts says how to get them)
    except ImportError:
        return False
    return True


def new_figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    """A figure and its axes (as ``Figure.subplots`` returns them), in CareVoice's style.

    Raises:
        SetupError: matplotlib is not installed.
    """
    try:
        import matplotlib  # the plot extra: a page without charts says how to get them

        # the plot extra: a page without charts says how to get them
        from matplotlib.figure import Figure
    except ImportError:
        raise SetupError("charts need matplotlib, which is not installed", f"install it: {PLOT_EXTRA_HINT}") from None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = figure.subplots(rows, cols, **subplots)
    return figure, axes


def render(figure: Figure, fmt: str, dpi: int = 110) -> bytes:
    """The figure as ``svg`` or ``png`` bytes (no creation date inside: the same figure, the same bytes)."""
    import matplotlib  # the plot extra: a page without charts says how to get them

    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def time_unit(seconds: float) -> tuple[float, str]:
    """Divisor and unit for an axis whose values reach ``seconds``: s, then min from 3 min, h from 3 h."""
    if seconds < 180:
        return 1.0, "s"
    if seconds < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def data_uri(svg: bytes) -> str:
    """An SVG as a ``data:`` URI, for an <img> in a page that loads nothing from anywhere."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def plot_gpu_series(util_axes: Axes, memory_axes: Axes, series: dict[str, Any], colour: str, label: str, divisor: float = 1.0) -> None:
    """One GPU's readings (a GpuStats ``series`` entry): utilisation (%) on one axes, memory used
    (GiB) on the other; readings the GPU did not give (n/a) leave gaps."""
    times = [t / divisor for t in series["t_s"]]
    marker = "." if len(times) < 30 else None  # a few readings, or some n/a, still show
    util = [float("nan") if u is None else u for u in series["util_pct"]]
    memory = [float("nan") if m is None else m / 1024 for m in series["memory_used_mib"]]
    util_axes.plot(times, util, color=colour, marker=marker, label=label)
    memory_axes.plot(times, memory, color=colour, label=label)


def throughput_chart(timeline: dict[str, list[Any]], title: str) -> Figure:
    """Audio done (and files done, right axis) over the run's wall time, from the report's ``timeline``."""
    figure, audio_axes = new_figure(7.5, 3.0)
    divisor, time_unit_name = time_unit(max(timeline["t_s"], default=0.0))
    times = [t / divisor for t in timeline["t_s"]]
    audio = timeline["audio_done_s"]
    scale, unit = time_unit(max(audio, default=0.0))
    audio_axes.plot(times, [a / scale for a in audio], color=COLOURS[0], drawstyle="steps-post", label="audio transcribed")
    audio_axes.set_xlabel(f"wall time ({time_unit_name})")
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
    divisor, unit = time_unit(max((t for gpu in series for t in gpu["t_s"]), default=0.0))
    for position, gpu in enumerate(series):
        colour = COLOURS[position % len(COLOURS)]
        plot_gpu_series(util_axes, memory_axes, gpu, colour, f"GPU {gpu['index']}", divisor)
        total = (memory_total_mib or {}).get(gpu["index"])
        if total:
            memory_axes.axhline(total / 1024, color=colour, linestyle=":", linewidth=1)
    memory_axes.set_xlabel(f"wall time ({unit})")
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
