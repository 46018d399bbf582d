"""`carevoice models`: the catalogue as a table or JSON, and the progress bar of `models pull`."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from carevoice.commands.models import CatalogueRow, Recommendation
from carevoice.engine.catalogue import COMPUTE_TYPES, Source

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

STATE_STYLE = {"ready": "green", "not in cache": "dim"}


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f}"


def models_table(rows: Sequence[CatalogueRow], recommended: Recommendation) -> Table:
    """One row per catalogue model: the recommended one marked ``*``, estimates marked ``~``."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("", "model", "languages", "disk GB", *(f"GiB {c}" for c in COMPUTE_TYPES), "licence", "cache"):
        table.add_column(column, no_wrap=column != "cache", overflow="fold")
    for row in rows:
        model = row.model
        gpu = []
        for compute_type in COMPUTE_TYPES:
            mib, source = model.gpu_mib(compute_type)
            gpu.append(("~" if source is Source.ESTIMATE else "") + _gib(mib))
        style = STATE_STYLE.get(row.state, "yellow")
        table.add_row(
            "*" if model.name == recommended.name else "",
            escape(model.name),
            escape(model.languages),
            f"{model.disk_mb / 1000:.2f}",
            *gpu,
            model.licence,
            f"[{style}]{escape(row.state)}[/{style}]",
        )
    return table


def print_models(console: Console, rows: Sequence[CatalogueRow], recommended: Recommendation, where: str, hub: str) -> None:
    """The table, the recommendation and how to pull, on ``console`` (stdout: this is the command's result)."""
    console.print(models_table(rows, recommended))
    console.print(
        f"\n* recommended {where}: [bold]{escape(recommended.name)}[/bold] — {escape(recommended.reason)}\n"
        "GiB: GPU memory per compute type; ~ estimated from the parameter count (one beam-5 decode; a run batches and uses more); sources: docs/models.md\n"
        f"download once, then offline: carevoice models pull NAME   (from {escape(hub)}; a mirror: HF_ENDPOINT)",
        highlight=False,
    )


def models_to_dict(rows: Sequence[CatalogueRow], recommended: Recommendation, gpu_memory_mib: float | None, hub: str) -> dict[str, Any]:
    """The --json record of `carevoice models`."""
    return {
        "recommended": {"name": recommended.name, "reason": recommended.reason},
        "gpu_memory_mib": gpu_memory_mib,
        "hub": hub,
        "models": [row.to_dict() for row in rows],
    }


class PullBar:
    """A pull's progress bar on stderr (rich draws it live on a terminal, once at the end elsewhere)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, name: str, total_bytes: int, done_bytes: int) -> None:
        self._task = self._progress.add_task(f"pulling {name}", total=total_bytes, completed=done_bytes)

    def advance(self, count_bytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count_bytes)
