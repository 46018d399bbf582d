"""Run one batch of speech chunks from many files through Whisper, and follow up what looks off.

A batch (chunks of one encoder window length) is encoded once; languages are detected on that
same encoder output; all chunks are decoded together with timestamp tokens; words are aligned
chunk by chunk. After each decode carevoice.engine.policy decides what follows (the full 30 s window, a
continuation after an early stop, or for a loop that persists, the sequential fallback); this loop
carries the decisions out through the decoder primitives (carevoice.engine.decoder) and returns typed
results. Measured in benchmarks/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from carevoice.engine.decoder import (
    AlignedWord,
    DecodedSegment,
    Decoder,
    Generation,
    TextTokens,
    is_out_of_memory,
    load_decoder,
)
from carevoice.engine.fallback import Fallback
from carevoice.engine.models import ModelRef
from carevoice.engine.policy import (
    FRAMES_PER_SECOND,
    WINDOW_FRAMES,
    Action,
    Decision,
    Outcome,
    Reason,
    compression_ratio,
    copies_glossary,
    decide,
    heard_without_vad,
    max_tokens,
    needs_full_window,
    prompted_windows_s,
    rows_per_call,
    split_timestamped,
    window_frames,
)
from carevoice.engine.vad import detect_speech
from carevoice.errors import Cause, EngineError
from carevoice.settings import (
    DEFAULT_WINDOWS_S,
    SAMPLE_RATE_HZ,
    DecodeSettings,
    EngineSettings,
    Task,
)
from carevoice.transcript import Segment, Word

# Passes over a batch: the chunks, then follow-ups (full window, continuation) of follow-ups.
MAX_PASSES = 4


class EngineOutOfMemory(EngineError):
    """The device ran out of memory for this batch; a smaller batch may fit."""

    cause = Cause.ENGINE


@dataclass
class EngineItem:
    """One speech chunk (at most 30 s) of one file, ready for the encoder.

    Attributes:
        samples: The chunk's audio (a view into the file's samples).
        features: Log-mel features of the chunk, unpadded: (n_mels, frames).
        window_frames: Encoder window the chunk runs in (the scheduler's bucket); the
            features are zero-padded to it.
        language: The file's language when given; None to detect.
        unfiltered: VAD found no speech in its file (or was not asked) and the chunk is not silence:
            VAD alone does not silence it (carevoice.engine.policy.Outcome.unfiltered).
    """

    samples: np.ndarray
    features: np.ndarray
    window_frames: int
    language: str | None
    unfiltered: bool = False

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


class Engine:
    """Batched decoding around one loaded model. Build with :meth:`Engine.load` (or around any
    decoder, e.g. a test double). Not thread-safe: one thread runs batches.

    Args:
        decoder: The decoder primitives.
        windows_s: The encoder windows chunks may run in.
        observe: Called with every decision of the policy and the outcome it was made on (the
            benchmarks record real outcomes this way).
    """

    def __init__(
        self,
        decoder: Decoder,
        windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S,
        observe: Callable[[Outcome, Decision], None] | None = None,
    ) -> None:
        self.decoder = decoder
        self.windows_s = windows_s
        self.observe = observe
        self._fallback: Fallback | None = None

    @classmethod
    def load(cls, settings: EngineSettings, ref: ModelRef, device: str, device_index: int = 0) -> Engine:
        """Load the model on a resolved device (``device_index``: which CUDA device).

        Raises:
            SetupError: the model cannot be found, downloaded or loaded.
        """
        return cls(load_decoder(settings, ref, device, device_index), settings.windows_s)

    @property
    def ref(self) -> ModelRef:
        return self.decoder.ref

    @property
    def device(self) -> str:
        return self.decoder.device

    @property
    def device_index(self) -> int:
        return self.decoder.device_index

    @property
    def compute_type(self) -> str:
        return self.decoder.compute_type

    def features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of one chunk (thread-safe; runs in the decode pool)."""
        return self.decoder.features(samples)

    def window_frames(self, duration_s: float, language: str | None) -> int:
        """The encoder window for a chunk of this length (and language, when known)."""
        return window_frames(duration_s, self.windows_s, language=language)

    def run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult | EngineError]:
        """Transcribe chunks from any number of files in one encoder and one decoder pass.

        Returns:
            One result per chunk, in order; an EngineError in place of a chunk whose fallback
            decode (a chunk's own, after the batch's work) failed: the batch's finished work stands.

        Raises:
            EngineOutOfMemory: the device ran out of memory (the caller may split the batch).
            EngineError: any other inference failure.
        """
        try:
            return self._run_batch(items, options)
        except Exception as exc:
            raise engine_error(exc, self.device, f"a batch of {len(items)}") from None

    def _run_batch(self, items: Sequence[EngineItem], options: DecodeSettings) -> list[ItemResult | EngineError]:
        """Decode every chunk in its own window, then carry out the follow-ups, pass by pass.

        Every follow-up runs with pieces of its own window length only, so a chunk's result never
        depends on which other chunks share its batch.
        """
        chunks = [_Chunk(item.language or "", 1.0) for item in items]
        work = [_Piece(i, item) for i, item in enumerate(items)]
        detect = True
        for _ in range(MAX_PASSES):
            if not work:
                break
            follow_up: list[_Piece] = []
            for frames in sorted({w.item.window_frames for w in work}):
                same = [w for w in work if w.item.window_frames == frames]
                rows = rows_per_call(frames, self.device, len(same))
                for start in range(0, len(same), rows):
                    follow_up += self._pass(same[start : start + rows], frames, chunks, options, detect)
            detect, work = False, follow_up
        for w in work:  # continued MAX_PASSES times and still more speech: the safe way decides
            chunks[w.index] = self._redecode(items[w.index], chunks[w.index], options)
        return [c.result() for c in chunks]

    def _pass(self, group: list[_Piece], frames: int, chunks: list[_Chunk], options: DecodeSettings, detect: bool) -> list[_Piece]:
        """Encode and decode one call's pieces of one window (``detect``: their languages first); returns the follow-ups."""
        encoded = self._encode(group)
        if not detect:
            return self._decode_pass(encoded, group, chunks, options)
        # Once, on each chunk's own window: follow-ups keep their chunk's language.
        for w, (lang, prob) in zip(group, self._languages(encoded, [w.item for w in group])):
            chunks[w.index].language, chunks[w.index].language_probability = lang, prob
        follow_up: list[_Piece] = []
        keep: list[_Piece] = []
        for w in group:
            if needs_full_window(frames, chunks[w.index].language):
                chunks[w.index].widened = True
                follow_up.append(_Piece(w.index, replace(w.item, window_frames=WINDOW_FRAMES)))
            else:
                keep.append(w)
        if not keep:
            return follow_up
        if follow_up:
            encoded = self._encode(keep)  # rare: mixed languages
        return follow_up + self._decode_pass(encoded, keep, chunks, options)

    def _encode(self, pieces: Sequence[_Piece]) -> Any:
        return self.decoder.encode([p.item.features for p in pieces], max(p.item.window_frames for p in pieces))

    def _languages(self, encoded: Any, items: Sequence[EngineItem]) -> list[tuple[str, float]]:
        """Each chunk's language: given, or detected on the batch's encoder output (only when some
        chunk needs it)."""
        if not self.decoder.is_multilingual:
            return [("en", 1.0)] * len(items)
        detected: list[tuple[str, float]] | None = None
        result = []
        for i, item in enumerate(items):
            if item.language is not None:
                result.append((item.language, 1.0))
                continue
            if detected is None:
                detected = self.decoder.detect_languages(encoded)
            result.append(detected[i])
        return result

    def _decode_pass(self, encoded: Any, group: list[_Piece], chunks: list[_Chunk], options: DecodeSettings) -> list[_Piece]:
        """One batched generate over pieces of one window length; carries out what the policy
        decides for each and returns the follow-up work."""
        languages, frames = [chunks[w.index].language for w in group], group[0].item.window_frames
        generated = self.decoder.generate(encoded, languages, options.task, options.beam_size, max_tokens(frames), options.hotwords)
        row_of = self.decoder.rows(encoded, len(group))
        follow_up: list[_Piece] = []
        for row, (w, gen) in enumerate(zip(group, generated)):
            item, chunk = w.item, chunks[w.index]
            vocabulary = self.decoder.tokenizer(options.task, chunk.language)
            drafts = _split(vocabulary, gen, item.duration_s)
            decision = decide_with_vad(outcome_of(vocabulary, gen, item, drafts, options.glossary), item.samples, self.observe)
            if decision.action is Action.SILENT:
                continue
            if decision.action is Action.WIDEN:
                follow_up.append(_Piece(w.index, replace(item, window_frames=WINDOW_FRAMES), w.offset_s, w.whole))
                chunk.widened = True
                continue
            if decision.action is Action.REDECODE:  # always the whole chunk, also when only its rest was at fault
                # When the whole chunk's beam decode just looped in the full window, its encoding is at hand
                # and the fallback skips that beam decode.
                looped_here = w.whole is None and decision.reason is Reason.LOOPED_IN_FULL_WINDOW
                chunks[w.index] = self._redecode(
                    w.whole or item, chunk, replace(options, glossary=()) if decision.reason is Reason.COPIED_GLOSSARY else options,
                    looped_encoding=row_of(row) if looped_here else None, unheard=decision.reason is Reason.QUIET_SPEECH,
                )  # fmt: skip
                continue
            if decision.action is Action.CONTINUE:
                rest = item.samples[int(decision.at_s * SAMPLE_RATE_HZ) :]
                windows_s = prompted_windows_s(self.windows_s, bool(options.glossary))
                rest_frames = window_frames(len(rest) / SAMPLE_RATE_HZ, windows_s, language=chunk.language)
                rest_item = EngineItem(rest, self.features(rest), rest_frames, item.language)
                follow_up.append(_Piece(w.index, rest_item, w.offset_s + decision.at_s, whole=w.whole or item))
                chunk.continued = True
            if options.word_timestamps and drafts:
                drafts = self._align(row_of(row), options.task, chunk.language, item, drafts)
            chunk.pieces.append((w.offset_s, drafts))
        return follow_up

    def _align(self, encoded: Any, task: Task, language: str, item: EngineItem, drafts: list[DecodedSegment]) -> list[DecodedSegment]:
        """One chunk's drafts with their words, aligned on its encoder output (a batch of one).

        Chunks are aligned one by one: a batched alignment pads every chunk's text to the longest
        text in the batch, and the padded length shifts word probabilities (up to 0.002 measured on
        CPU int8): a file's JSON would then depend on which files shared its batch, and a resumed run
        would not reproduce an uninterrupted one byte for byte (tests/cli/test_interrupt.py). Alignment
        is a small share of a batch's time.
        """
        text_tokens = [t for d in drafts for t in d.tokens]
        num_frames = min(item.window_frames, round(item.duration_s * FRAMES_PER_SECOND))
        return attach_words(drafts, self.decoder.align(encoded, task, language, text_tokens, num_frames))

    def _redecode(
        self, item: EngineItem, chunk: _Chunk, options: DecodeSettings, *, looped_encoding: Any = None, unheard: bool = False
    ) -> _Chunk:
        """Decode one whole chunk the safe way (carevoice.engine.fallback). ``looped_encoding``: the chunk's
        full-window encoder output, when its beam decode there just looped: sampling then starts at
        once, and words are aligned on it. ``unheard``: VAD hears no speech in it, so only what
        Whisper is sure is speech stays (policy.heard_without_vad), and without the glossary. A failure here (the seeded copy's
        memory, say) fails this chunk alone: splitting the batch would only repeat the other chunks'
        finished work."""
        if self._fallback is None:
            self._fallback = Fallback(self.decoder)
        options = replace(options, glossary=()) if unheard else options  # primed, base wrote a glossary's name into white noise
        try:
            drafts = self._fallback.decode(item.samples, chunk.language, options, beam_looped=looped_encoding is not None)
            if unheard:
                drafts = [d for d in drafts if heard_without_vad(d.no_speech_prob)]
            if options.word_timestamps and drafts:
                full = replace(item, window_frames=WINDOW_FRAMES)
                encoded = self.decoder.encode([full.features], WINDOW_FRAMES) if looped_encoding is None else looped_encoding
                drafts = self._align(encoded, options.task, chunk.language, full, drafts)
        except Exception as exc:
            return _Chunk(chunk.language, chunk.language_probability, failed=engine_error(exc, self.device, "the fallback decode of one chunk"))
        return _Chunk(chunk.language, chunk.language_probability, [(0.0, drafts)], chunk.widened, chunk.continued, True)


