"""`carevoice doctor`'s checks as a table, a summary line and JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carevoice import __version__
from carevoice.render.words import widen

if TYPE_CHECKING:
    from rich.table import Table

    from carevoice.commands.doctor import CheckResult


CHECK_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def checks_table(results: Sequence[CheckResult]) -> Table:
    """One row per check: status, name, detail and (unless it passed) the fix."""

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


def print_checks(console: Console, results: Sequence[CheckResult]) -> None:
    """The doctor's table and its one-line summary, on the given (stderr) console."""
    widen(console)
    console.print(checks_table(results))
    console.print(checks_summary(results))
