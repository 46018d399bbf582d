"""Whether a recording needs (re)transcribing: a pure decision from what its record says and what is
on disk now, to a :class:`Decision` — an action, the reason a user can read, and which outputs to
write, keep or remove. carevoice.run.planning gathers the facts and makes the plans (``--dry-run``
prints them); carevoice.run.tidying and carevoice.run.claims carry them out.

The rules a rerun keeps (docs/reruns.md):
- a file whose recording (by content), model (by its weights), CareVoice engine revision, text
  options and requested outputs are unchanged is skipped; a ``touch`` or a copy with the same
  bytes is no change;
- a changed recording, model, engine or text option redoes the file, and no output CareVoice wrote
  for the old transcript survives: what is asked for is rewritten, what is not is removed;
- with the same transcript, an output that is missing (or asked for with finer timing than it was
  made with) is added, and nothing else is touched;
- an output a person wrote or edited is never replaced or removed without ``--overwrite``, and never
  lost: when the recording under it was replaced (it describes another recording), or ``--overwrite``
  replaces it, it is kept aside under a conflict copy name (carevoice.run.writers.conflict_name)
  and the file is listed as needing a person; while the recording is the same, it blocks the redo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from carevoice.run.records import Record
from carevoice.settings import OutputFormat

# Formats whose times depend on aligned words (segment bounds follow the words; JSON and subtitles
# carry them). The text of every format does not.
TIMED_FORMATS = frozenset({OutputFormat.SRT, OutputFormat.VTT, OutputFormat.JSON, OutputFormat.TSV})


class Action(str, Enum):
    TRANSCRIBE = "transcribe"  # no transcript yet
    SKIP = "skip"
    REDO = "redo"  # transcribe again, replacing (or removing) every output of the old transcript
    ADD = "add"  # the transcript is current: write only the outputs that are missing
    TRY_AGAIN = "try again"  # transcribe (or redo) a recording that failed last time and is unchanged since: it may well fail again
    FAIL = "fail"


class Reason(str, Enum):
    NEW = "not transcribed yet"
    CURRENT = "already transcribed with these options"
    RECORDING_CHANGED = "recording changed since it was transcribed"
    MODEL_CHANGED = "model changed"
    ENGINE_CHANGED = "CareVoice's engine changed since it was transcribed"
    OPTIONS_CHANGED = "options changed"
    OUTPUT_MISSING = "an output is missing"
    NEW_FORMATS = "a format not written before was asked for"
    WORD_TIMES = "word timings were asked for, and an output was made without them"
    UNFINISHED = "an earlier run stopped while writing it"
    OLD_RECORD = "transcribed by a CareVoice that did not record what it transcribed"
    OVERWRITE = "--overwrite"
    FOREIGN_OUTPUT = "an output was not written by CareVoice, or was edited"
    EDITED = "a person edited its transcript: kept as they left it"
    PROBLEM = "it cannot be transcribed here"
    FAILED_BEFORE = "failed last time"
    CHANGED_SINCE_FAILED = "changed since it failed last time"


# What a person can do about their file in the way of an output, by whether the command offers
# --overwrite (``transcribe`` does; ``watch`` does not, and looks at the file again once its folder changes).
IN_THE_WAY_HINT = {
    True: "move it away, or pass --overwrite (it is then kept aside as a conflict copy)",
    False: "move it away: the watcher then transcribes the recording again",
}
# How a file is transcribed from its recording again rather than rendered from its JSON output.
FROM_AUDIO_HINT = {
    True: "rerun with --overwrite",
    False: "delete its .json output, then restart the watcher",
}


class OutputState(str, Enum):
    """An output path as it is now."""

    MISSING = "missing"
    OURS = "ours"  # exactly as CareVoice wrote it
    FOREIGN = "foreign"  # a file CareVoice did not write, or one edited since


@dataclass(frozen=True)
class RunFacts:
    """What this run would make: the same for every file of the run."""

    formats: tuple[OutputFormat, ...]
    words: bool  # word timestamps on (some requested format is timed by words)
    model: str
    model_sha256: str | None  # None: the model is not on disk yet (a hub model before its download)
    engine_revision: int
    text: Mapping[str, Any]  # the options that shape the text
    overwrite: bool = False
    offers_overwrite: bool = True  # whether the command has --overwrite (advice names it only then)


@dataclass(frozen=True)
class FileFacts:
    """What is known about one recording now.

    Attributes:
        record: Its record, if any (version 1 records included).
        recording_changed: Whether its bytes differ from the recorded identity (None: no identity recorded).
        outputs: The state of each output path that matters: every requested format, and every one
            the record lists.
    """

    record: Record | None
    recording_changed: bool | None
    outputs: Mapping[OutputFormat, OutputState]


@dataclass(frozen=True)
class Decision:
    """What a run does with one recording, and why.

    Attributes:
        action: What happens.
        reason: Why, for the per-file line and the report.
        write: Outputs to (re)write.
        remove: Outputs CareVoice wrote for an old transcript, to delete.
        keep: Outputs CareVoice wrote that stay as they are (listed again in the new record).
        aside: Outputs a person wrote or edited, kept aside under a conflict copy name before the
            new ones are written (never overwritten, never removed).
        from_json: With ADD: the outputs are rendered from the recorded JSON, no transcribing.
        formats: For the user: the outputs concerned (missing, foreign).
        detail: With a changed model or option: which, from what to what (``--zh-script tw → keep``).
    """

    action: Action
    reason: Reason
    write: tuple[OutputFormat, ...] = ()
    remove: tuple[OutputFormat, ...] = ()
    keep: tuple[OutputFormat, ...] = ()
    aside: tuple[OutputFormat, ...] = ()
    from_json: bool = False
    formats: tuple[OutputFormat, ...] = ()
    detail: str = ""

    @property
    def why(self) -> str:
        """The reason in words, naming the option that changed where one did."""
        return self.detail or self.reason.value

    @property
    def needs_engine(self) -> bool:
        """Whether carrying it out needs the model (everything but skip, fail and an add from the recorded JSON)."""
        return self.action in (Action.TRANSCRIBE, Action.REDO, Action.TRY_AGAIN) or (self.action is Action.ADD and not self.from_json)


def decide(facts: FileFacts, run: RunFacts) -> Decision:
    """Decide what this run does with one recording (see the module docstring for the rules)."""
    requested = set(run.formats)
    order = [*run.formats, *(f for f in OutputFormat if f not in requested)]  # as asked, then the rest

    def _in_order(formats: set[OutputFormat]) -> tuple[OutputFormat, ...]:
        return tuple(f for f in order if f in formats)

    record = facts.record
    recorded = record.formats if record else set()
    ours = {f for f in recorded if facts.outputs.get(f) is OutputState.OURS}
    foreign = {f for f in requested | recorded if facts.outputs.get(f) is OutputState.FOREIGN}

    def redo(action: Action, reason: Reason, detail: str = "") -> Decision:
        """Write what is asked for; remove what CareVoice wrote for the old transcript and is not
        asked for again. An output a person wrote or edited is kept aside when the recording under
        it was replaced (it describes another recording), or when --overwrite replaces it; one that
        --overwrite does not replace stays; otherwise it blocks the redo."""
        if facts.recording_changed:
            aside = foreign
        elif run.overwrite:
            aside = foreign & requested
        elif foreign:
            return Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=_in_order(foreign))
        else:
            aside = set()
        return Decision(action, reason, write=_in_order(requested), remove=_in_order(ours - requested), aside=_in_order(aside), detail=detail)

    if run.overwrite:
        return redo(Action.REDO, Reason.OVERWRITE)
    if record is None:
        return redo(Action.TRANSCRIBE, Reason.NEW)
    for changed, reason, detail in (
        (not record.complete, Reason.UNFINISHED, ""),
        (record.version < 2 or record.input is None, Reason.OLD_RECORD, ""),
        (bool(facts.recording_changed), Reason.RECORDING_CHANGED, ""),
        # Weights are compared when both digests are known (a hub model is only hashed once it is on disk).
        (
            record.model != run.model or None not in (run.model_sha256, record.model_sha256) and record.model_sha256 != run.model_sha256,
            Reason.MODEL_CHANGED,
            f"--model {record.model} → {run.model}" if record.model != run.model else "",  # else: other weights, same name
        ),
        (record.engine_revision != run.engine_revision, Reason.ENGINE_CHANGED, ""),
        (dict(record.text) != dict(run.text), Reason.OPTIONS_CHANGED, options_changed(record.text, run.text)),
    ):
        if changed:
            return redo(Action.REDO, reason, detail)
    # The same transcript: keep what is current, add what is missing. A person's correction of this
    # very recording's transcript is kept as it is, and is no failure; a file CareVoice never wrote
    # in the way of one asked for is.
    edited = foreign & requested & recorded
    current = {f for f in ours if f not in TIMED_FORMATS or record.outputs[f.value].words or not run.words}
    missing = requested - current - edited
    if foreign & requested and (foreign & requested != edited or missing):
        return Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=_in_order(foreign & requested))
    keep = current | (ours - requested)
    if not missing:
        detail = f"kept {', '.join(f.value for f in _in_order(edited))} as a person edited it" if edited else ""
        return Decision(Action.SKIP, Reason.EDITED if edited else Reason.CURRENT, keep=_in_order(keep), formats=_in_order(edited), detail=detail)
    if missing & ours:
        reason = Reason.WORD_TIMES
    elif missing & recorded:
        reason = Reason.OUTPUT_MISSING
    else:
        reason = Reason.NEW_FORMATS
    # The recorded JSON holds the whole transcript with word timings: the rest render from it.
    from_json = OutputFormat.JSON in current and record.outputs[OutputFormat.JSON.value].words
    return Decision(Action.ADD, reason, write=_in_order(missing), keep=_in_order(keep - missing), from_json=from_json, formats=_in_order(missing))


@dataclass(frozen=True)
class FailedBefore:
    """What a recording's failure note says (carevoice.run.failures), against the recording as it is now.

    Attributes:
        at: When it failed, as a person reads it (``2026-12-05 21:04``).
        error: The one line it failed with.
        unchanged: Whether the recording's stat is still the one it failed with.
    """

    at: str
    error: str
    unchanged: bool


def after_failure(decision: Decision, failed: FailedBefore | None) -> Decision:
    """What a failure last time makes of a file to transcribe (or redo): tried again, and expected to
    fail again, while the recording is unchanged since (only CareVoice, ffmpeg or the folder may
    have changed); a plain transcribe, saying so, once the recording changed."""
    if failed is None or decision.action not in (Action.TRANSCRIBE, Action.REDO):
        return decision
    if failed.unchanged:
        detail = f"{Reason.FAILED_BEFORE.value}, {failed.at}: {failed.error}"
        return replace(decision, action=Action.TRY_AGAIN, reason=Reason.FAILED_BEFORE, detail=detail)
    if decision.action is Action.TRANSCRIBE:
        return replace(decision, reason=Reason.CHANGED_SINCE_FAILED)
    return decision  # a redo's own reason (the recording changed since it was transcribed) says it


# The command-line option of each text option a record keeps (DecodeSettings.text_options).
TEXT_OPTIONS = {"task": "--task", "language": "--language", "beam_size": "--beam-size", "zh_script": "--zh-script", "glossary": "--glossary"}
# Text options too long to show from what to what (a glossary's terms): only that they changed.
LISTED_OPTIONS = frozenset({"glossary"})


def options_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Which text options differ, from what to what: ``--zh-script tw → keep, --language zh → en,
    --glossary changed``."""

    def shown(value: Any) -> str:
        return "(detect)" if value is None else str(value)

    def change(key: str) -> str:
        option = TEXT_OPTIONS.get(key, key)
        if key not in LISTED_OPTIONS:
            return f"{option} {shown(old.get(key))} → {shown(new.get(key))}"
        return f"{option} {'added' if key not in old else 'dropped' if key not in new else 'changed'}"

    return ", ".join(change(key) for key in dict.fromkeys([*new, *old]) if old.get(key) != new.get(key))
