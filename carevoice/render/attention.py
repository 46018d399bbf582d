"""What needs a person after a run, in words a nurse can act on: a report's files (their JSON
entries) -> the page's top line and its list of recordings to look at, grouped by kind, each kind
with one plain fix.

The kinds are data (:data:`FAILURE_KINDS`): a failure is matched by the cause it carries, then by
the family of its one-line error (its words, not its exact text: the lines are reworded over time);
what matches nothing still gets a way forward. The error line itself stays with each file, for
whoever looks after CareVoice. Like the rest of the report, nothing here holds transcript text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Advice:
    """What a person should do about one recording.

    Attributes:
        kind: A stable name for the kind of trouble (for grouping and tests).
        title: What happened, in a few plain words.
        action: What to do, as a nurse would do it: no commands, no options.
    """

    kind: str
    title: str
    action: str


@dataclass(frozen=True)
class FailureKind:
    """A kind of failure: the causes it carries (errors.Cause values) or the words its line holds."""

    advice: Advice
    causes: tuple[str, ...] = ()
    words: re.Pattern[str] = re.compile(r"(?!)")  # matches nothing

    def matches(self, cause: str | None, error: str) -> bool:
        return (cause is not None and cause in self.causes) or bool(self.words.search(error))


TELL_IT = "tell whoever looks after CareVoice, and show them the technical line below"
AGAIN = "then run CareVoice again (recordings already done are not redone)"

# In the order the page lists them. The first that matches wins: a cause before words, so that a
# reworded line still lands in its kind.
FAILURE_KINDS = (
    FailureKind(
        Advice(
            "incomplete",
            "Incomplete recording",
            f"Copy the whole recording again from the recorder or phone (or wait until its upload has finished), {AGAIN}.",
        ),
        causes=("incomplete",),
        words=re.compile(r"truncated|incomplete|0 bytes|upload seems abandoned|copied completely", re.IGNORECASE),
    ),
    FailureKind(
        Advice(
            "not_a_recording",
            "Not a recording CareVoice can read",
            f"Check that it plays on a computer. If it does not, it is not a recording or it is damaged: record the note again, or copy it again from the recorder, {AGAIN}.",
        ),
        words=re.compile(
            r"recognisable recording|not a recording|cannot decode|contains no audio|did not finish within|damaged|playable", re.IGNORECASE
        ),
    ),
    FailureKind(
        Advice(
            "edited_output",
            "A transcript a person wrote or edited is in the way",
            f"Open the transcript named in the technical line below. If the edit matters, copy it somewhere safe, then move that file out of the folder, {AGAIN}.",
        ),
        # Before the folder's kind: an output in the way is the folder's cause too (the watcher looks again once it changes).
        words=re.compile(r"not written by CareVoice|was edited|edited since", re.IGNORECASE),
    ),
    FailureKind(
        Advice(
            "folder",
            "The transcript could not be saved",
            f"The folder is full or may not be written to: ask whoever looks after the shared drive to free space or give access, {AGAIN}.",
        ),
        causes=("folder",),
        words=re.compile(r"cannot write|no space left|read-only|permission denied|cannot (?:read|list|enter) folder", re.IGNORECASE),
    ),
    FailureKind(
        Advice(
            "name",
            "The recording's name needs changing",
            f"Rename the recording: a shorter name that ends in what it is (such as .m4a or .wav), {AGAIN}.",
        ),
        words=re.compile(r"would replace an input|rename|too long|symbolic link|not a regular file", re.IGNORECASE),
    ),
    FailureKind(
        Advice("engine", "CareVoice itself stopped on it", f"Run CareVoice again; if this recording fails again, {TELL_IT}."),
        causes=("engine",),
        words=re.compile(r"inference|engine|unexpected|out of memory", re.IGNORECASE),
    ),
)
OTHER = Advice("other", "Something else went wrong", f"Run CareVoice again; if this recording fails again, {TELL_IT}.")
NO_SPEECH = Advice(
    "no_speech", "No speech heard",
    "Listen to the recording. If someone speaks in it, type the note by hand or record it again closer to the phone: a whisper may be too quiet.",
)  # fmt: skip
CONFLICT = Advice(
    "conflict", "A person's edit was kept aside",
    "The recording was replaced after someone corrected its transcript. Their corrected version is kept beside the new "
    "transcript, under the name shown: compare the two, keep what is right, then delete the copy.",
)  # fmt: skip
ORDER = [*(k.advice.kind for k in FAILURE_KINDS), OTHER.kind, NO_SPEECH.kind, CONFLICT.kind]


def advise(entry: dict[str, Any]) -> Advice | None:
    """What a person should do about one file (a report's ``files`` entry), or None: nothing."""
    if entry["status"] == "failed":
        error = entry.get("error") or ""
        return next((k.advice for k in FAILURE_KINDS if k.matches(entry.get("cause"), error)), OTHER)
    if entry["status"] == "no_speech":
        return NO_SPEECH
    if entry.get("conflict"):
        return CONFLICT
    return None


@dataclass
class AttentionGroup:
    """The files of one kind of trouble, with its plain fix."""

    advice: Advice
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.advice.kind


def attention_groups(files: list[dict[str, Any]]) -> list[AttentionGroup]:
    """The files that need a person, grouped by kind: failures first, then no speech heard, then
    a person's edit kept aside."""
    groups: dict[Advice, AttentionGroup] = {}
    for entry in files:
        advice = advise(entry)
        if advice is not None:
            groups.setdefault(advice, AttentionGroup(advice)).files.append(entry)
    return sorted(groups.values(), key=lambda g: ORDER.index(g.kind))


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def verdict_line(report: dict[str, Any]) -> str:
    """The page's first line: "N recordings need a person", or all good and what was done."""
    needing = sum(advise(entry) is not None for entry in report["files"])
    if needing:
        return f"{plural(needing, 'recording')} need{'s' if needing == 1 else ''} a person"
    counts = report["counts"]
    done = [plural(counts["done"], "recording") + " transcribed"] if counts["done"] else []
    done += [f"{counts['skipped']} already done"] if counts["skipped"] else []
    return "All good: " + (", ".join(done) or "nothing to do")
