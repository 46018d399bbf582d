"""What to do with a chunk: which encoder window it runs in, and what follows one decode of it.

Pure functions of facts, no model and no audio: :func:`window_frames` picks a chunk's window;
:func:`decide` turns one decode's :class:`Outcome` into a :class:`Decision` (keep, silent, widen,
continue, re-decode, or listen first: ask voice activity detection, then decide again);
:func:`heard_without_vad` says which text a decode without VAD may keep. carevoice.engine.whisper
carries the decisions out. Measured in benchmarks/README.md.
"""

from __future__ import annotations

import gzip
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from carevoice.settings import DEFAULT_WINDOWS_S

# Raise this whenever a change can give a different transcript for the same audio, model and
# options (this policy, the engine, the decoder's use of the model, the fallback, the assembly, or
# a writer's rendering): every record made before says so, and a rerun redoes those files.
ENGINE_REVISION = 2  # 2: audio that VAD hears nothing in but that is not silence is decoded without it (issue 23)

FRAMES_PER_SECOND = 100  # mel frames
TIME_PRECISION_S = 0.02  # one timestamp token
WINDOW_FRAMES = 3000  # Whisper's 30 s encoder window
# Encoder windows (settings.DEFAULT_WINDOWS_S): a chunk runs in the shortest that holds it plus
# WINDOW_MARGIN_S of silence, so a decode that stops early shows (left_open) and the chunk is
# decoded again in the full window.
WINDOW_MARGIN_S = 1.0
# Languages whose accuracy in short windows was measured to hold (English: WER 12.18 % vs 12.29 %
# in the full window). Mandarin lost 1.2 CER points, so every other language keeps the full window
# (a chunk of unknown language runs short until its language is detected, then widens).
SHORT_WINDOW_LANGUAGES = frozenset({"en"})

# On the CPU an engine call's scratch memory is this process's own, and its encoder's attention
# grows with the square of the window: base needs ~90 MB for one 30 s window, ~720 MB for a batch of
# eight (issue 24). A call holds at most this many full windows' worth (n x frames^2), so a batch of
# short chunks still runs whole while full windows go two by two. On the CPU a chunk's numbers do
# not depend on how many rows share its call (benchmarks/README.md, fourth session), so the text is
# the same; on a GPU the scratch is the device's, and out-of-memory halving guards it.
CPU_FULL_WINDOWS_PER_CALL = 2


