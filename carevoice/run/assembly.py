"""Chunks -> one transcript per file: a file's chunk results, as they come back from batches shared
with other files, regrouped and placed on the file's own timeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from carevoice.engine.whisper import ItemResult
from carevoice.errors import Cause
from carevoice.run.discovery import Job
from carevoice.run.records import Identity
from carevoice.transcript import Segment, Transcript, Word

if TYPE_CHECKING:  # for annotations only: chunking decodes, and needs nothing of this module
    from carevoice.run.chunking import Prepared


@dataclass
class FileChunks:
    """One file on its way through the engine: its chunks' results so far, or why it failed.

    Attributes:
        job: The input.
        duration_s: Length of the decoded audio.
        offsets_s: Where each chunk starts in the file (empty until decoded).
        results: Chunk results by chunk index.
        failed: The one-line error that failed the file, if any.
        identity: The recording's identity, as read while it was decoded.
        decoded_by: The ffmpeg that decoded it.
        credited_s: How much of its audio a progress display has counted as done.
        sound: Its audio is not silence (carevoice.engine.loudness): with no words, a person listens.
        own_s: Its own time so far: its decoding, and its share of each batch its chunks were in
            (a batch's engine time split evenly among its chunks), not the time it waited.
    """

    job: Job
    duration_s: float = 0.0
    offsets_s: tuple[float, ...] = ()
    results: dict[int, ItemResult] = field(default_factory=dict)
    failed: str | None = None
    cause: Cause | None = None  # why it failed, when the fault may lie outside the recording
    identity: Identity | None = None
    decoded_by: str | None = None
    credited_s: float = 0.0  # audio counted as done so far (its chunks back from the engine)
    sound: bool = False
    own_s: float = 0.0

    def take(self, prepared: Prepared) -> None:
        """What decoding found: the file's length, chunks, identity and decoder, and whether it is sound."""
        self.duration_s, self.offsets_s = prepared.duration_s, prepared.offsets_s
        self.identity, self.decoded_by = prepared.identity, prepared.decoded_by
        self.sound = prepared.audibility.is_sound  # ~50 ms an hour of audio (once: cached, or already measured while chunking)

    @property
    def complete(self) -> bool:
        """Every chunk is back (a file without speech chunks is complete once decoded)."""
        return self.failed is None and len(self.results) == len(self.offsets_s)

    def transcript(self, *, model: str, options: dict[str, Any], language: str | None) -> Transcript:
        """The file's transcript; ``language``: the one given with --language (None: detected)."""
        return assemble([self.results[i] for i in range(len(self.offsets_s))], self.offsets_s, self.duration_s, model=model, options=options, language=language)


def assemble(
    chunks: Sequence[ItemResult], offsets_s: Sequence[float], duration_s: float, *, model: str, options: dict[str, Any], language: str | None
) -> Transcript:
    """One file's transcript from its chunks' results (times relative to each chunk) and where each chunk starts.

    The file's language is the one most of its speech was detected as (or the one given).
    """
    segments: list[Segment] = []
    weight: Counter[str] = Counter()
    probability: dict[str, float] = {}
    for result, offset in zip(chunks, offsets_s):
        spoken = sum(s.end_s - s.start_s for s in result.segments)
        if result.segments:
            weight[result.language] += spoken + 1e-3
            probability.setdefault(result.language, result.language_probability)
        for s in result.segments:
            segments.append(
                Segment(
                    id=len(segments),
                    start_s=round(s.start_s + offset, 3),
                    end_s=round(s.end_s + offset, 3),
                    text=s.text,
                    avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob,
                    compression_ratio=s.compression_ratio,
                    words=tuple(Word(round(w.start_s + offset, 3), round(w.end_s + offset, 3), w.text, w.probability) for w in s.words),
                    language=s.language,
                )
            )
    if weight:
        detected = weight.most_common(1)[0][0]
    else:
        detected = language or (chunks[0].language if chunks else "") or ""
    return Transcript(
        language=detected,
        language_probability=probability.get(detected, 1.0 if language else 0.0),
        duration_s=duration_s,
        segments=tuple(segments),
        speech_detected=bool(segments),
        model=model,
        options=options,
    )
