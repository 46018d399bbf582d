"""`carevoice bench`'s result as a header, a table, unavailable devices, speedups and JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carevoice.engine.nvml import gib
from carevoice.render.words import widen

if TYPE_CHECKING:
    from rich.table import Table

    from carevoice.commands.bench_results import BenchResult, BenchRow


def _number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _gpu_cell(row: BenchRow) -> str:
    if row.gpu is None or not row.gpu.devices:
        return "–"
    top = row.gpu.busiest
    assert top is not None
    util = "n/a" if top.util_mean_pct is None else f"{top.util_mean_pct:.0f}%"
    return f"{util} ({gib(top.memory_used_peak_mib)} GiB)"


def bench_header(result: BenchResult) -> str:
    s = result.settings
    hw = result.hardware
    return (
        f"bench: {len(result.files)} file(s), {result.audio_s:.1f} s audio · model {escape(str(s['model_id']))} · "
        f"beam {s['beam_size']} · language {s['language'] or 'detect'} · {s['runs']} timed run(s) after "
        f"a {s['warmup_audio_s']:g} s warm-up · {escape(str(hw['cpu']))}, {hw['cpu_cores_usable']} core(s) · {escape(result.gpu_note)}"
    )


def bench_table(result: BenchResult) -> Table:
    """One row per device and mode: load, median (min) wall time end to end, RTFx end to end and
    inference-only, files/s, GPU utilisation (mean, peak memory). Unavailable rows are dashes;
    :func:`bench_unavailable_lines` says why."""

    table = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAD)
    for name in ("mode", "device", "compute", "load s", "e2e s med (min)", "RTFx e2e", "RTFx infer", "files/s", "GPU util (mem)"):
        table.add_column(name, justify="left" if name in ("mode", "device", "compute") else "right", no_wrap=True)
    for row in result.rows:
        if not row.available:
            table.add_row(row.mode.value, row.device.value, "[yellow]unavailable[/yellow]", *["–"] * 6)
            continue
        table.add_row(
            row.mode.value,
            row.device.value,
            row.compute_type or "–",
            _number(row.load_s, ".2f"),
            f"{_number(row.e2e.median_s, '.2f')} ({_number(row.e2e.min_s, '.2f')})",
            _number(row.rtfx_e2e, ".1f"),
            _number(row.rtfx_inference, ".1f"),
            _number(row.files_per_s, ".2f"),
            _gpu_cell(row),
        )
    return table


def bench_unavailable_lines(result: BenchResult) -> list[str]:
    """Why each unavailable device or mode could not run (one line per distinct reason)."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for row in result.rows:
        if not row.available:
            reasons.setdefault((row.device.value, row.reason), []).append(row.mode.value)
    return [
        f"[yellow]{device} unavailable[/yellow] ({', '.join(modes)}): {escape(reason)}" for (device, reason), modes in reasons.items()
    ]


def bench_speedup_lines(result: BenchResult) -> list[str]:
    by_label: dict[str, dict[str, float]] = {}
    for speedup in result.speedups:
        by_label.setdefault(speedup.label, {})[speedup.measure] = speedup.ratio
    lines = []
    for label, ratios in by_label.items():
        parts = [f"{ratios[m]:.2f}× {name}" for m, name in (("e2e", "end to end"), ("inference", "inference-only")) if m in ratios]
        lines.append(f"speedup {label}: {', '.join(parts)}")
    return lines


def bench_to_json(result: BenchResult) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2)


def print_bench(console: Console, result: BenchResult) -> None:
    """The bench header, table, unavailable devices and speedups, on the given (stderr) console."""
    widen(console)
    console.print(bench_header(result))
    console.print(bench_table(result))
    for line in bench_unavailable_lines(result) + bench_speedup_lines(result):
        console.print(line)
