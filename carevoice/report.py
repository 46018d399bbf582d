"""FileResults and run summaries -> rich output on stderr and JSON. No decisions are made here.

Nothing here ever receives transcript text: FileResult carries paths, numbers and errors only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from carevoice import __version__, interrupts
from carevoice.devices import (
    CUDA_COMPUTE_PREFERENCE,
    ClusterPlacement,
    ComputeReason,
    DeviceChoice,
    DeviceReason,
)
from carevoice.gpu import busiest, gib
from carevoice.reruns import Action, Reason
from carevoice.results import FileResult, FileStatus, path_text

if TYPE_CHECKING:
    from rich.table import Table

    from carevoice.bench import BenchResult, BenchRow
    from carevoice.claims import Planned
    from carevoice.doctor import CheckResult
    from carevoice.gpu import GpuSample
    from carevoice.runs import Plan


@dataclass
class RunSummary:
    """Totals of one transcribe run."""

    results: list[FileResult] = field(default_factory=list)
    wall_s: float = 0.0
    device: str = ""
    model: str = ""
    engine_calls: int = 0
    chunks: int = 0
    widened_chunks: int = 0
    continued_chunks: int = 0
    redecoded_chunks: int = 0
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, status: FileStatus) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def audio_s(self) -> float:
        return sum(r.duration_s for r in self.results if r.status is FileStatus.DONE)

    @property
    def rtfx(self) -> float:
        """Audio seconds transcribed per wall-clock second (real-time factor, inverted)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "carevoice_version": __version__,
            "model": self.model,
            "device": self.device,
            "interrupted": self.interrupted,
            "counts": {s.value: self.count(s) for s in FileStatus},
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "rtfx": round(self.rtfx, 3),
            "files_per_s": round(self.count(FileStatus.DONE) / self.wall_s, 3) if self.wall_s > 0 else 0.0,
            "engine_calls": self.engine_calls,
            "chunks": self.chunks,
            "widened_chunks": self.widened_chunks,
            "continued_chunks": self.continued_chunks,
            "redecoded_chunks": self.redecoded_chunks,
            **self.extra,
            "files": [r.to_dict() for r in sorted(self.results, key=lambda r: str(r.source))],
        }


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


# Control characters (newline, ESC), and bidi overrides that reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text for one terminal line: a file name cannot break the line, restyle it or hide its bytes."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), path_text(text))


def file_line(result: FileResult) -> str:
    """The one line shown for a finished, skipped or failed file (markup-escaped, control characters escaped)."""
    name = escape(printable(str(result.source)))
    if result.status is FileStatus.FAILED:
        return f"[red]error[/red]: {name}: {escape(printable(result.error or 'failed'))}"
    if result.status is FileStatus.SKIPPED:
        return f"[dim]skipped[/dim] {name} ({escape(printable(result.note or ''))})"
    extra = (f", {result.note}" if result.note else "") + (f"; {result.why}" if result.why else "")
    return f"[green]done[/green] {name} ({result.duration_s:.1f} s audio, {result.language or '?'}{escape(printable(extra))})"


# --- --dry-run --------------------------------------------------------------------------------

PLAN_STYLE = {"transcribe": "green", "redo": "yellow", "add": "cyan", "skip": "dim", "fail": "red"}


def plan_line(planned: Planned) -> str:
    """One file of a --dry-run: ``redo a.wav (recording changed since it was transcribed; writes txt, srt, json)``."""
    plan, name = planned.plan, escape(printable(str(planned.job.source)))
    action = plan.action.value
    if plan.action is Action.FAIL:
        detail = planned.problem
    elif plan.action is Action.TRANSCRIBE:
        detail = f"writes {', '.join(f.value for f in plan.write)}"
    else:
        detail = plan.reason.value
        if plan.write:
            detail += f"; writes {', '.join(f.value for f in plan.write)}" + (" from its JSON" if plan.from_json else "")
        if plan.remove:
            detail += f"; removes {', '.join(f.value for f in plan.remove)}"
    style = PLAN_STYLE[action]
    return f"[{style}]{action}[/{style}] {name} ({escape(printable(detail))})"


