"""Silence or sound: whether a recording holds anything a person could listen to, from its level alone.

Voice activity detection can miss a whisper (issue 23: a whispered night-shift note came out empty);
this rule decides whether such audio is silence (nothing to hear: no words is right) or sound (decode
it without VAD; if still nothing, a person listens). Pure: numbers in, a verdict and its reason out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from carevoice.settings import SAMPLE_RATE_HZ

FRAME_S = 0.03  # level frames of 30 ms: a syllable spans several
# Louder than this is sound. Whispers in the corpus reach -51 to -43 dBFS in their loudest tenth and
# -42 to -32 dBFS at their peak frame; digital silence and a quiet room's dither lie far below.
SOUND_FLOOR_DBFS = -60.0
# At least this much sound: a click or a bump of the recorder is not something to listen to.
MIN_SOUND_S = 0.3
SILENT_DBFS = -120.0  # the level reported for digital silence (all zeros)


class Loudness(str, Enum):
    SILENCE = "silence"
    SOUND = "sound"


@dataclass(frozen=True)
class Audibility:
    """How much of a recording is sound, and the verdict."""

    loudness: Loudness
    sound_s: float  # time louder than SOUND_FLOOR_DBFS
    loudest_dbfs: float  # the loudest frame's level

    @property
    def is_sound(self) -> bool:
        return self.loudness is Loudness.SOUND

    @property
    def reason(self) -> str:
        """Why, in words."""
        heard = f"{self.sound_s:.2f} s louder than {SOUND_FLOOR_DBFS:.0f} dBFS (loudest {self.loudest_dbfs:.0f} dBFS)"
        if self.is_sound:
            return f"sound: {heard}"
        return f"silence: {heard}, under the {MIN_SOUND_S} s a voice needs"


def judge_levels(levels_dbfs: Sequence[float] | np.ndarray, frame_s: float = FRAME_S) -> Audibility:
    """The verdict on a recording from its frames' levels (dBFS, one per ``frame_s``)."""
    levels = np.asarray(levels_dbfs, dtype=np.float64)
    sound_s = float(np.count_nonzero(levels > SOUND_FLOOR_DBFS)) * frame_s
    loudest = float(levels.max()) if levels.size else SILENT_DBFS
    return Audibility(Loudness.SOUND if sound_s >= MIN_SOUND_S else Loudness.SILENCE, round(sound_s, 3), round(loudest, 1))


def frame_levels_dbfs(samples: np.ndarray, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of each whole frame of mono samples (full scale 1.0), in dBFS; a last partial frame is left out."""
    size = round(frame_s * SAMPLE_RATE_HZ)
    frames = samples[: len(samples) // size * size].reshape(-1, size)
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / size  # no squared copy of an hour's audio
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (SILENT_DBFS / 10.0)))


def audibility(samples: np.ndarray) -> Audibility:
    """Silence or sound, for mono 16 kHz samples."""
    return judge_levels(frame_levels_dbfs(samples))
