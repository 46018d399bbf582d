"""A --dry-run's plan in words and as JSON: each file's action and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape

from carevoice import __version__
from carevoice.errors import ExitCode
from carevoice.folders import option_sources
from carevoice.render.words import printable
from carevoice.results import path_text
from carevoice.run.rules import Action, Reason

if TYPE_CHECKING:
    from carevoice.run.planning import FilePlan, RunPlan
    from carevoice.settings import TranscribeSettings


PLAN_STYLE = {"transcribe": "green", "redo": "yellow", "add": "cyan", "skip": "dim", "try again": "magenta", "fail": "red"}


def plan_line(planned: FilePlan) -> str:
    """One file of a --dry-run: ``redo a.wav (recording changed since it was transcribed; writes txt, srt, json)``."""
    decision, name = planned.decision, escape(printable(str(planned.job.source)))
    action = decision.action.value
    if decision.action is Action.FAIL:
        detail = planned.problem
    elif decision.action is Action.TRANSCRIBE and decision.reason is Reason.NEW:
        detail = f"writes {', '.join(f.value for f in decision.write)}"
    else:
        detail = decision.why
        if decision.write:
            detail += f"; writes {', '.join(f.value for f in decision.write)}" + (" from its JSON" if decision.from_json else "")
        if decision.remove:
            detail += f"; removes {', '.join(f.value for f in decision.remove)}"
        if decision.aside:
            detail += f"; keeps the edited {', '.join(f.value for f in decision.aside)} aside as a conflict copy"
    style = PLAN_STYLE[action]
    return f"[{style}]{action}[/{style}] {name} ({escape(printable(detail))})"


def plan_lines(plan: RunPlan) -> list[str]:
    """Every input of a --dry-run, the inputs that cannot be planned (collisions, missing files) first;
    each group of files under other options (folders' carevoice.toml) after a line naming them."""
    lines = [f"[red]fail[/red] {escape(printable(str(r.source)))} ({escape(printable(r.error or ''))})" for r in plan.problems]
    for group in plan.groups:
        if group.files:
            lines.append(options_line(group.settings, len(group.files)))
            lines += [plan_line(p) for p in group.files]
    return lines


def options_line(settings: TranscribeSettings, files: int) -> str:
    """``options for 3 file(s): --language zh-TW (from /ward/carevoice.toml), …``: where each option came from."""
    shown = ", ".join(f"{option} {value} (from {source})" for option, value, source in option_sources(settings))
    return f"[dim]options for {files} file(s): {escape(printable(shown))}[/dim]"


def plan_exit_code(plan: RunPlan) -> ExitCode:
    """A dry run's exit code: 1 (FAILED) when the run would fail a file, else 0. A file that failed
    last time and is unchanged since counts: nothing it failed of changed but CareVoice, ffmpeg or
    the folder, so it is predicted to fail again (docs/reruns.md)."""
    counts = plan_counts(plan)
    return ExitCode.FAILED if counts[Action.FAIL.value] or counts[Action.TRY_AGAIN.value] else ExitCode.OK


def plan_counts(plan: RunPlan) -> dict[str, int]:
    counts = {action.value: 0 for action in Action}
    for planned in plan.files:
        counts[planned.decision.action.value] += 1
    counts[Action.FAIL.value] += len(plan.problems)
    return counts


def plan_counts_line(plan: RunPlan) -> str:
    counts = plan_counts(plan)
    # "try again" only when there is one: files that failed last time are rare, and say why each.
    parts = ", ".join(f"{counts[a.value]} {a.value}" for a in Action if a is not Action.TRY_AGAIN or counts[a.value])
    return f"dry run: {parts} (of {sum(counts.values())} file(s)); nothing was changed"


def plan_to_dict(plan: RunPlan) -> dict[str, Any]:
    """The --dry-run --json record: every file's action, reason and outputs."""
    files = [
        {"file": path_text(r.source), "action": Action.FAIL.value, "reason": Reason.PROBLEM.name.lower(), "error": path_text(r.error or "")}
        for r in plan.problems
    ]
    for planned in plan.files:
        p = planned.decision
        files.append(
            {
                "file": path_text(planned.job.source),
                "action": p.action.value,
                "reason": p.reason.name.lower(),
                "why": p.why,
                "write": [f.value for f in p.write],
                "remove": [f.value for f in p.remove],
                "keep": [f.value for f in p.keep],
                "aside": [f.value for f in p.aside],
                "from_json": p.from_json,
                "error": path_text(planned.problem) if planned.problem else None,
            }
        )
    options = [
        {"files": len(g.files), "options": [{"option": o, "value": v, "from": src} for o, v, src in option_sources(g.settings)]}
        for g in plan.groups
        if g.files
    ]
    return {"carevoice_version": __version__, "dry_run": True, "counts": plan_counts(plan), "options": options, "files": files}
