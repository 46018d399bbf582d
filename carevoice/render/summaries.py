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
from carevoice.render.words import duration_text
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
    rendered_files: int = 0  # completed from their saved JSON transcript: nothing decoded
    rendered_audio_s: float = 0.0
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, status: FileStatus) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def needs_person(self) -> int:
        """How many files a person must look at: failed, no speech heard, or an edit kept aside."""
        return sum(r.needs_person is not None for r in self.results)

    @property
    def audio_s(self) -> float:
        """Audio really decoded and transcribed: not what was completed from a saved transcript."""
        heard = sum(r.duration_s for r in self.results if r.status in (FileStatus.DONE, FileStatus.NO_SPEECH))
        return max(0.0, heard - self.rendered_audio_s)

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
            "needs_person": self.needs_person,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "rtfx": round(self.rtfx, 3),
            "files_per_s": round(self.count(FileStatus.DONE) / self.wall_s, 3) if self.wall_s > 0 else 0.0,
            "engine_calls": self.engine_calls,
            "chunks": self.chunks,
            "widened_chunks": self.widened_chunks,
            "continued_chunks": self.continued_chunks,
            "redecoded_chunks": self.redecoded_chunks,
            "rendered_files": self.rendered_files,
            "rendered_audio_s": round(self.rendered_audio_s, 3),
            **self.extra,
            "files": [r.to_dict() for r in sorted(self.results, key=lambda r: str(r.source))],
        }


def summary_line(summary: RunSummary) -> str:
    """The line a run ends with: what became of its files, how many need a person, and the speed,
    only when audio was really decoded (``2 transcribed, 1 failed · 1 needs a person · 3.5 min of
    audio in 12 s, 17.5× real time · cpu (int8), tiny.en``)."""
    parts = []
    transcribed = summary.count(FileStatus.DONE) - summary.rendered_files
    quiet = summary.count(FileStatus.NO_SPEECH)
    for count, words in (
        (transcribed, "transcribed"),
        (quiet, f"no speech heard — listen to {'it' if quiet == 1 else 'them'}"),
        (summary.rendered_files, f"completed from {'its saved transcript' if summary.rendered_files == 1 else 'their saved transcripts'}"),
        (summary.count(FileStatus.SKIPPED), "already up to date"),
        (summary.count(FileStatus.FAILED), "failed"),
    ):
        if count > 0:
            parts.append(f"{count} {words}")
    line = ", ".join(parts) or "nothing transcribed"
    needing = summary.needs_person
    if needing:
        line += f" · {needing} {'needs' if needing == 1 else 'need'} a person"
    if summary.audio_s > 0:
        line += f" · {duration_text(summary.audio_s)} of audio in {duration_text(summary.wall_s)}, {summary.rtfx:.1f}× real time"
        if summary.device:
            line += f" · {escape(summary.device)}, {escape(summary.model)}"
    line += gpu_summary_text(summary.extra.get("gpu"))
    head = "[yellow]interrupted[/yellow]: " if summary.interrupted else ""
    return head + line


def files_ahead(jobs: int, settled: list[FileResult], doing: str = "to transcribe") -> str:
    """The run's first words, counting every file the summary will report: ``4 file(s) to
    transcribe``, or ``4 of 6 file(s) to transcribe (1 already up to date, 1 failed before any work)``."""
    if not settled:
        return f"{jobs} file(s) {doing}"
    others = [
        f"{count} {words}"
        for count, words in (
            (sum(r.status is FileStatus.SKIPPED for r in settled), "already up to date"),
            (sum(r.status is FileStatus.FAILED for r in settled), "failed before any work"),
        )
        if count
    ]
    return f"{jobs} of {jobs + len(settled)} file(s) {doing} ({', '.join(others)})"


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