def plan_lines(plan: Plan) -> list[str]:
    """Every input of a --dry-run, the inputs that cannot be planned (collisions, missing files) first."""
    problems = [f"[red]fail[/red] {escape(printable(str(r.source)))} ({escape(printable(r.error or ''))})" for r in plan.problems]
    return problems + [plan_line(p) for p in plan.planned]


def plan_counts(plan: Plan) -> dict[str, int]:
    counts = {action.value: 0 for action in Action}
    for planned in plan.planned:
        counts[planned.plan.action.value] += 1
    counts[Action.FAIL.value] += len(plan.problems)
    return counts


def plan_counts_line(plan: Plan) -> str:
    counts = plan_counts(plan)
    parts = ", ".join(f"{counts[a.value]} {a.value}" for a in Action)
    return f"dry run: {parts} (of {sum(counts.values())} file(s)); nothing was changed"


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The --dry-run --json record: every file's action, reason and outputs."""
    files = [
        {"file": path_text(r.source), "action": Action.FAIL.value, "reason": Reason.PROBLEM.name.lower(), "error": path_text(r.error or "")}
        for r in plan.problems
    ]
    for planned in plan.planned:
        p = planned.plan
        files.append(
            {
                "file": path_text(planned.job.source),
                "action": p.action.value,
                "reason": p.reason.name.lower(),
                "why": p.reason.value,
                "write": [f.value for f in p.write],
                "remove": [f.value for f in p.remove],
                "keep": [f.value for f in p.keep],
                "from_json": p.from_json,
                "error": path_text(planned.problem) if planned.problem else None,
            }
        )
    return {"carevoice_version": __version__, "dry_run": True, "counts": plan_counts(plan), "files": files}


def _audio_unit(seconds: float) -> tuple[float, str, str]:
    """Divisor, number format and unit that suit an amount of audio: s, then min, then h."""
    if seconds < 120:
        return 1.0, ".0f", "s"
    if seconds < 2 * 3600:
        return 60.0, ".1f", "min"
    return 3600.0, ".2f", "h"


def duration_text(seconds: float) -> str:
    """A duration (of audio, or wall time) in the unit that suits it: 42 s, 12.5 min, 3.25 h."""
    divisor, fmt, unit = _audio_unit(seconds)
    return f"{seconds / divisor:{fmt}} {unit}"


def audio_fraction(done_s: float, total_s: float, exact: bool) -> str:
    """Done of total in the total's unit: ``12.5/≈45.0 min`` (``≈``: an estimate)."""
    divisor, fmt, unit = _audio_unit(total_s)
    return f"{done_s / divisor:{fmt}}/{'' if exact else '≈'}{total_s / divisor:{fmt}} {unit}"


def clock(seconds: float) -> str:
    """A duration as H:MM:SS."""
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


REDRAW_S = 0.1  # rich's own refresh period (10 per second)


