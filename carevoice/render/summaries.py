"""A finished run: its totals (RunSummary), the summary line, and the --report file (JSON, a page,
or a page of its own in a folder of runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from carevoice import __version__
from carevoice.engine.gpu_stats import busiest
from carevoice.engine.nvml import gib
from carevoice.render.html_report import render_report_html
from carevoice.render.report_folder import write_run_page
from carevoice.results import FileResult, FileStatus
from carevoice.run import writers


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
        return sum(r.duration_s for r in self.results if r.status in (FileStatus.DONE, FileStatus.NO_SPEECH))  # both were decoded

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
    """--report writes a page for these names (and into a folder), the JSON record for any other."""
    return path.suffix.lower() in HTML_SUFFIXES or path.is_dir()


def write_report(path: Path, summary: RunSummary) -> Path:
    """The run's report for --report, written atomically; returns where it went.

    An existing folder gets a page of this run's own, and its index (carevoice.render.report_folder:
    last night's page stays); a name ending in .html, a page there (carevoice.render.html_report);
    any other name, the JSON record.
    """
    if path.is_dir():
        return write_run_page(path, summary.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_html(path):
        writers.atomic_write(path, render_report_html(summary.to_dict(), path).encode("utf-8"))
    else:
        writers.atomic_write(path, (json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return path


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