def engine_error(exc: Exception, device: str, what: str) -> EngineError:
    """The one-line error for an inference failure on ``device`` (never its message when it may hold speech)."""
    if isinstance(exc, (RuntimeError, MemoryError)):
        if is_out_of_memory(exc):
            return EngineOutOfMemory(f"out of memory on {device} for {what}", "lower --batch-size, or use a smaller model")
        return EngineError(
            f"inference failed ({type(exc).__name__}: {str(exc)[:120]})", "a CareVoice or CTranslate2 bug: please report it with this line", cause=Cause.ENGINE
        )
    # A bug here must fail these chunks' files, not end the run (and its report).
    return EngineError(f"unexpected {type(exc).__name__} in the engine", "report it (its message may hold speech, so it is not shown)")


def outcome_of(
    vocabulary: TextTokens, gen: Generation, item: EngineItem, drafts: Sequence[DecodedSegment], glossary: Sequence[str] = ()
) -> Outcome:
    """The facts of one decode the policy decides on (``glossary``: the hot words it was primed with)."""
    text = vocabulary.decode([t for t in gen.tokens if t < vocabulary.eot])
    return Outcome(
        tokens=gen.tokens,
        timestamp_begin=vocabulary.timestamp_begin,
        eot=vocabulary.eot,
        text=text,
        avg_logprob=gen.avg_logprob,
        no_speech_prob=gen.no_speech_prob,
        window_frames=item.window_frames,
        duration_s=item.duration_s,
        covered_s=drafts[-1].end_s if drafts else 0.0,
        unfiltered=item.unfiltered,
        copied_glossary=copies_glossary(text, glossary),
    )