class ProgressView:
    """Live progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing but errors when quiet.

    The bar measures audio: it moves as chunks come back from the engine (a long recording moves
    it while it is transcribed), towards the run's audio as far as it is known (``≈`` while files
    remain undecoded, estimated at the mean length so far); files done are the second figure, and
    the ETA comes from the audio rate once the first batch is back.

    Args:
        console: Where to draw (stderr).
        total_files: Every input of the run, settled ones included.
        quiet: Errors only.
    """

    def __init__(self, console: Console, total_files: int, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.started = time.monotonic()
        self.total_files = total_files
        self.files_done = 0
        self.audio_done_s = 0.0
        self.audio_total_s: float | None = None
        self.audio_rendered_s = 0.0  # done without the engine (from recorded JSON): not in the rate
        self.exact = False
        self.gpu = ""
        self._drawn_at = 0.0  # when _draw last drew (time.monotonic)
        self.live = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("[bold]transcribing"),
            BarColumn(),
            TextColumn("{task.fields[line]}"),
            console=console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("audio", total=None, line="")

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, result: FileResult, extra: str | None = None) -> None:
        """A file is finished (or settled): count it and print its line."""
        self.files_done += 1
        if extra is not None:
            self.gpu = extra
        self._draw()
        if result.status is FileStatus.FAILED or not self.quiet:
            with interrupts.deferred():  # an interrupt inside rich's print would leave the line to be printed twice
                self.console.print(file_line(result))

    def advance(self, audio_done_s: float, audio_total_s: float | None, exact: bool, rendered_s: float = 0.0) -> None:
        """Audio done so far (``rendered_s`` of it from recorded JSON, at once), and the run's audio
        (``exact``: every file's length is known)."""
        moved = audio_done_s > self.audio_done_s  # a batch came back (a few a second at most): drawn at once
        self.audio_done_s, self.audio_total_s, self.exact, self.audio_rendered_s = audio_done_s, audio_total_s, exact, rendered_s
        self._draw(now=moved)

    def refresh(self, extra: str) -> None:
        """A new GPU reading (from the sampler's thread)."""
        self.gpu = extra
        self._draw()

    def line(self) -> str:
        """What follows the bar: ``1.2/≈4.5 min audio · 3/42 files · 9.1× real time · GPU… · 0:00:12 · ETA 0:00:35``."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done, total = self.audio_done_s, self.audio_total_s
        if total is None:
            audio = f"{duration_text(done)} audio"
        else:
            audio = f"{audio_fraction(done, total, self.exact)} audio"
        parts = [audio, f"{self.files_done}/{self.total_files} files"]
        rate = (done - self.audio_rendered_s) / elapsed  # the engine's: rendering a JSON costs next to nothing
        if rate > 0:
            parts.append(f"{rate:.1f}× real time")
        text = " · ".join(parts) + self.gpu + f" · {clock(elapsed)}"
        if rate > 0 and total is not None:
            text += f" · ETA {clock(max(0.0, total - done) / rate)}"
        return text

    def _draw(self, now: bool = False) -> None:
        """Update the bar; draw it at once when ``now`` (each batch back shows, whatever rich's tick
        does) or when REDRAW_S has passed. Decodes, finished files and GPU readings can come
        hundreds a second on a fast GPU, and a draw costs ~0.3 ms of the thread that feeds the
        engines: rich's own tick draws those."""
        if not self.live:
            return
        total = self.audio_total_s if self.audio_total_s else None
        self.progress.update(self.task, total=total, completed=min(self.audio_done_s, total or self.audio_done_s), line=escape(self.line()))
        moment = time.monotonic()
        if now or moment - self._drawn_at >= REDRAW_S:
            self._drawn_at = moment
            self.progress.refresh()


@dataclass
class Timeline:
    """Audio and files done over the run's wall time, for the HTML report's throughput chart.

    Points closer than ``spacing_s`` to the last are dropped; past ``max_points`` every other point
    goes and the spacing doubles, so a night's run stays a few thousand points. The last point is
    always kept (:meth:`close`).
    """

    origin: float = field(default_factory=time.monotonic)
    spacing_s: float = 0.5
    max_points: int = 2000
    points: list[tuple[float, float, int]] = field(default_factory=lambda: [(0.0, 0.0, 0)])  # the run's start
    _pending: tuple[float, float, int] | None = field(default=None, init=False, repr=False)

    def add(self, audio_done_s: float, files_done: int, now: float | None = None) -> None:
        t = (time.monotonic() if now is None else now) - self.origin
        point = (t, audio_done_s, files_done)
        if self.points and t - self.points[-1][0] < self.spacing_s:
            self._pending = point
            return
        self.points.append(point)
        self._pending = None
        if len(self.points) > self.max_points:
            kept = self.points[::2]
            if kept[-1] != point:  # an even count drops the newest: keep it
                kept.append(point)
            self.points = kept
            self.spacing_s *= 2

    def close(self) -> None:
        if self._pending is not None:
            self.points.append(self._pending)
            self._pending = None

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "t_s": [round(t, 2) for t, _, _ in self.points],
            "audio_done_s": [round(a, 2) for _, a, _ in self.points],
            "files_done": [f for _, _, f in self.points],
        }


