"""Words for facts, shared by every renderer: a file name for one terminal line, one finished file's
line, durations and clocks, where a run is and why, and the stderr console.

Nothing here ever receives transcript text: FileResult carries paths, numbers and errors only.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape

from carevoice.engine.cpus import CpuBudget
from carevoice.engine.devices import (
    CUDA_COMPUTE_PREFERENCE,
    ClusterPlacement,
    ComputeReason,
    DeviceChoice,
    DeviceReason,
)
from carevoice.results import FileResult, FileStatus, path_text


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """For results on stdout (a --dry-run's plan): ``> plan.txt`` captures them."""
    return Console(highlight=False, soft_wrap=True)


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
    if result.status is FileStatus.NO_SPEECH:  # written, empty: a person listens (issue 23)
        why = escape(printable(f"; {result.why}")) if result.why else ""
        return f"[yellow]no speech heard[/yellow] {name} ({result.duration_s:.1f} s audio{why}): listen to it"
    extra = (f", {result.note}" if result.note else "") + (f"; {result.why}" if result.why else "")
    extra += f"; {result.needs_person}" if result.conflict is not None else ""
    return f"[green]done[/green] {name} ({result.duration_s:.1f} s audio, {result.language or '?'}{escape(printable(extra))})"


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


def placement_note(placement: DeviceChoice | ClusterPlacement, cpus: CpuBudget | None = None) -> str:
    """Why the run is where it is, for the run header: ``auto: 2 CUDA device(s) found; one engine on each of GPUs 0,1;
    4 CPUs (container limit cpu.max 400000/100000 of 64)`` (``cpus``: what this process's threads are sized by; a
    Ray cluster's actors have their own)."""
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
    if cpus is not None:
        note += f"; {cpus.reason}"
    return note


WIDE_OUTPUT_COLUMNS = 120  # a log file or pipe has no width: do not fold tables to rich's default 80


def widen(console: Console) -> None:
    """Tables in a log file or pipe get WIDE_OUTPUT_COLUMNS, not rich's default 80."""
    if not console.is_terminal and console.width < WIDE_OUTPUT_COLUMNS:
        console.width = WIDE_OUTPUT_COLUMNS