def decide_with_vad(outcome: Outcome, samples: np.ndarray, observe: Callable[[Outcome, Decision], None] | None = None) -> Decision:
    """The policy's decision, after answering each question it asks of VAD about these samples."""
    while True:
        decision = decide(outcome)
        if observe is not None:
            observe(outcome, decision)
        if decision.action is not Action.LISTEN:
            return decision
        heard = bool(detect_speech(samples[int(decision.at_s * SAMPLE_RATE_HZ) :]))
        outcome = outcome.heard(decision.at_s, heard)


def _split(vocabulary: TextTokens, gen: Generation, duration_s: float) -> list[DecodedSegment]:
    """Segments from timestamp tokens; text after the last timestamp runs to the chunk's end."""
    drafts = []
    for start_s, end_s, text_tokens in split_timestamped(gen.tokens, vocabulary.timestamp_begin, vocabulary.eot, duration_s):
        text = vocabulary.decode(text_tokens)
        if text.strip():
            drafts.append(DecodedSegment(start_s, end_s, text, tuple(text_tokens), gen.avg_logprob, gen.no_speech_prob, compression_ratio(text)))
    return drafts


def attach_words(drafts: Sequence[DecodedSegment], alignment: Sequence[AlignedWord]) -> list[DecodedSegment]:
    """Distribute a chunk's aligned words over its drafts, in order, by their token counts.

    A draft's bounds then follow its words (their timing is finer than the 20 ms timestamp tokens).
    """
    index = 0
    result = []
    for draft in drafts:
        consumed = 0
        words = []
        while index < len(alignment) and consumed < len(draft.tokens):
            aligned = alignment[index]
            if aligned.text:
                words.append(Word(round(aligned.start_s, 3), round(aligned.end_s, 3), aligned.text, round(aligned.probability, 4)))
            consumed += len(aligned.tokens)
            index += 1
        if words:
            draft = replace(draft, start_s=words[0].start_s, end_s=max(words[-1].end_s, words[0].start_s))
        result.append(replace(draft, words=tuple(words)))
    return result


