"""Audio -> chunks: decode one file, cut a long one at pauses into chunks of at most 30 s, and turn
each chunk into an engine input (features and encoder window). Runs in the decode pool.

A long file in which VAD hears no speech is cut every 30 s instead when it is not silence
(carevoice.engine.loudness): whispers escape VAD (issue 23), and its chunks are decoded without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from carevoice.engine.loudness import Audibility, audibility
from carevoice.engine.policy import window_frames
from carevoice.engine.vad import MAX_CHUNK_S, SpeechSpan, detect_speech
from carevoice.engine.whisper import EngineItem
from carevoice.errors import AudioDecodeError, IncompleteFileError
from carevoice.run.audio import Ffmpeg, decode_audio, ffmpeg_version
from carevoice.run.decode_pool import DecodePool
from carevoice.run.discovery import Job
from carevoice.run.records import ChangedWhileReading, Identity, identify
from carevoice.settings import DEFAULT_WINDOWS_S, SAMPLE_RATE_HZ


@dataclass(frozen=True)
class Prepared:
    """A decoded file: its length and its chunks' spans (samples), before features."""

    job: Job
    samples: np.ndarray
    spans: tuple[SpeechSpan, ...]
    identity: Identity | None = None  # the recording's, as it was decoded
    decoded_by: str | None = None  # what decoded it (the ffmpeg program's version, or the pool's libav), for its record
    vad_heard: bool = False  # VAD found speech in it (a long file cut at its pauses): VAD may silence its chunks

    @cached_property
    def audibility(self) -> Audibility:
        """Silence or sound (computed once)."""
        return audibility(self.samples)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ

    @property
    def offsets_s(self) -> tuple[float, ...]:
        """Where each chunk starts in the file."""
        return tuple(span.start / SAMPLE_RATE_HZ for span in self.spans)


def plan_chunks(speech: list[SpeechSpan]) -> tuple[SpeechSpan, ...]:
    """Chunks of at most 30 s for a long file: speech spans merged greedily while the merged
    stretch fits in 30 s (the silence between them stays in, so times map back by an offset)."""
    limit = int(MAX_CHUNK_S * SAMPLE_RATE_HZ)
    chunks: list[SpeechSpan] = []
    for span in speech:
        for start in range(span.start, span.end, limit):  # VAD spans are <= 30 s; this is a guard
            piece = SpeechSpan(start, min(span.end, start + limit))
            if chunks and piece.end - chunks[-1].start <= limit:
                chunks[-1] = SpeechSpan(chunks[-1].start, piece.end)
            else:
                chunks.append(piece)
    return tuple(chunks)


def prepare_file(job: Job, decoder: Ffmpeg | DecodePool) -> Prepared:
    """Decode one file (with the ffmpeg program, or a pool of decode workers), identify it (the
    SHA-256 of the bytes decoded, for its record) and find its speech.

    Raises:
        FileError: the file cannot be decoded, or changed while it was (an upload still in progress).
    """
    try:
        before = os.stat(job.source)
    except OSError:
        before = None  # the decoder says why it cannot open it
    if isinstance(decoder, DecodePool):
        decoded = decoder.decode(job.source)
        samples, decoded_by = decoded.samples, decoded.decoded_by
    else:
        samples, decoded_by = decode_audio(job.source, decoder), ffmpeg_version(decoder)
    identity = identify_decoded(job.source, before)
    whole = SpeechSpan(0, len(samples))
    if len(samples) <= MAX_CHUNK_S * SAMPLE_RATE_HZ:
        # One chunk, no VAD: it costs ~1/3 of a core at our throughput, and the engine
        # checks chunks that might be silence with VAD after decoding anyway.
        return Prepared(job, samples, (whole,), identity, decoded_by)
    prepared = Prepared(job, samples, plan_chunks(detect_speech(samples)), identity, decoded_by, vad_heard=True)
    if prepared.spans or not prepared.audibility.is_sound:
        return prepared
    return Prepared(job, samples, plan_chunks([whole]), identity, decoded_by)  # VAD hears nothing in sound: every 30 s


def identify_decoded(path: Path, before: os.stat_result | None) -> Identity:
    """The identity of a recording just decoded: read again (from the page cache, mostly) and
    hashed, its stat checked before and after. A file that changes meanwhile is still being written.

    Raises:
        AudioDecodeError: it changed while it was read, or cannot be read.
    """
    try:
        identity = identify(path)
        if before is not None and not identity.same_stat(before):
            raise ChangedWhileReading(str(path))
        return identity
    except ChangedWhileReading:
        raise IncompleteFileError(
            "the recording changed while it was read", "it may still be being copied or recorded: rerun once it is complete"
        ) from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read the recording ({exc.strerror or type(exc).__name__})", "check that it is readable") from None


def engine_items(
    prepared: Prepared,
    features: Callable[[np.ndarray], np.ndarray],
    language: str | None,
    windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S,
) -> list[EngineItem]:
    """The engine inputs of a decoded file: one per chunk, with features and encoder window; a chunk
    that is not silence, in a file where VAD found no speech (or was not asked), is unfiltered."""
    items = []
    for span in prepared.spans:
        samples = prepared.samples[span.start : span.end]
        frames = window_frames(len(samples) / SAMPLE_RATE_HZ, windows_s, language=language)
        unfiltered = not prepared.vad_heard and audibility(samples).is_sound
        items.append(EngineItem(samples, features(samples), frames, language, unfiltered))
    return items