def engines_text(engines: Sequence[Any]) -> str:
    """The engines of a run for its header and summary: ``cuda ×2 (float16)``, ``cpu (int8)``."""
    compute_types = ", ".join(dict.fromkeys(e.compute_type for e in engines))
    count = f" ×{len(engines)}" if len(engines) > 1 else ""
    return f"{engines[0].device}{count} ({compute_types})"


def placement_note(placement: DeviceChoice | ClusterPlacement) -> str:
    """Why the run is where it is, for the run header: ``auto: 2 CUDA device(s) found; one engine on each of GPUs 0,1``."""
    if isinstance(placement, ClusterPlacement):
        kind = "GPU" if placement.device == "cuda" else "CPU"
        return f"Ray cluster: {placement.actors} {kind} actor(s), {placement.files_per_task} files per task"
    if placement.reason is DeviceReason.AUTO_CUDA_UNUSABLE:
        note = f"auto: CUDA unusable ({placement.problem}), fell back to CPU"
    elif placement.reason is DeviceReason.AUTO_CUDA:
        note = f"auto: {placement.cuda_devices} CUDA device(s) found"
    elif placement.reason is DeviceReason.AUTO_NO_CUDA:
        note = "auto: no CUDA device found"
    else:
        note = f"{placement.cuda_devices} CUDA device(s)" if placement.device == "cuda" else "asked for"
    if placement.gpus_asked is not None and not placement.gpus:  # auto found no usable GPU (--device cpu with --gpus is exit 2)
        note += f"; --gpus {','.join(map(str, placement.gpus_asked))} ignored: no usable GPU"
    elif len(placement.gpus) > 1:
        note += f"; one engine on each of GPUs {','.join(map(str, placement.gpus))}"
    elif placement.gpus and placement.gpus_asked is not None:
        note += f"; GPU {placement.gpus[0]}"
    for index, compute in zip(placement.gpus, placement.compute):
        if compute.reason is ComputeReason.NOT_SUPPORTED:
            note += f"; GPU {index} cannot run {compute.asked}: {compute.compute_type} instead"
        elif compute.reason is ComputeReason.BEST and compute.compute_type != CUDA_COMPUTE_PREFERENCE[0]:
            note += f"; GPU {index} has no fast {CUDA_COMPUTE_PREFERENCE[0]}: {compute.compute_type}"
    if placement.gpus:  # with --device cuda or auto, a GPU that cannot run the model is left out
        for index, why in placement.dropped:
            note += f"; GPU {index} left out ({why})"
    return note


def summary_line(summary: RunSummary) -> str:
    parts = [
        f"transcribed {summary.count(FileStatus.DONE)}",
        f"skipped {summary.count(FileStatus.SKIPPED)}",
        f"failed {summary.count(FileStatus.FAILED)}",
    ]
    rate = summary.count(FileStatus.DONE) / summary.wall_s if summary.wall_s > 0 else 0.0
    tail = (
        f"{summary.audio_s / 3600:.3f} h audio in {summary.wall_s:.1f} s · "
        f"{summary.rtfx:.1f}× real time · {rate:.2f} files/s"
    )
    if summary.device:
        tail += f" · {escape(summary.device)}, {escape(summary.model)}"
    tail += gpu_summary_text(summary.extra.get("gpu"))
    head = "[yellow]interrupted[/yellow]: " if summary.interrupted else ""
    return f"{head}{', '.join(parts)} · {tail}"


HTML_SUFFIXES = (".html", ".htm")


def is_html(path: Path) -> bool:
    """--report writes a page for these names, the JSON record for any other."""
    return path.suffix.lower() in HTML_SUFFIXES


