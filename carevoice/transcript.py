"""Word / Segment / Transcript: the results shared by the engine, the writers and the reports.

Times are seconds on the input file's own timeline, rounded to milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    """One word with its timing, from cross-attention alignment."""

    start_s: float
    end_s: float
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """One decoded stretch of speech."""

    id: int
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: tuple[Word, ...] = ()
    language: str = ""


@dataclass(frozen=True)
class Transcript:
    """Everything CareVoice knows about one input after inference.

    Attributes:
        language: The file's language (given, or the one most of its speech was detected as).
        language_probability: Detection confidence (1.0 when given).
        duration_s: Length of the decoded audio.
        segments: Ordered segments with file-relative times.
        speech_detected: False when no segment holds text (silence, or speech Whisper judged to be none).
        model: Which model produced it.
        options: The options that shape the text (task, language, beam size, ...).
    """

    language: str
    language_probability: float
    duration_s: float
    segments: tuple[Segment, ...]
    speech_detected: bool = True
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole transcript as one string."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())
