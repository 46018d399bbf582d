"""FileResult: what happened to one input, the record every command and report shares.

A shape, like ``transcript``: it carries paths, numbers and one-line errors, never transcript text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from carevoice.errors import Cause


def path_text(path: Path | str) -> str:
    """A path (or a message holding one) as text any UTF-8 stream and JSON accept.

    Names that are not valid UTF-8 reach Python as lone surrogates, which cannot be encoded: their
    bytes are shown as ``\\udcXX`` escapes instead of crashing the report.
    """
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


class FileStatus(str, Enum):
    DONE = "done"
    NO_SPEECH = "no_speech"  # decoded, written (empty), but nothing was heard in audio that is not silence: a person listens
    SKIPPED = "skipped"
    FAILED = "failed"


NO_SPEECH_HEARD = "no speech heard: listen to it"


@dataclass(frozen=True)
class FileResult:
    """What happened to one input. `error` is one line naming the cause and the fix; never transcript text."""

    source: Path
    status: FileStatus
    outputs: tuple[Path, ...] = ()
    duration_s: float = 0.0
    elapsed_s: float = 0.0
    language: str | None = None
    error: str | None = None
    note: str | None = None  # e.g. "no speech found", "already transcribed with these options"
    why: str | None = None  # why a finished file was written again, e.g. "redo: recording changed since it was transcribed"
    cause: Cause | None = None  # FAILED for a reason that may pass with time (watch tries it again); None: the recording's fault
    conflict: Path | None = None  # where a person's edited transcript was kept when the recording under it was replaced

    @property
    def needs_person(self) -> str | None:
        """Why a person must look at this file (a failure, no speech heard, an edit kept aside), or None."""
        if self.status is FileStatus.FAILED:
            return self.error or "failed"
        if self.status is FileStatus.NO_SPEECH:
            return NO_SPEECH_HEARD
        if self.conflict is not None:
            return f"a person's edit of the old transcript was kept as {path_text(self.conflict.name)}: compare it with the new one"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; names that are not valid UTF-8 appear with \\udcXX escapes."""
        return {
            "file": path_text(self.source),
            "status": self.status.value,
            "outputs": [path_text(p) for p in self.outputs],
            "duration_s": round(self.duration_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "language": self.language,
            "error": None if self.error is None else path_text(self.error),
            "note": None if self.note is None else path_text(self.note),
            "why": self.why,
            "cause": None if self.cause is None else self.cause.value,
            "conflict": None if self.conflict is None else path_text(self.conflict),
            "needs_person": self.needs_person,
        }
