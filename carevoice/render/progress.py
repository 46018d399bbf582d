"""A run while it runs: the live progress bar (or plain lines), and the timeline of audio done for
the report's throughput chart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from carevoice import interrupts
from carevoice.engine.gpu_stats import busiest
from carevoice.engine.nvml import gib
from carevoice.render.words import audio_fraction, clock, duration_text, file_line
from carevoice.results import FileResult, FileStatus

if TYPE_CHECKING:
    from carevoice.engine.nvml import GpuSample


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


def gpu_live_text(reading: Sequence[GpuSample]) -> str:
    """Progress suffix for the busiest GPU of one reading, e.g. `` · GPU 87% · 3.2/140 GiB``."""
    gpu = busiest(reading, lambda s: (s.util_pct, s.memory_used_mib))
    if gpu is None:
        return ""
    util = "n/a" if gpu.util_pct is None else f"{gpu.util_pct:.0f}%"
    return f" · GPU{gpu.index} {util} · {gib(gpu.memory_used_mib)}/{gib(gpu.memory_total_mib, '.0f')} GiB"
