"""The safe decode of one whole chunk: faster-whisper's sequential path with its temperature
fallback, on a freshly seeded copy of the model, so the same chunk always comes out the same.

Batched decoding has no temperature fallback; the engine sends here only a chunk whose beam decode
loops even in the full 30 s window (2 of 123 English clips measured), or one still unfinished after
every continuation. Each fallback samples on a new copy: CTranslate2's random generators live in a
model's worker threads and cannot be reseeded (carevoice.engine.decoder.Decoder.seeded_copy), so a copy
kept for the engine's life would give a chunk text that depends on the fallbacks before it, and a
resumed run would not reproduce an uninterrupted one. A copy of ``base`` loads in 0.3 s on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from carevoice.engine.decoder import DecodedSegment, Decoder, hotword_tokens
from carevoice.engine.policy import TOKENS_PER_SECOND_LIMIT
from carevoice.settings import SAMPLE_RATE_HZ, DecodeSettings

log = logging.getLogger(__name__)

REDECODE_SEED = 20_261_128
# Whisper's sampling temperatures after its beam decode at 0.0 (skipped when that just looped).
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
MAX_NEW_TOKENS = 440  # Whisper's 448-token context less the prompt


class Fallback:
    """The sequential decoder of one engine (created once per engine, when first needed)."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def seeded(self) -> Decoder | None:
        """A freshly seeded copy of the engine's model; None when no copy fits (a large model on a
        small GPU): then the model itself decodes, its text may differ between runs, and a log line says so."""
        try:
            return self.decoder.seeded_copy(REDECODE_SEED)
        except Exception as exc:
            log.warning(
                "no seeded copy of the model for a fallback decode (%s): its text may differ between runs",
                type(exc).__name__,
            )
            return None

    def decode(
        self, samples: np.ndarray, language: str | None, options: DecodeSettings, *, beam_looped: bool
    ) -> list[DecodedSegment]:
        """Segments of one chunk with text, times clamped to the chunk.

        ``beam_looped``: the chunk's beam decode in the full window just looped, so sampling starts at
        once instead of running that decode again.
        """
        duration_s = len(samples) / SAMPLE_RATE_HZ
        # faster-whisper refuses a prompt and new tokens longer than Whisper's 448 together.
        room = MAX_NEW_TOKENS - hotword_tokens(self.decoder, options.task, language or "en", options.hotwords)
        how = {
            "temperatures": FALLBACK_TEMPERATURES if beam_looped else (0.0, *FALLBACK_TEMPERATURES),
            "language": language if self.decoder.is_multilingual else None,
            "task": options.task,
            "beam_size": options.beam_size,
            # A loop runs to the length limit at every fallback temperature (17 s a chunk measured):
            # past what the audio can hold it is a loop anyway.
            "max_new_tokens": min(room, math.ceil(max(duration_s, 1.0) * 2 * TOKENS_PER_SECOND_LIMIT)),
            "hotwords": options.hotwords,
        }
        # On the CPU the copy takes the model's own place in memory (issue 24: ~200 MB at the peak).
        with set_aside(self.decoder):
            segments = self._on_a_copy(samples, how)
        if segments is None:
            segments = self.decoder.transcribe(samples, **how)
        return [replace(s, start_s=min(s.start_s, duration_s), end_s=min(s.end_s, duration_s)) for s in segments if s.text.strip()]

    def _on_a_copy(self, samples: np.ndarray, how: dict[str, Any]) -> list[DecodedSegment] | None:
        """The decode on a seeded copy, let go of before the model comes back (None: no copy fits)."""
        copy = self.seeded()
        if copy is None:
            return None
        try:
            return copy.transcribe(samples, **how)
        finally:
            copy.model.model.unload_model()  # now, not when the garbage collector gets to it


@contextlib.contextmanager
def set_aside(decoder: Decoder) -> Iterator[None]:
    """On the CPU, the model's weights are let go for the block and loaded again after it (0.2 s for
    base, from the page cache; the same numbers after), so a seeded copy reuses their memory."""
    if decoder.device != "cpu":
        yield
        return
    decoder.model.model.unload_model()
    try:
        yield
    finally:
        decoder.model.model.load_model()
