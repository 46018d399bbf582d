"""FileResults and run summaries -> rich output on stderr and JSON. No decisions are made here.

Nothing here ever receives transcript text: FileResult carries paths, numbers and errors only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from carevoice import __version__
from carevoice.pipeline import FileResult, FileStatus


@dataclass
class RunSummary:
    """Totals of one transcribe run."""

    results: list[FileResult] = field(default_factory=list)
    wall_s: float = 0.0
    device: str = ""
    model: str = ""
    engine_calls: int = 0
    chunks: int = 0
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
            "redecoded_chunks": self.redecoded_chunks,
            **self.extra,
            "files": [r.to_dict() for r in sorted(self.results, key=lambda r: str(r.source))],
        }


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def file_line(result: FileResult) -> str:
    """The one line shown for a finished, skipped or failed file (markup-escaped)."""
    name = escape(str(result.source))
    if result.status is FileStatus.FAILED:
        return f"[red]error[/red]: {name}: {escape(result.error or 'failed')}"
    if result.status is FileStatus.SKIPPED:
        return f"[dim]skipped[/dim] {name} ({escape(result.note or '')})"
    extra = f", {result.note}" if result.note else ""
    return f"[green]done[/green] {name} ({result.duration_s:.1f} s audio, {result.language or '?'}{escape(extra)})"


class ProgressView:
    """Live progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing but errors when quiet."""

    def __init__(self, console: Console, total_files: int, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.started = time.monotonic()
        self.audio_s = 0.0
        self.live = console.is_terminal and not quiet
        self.progress = Progress(
            TextColumn("[bold]transcribing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("files", total=total_files, detail="")

    def __enter__(self) -> ProgressView:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, result: FileResult, extra: str = "") -> None:
        self.audio_s += result.duration_s if result.status is FileStatus.DONE else 0.0
        elapsed = max(time.monotonic() - self.started, 1e-6)
        detail = f"{self.audio_s:.0f} s audio · {self.audio_s / elapsed:.1f}× real time{extra}"
        self.progress.update(self.task, advance=1, detail=detail)
        if result.status is FileStatus.FAILED or not self.quiet:
            self.console.print(file_line(result))

    def refresh(self, extra: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        detail = f"{self.audio_s:.0f} s audio · {self.audio_s / elapsed:.1f}× real time{extra}"
        self.progress.update(self.task, detail=detail)


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
        tail += f" · {summary.device}, {summary.model}"
    head = "[yellow]interrupted[/yellow]: " if summary.interrupted else ""
    return f"{head}{', '.join(parts)} · {tail}"


def write_report(path: Path, summary: RunSummary) -> None:
    """The per-file run record for --report (written atomically)."""
    from carevoice.writers import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
