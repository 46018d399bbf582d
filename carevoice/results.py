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
    SKIPPED = "skipped"
    FAILED = "failed"


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
        }