def write_report(path: Path, summary: RunSummary) -> None:
    """The run's report for --report, written atomically: a page (carevoice.html_report) when
    the name ends in .html, else the JSON record."""
    from carevoice.writers import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    if is_html(path):
        from carevoice.html_report import render_report_html

        atomic_write(path, render_report_html(summary.to_dict(), path).encode("utf-8"))
        return
    atomic_write(path, (json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


# --- GPU utilisation (transcribe) -------------------------------------------------------------


def gpu_live_text(reading: Sequence[GpuSample]) -> str:
    """Progress suffix for the busiest GPU of one reading, e.g. `` · GPU 87% · 3.2/140 GiB``."""
    gpu = busiest(reading, lambda s: (s.util_pct, s.memory_used_mib))
    if gpu is None:
        return ""
    util = "n/a" if gpu.util_pct is None else f"{gpu.util_pct:.0f}%"
    return f" · GPU{gpu.index} {util} · {gib(gpu.memory_used_mib)}/{gib(gpu.memory_total_mib, '.0f')} GiB"


def gpu_summary_text(gpu: dict[str, Any] | None) -> str:
    """Summary suffix from GpuStats.to_dict(): mean / p95 / peak utilisation of the busiest GPU."""
    top = busiest((gpu or {}).get("devices") or [], lambda d: (d["util_mean_pct"], d["memory_used_peak_mib"]))
    if top is None:
        return ""
    memory = f"memory peak {gib(top['memory_used_peak_mib'])} GiB"
    if top["util_mean_pct"] is None:
        return f" · GPU{top['index']} {memory} (no utilisation reported)"
    return (
        f" · GPU{top['index']} util mean {top['util_mean_pct']:.0f}% / p95 {top['util_p95_pct']:.0f}% / "
        f"peak {top['util_peak_pct']:.0f}%, {memory}"
    )


# --- doctor ------------------------------------------------------------------------------------

CHECK_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def checks_table(results: Sequence[CheckResult]) -> Table:
    """One row per check: status, name, detail and (unless it passed) the fix."""
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for result in results:
        style = CHECK_STYLE[result.status.value]
        detail = escape(result.detail)
        if result.hint and result.status.value != "pass":
            detail += f"\n[{style}]→ {escape(result.hint)}[/{style}]"
        table.add_row(f"[{style}]{result.status.value}[/{style}]", escape(result.name), detail)
    return table


def checks_summary(results: Sequence[CheckResult]) -> str:
    counts = {status: sum(r.status.value == status for r in results) for status in CHECK_STYLE}
    text = f"{counts['pass']} passed · {counts['warn']} warning(s) · {counts['fail']} failed · {counts['skip']} skipped"
    if counts["fail"]:
        return f"[bold red]doctor: {text}[/bold red] — fix the failed checks above"
    return f"[green]doctor: {text}[/green] — CareVoice can run here"


def checks_to_dict(results: Sequence[CheckResult]) -> dict[str, Any]:
    """The --json record of a doctor run."""
    return {
        "carevoice_version": __version__,
        "ok": not any(r.status.value == "fail" for r in results),
        "counts": {status: sum(r.status.value == status for r in results) for status in CHECK_STYLE},
        "checks": [r.to_dict() for r in results],
    }


# --- bench -------------------------------------------------------------------------------------


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
    from rich import box
    from rich.table import Table

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


WIDE_OUTPUT_COLUMNS = 120  # a log file or pipe has no width: do not fold tables to rich's default 80


def _widen(console: Console) -> None:
    if not console.is_terminal and console.width < WIDE_OUTPUT_COLUMNS:
        console.width = WIDE_OUTPUT_COLUMNS


def print_checks(console: Console, results: Sequence[CheckResult]) -> None:
    """The doctor's table and its one-line summary, on the given (stderr) console."""
    _widen(console)
    console.print(checks_table(results))
    console.print(checks_summary(results))


def print_bench(console: Console, result: BenchResult) -> None:
    """The bench header, table, unavailable devices and speedups, on the given (stderr) console."""
    _widen(console)
    console.print(bench_header(result))
    console.print(bench_table(result))
    for line in bench_unavailable_lines(result) + bench_speedup_lines(result):
        console.print(line)