def rows_per_call(window_frames: int, device: str, batch: int) -> int:
    """How many chunks of this encoder window one encoder and decoder call takes (of ``batch`` waiting)."""
    if device != "cpu":
        return batch
    return max(1, min(batch, CPU_FULL_WINDOWS_PER_CALL * WINDOW_FRAMES**2 // window_frames**2))


# The encoder's attention is the call's peak (eight 15 s windows at once: +189 MB with base), the
# decoder's beam search much less, and batching the decoder is what makes a call fast: the encoder
# takes a call's chunks a full window's worth at a time and their outputs go on to one decoder call
# (eleventh session; one and a half full windows a call for both cost 10 % of the time).
CPU_FULL_WINDOWS_PER_ENCODE = 1


def rows_per_encode(window_frames: int, device: str, rows: int) -> int:
    """How many of a call's ``rows`` chunks the encoder takes at once (0: all of them)."""
    if device != "cpu":
        return 0
    return max(1, min(rows, CPU_FULL_WINDOWS_PER_ENCODE * WINDOW_FRAMES**2 // window_frames**2))


# Whisper's own thresholds (openai/whisper transcribe.py defaults).
COMPRESSION_RATIO_LIMIT = 2.4
LOGPROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6
# Above this no-speech probability a chunk is checked with VAD before its text is kept.
SUSPECT_NO_SPEECH = 0.2
# A decode that ends this long before its chunk does has the rest checked for speech by VAD.
UNCOVERED_TAIL_S = 1.0
TAIL_MARGIN_S = 0.3
# A run of this many tokens seen this many times in one short-window chunk is a loop.
REPEAT_NGRAM = 4
REPEAT_TIMES = 3
# Ordinary speech stays below ~8 text tokens per second even in CJK; loops run far above it.
TOKENS_PER_SECOND_LIMIT = 15.0


class Action(str, Enum):
    """What the engine does next with one chunk."""

    KEEP = "keep"  # the decode stands
    SILENT = "silent"  # no speech: the chunk gives no text
    WIDEN = "widen"  # decode the chunk again in the full 30 s window
    CONTINUE = "continue"  # keep what was decoded, and decode on from ``at_s``
    REDECODE = "redecode"  # decode the whole chunk the safe way (sequential, temperature fallback)
    LISTEN = "listen"  # ask VAD whether there is speech from ``at_s`` to the chunk's end, then decide again


class Reason(str, Enum):
    """Why, in words a reader of the code (or a debug log) can follow."""

    COMPLETE = "the decode covers the chunk"
    NO_SPEECH = "Whisper's no-speech rule: likely silence and low confidence"
    DOUBTFUL_SILENCE = "Whisper doubts there is speech"
    VAD_HEARS_NOTHING = "VAD hears no speech in the chunk"
    LOOPED = "the text loops (compressible, or too many tokens for the audio)"
    REPEATS = "a run of tokens repeats itself"
    LOW_CONFIDENCE = "average log-probability below Whisper's limit"
    LEFT_OPEN = "a segment was left open although the audio ends inside the window"
    LOOPED_IN_FULL_WINDOW = "the text loops even in the full window"
    TAIL_UNCOVERED = "the decode ends well before the chunk does"
    SPEECH_AFTER_END = "VAD hears speech after where the decode stopped"
    NO_PROGRESS = "VAD hears speech, and the decode stopped before any text"
    QUIET_SPEECH = "VAD hears no speech in sound that Whisper hears some in (a whisper): decoded without VAD"
    NOTHING_HEARD = "neither VAD nor Whisper hears speech in the sound"
    COPIED_GLOSSARY = "the text copies the glossary's list: decoded again without it"


@dataclass(frozen=True)
class Decision:
    """What to do with a chunk after one decode, and why. ``at_s``: where (LISTEN, CONTINUE)."""

    action: Action
    reason: Reason
    at_s: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """The facts of one decode of one chunk (or of its rest), as the policy sees them.

    Attributes:
        tokens: Everything generated: text and timestamp tokens, without the prompt.
        timestamp_begin: The first timestamp token of the vocabulary.
        eot: The end-of-text token (tokens below it are text).
        text: The text of its text tokens.
        avg_logprob: Average log-probability of the tokens.
        no_speech_prob: Whisper's probability that the window holds no speech.
        window_frames: The encoder window the decode ran in.
        duration_s: Length of the audio decoded.
        covered_s: Where the last segment with text ends (0.0 with none).
        speech_from: VAD's answers so far: from this time to the end, is there speech?
        unfiltered: VAD found no speech in the chunk's file before (or was not asked: a file of one
            chunk), and the chunk is not silence (carevoice.engine.loudness): VAD alone does not
            silence it, as it would a whisper (issue 23).
    """

    tokens: tuple[int, ...]
    timestamp_begin: int
    eot: int
    text: str
    avg_logprob: float
    no_speech_prob: float
    window_frames: int
    duration_s: float
    covered_s: float
    speech_from: Mapping[float, bool] = field(default_factory=dict)
    unfiltered: bool = False
    copied_glossary: bool = False  # the text holds two of the glossary's terms as its prompt lists them (copies_glossary)

    @property
    def text_tokens(self) -> tuple[int, ...]:
        return tuple(t for t in self.tokens if t < self.eot)

    def heard(self, from_s: float, speech: bool) -> Outcome:
        """This outcome with VAD's answer for ``from_s`` added."""
        return Outcome(**{**self.__dict__, "speech_from": {**self.speech_from, from_s: speech}})


def decide(outcome: Outcome) -> Decision:
    """What follows one decode.

    In order: Whisper's no-speech rule (and, when Whisper doubts, VAD) says silence; in a short
    window anything that looks off (a loop, a repeated run, low confidence, a segment left open)
    widens to the full window, exactly as if the chunk had started there; a loop in the full
    window is decoded the safe way; a decode that stops while VAD still hears speech after it is
    continued from there, as faster-whisper's sequential loop does (or, when it stopped before any
    text, decoded the safe way: a continuation would repeat it exactly). Otherwise the decode stands.

    An unfiltered chunk (sound in a file where VAD found no speech) that VAD would silence, or that
    gave no text, is decoded the safe way instead, which uses no VAD, unless Whisper too says there
    is no speech (no-speech probability above NO_SPEECH_LIMIT).
    """
    o = outcome
    if o.no_speech_prob > NO_SPEECH_LIMIT and o.avg_logprob < LOGPROB_LIMIT:
        return Decision(Action.SILENT, Reason.NO_SPEECH)
    if o.copied_glossary:
        return Decision(Action.REDECODE, Reason.COPIED_GLOSSARY)
    if o.no_speech_prob > SUSPECT_NO_SPEECH:
        if 0.0 not in o.speech_from:
            return Decision(Action.LISTEN, Reason.DOUBTFUL_SILENCE, 0.0)
        if not o.speech_from[0.0]:
            return _unheard(o) or Decision(Action.SILENT, Reason.VAD_HEARS_NOTHING)
    text_tokens = o.text_tokens
    looped = looks_looped(o.text, len(text_tokens), o.duration_s)
    if o.window_frames < WINDOW_FRAMES:
        if looped:
            return Decision(Action.WIDEN, Reason.LOOPED)
        if repeats_itself(text_tokens):
            return Decision(Action.WIDEN, Reason.REPEATS)
        if o.avg_logprob < LOGPROB_LIMIT:
            return Decision(Action.WIDEN, Reason.LOW_CONFIDENCE)
        if left_open(o.tokens, o.timestamp_begin, o.eot):
            return Decision(Action.WIDEN, Reason.LEFT_OPEN)
    if looped:
        return Decision(Action.REDECODE, Reason.LOOPED_IN_FULL_WINDOW)
    if o.duration_s - o.covered_s >= UNCOVERED_TAIL_S:
        tail_s = o.covered_s + TAIL_MARGIN_S
        if tail_s not in o.speech_from:
            return Decision(Action.LISTEN, Reason.TAIL_UNCOVERED, tail_s)
        if o.speech_from[tail_s]:
            if o.covered_s <= 0.0:  # continuing from 0 would decode the same audio again, identically
                return Decision(Action.REDECODE, Reason.NO_PROGRESS)
            return Decision(Action.CONTINUE, Reason.SPEECH_AFTER_END, o.covered_s)
        if o.covered_s <= 0.0 and (unheard := _unheard(o)):
            return unheard
    return Decision(Action.KEEP, Reason.COMPLETE)


def _unheard(o: Outcome) -> Decision | None:
    """What follows for a chunk that VAD hears no speech in: None (silent, or no text) unless it is unfiltered."""
    if not o.unfiltered:
        return None
    if o.no_speech_prob > NO_SPEECH_LIMIT:
        return Decision(Action.SILENT, Reason.NOTHING_HEARD)
    return Decision(Action.REDECODE, Reason.QUIET_SPEECH)


def copies_glossary(text: str, glossary: Sequence[str]) -> bool:
    """Whether a decode copied its glossary instead of hearing it: two of its terms in a row, joined
    as the prompt joins them (``肾脏, 肾小球``). base on a Mandarin sentence primed with twelve terms wrote
    the list back, a term the speaker never said among them (benchmarks/glossary.py)."""
    return any(f"{a}, {b}" in text for a, b in itertools.pairwise(glossary))


def heard_without_vad(no_speech_prob: float) -> bool:
    """Whether a segment decoded without VAD, in sound VAD hears no speech in, may be kept.

    Whisper's own rule drops a segment only when it is also unsure of its words (log-probability
    below LOGPROB_LIMIT); with VAD already against it, Whisper's no-speech probability alone decides:
    tiny.en hears " You" in pink noise and mains hum with no-speech probabilities of 0.92-0.94 at
    log-probabilities of -0.92 to -0.98, and whispers in the corpus stay at 0.05-0.25.
    """
    return no_speech_prob <= NO_SPEECH_LIMIT


def needs_full_window(window_frames: int, language: str) -> bool:
    """True when a chunk decoded in a short window turns out to be in a language short windows
    are not proven for: it is decoded in the full window instead."""
    return window_frames < WINDOW_FRAMES and language not in SHORT_WINDOW_LANGUAGES


def prompted_windows_s(windows_s: tuple[float, ...], prompted: bool) -> tuple[float, ...]:
    """The encoder windows chunks may run in: with a prompt (a glossary's hot words) only Whisper's
    full window. Short windows were measured without a prompt; with a glossary, base said a 5.7 s
    English clip twice over in a 10 s window ("This is all very whisper to them This is all very
    whisper to them") and once in the full window, as faster-whisper does (benchmarks/glossary.py)."""
    return (WINDOW_FRAMES / FRAMES_PER_SECOND,) if prompted else windows_s


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


def max_tokens(window_frames: int) -> int:
    """Tokens a decode in this window may run to: a loop runs until the length limit and holds up
    its whole batch meanwhile; past this many it counts as a loop anyway (looks_looped)."""
    return math.ceil(window_frames / FRAMES_PER_SECOND * TOKENS_PER_SECOND_LIMIT)


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


def split_timestamped(
    tokens: Sequence[int], timestamp_begin: int, eot: int, duration_s: float
) -> list[tuple[float, float, list[int]]]:
    """Split Whisper output ``<|t0|> text <|t1|><|t1|> text <|t2|> ...`` into (start, end, text tokens).

    An opening timestamp starts a segment, a closing one ends it; text with no closing
    timestamp ends at ``duration_s`` (faster-whisper's own splitter drops it, and decodes it again
    from the next seek position; a chunk here is decoded once, so it must be kept). Times are
    clamped to the chunk.
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
