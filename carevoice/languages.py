"""What ``--language`` may say: Whisper's codes, language names, and BCP-47 tags, resolved to the
code Whisper knows (and, for Chinese tags, the script to write) before any work starts.

``zh-TW`` and ``zh-Hant`` mean Mandarin written in Traditional characters (``zh`` with
``--zh-script tw``), ``zh-HK`` Hong Kong's (``hk``), ``zh-CN`` / ``zh-Hans`` Simplified; any
other tag is reduced to its language (``en-US`` → ``en``, ``yue-HK`` → ``yue``). Anything else is
a usage error naming the closest valid codes. The table is Whisper's own (checked against
faster-whisper's in tests/test_languages.py); this module imports no inference library.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from carevoice.errors import UsageError

# Whisper's languages: code -> name (openai/whisper tokenizer.py, the multilingual models' list).
LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip

# Other names and codes people use for those languages: Whisper's own aliases, the ISO 639 codes
# that differ from Whisper's (jv, nb, fil, cmn, the withdrawn iw/in/ji), and a few common names.
ALIASES: dict[str, str] = {
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
    "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
    "castilian": "es", "mandarin": "zh", "jv": "jw", "nb": "no", "bokmal": "no", "bokmål": "no",
    "fil": "tl", "filipino": "tl", "cmn": "zh", "iw": "he", "in": "id", "ji": "yi", "farsi": "fa",
}  # fmt: skip

# Chinese BCP-47 subtags -> the script to write (carevoice.run.chinese): the script subtag decides
# Traditional or Simplified, the region which Traditional variant (or, without a script, both).
# Values of settings.ZhScript (this module imports nothing above errors: settings uses it).
TW, HK, SIMPLIFIED = "tw", "hk", "simplified"
HONG_KONG_REGIONS = frozenset({"hk", "mo"})
REGION_SCRIPTS: dict[str, str] = {"tw": TW, "hk": HK, "mo": HK, "cn": SIMPLIFIED, "sg": SIMPLIFIED, "my": SIMPLIFIED}


def chinese_script(subtags: list[str]) -> str | None:
    """The script a Chinese tag's subtags ask for: ``Hant-HK`` → hk, ``Hant`` → tw, ``Hans`` or ``CN`` → simplified."""
    hong_kong = any(s in HONG_KONG_REGIONS for s in subtags)
    if "hans" in subtags:
        return SIMPLIFIED
    if "hant" in subtags:
        return HK if hong_kong else TW
    return next((REGION_SCRIPTS[s] for s in subtags if s in REGION_SCRIPTS), None)


def locale_chinese_script(locale: str) -> str | None:
    """The script a POSIX locale's Chinese territory asks for: ``zh_TW.UTF-8`` → tw, ``zh_HK`` → hk,
    ``zh_CN`` / ``zh_SG`` → simplified; None for a bare ``zh``, another language, ``C`` or ``POSIX``."""
    name = locale.split(".")[0].split("@")[0].lower().replace("_", "-")
    primary, *subtags = name.split("-")
    return chinese_script(subtags) if primary in {"zh", "yue"} else None


@dataclass(frozen=True)
class LanguageChoice:
    """What ``--language`` resolved to.

    Attributes:
        code: Whisper's language code.
        given: What the user typed.
        zh_script: The script a Chinese tag asks for (``zh-TW`` → ``"tw"``, a settings.ZhScript value), else None.
    """

    code: str
    given: str
    zh_script: str | None = None

    @property
    def translated(self) -> bool:
        """True when the code is not what was typed (so the run header should say what was chosen)."""
        return self.code != self.given or self.zh_script is not None


def resolve_language(text: str) -> LanguageChoice:
    """Resolve a ``--language`` value (case-insensitive; ``_`` is read as ``-``).

    Raises:
        UsageError: not a language Whisper knows, with the closest valid codes.
    """
    given = text.strip()
    tag = given.lower().replace("_", "-")
    if tag in LANGUAGES:
        return LanguageChoice(tag, given)
    named = _code_of(tag)
    if named is not None:
        return LanguageChoice(named, given)
    primary, *subtags = tag.split("-")
    code = primary if primary in LANGUAGES else ALIASES.get(primary)
    if code is not None and subtags and all(s.isalnum() for s in subtags):
        return LanguageChoice(code, given, chinese_script(subtags) if code == "zh" else None)
    raise UsageError(
        f"--language {given!r} is not a language Whisper knows",
        f"did you mean {', '.join(closest_codes(tag))}? Use a code such as en, zh, yue, de, a name such as "
        "english or mandarin, or a tag such as zh-TW",
    )


def _code_of(name: str) -> str | None:
    for code, known in LANGUAGES.items():
        if name == known:
            return code
    return ALIASES.get(name)


def closest_codes(text: str, count: int = 3) -> list[str]:
    """The valid codes nearest to what was typed (by code, or by language name)."""
    names = {name: code for code, name in LANGUAGES.items()} | {alias: code for alias, code in ALIASES.items() if len(alias) > 3}
    candidates = difflib.get_close_matches(text, [*LANGUAGES, *names], n=count * 2, cutoff=0.5)
    codes = list(dict.fromkeys(names.get(c, c) for c in candidates))[:count]
    return [f"{code} ({LANGUAGES[code]})" for code in codes] or ["en (english)", "zh (chinese)", "yue (cantonese)"]
