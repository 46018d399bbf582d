"""Chinese script choice: convert the Chinese text of a Transcript to Traditional or Simplified (OpenCC).

Whisper has one code for written Chinese (``zh``) and writes whichever script it likes, sometimes both
in one file; ``--zh-script`` picks one, and its default ``auto`` writes each file in the script most of
its Chinese characters are in. Only segment and word texts change: timestamps, probabilities and
segmentation never do. Imports only the shapes (``settings``, ``transcript``, ``errors``; OpenCC
lazily), so ``import carevoice.cli.app`` stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

from carevoice.errors import SetupError
from carevoice.settings import ZhScript
from carevoice.transcript import Segment, Transcript

OPENCC_CONFIGS: dict[ZhScript, str] = {ZhScript.TW: "s2twp", ZhScript.HK: "s2hk", ZhScript.SIMPLIFIED: "t2s"}

# --zh-script auto. A character is Traditional when t2s changes it (裡, 於, 兩), Simplified when
# neither Traditional standard keeps it (s2tw and s2hk both change it: 据, 种, 里); the rest are
# written alike in both (的, and 台, 吃, 着, which one standard keeps although s2t changes them).
# Each is judged in its text, so that phrases both scripts share (若干, 文采, 皇后) count as neither.
# A mixed file becomes Traditional with Taiwan's characters and no phrase changes (s2tw: the
# Traditional the model writes), or Simplified (t2s).
TRADITIONAL_TEST, SIMPLIFIED_TESTS = "t2s", ("s2tw", "s2hk")
AUTO_TRADITIONAL, AUTO_SIMPLIFIED = "s2tw", "t2s"
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # CJK unified ideographs, extension A, compatibility

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


@cache
def _opencc(config: str) -> Callable[[str], str]:
    try:
        import opencc  # only for --zh-script auto/tw/hk/simplified; a broken install is a SetupError

        return opencc.OpenCC(config).convert  # type: ignore[no-any-return]
    except Exception as exc:  # ImportError, or a broken native library or dictionary underneath
        raise SetupError(
            f"cannot load OpenCC for Chinese script conversion ({config}: {type(exc).__name__})",
            "reinstall it: pip install --force-reinstall opencc — or pass --zh-script keep",
        ) from None


def load_converter(script: ZhScript) -> Callable[[str], str] | None:
    """The text converter for a script choice: None for KEEP, and for AUTO, which chooses one per file
    (but loads every configuration it may use, so that a broken OpenCC fails before any work). Loads
    OpenCC once per configuration.

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    if script is ZhScript.AUTO:
        for config in (TRADITIONAL_TEST, *SIMPLIFIED_TESTS, AUTO_TRADITIONAL, AUTO_SIMPLIFIED):
            _opencc(config)
        return None
    config = OPENCC_CONFIGS.get(script)
    return None if config is None else _opencc(config)


@dataclass(frozen=True)
class ScriptCounts:
    """How many Han characters of a text only Traditional writes, and how many only Simplified writes."""

    traditional: int
    simplified: int


def _changed_by(config: str, text: str) -> list[bool]:
    """Which characters of the text a conversion changes, read in context (its phrases: 若干, 文采 stay)."""
    converted = _opencc(config)(text)
    if len(converted) != len(text):  # a phrase changed length: judge each character alone
        return [_opencc(config)(char) != char for char in text]
    return [before != after for before, after in zip(text, converted)]


def count_scripts(text: str) -> ScriptCounts:
    """Count the text's Traditional and Simplified Han characters (see TRADITIONAL_TEST, SIMPLIFIED_TESTS).

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    traditional = _changed_by(TRADITIONAL_TEST, text)
    not_kept = [_changed_by(config, text) for config in SIMPLIFIED_TESTS]
    counts = {"traditional": 0, "simplified": 0}
    for i, char in enumerate(text):
        if HAN.fullmatch(char) is None:
            continue
        if traditional[i]:
            counts["traditional"] += 1
        elif all(changed[i] for changed in not_kept):
            counts["simplified"] += 1
    return ScriptCounts(**counts)


@dataclass(frozen=True)
class AutoDecision:
    """What ``--zh-script auto`` does with one file: the OpenCC configuration to apply (None: none), and why."""

    config: str | None
    reason: str


def decide_auto(counts: ScriptCounts) -> AutoDecision:
    """One script per file: a file in one script stays as it is; a file that mixes both is converted
    to the script most of its characters are in, Simplified on a tie (as the model's ``zh`` mostly is)."""
    if counts.traditional == 0 and counts.simplified == 0:
        return AutoDecision(None, "no character differs between the scripts")
    if counts.simplified == 0:
        return AutoDecision(None, "Traditional throughout")
    if counts.traditional == 0:
        return AutoDecision(None, "Simplified throughout")
    mix = f"{counts.traditional} Traditional and {counts.simplified} Simplified characters"
    if counts.traditional > counts.simplified:
        return AutoDecision(AUTO_TRADITIONAL, f"{mix}: written in Traditional")
    return AutoDecision(AUTO_SIMPLIFIED, f"{mix}: written in Simplified")


def _config_for(text: str, script: ZhScript) -> str | None:
    """The OpenCC configuration a text gets: the script's own, or for AUTO the one decided from the text."""
    if script is ZhScript.AUTO:
        return decide_auto(count_scripts(text)).config
    return OPENCC_CONFIGS.get(script)


def convert_text(text: str, script: ZhScript) -> str:
    """Convert one string to the script (unchanged for KEEP; for AUTO, judged on this string alone), whatever its language.

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    config = _config_for(text, script)
    return text if config is None else _opencc(config)(text)


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
    other segments, and every time, probability and id, stay as they are. For AUTO, the script is
    decided from all the Chinese segments together (decide_auto), so the whole file ends in one.
    The returned options say ``zh_script`` (what was asked for) and ``zh_conversion`` (the OpenCC
    configuration that was applied to at least one segment, else None).

    Raises:
        SetupError: OpenCC cannot be imported or loaded.
    """
    chinese = [is_chinese(segment.language or transcript.language) for segment in transcript.segments]
    config = _config_for("".join(s.text for s, zh in zip(transcript.segments, chinese) if zh), script) if any(chinese) else None
    convert = None if config is None else _opencc(config)
    segments = tuple(
        _convert_segment(segment, convert) if convert is not None and zh else segment for segment, zh in zip(transcript.segments, chinese)
    )
    options = {**transcript.options, "zh_script": script.value, "zh_conversion": config}
    return replace(transcript, segments=segments, options=options)


def self_test() -> tuple[bool, str]:
    """Whether OpenCC loads and converts a known sentence to Taiwan Traditional correctly. Never raises.

    Returns:
        (ok, one line of detail for the user).
    """
    try:
        import opencc  # only for --zh-script auto/tw/hk/simplified; a broken install is a SetupError

        version = getattr(opencc, "__version__", "?")
        result = opencc.OpenCC(OPENCC_CONFIGS[ZhScript.TW]).convert(SELF_TEST_INPUT)
    except Exception as exc:  # ImportError or a broken native library: report, do not raise
        return False, f"OpenCC unusable ({type(exc).__name__}); Chinese transcripts need it unless run with --zh-script keep"
    if result != SELF_TEST_EXPECTED:
        return False, f"OpenCC {version} s2twp gave {result!r}, expected {SELF_TEST_EXPECTED!r}"
    return True, f"OpenCC {version}: s2twp converts {SELF_TEST_INPUT!r} correctly"
