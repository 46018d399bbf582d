"""Issue 23: every piece of advice a command prints names only options that command has.

Two checks: a table of the messages whose advice depends on the command (each rendered as that
command renders it), and a sweep of every message written in the modules a command runs, whose
``--options`` must be the command's own (or named with another command, ``carevoice transcribe
--overwrite``, or belong to another tool: ``pip install --force-reinstall``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.main import get_command

import carevoice
from carevoice.cli.app import app
from carevoice.run.discovery import Job
from carevoice.run.planning import blocked_message
from carevoice.run.rules import FROM_AUDIO_HINT, IN_THE_WAY_HINT, Action, Decision, Reason, RunFacts
from carevoice.settings import DEFAULT_FORMATS, OutputFormat

COMMANDS = {name: command for name, command in get_command(app).commands.items()}  # type: ignore[attr-defined]
OPTIONS = {name: {o for p in c.params for o in (*p.opts, *p.secondary_opts)} | {"--help"} for name, c in COMMANDS.items()}
OFFERS_OVERWRITE = {"transcribe": True, "watch": False}  # what each command tells the run layer (TranscribeSettings.offers_overwrite)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# An option named with its command or tool is that command's: "carevoice transcribe --overwrite", "pip install --force-reinstall".
QUALIFIED = re.compile(r"\b(?:carevoice (\w+)|(pip install|ray start|docker run))[^—;()]*$")


def named_options(message: str, command: str) -> set[str]:
    """The options a message asks ``command``'s user to pass (not those named with another command or tool)."""
    unknown = set()
    for match in OPTION.finditer(message):
        before = message[: match.start()]
        if message[match.end() : match.end() + 1] == ":" or before.endswith("var("):
            continue  # a CSS custom property
        if (qualified := QUALIFIED.search(before)) is not None:
            other = qualified.group(1)
            if other is None or match.group() in OPTIONS.get(other, set()):
                continue
        if match.group() not in OPTIONS[command]:
            unknown.add(match.group())
    return unknown


JOB = Job(Path("/ward/visit.wav"), Path("/ward/visit"), "visit.wav")
RUN = RunFacts(DEFAULT_FORMATS, words=True, model="base", model_sha256=None, engine_revision=1, text={})


def producers(command: str) -> dict[str, str]:
    """Each message whose advice depends on the command, as ``command`` prints it."""
    offers = OFFERS_OVERWRITE[command]
    run = RunFacts(**{**RUN.__dict__, "offers_overwrite": offers})
    return {
        "planning.blocked_message (an output asked for)": blocked_message(JOB, Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(OutputFormat.TXT,)), run),
        "planning.blocked_message (an old output)": blocked_message(JOB, Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(OutputFormat.VTT,)), run),
        "writers.write_outputs (an output edited since the plan)": IN_THE_WAY_HINT[offers],
        "pipeline.Transcriber (a JSON it cannot render from)": FROM_AUDIO_HINT[offers],
    }


@pytest.mark.parametrize("command", sorted(OFFERS_OVERWRITE))
def test_advice_that_depends_on_the_command_names_only_its_options(command: str) -> None:
    messages = producers(command)
    assert messages and all(messages.values())
    assert {name: named_options(text, command) for name, text in messages.items()} == {name: set() for name in messages}
    assert any("move it away" in text for text in messages.values())


# The modules whose messages each command can print (by path below carevoice/).
RUN_LAYER = ("run/", "engine/", "errors.py", "languages.py", "settings.py", "cli/guard.py", "render/words.py")
REACH = {
    "transcribe": (*RUN_LAYER, "cli/transcribe.py", "cli/options.py", "render/plans.py", "render/summaries.py", "render/progress.py", "render/html_report.py"),
    "watch": (*RUN_LAYER, "cli/watch.py", "cli/options.py", "watch/"),
    "doctor": ("cli/doctor.py", "cli/guard.py", "commands/doctor.py", "render/checks.py"),
    "health": ("cli/health.py", "watch/heartbeat.py"),
}
# Messages in those modules that a command never prints, and why.
NEVER_PRINTED = {
    ("run/distributed.py", "watch"): "Ray runs only under `transcribe --ray`",
    ("run/rules.py", "watch"): "IN_THE_WAY_HINT[True], FROM_AUDIO_HINT[True]: only for a command that offers --overwrite (the table above)",
    ("settings.py", "transcribe"): "WatchSettings.validate and parse_devices (bench) are not transcribe's",
    ("settings.py", "watch"): "TranscribeSettings' --shard/--ray checks and parse_devices (bench): watch never sets them",
}


def messages_in(path: Path) -> list[str]:
    """Every string a module writes, docstrings left out (f-strings by their literal parts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts.append(node.value)
    return texts


@pytest.mark.parametrize("command", sorted(REACH))
def test_every_message_a_command_can_print_names_only_its_options(command: str) -> None:
    root = Path(carevoice.__file__).parent
    swept, wrong = 0, {}
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        if not module.startswith(REACH[command]) or (module, command) in NEVER_PRINTED:
            continue
        swept += 1
        for text in messages_in(path):
            if unknown := named_options(text, command):
                wrong.setdefault(module, set()).update(unknown)
    assert swept >= len(REACH[command])  # each module named exists
    assert wrong == {}