@dataclass
class _Piece:
    """A piece of decoding for one chunk of the batch: the chunk itself, the chunk again in the
    full window (``item`` widened), or the rest of the chunk after where its decode stopped."""

    index: int  # the chunk's place in the batch
    item: EngineItem
    offset_s: float = 0.0  # where ``item`` starts within the chunk
    whole: EngineItem | None = None  # the chunk itself, when ``item`` is only its rest


@dataclass
class _Chunk:
    """What one chunk of the batch has become so far."""

    language: str
    language_probability: float
    pieces: list[tuple[float, list[DecodedSegment]]] = field(default_factory=list)  # (offset_s, drafts)
    widened: bool = False
    continued: bool = False
    redecoded: bool = False
    failed: EngineError | None = None  # its fallback decode failed: the chunk's file fails

    def result(self) -> ItemResult | EngineError:
        if self.failed is not None:
            return self.failed
        segments = [_placed(d, self.language, offset_s) for offset_s, piece in self.pieces for d in piece]
        return ItemResult(self.language, self.language_probability, segments, self.widened, self.continued, self.redecoded)


def _placed(d: DecodedSegment, language: str, offset_s: float) -> Segment:
    """A draft (times relative to its piece) as a Segment on the chunk's timeline."""
    return Segment(
        id=0,
        start_s=round(float(d.start_s) + offset_s, 3),
        end_s=round(float(d.end_s) + offset_s, 3),
        text=d.text,
        avg_logprob=round(float(d.avg_logprob), 4),
        no_speech_prob=round(float(d.no_speech_prob), 4),
        compression_ratio=round(float(d.compression_ratio), 4),
        words=tuple(Word(round(w.start_s + offset_s, 3), round(w.end_s + offset_s, 3), w.text, w.probability) for w in d.words),
        language=language,
    )
