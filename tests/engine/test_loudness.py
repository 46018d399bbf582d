"""Silence or sound (issue 23): the pure rule on frame levels as a table, and on real samples. No model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS_DIR

from carevoice.engine.loudness import FRAME_S, MIN_SOUND_S, SOUND_FLOOR_DBFS, Loudness, audibility, judge_levels
from carevoice.run.audio import decode_audio, find_ffmpeg
from carevoice.settings import SAMPLE_RATE_HZ

FRAMES_PER_S = round(1 / FRAME_S)


@pytest.mark.parametrize(
    "levels_dbfs, loudness, why",
    [
        ([-120.0] * 300, Loudness.SILENCE, "digital silence"),
        ([-75.0] * 300, Loudness.SILENCE, "a quiet room's hiss, under the floor"),
        ([-120.0] * 290 + [-10.0] * 5, Loudness.SILENCE, "a click of 0.15 s is not a voice"),
        ([-120.0] * 290 + [-45.0] * 10, Loudness.SOUND, "0.3 s of a whisper"),
        ([-50.0] * 300, Loudness.SOUND, "steady noise: sound (a person listens if nothing is heard)"),
        ([], Loudness.SILENCE, "no audio at all"),
    ],
)
def test_loudness_is_judged_from_how_long_the_audio_is_above_the_floor(levels_dbfs: list[float], loudness: Loudness, why: str) -> None:
    verdict = judge_levels(levels_dbfs)
    assert verdict.loudness is loudness, why
    assert verdict.reason.startswith(loudness.value)


def test_the_table_straddles_the_rule() -> None:
    assert judge_levels([SOUND_FLOOR_DBFS] * 100).loudness is Loudness.SILENCE  # at the floor is not above it
    frames = round(MIN_SOUND_S / FRAME_S)
    assert judge_levels([SOUND_FLOOR_DBFS + 1] * frames).loudness is Loudness.SOUND
    assert judge_levels([SOUND_FLOOR_DBFS + 1] * (frames - 1)).loudness is Loudness.SILENCE


def test_real_samples_whispers_and_noise_are_sound_silence_is_not() -> None:
    rng = np.random.default_rng(1)
    seconds = 4 * SAMPLE_RATE_HZ
    assert audibility(np.zeros(seconds, dtype=np.float32)).loudness is Loudness.SILENCE
    dither = rng.normal(0, 10 ** (-80 / 20), seconds).astype(np.float32)  # -80 dBFS: a recorder's noise floor
    assert audibility(dither).loudness is Loudness.SILENCE
    assert audibility((rng.normal(0, 0.1, seconds)).astype(np.float32)).loudness is Loudness.SOUND
    whisper = decode_audio(CORPUS_DIR / "clips" / "mfa__mfa_whisper.flac", find_ffmpeg())
    verdict = audibility(whisper)
    assert verdict.loudness is Loudness.SOUND, verdict.reason
    assert verdict.loudest_dbfs < -30  # it is quiet: VAD hears no speech in it
