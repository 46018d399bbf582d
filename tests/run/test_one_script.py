"""One script per Chinese file (issue 23, section 2): the default never leaves Traditional and Simplified
characters mixed in one transcript, and a Chinese locale (zh_TW, zh_HK, zh_CN) chooses the script when
no option does. Doubles for the conversion and the CLI wiring; the base model on the corpus files that
came out mixed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import opencc
import pytest
from typer.testing import CliRunner

from carevoice.cli.app import app
from carevoice.run import chinese
from carevoice.run.chinese import AutoDecision, ScriptCounts, convert_transcript, count_scripts, decide_auto
from carevoice.settings import (
    COMMAND_LINE,
    DEFAULT,
    DEFAULT_SCRIPT_REASON,
    SAMPLE_PATH,
    Choice,
    DecodeSettings,
    ZhScript,
    choose_zh_script,
    locale_of,
)
from carevoice.transcript import Segment, Transcript, Word

HAN = re.compile(r"[\u3400-\u9fff]")
NO_LOCALE = {"LC_ALL": None, "LC_MESSAGES": None, "LANG": None}  # CliRunner removes variables set to None
TO_SIMPLIFIED, TO_TAIWAN, TO_HONG_KONG = (opencc.OpenCC(c).convert for c in ("t2s", "s2tw", "s2hk"))


def scripts_in(text: str) -> set[str]:
    """The scripts a text's Han characters are in, judged by OpenCC one character at a time: Traditional
    when t2s changes it, Simplified when neither Traditional standard (s2tw, s2hk) keeps it; 的, 台, 吃 are both."""
    found = set()
    for char in HAN.findall(text):
        if TO_SIMPLIFIED(char) != char:
            found.add("traditional")
        elif TO_TAIWAN(char) != char and TO_HONG_KONG(char) != char:
            found.add("simplified")
    return found


def segment(id_: int, start_s: float, words: list[str], language: str = "zh") -> Segment:
    timed = tuple(Word(start_s + 0.25 * i, start_s + 0.25 * i + 0.2, w, 0.9) for i, w in enumerate(words))
    return Segment(id_, start_s, timed[-1].end_s, "".join(words), -0.2, 0.01, 1.1, timed, language)


def transcript(*segments: Segment) -> Transcript:
    return Transcript("zh", 0.98, 10.0, segments, model="base", options={"model": "base"})


def text_of(converted: Transcript) -> str:
    assert all("".join(w.text for w in s.words) == s.text for s in converted.segments)  # words still spell the text
    return "".join(s.text for s in converted.segments)


# --- the decisions, as tables ----------------------------------------------------------------------------

TW_LANG = {"LANG": "zh_TW.UTF-8"}
DEFAULT_REASON = DEFAULT_SCRIPT_REASON


TOML = "/ward/carevoice.toml"


def said(value: str | None, source: str = COMMAND_LINE) -> Choice:
    return Choice(value, source if value is not None else DEFAULT)


@pytest.mark.parametrize(
    ("script", "language", "locale", "chosen", "reason"),
    [
        (said(None), said(None), {}, ZhScript.AUTO, DEFAULT_REASON),
        (said(None), said(None), TW_LANG, ZhScript.TW, "locale LANG=zh_TW.UTF-8"),
        (said(None), said(None), {"LANG": "zh_HK.Big5-HKSCS"}, ZhScript.HK, "locale LANG=zh_HK.Big5-HKSCS"),
        (said(None), said(None), {"LANG": "zh_MO.UTF-8"}, ZhScript.HK, "locale LANG=zh_MO.UTF-8"),
        (said(None), said(None), {"LANG": "zh_CN.GB18030"}, ZhScript.SIMPLIFIED, "locale LANG=zh_CN.GB18030"),
        (said(None), said(None), {"LANG": "zh_SG.UTF-8"}, ZhScript.SIMPLIFIED, "locale LANG=zh_SG.UTF-8"),
        (said(None), said(None), {"LANG": "zh_TW.UTF-8@stroke"}, ZhScript.TW, "locale LANG=zh_TW.UTF-8@stroke"),
        (said(None), said(None), {"LANG": "yue_HK.UTF-8"}, ZhScript.HK, "locale LANG=yue_HK.UTF-8"),
        # POSIX precedence: LC_ALL, then LC_MESSAGES, then LANG (locale_of leaves out an empty one).
        (said(None), said(None), {**TW_LANG, "LC_MESSAGES": "zh_CN.UTF-8"}, ZhScript.SIMPLIFIED, "locale LC_MESSAGES=zh_CN.UTF-8"),
        (said(None), said(None), {**TW_LANG, "LC_MESSAGES": "zh_CN.UTF-8", "LC_ALL": "zh_HK.UTF-8"}, ZhScript.HK, "locale LC_ALL=zh_HK.UTF-8"),
        (said(None), said(None), locale_of({**TW_LANG, "LC_ALL": ""}), ZhScript.TW, "locale LANG=zh_TW.UTF-8"),
        (said(None), said(None), {**TW_LANG, "LC_ALL": "C"}, ZhScript.AUTO, DEFAULT_REASON),
        (said(None), said(None), {"LANG": "en_US.UTF-8"}, ZhScript.AUTO, DEFAULT_REASON),
        (said(None), said(None), {"LANG": "zh"}, ZhScript.AUTO, DEFAULT_REASON),
        (said(None), said(None), {"LANG": "C.UTF-8"}, ZhScript.AUTO, DEFAULT_REASON),
        # A language tag, then --zh-script, win over the locale.
        (said(None), said("zh-CN"), TW_LANG, ZhScript.SIMPLIFIED, "--language zh-CN, command line"),
        (said(None), said("zh_Hant_HK"), {}, ZhScript.HK, "--language zh_Hant_HK, command line"),
        (said(None), said("zh"), TW_LANG, ZhScript.TW, "locale LANG=zh_TW.UTF-8"),  # a tag without a script says nothing
        (said(None), said("en"), TW_LANG, ZhScript.TW, "locale LANG=zh_TW.UTF-8"),
        (said("keep"), said(None), TW_LANG, ZhScript.KEEP, "command line"),
        (said("auto"), said("zh-TW"), TW_LANG, ZhScript.AUTO, "command line"),
        (said("simplified"), said("zh-TW"), {}, ZhScript.SIMPLIFIED, "command line"),
        # A folder's file: under what was said for the run (a -l tag included), over the locale.
        (said("simplified", TOML), said("zh-TW"), {}, ZhScript.TW, "--language zh-TW, command line"),
        (said("simplified", TOML), said("zh-TW", TOML), TW_LANG, ZhScript.SIMPLIFIED, TOML),
        (said(None), said("zh-HK", TOML), TW_LANG, ZhScript.HK, f"--language zh-HK, {TOML}"),
        (said("tw"), said("zh-CN", TOML), {}, ZhScript.TW, "command line"),
    ],
)
def test_the_script_choice(script: Choice, language: Choice, locale: dict[str, str], chosen: ZhScript, reason: str) -> None:
    choice = choose_zh_script(script, language, locale)

    assert (choice.value, choice.source) == (chosen.value, reason)


@pytest.mark.parametrize(
    ("text", "traditional", "simplified"),
    [
        ("", 0, 0),
        ("Hello, 的 OK", 0, 0),
        ("台灣吃飯", 2, 0),  # 灣 and 飯; 台 and 吃 are written alike (s2t changes them, s2tw and s2hk keep them)
        ("台湾吃饭", 0, 2),
        ("裡面里面", 1, 1),  # 里 is Simplified: both Traditional standards change it (裡, 裏)
        ("散文是剝据魅力的一种问题", 1, 4),
        ("着著", 0, 0),  # 着 is Hong Kong's, 著 Taiwan's: both Traditional, and t2s keeps 著
        ("若干文采", 0, 0),  # read in context: alone, 干 and 采 would count as Simplified (幹, 採)
        ("语言文采", 0, 1),
    ],
)
def test_counting_the_scripts(text: str, traditional: int, simplified: int) -> None:
    assert count_scripts(text) == ScriptCounts(traditional, simplified)


@pytest.mark.parametrize(
    ("traditional", "simplified", "config", "reason"),
    [
        (0, 0, None, "no character differs between the scripts"),
        (9, 0, None, "Traditional throughout"),
        (0, 9, None, "Simplified throughout"),
        (1, 4, "t2s", "1 Traditional and 4 Simplified characters: written in Simplified"),
        (17, 2, "s2tw", "17 Traditional and 2 Simplified characters: written in Traditional"),
        (3, 3, "t2s", "3 Traditional and 3 Simplified characters: written in Simplified"),  # a tie
    ],
)
def test_what_auto_does_with_a_file(traditional: int, simplified: int, config: str | None, reason: str) -> None:
    assert decide_auto(ScriptCounts(traditional, simplified)) == AutoDecision(config, reason)


# --- the default, on a transcript double --------------------------------------------------------------

# What base wrote for mfa__CH_814.wav: 剝 is Traditional, 据种问题语与构讲称 Simplified.
MOSTLY_SIMPLIFIED = (["散文", "是", "剝", "据", "魅力", "的", "一种", "问题"], ["因其", "在", "语言", "与", "构思", "上", "的", "讲求"])
# Mostly Traditional (養兩週賞), two Simplified characters (应该).
MOSTLY_TRADITIONAL = (["互相", "培養", "兩週", "一賞"], ["都", "应该", "即時"])


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (MOSTLY_SIMPLIFIED, "散文是剥据魅力的一种问题因其在语言与构思上的讲求"),
        (MOSTLY_TRADITIONAL, "互相培養兩週一賞都應該即時"),
    ],
)
def test_the_default_writes_a_mixed_transcript_in_one_script(lines: tuple[list[str], ...], expected: str) -> None:
    mixed = transcript(*(segment(i, 3.0 * i, words) for i, words in enumerate(lines)))
    assert scripts_in(text_of(mixed)) == {"traditional", "simplified"}

    converted = convert_transcript(mixed, DecodeSettings().zh_script)

    assert text_of(converted) == expected
    assert len(scripts_in(expected)) == 1
    assert [(w.start_s, w.end_s) for s in converted.segments for w in s.words] == [
        (w.start_s, w.end_s) for s in mixed.segments for w in s.words
    ]


@pytest.mark.parametrize(
    "words", [["我們", "在", "台灣", "吃", "飯", "，", "裡面", "很", "熱"], ["我们", "在", "台湾", "吃", "饭", "，", "里面", "很", "热"]]
)
def test_the_default_leaves_a_transcript_in_one_script_as_it_is(words: list[str]) -> None:
    single = transcript(segment(0, 0.0, words))

    converted = convert_transcript(single, DecodeSettings().zh_script)

    assert converted.segments == single.segments
    assert converted.options["zh_conversion"] is None


# --- the locale, through the command line (a stand-in engine: only the wiring is under test) ------------


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"LANG": "zh_TW.UTF-8"}, [], "tw"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_HK.UTF-8"}, [], "hk"),
        ({"LANG": "zh_TW.UTF-8", "LC_ALL": "zh_CN.GB18030"}, [], "simplified"),
        ({"LANG": "zh_TW.UTF-8"}, ["--zh-script", "keep"], "keep"),  # an explicit option wins
        ({"LANG": "zh_TW.UTF-8"}, ["-l", "zh-CN"], "simplified"),  # so does a language tag
    ],
)
def test_the_locale_chooses_the_script_when_no_option_does(
    env: dict[str, str], args: list[str], expected: str, fake_engines: list, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["transcribe", str(SAMPLE_PATH), "-m", "base", "-f", "json", "-o", str(tmp_path), "-q", *args], env={**NO_LOCALE, **env}
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "jfk.json").read_text(encoding="utf-8"))["options"]["zh_script"] == expected


def test_a_mixed_file_with_english_in_it_converts_only_its_chinese() -> None:
    english = segment(1, 3.0, ["The", " 软件", " word"], language="en")
    mixed = transcript(segment(0, 0.0, ["剝", "据", "种"]), english)

    converted = convert_transcript(mixed, ZhScript.AUTO)

    assert converted.segments[0].text == "剥据种" and converted.segments[1] == english
    assert (converted.options["zh_script"], converted.options["zh_conversion"]) == ("auto", "t2s")


def test_the_default_needs_opencc_and_says_so_before_the_model_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chinese._opencc.cache_clear()
    monkeypatch.setitem(sys.modules, "opencc", None)  # its wheel missing
    try:
        result = CliRunner().invoke(app, ["transcribe", str(SAMPLE_PATH), "-m", "tiny.en", "-o", str(tmp_path)], env=NO_LOCALE)
    finally:
        chinese._opencc.cache_clear()

    assert result.exit_code == 3
    assert "OpenCC" in result.stderr and "--zh-script keep" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- the base model on real recordings ---------------------------------------------------------------------

# Under the old default (keep) base wrote these mixing both scripts (issue 23).
MIXED_CLIPS = ("mfa__CH_814.wav", "sherpa__paraformer-zh-2025-10-07_12.wav")


@pytest.mark.slow
def test_the_corpus_files_that_came_out_mixed_are_in_one_script(corpus_dir: Path, tmp_path: Path) -> None:
    clips = [str(corpus_dir / "clips" / name) for name in MIXED_CLIPS]
    result = CliRunner().invoke(app, ["transcribe", *clips, "-m", "base", "-f", "txt", "-o", str(tmp_path), "-q"], env=NO_LOCALE)

    assert result.exit_code == 0, result.stderr
    for name in MIXED_CLIPS:
        text = (tmp_path / f"{Path(name).stem}.txt").read_text(encoding="utf-8")
        assert len(HAN.findall(text)) >= 20, name
        assert len(scripts_in(text)) == 1, name


@pytest.mark.slow
def test_a_taiwan_locale_writes_traditional_chinese(corpus_dir: Path, tmp_path: Path) -> None:
    clip = corpus_dir / "clips" / "funasr__asr_example.wav"  # base writes it in Simplified
    result = CliRunner().invoke(
        app, ["transcribe", str(clip), "-m", "base", "-f", "txt,json", "-o", str(tmp_path), "-q"], env={**NO_LOCALE, "LANG": "zh_TW.UTF-8"}
    )

    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "funasr__asr_example.txt").read_text(encoding="utf-8")
    assert len(HAN.findall(text)) >= 8
    assert scripts_in(text) == {"traditional"}
    options = json.loads((tmp_path / "funasr__asr_example.json").read_text(encoding="utf-8"))["options"]
    assert (options["zh_script"], options["zh_conversion"]) == ("tw", "s2twp")
