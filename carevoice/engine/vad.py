"""Voice activity detection: where a recording holds speech (Silero VAD, bundled with faster-whisper).

Used to cut long files into chunks, and by the engine to check a doubtful decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carevoice.settings import SAMPLE_RATE_HZ

MAX_CHUNK_S = 30.0  # Whisper's window: no speech span (and no chunk) is longer
VAD_BLOCK_S = 120.0  # voice activity detection runs over at most 2 minutes of audio at a time


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of speech within a file, in samples."""

    start: int
    end: int


def detect_speech(samples: np.ndarray) -> list[SpeechSpan]:
    """Speech spans found by Silero VAD (faster-whisper's bundled model), each at most 30 s.

    Long audio goes through in blocks of VAD_BLOCK_S: faster-whisper's VAD pads and re-windows
    its whole input, holding about three more copies of it (+690 MB measured for 1 h of audio,
    +100 MB in blocks). Spans that meet at a block edge are joined again while they fit in one chunk.
    """
    from faster_whisper.vad import (  # loads onnxruntime (~0.7 s): only when a file is cut at pauses
        VadOptions,
        get_speech_timestamps,
    )

    # min_silence 160 ms and max 30 s spans are faster-whisper's batched-pipeline settings.
    options = VadOptions(max_speech_duration_s=MAX_CHUNK_S, min_silence_duration_ms=160)
    block, limit = int(VAD_BLOCK_S * SAMPLE_RATE_HZ), int(MAX_CHUNK_S * SAMPLE_RATE_HZ)
    spans: list[SpeechSpan] = []
    for offset in range(0, len(samples), block):
        for found in get_speech_timestamps(samples[offset : offset + block], options):
            span = SpeechSpan(offset + int(found["start"]), offset + int(found["end"]))
            if spans and span.start <= spans[-1].end and span.end - spans[-1].start <= limit:
                spans[-1] = SpeechSpan(spans[-1].start, span.end)
            else:
                spans.append(span)
    return spans
