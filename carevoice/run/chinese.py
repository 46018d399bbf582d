"""Chinese script choice: convert the Chinese text of a Transcript to Traditional or Simplified (OpenCC).

Whisper has one code for written Chinese (``zh``) and writes whichever script it likes, often a mix; the
user picks one with ``--zh-script``. Only segment and word texts change: timestamps, probabilities and
segmentation never do. Imports only the shapes (``settings``, ``transcript``, ``errors``; OpenCC
lazily), so ``import carevoice.cli.app`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

from carevoice.errors import SetupError
from carevoice.settings import ZhScript
from carevoice.transcript import Segment, Transcript

OPENCC_CONFIGS: dict[ZhScript, str] = {ZhScript.TW: "s2twp", ZhScript.HK: "s2hk", ZhScript.SIMPLIFIED: "t2s"}

# Languages whose text is converted: Whisper only ever says "zh" or "yue", and the others are the
# Sinitic languages of the ISO 639 "zh" macrolanguage (Wu, Min, Hakka, Xiang, Gan, Jin, Classical), all
# written in Han characters, in case a model or --language names them. OpenCC leaves Latin letters
# (Min Nan's romanisation) alone. Japanese and Korean are never converted: kanji and hanja are not
# Chinese script variants.
CHINESE_LANGUAGES = frozenset(
    {"zh", "zho", "chi", "cmn", "yue", "wuu", "nan", "hak", "hsn", "gan", "cjy", "cdo", "cpx", "lzh"}
)

# The self-test sentence: phrase-level Taiwan conversions (软件, 内存, 视频) prove the dictionaries load.
SELF_TEST_INPUT = "我的软件在内存里，视频很好看。"
SELF_TEST_EXPECTED = "我的軟體在記憶體裡，影片很好看。"


def is_chinese(language: str) -> bool:
    """True for a Chinese language code (``zh``, ``yue``, ``zh-TW``, ``cmn``, …)."""
    return language.lower().replace("_", "-").split("-")[0] in CHINESE_LANGUAGES


@lru_cache(maxsize=None)
def _opencc(config: str) -> Callable[[str], str]:
    try:
        import opencc  # only for --zh-script tw/hk/simplified; a broken install is a SetupError

        return opencc.OpenCC(config).convert  # type: ignore[no-any-return]
    except Exception as exc:  # ImportError, or a broken native library or dictionary underneath
        raise SetupError(
            f"cannot load OpenCC for Chinese script conversion ({config}: {type(exc).__name__})",
            "reinstall it: pip install --force-reinstall opencc — or pass --zh-script keep",
        ) from None


def load_converter(script: ZhScript) -> Callable[[str], str] | None:
    """The text converter for a script choice (None for KEEP); loads OpenCC once per configuration.

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    config = OPENCC_CONFIGS.get(script)
    return None if config is None else _opencc(config)


def convert_text(text: str, script: ZhScript) -> str:
    """Convert one string to the script (unchanged for KEEP), whatever its language.

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    convert = load_converter(script)
    return text if convert is None else convert(text)


def _share(text: str, lengths: list[int]) -> list[str]:
    """Cut text into len(lengths) pieces of these lengths; the last piece takes what is left (or runs short)."""
    pieces: list[str] = []
    position = 0
    for length in lengths[:-1]:
        pieces.append(text[position : position + length])
        position += length
    pieces.append(text[position:])
    return pieces


def split_like(parts: list[str], converted: str, convert: Callable[[str], str]) -> list[str]:
    """Cut ``converted`` (the conversion of ``"".join(parts)``) into pieces that line up with parts.

    Whole-text conversion is what the segment text gets, so the words are cut from it: their
    joined text always equals it. Converting word by word would not: phrase conversions span
    tokens (软件 → 軟體 is one phrase; 软 → 軟, 件 → 件 alone). When the lengths agree, the cut is
    by character counts. When a phrase changed length (内存 → 記憶體), cuts stay only at word
    boundaries the conversion does not straddle, and the words between two such cuts share their
    converted text by character counts, the last one taking the difference (or coming up short).

    Args:
        parts: The texts before conversion, e.g. a segment's word texts.
        converted: ``convert("".join(parts))``.
        convert: The converter that produced ``converted``.

    Returns:
        One piece per part; ``"".join(pieces) == converted``.
    """
    if not parts:
        return []
    original = "".join(parts)
    lengths = [len(p) for p in parts]
    if len(converted) == len(original):
        return _share(converted, lengths)
    pieces: list[str] = []
    group: list[int] = []
    cut = position = 0
    for length in lengths[:-1]:
        position += length
        group.append(length)
        head = convert(original[:position])
        if len(head) >= cut and converted.startswith(head) and convert(original[position:]) == converted[len(head) :]:
            pieces.extend(_share(converted[cut : len(head)], group))
            group, cut = [], len(head)
    pieces.extend(_share(converted[cut:], group + [lengths[-1]]))
    return pieces


def _convert_segment(segment: Segment, convert: Callable[[str], str]) -> Segment:
    text = convert(segment.text)
    joined = "".join(w.text for w in segment.words)
    # Words normally spell the segment text exactly; when they do not, they stay consistent among themselves.
    converted_words = text if joined == segment.text else convert(joined)
    pieces = split_like([w.text for w in segment.words], converted_words, convert)
    return replace(segment, text=text, words=tuple(replace(w, text=p) for w, p in zip(segment.words, pieces)))


def convert_transcript(transcript: Transcript, script: ZhScript) -> Transcript:
    """Convert the Chinese segments of a transcript to the script, and record what was done.

    A segment is Chinese when its language (else the transcript's) is one of CHINESE_LANGUAGES;
    other segments, and every time, probability and id, stay as they are. The returned options
    say ``zh_script`` (what was asked for) and ``zh_conversion`` (the OpenCC configuration that
    was applied to at least one segment, else None).

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    convert = load_converter(script)
    segments: list[Segment] = []
    applied = False
    for segment in transcript.segments:
        if convert is not None and is_chinese(segment.language or transcript.language):
            segments.append(_convert_segment(segment, convert))
            applied = True
        else:
            segments.append(segment)
    options = {**transcript.options, "zh_script": script.value, "zh_conversion": OPENCC_CONFIGS[script] if applied else None}
    return replace(transcript, segments=tuple(segments), options=options)


def self_test() -> tuple[bool, str]:
    """Whether OpenCC loads and converts a known sentence to Taiwan Traditional correctly. Never raises.

    Returns:
        (ok, one line of detail for the user).
    """
    try:
        import opencc  # only for --zh-script tw/hk/simplified; a broken install is a SetupError

        version = getattr(opencc, "__version__", "?")
        result = opencc.OpenCC(OPENCC_CONFIGS[ZhScript.TW]).convert(SELF_TEST_INPUT)
    except Exception as exc:  # ImportError or a broken native library: report, do not raise
        return False, f"OpenCC unusable ({type(exc).__name__}); --zh-script tw/hk/simplified will not work"
    if result != SELF_TEST_EXPECTED:
        return False, f"OpenCC {version} s2twp gave {result!r}, expected {SELF_TEST_EXPECTED!r}"
    return True, f"OpenCC {version}: s2twp converts {SELF_TEST_INPUT!r} correctly"
