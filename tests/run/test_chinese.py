"""chinese.py: script conversion over a Transcript (text only, Chinese only, recorded in the JSON), its wiring
into settings, CLI and doctor, and a real run with the base model that writes Traditional Chinese."""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import jiwer
import pytest
from conftest import REPO_ROOT
from typer.testing import CliRunner

from carevoice.cli.app import app
from carevoice.run import chinese
from carevoice.run.chinese import (
    SELF_TEST_EXPECTED,
    ZhScript,
    convert_text,
    convert_transcript,
    is_chinese,
    self_test,
    split_like,
)
from carevoice.run.writers import RENDERERS, render_json
from carevoice.settings import DecodeSettings, OutputFormat
from carevoice.transcript import Segment, Transcript, Word

SAMPLE_JFK = REPO_ROOT / "carevoice" / "samples" / "jfk.flac"
CJK = re.compile(r"[\u3400-\u9fff]")


def make_segment(id_: int, start_s: float, words: list[str], language: str = "zh", text: str | None = None) -> Segment:
    """A segment whose words are 0.25 s apart, with distinct probabilities (so any change shows)."""
    timed = tuple(
        Word(round(start_s + 0.25 * i, 3), round(start_s + 0.25 * i + 0.2, 3), w, round(0.5 + 0.01 * i, 4))
        for i, w in enumerate(words)
    )
    return Segment(
        id=id_,
        start_s=start_s,
        end_s=timed[-1].end_s,
        text="".join(words) if text is None else text,
        avg_logprob=-0.25,
        no_speech_prob=0.01,
        compression_ratio=1.1,
        words=timed,
        language=language,
    )


def make_transcript(*segments: Segment, language: str = "zh") -> Transcript:
    return Transcript(language, 0.98, 10.0, segments, model="base", options={"model": "base", "zh_script": "keep"})


@pytest.fixture
def no_opencc(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """OpenCC cannot be imported (as when its wheel is missing); the converter cache is emptied around it."""
    chinese._opencc.cache_clear()
    monkeypatch.setitem(sys.modules, "opencc", None)
    yield
    chinese._opencc.cache_clear()


# --- the conversion over a Transcript --------------------------------------------------------


SIMPLIFIED_WORDS = ["我", "的", "软", "件", "在", "内", "存", "里。"]
TRADITIONAL_WORDS = ["我", "的", "軟", "件", "在", "內", "存", "裏。"]


@pytest.mark.parametrize(
    ("script", "words", "segment_text", "word_texts"),
    [
        # s2twp: 软件 -> 軟體 is one phrase across two words; 内存 -> 記憶體 adds a character.
        (ZhScript.TW, SIMPLIFIED_WORDS, "我的軟體在記憶體裡。", ["我", "的", "軟", "體", "在", "記", "憶體", "裡。"]),
        (ZhScript.HK, SIMPLIFIED_WORDS, "我的軟件在內存裏。", TRADITIONAL_WORDS),
        (ZhScript.SIMPLIFIED, TRADITIONAL_WORDS, "我的软件在内存里。", SIMPLIFIED_WORDS),
    ],
)
def test_conversion_changes_segment_and_word_texts_and_nothing_else(
    script: ZhScript, words: list[str], segment_text: str, word_texts: list[str]
) -> None:
    source = make_segment(0, 1.0, words)
    converted = convert_transcript(make_transcript(source), script)

    (segment,) = converted.segments
    assert segment.text == segment_text
    assert [w.text for w in segment.words] == word_texts
    assert "".join(w.text for w in segment.words) == segment.text
    # Times, probabilities, ids and segmentation are exactly the same objects' values as before.
    assert replace(segment, text=source.text, words=source.words) == source
    assert [(w.start_s, w.end_s, w.probability) for w in segment.words] == [
        (w.start_s, w.end_s, w.probability) for w in source.words
    ]
    assert (converted.language, converted.duration_s, converted.model) == ("zh", 10.0, "base")


def test_english_and_japanese_segments_in_the_same_transcript_are_untouched() -> None:
    # Both hold characters OpenCC would change: only the language gate keeps them as they are.
    english = make_segment(1, 3.0, ["The", " word", " 软件", " means", " software."], language="en")
    japanese = make_segment(2, 5.0, ["東京", "駅", "に", "行きます"], language="ja")
    chinese_segment = make_segment(0, 1.0, ["软", "體"], language="zh")  # mixed: every option changes it
    transcript = make_transcript(chinese_segment, english, japanese)

    for script in (ZhScript.TW, ZhScript.SIMPLIFIED):
        converted = convert_transcript(transcript, script)
        assert converted.segments[1:] == (english, japanese)
        assert converted.segments[0].text != chinese_segment.text


def test_segment_without_language_follows_the_transcript_language() -> None:
    segment = make_segment(0, 0.0, ["软", "件"], language="")

    assert convert_transcript(make_transcript(segment, language="yue"), ZhScript.TW).segments[0].text == "軟體"
    assert convert_transcript(make_transcript(segment, language="en"), ZhScript.TW).segments[0] == segment


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (ZhScript.KEEP, "佢哋喺香港买咗软件"),
        (ZhScript.TW, "佢哋喺香港買咗軟體"),
        (ZhScript.HK, "佢哋喺香港買咗軟件"),
        (ZhScript.SIMPLIFIED, "佢哋喺香港买咗软件"),
    ],
)
def test_cantonese_follows_the_option(script: ZhScript, expected: str) -> None:
    segment = make_segment(0, 0.0, ["佢哋", "喺", "香港", "买咗", "软件"], language="yue")

    converted = convert_transcript(make_transcript(segment, language="yue"), script).segments[0]

    assert converted.text == expected
    assert "".join(w.text for w in converted.words) == expected


def test_simplified_converts_traditional_cantonese() -> None:
    segment = make_segment(0, 0.0, ["佢哋", "喺", "香港", "買咗", "軟件"], language="yue")

    assert convert_transcript(make_transcript(segment), ZhScript.SIMPLIFIED).segments[0].text == "佢哋喺香港买咗软件"


def test_keep_changes_nothing_and_needs_no_opencc(no_opencc: None) -> None:
    transcript = make_transcript(make_segment(0, 0.0, ["软", "件"]))

    converted = convert_transcript(transcript, ZhScript.KEEP)

    assert converted.segments == transcript.segments
    assert converted.options["zh_conversion"] is None


def test_words_that_do_not_spell_the_segment_text_stay_consistent_among_themselves() -> None:
    segment = make_segment(0, 0.0, ["软", "件"], text=" 软件。")

    converted = convert_transcript(make_transcript(segment), ZhScript.TW).segments[0]

    assert converted.text == " 軟體。"
    assert [w.text for w in converted.words] == ["軟", "體"]


def test_language_codes() -> None:
    assert all(is_chinese(code) for code in ("zh", "ZH", "zh-TW", "zh_Hant", "yue", "cmn", "wuu", "nan"))
    assert not any(is_chinese(code) for code in ("ja", "ko", "en", "vi", ""))


# --- cutting a converted text over the words -------------------------------------------------


def test_whole_text_conversion_differs_from_word_by_word() -> None:
    """Why split_like exists: phrases span words."""
    assert convert_text("软", ZhScript.TW) + convert_text("件", ZhScript.TW) == "軟件"
    assert convert_text("软件", ZhScript.TW) == "軟體"


@pytest.mark.parametrize(
    ("parts", "converted_by", "expected"),
    [
        (["a", "b", "c"], {"ab": "XY"}, ["X", "Y", "c"]),  # same length: by character counts
        (["a", "b", "c"], {"ab": "XYZ"}, ["X", "YZ", "c"]),  # longer phrase: the last word of it takes the rest
        (["a", "b", "c"], {"ab": "X"}, ["X", "", "c"]),  # shorter phrase: a word comes up empty
        (["xa", "b", "c"], {"ab": "X"}, ["xX", "", "c"]),
        (["a", "bc", "d"], {"bcd": "Q"}, ["a", "Q", ""]),
        ([" a", "b"], {"ab": "XYZ"}, [" X", "YZ"]),  # spaces stay where they were
        ([], {}, []),
    ],
)
def test_split_like_cuts_at_boundaries_the_conversion_does_not_straddle(
    parts: list[str], converted_by: dict[str, str], expected: list[str]
) -> None:
    def convert(text: str) -> str:
        for old, new in converted_by.items():
            text = text.replace(old, new)
        return text

    pieces = split_like(parts, convert("".join(parts)), convert)

    assert pieces == expected
    assert "".join(pieces) == convert("".join(parts))


@pytest.mark.parametrize(
    "words",
    [
        ["我", "用", "U", "盘", "和", "鼠", "标", "看", "视", "频"],  # U盘 -> 隨身碟 (2 -> 3)
        ["他", "的", "内存", "不", "够"],
        [" 打印", "机", "在", "哪", "里", "?"],
        ["出", "租", "车", "司", "机"],
    ],
)
def test_split_like_with_opencc_keeps_words_and_text_consistent(words: list[str]) -> None:
    convert = chinese.load_converter(ZhScript.TW)
    assert convert is not None
    joined = "".join(words)

    pieces = split_like(words, convert(joined), convert)

    assert len(pieces) == len(words)
    assert "".join(pieces) == convert(joined)
    assert all(convert_text(p, ZhScript.TW) == p for p in pieces)  # every piece is already Taiwan Traditional


# --- what the outputs say ---------------------------------------------------------------------


def test_json_records_the_conversion_and_every_format_is_converted() -> None:
    transcript = make_transcript(make_segment(0, 0.0, ["我", "的", "软", "件"]), make_segment(1, 2.0, ["Hello"], language="en"))

    converted = convert_transcript(transcript, ZhScript.TW)
    record = json.loads(render_json(converted))

    assert record["options"]["zh_script"] == "tw"
    assert record["options"]["zh_conversion"] == "s2twp"
    assert record["options"]["model"] == "base"  # other options are kept
    assert transcript.options == {"model": "base", "zh_script": "keep"}  # the input's dict is not mutated
    assert record["segments"][0]["text"] == "我的軟體"
    assert [w["word"] for w in record["segments"][0]["words"]] == ["我", "的", "軟", "體"]
    assert record["text"] == "我的軟體 Hello"
    for fmt, render in RENDERERS.items():
        output = render(converted)
        assert "軟體" in output, fmt
        assert "软" not in output and "件" not in output, fmt


def test_json_says_no_conversion_when_no_segment_is_chinese() -> None:
    transcript = make_transcript(make_segment(0, 0.0, ["Hello", " 软件"], language="en"), language="en")

    record = json.loads(render_json(convert_transcript(transcript, ZhScript.TW)))

    assert record["options"]["zh_script"] == "tw"
    assert record["options"]["zh_conversion"] is None
    assert record["segments"][0]["text"] == "Hello 软件"


def test_the_script_is_a_text_option_so_a_rerun_redoes_files() -> None:
    auto, keep, tw = (DecodeSettings(**kw).text_options() for kw in ({}, {"zh_script": ZhScript.KEEP}, {"zh_script": ZhScript.TW}))

    assert (auto["zh_script"], keep["zh_script"], tw["zh_script"]) == ("auto", "keep", "tw")  # auto: the default
    assert len({tuple(o.items()) for o in (auto, keep, tw)}) == 3


# --- CLI, setup errors, doctor --------------------------------------------------------------------


def test_cli_rejects_an_unknown_script(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["transcribe", str(SAMPLE_JFK), "--zh-script", "klingon", "-o", str(tmp_path)])

    assert result.exit_code == 2
    assert "klingon" in result.stderr and "tw" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_help_names_the_options() -> None:
    result = CliRunner().invoke(app, ["transcribe", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "--zh-script" in result.stdout and "keep|tw|hk|simplified" in result.stdout


def test_missing_opencc_is_a_setup_error_before_the_model_loads(no_opencc: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["transcribe", str(SAMPLE_JFK), "-m", "tiny.en", "--zh-script", "tw", "-o", str(tmp_path)]
    )

    assert result.exit_code == 3
    assert "OpenCC" in result.stderr and "--zh-script keep" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_self_test_and_doctor_check() -> None:
    from carevoice.commands.doctor import CHECKS, CheckStatus, Context, check_opencc
    from carevoice.settings import DoctorSettings

    assert self_test()[0] is True
    result = check_opencc(Context(DoctorSettings()))
    assert result.status is CheckStatus.PASS
    assert check_opencc in [check for _, check in CHECKS]


def test_self_test_and_doctor_check_without_opencc(no_opencc: None) -> None:
    from carevoice.commands.doctor import CheckStatus, Context, check_opencc
    from carevoice.settings import DoctorSettings

    ok, detail = self_test()
    assert not ok and "OpenCC" in detail
    result = check_opencc(Context(DoctorSettings()))
    assert result.status is CheckStatus.FAIL and "opencc" in result.hint


def test_self_test_notices_wrong_conversions(monkeypatch: pytest.MonkeyPatch) -> None:
    import opencc

    class Broken:
        def __init__(self, config: str) -> None:
            pass

        def convert(self, text: str) -> str:
            return text  # dictionaries missing: nothing changes

    monkeypatch.setattr(opencc, "OpenCC", Broken)
    ok, detail = self_test()
    assert not ok and SELF_TEST_EXPECTED in detail


# --- a real run: base model, Mandarin clips, Traditional (Taiwan) output -------------------------------

CLIPS = ("funasr__asr_example.wav", "wenet__aishell-BAC009S0724W0121.wav")


def cer(references: list[str], hypotheses: list[str]) -> float:
    """Character error rate over all clips, punctuation and spaces removed."""

    def chars(text: str) -> str:
        return re.sub(r"[\W_]+", "", text)

    return jiwer.cer([chars(r) for r in references], [chars(h) or "∅" for h in hypotheses])


@pytest.fixture(scope="module")
def real_runs(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same clips transcribed twice into one folder: as the model writes them, then with --zh-script tw."""
    with open(corpus_dir / "manifest.tsv", encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    out = tmp_path_factory.mktemp("zh-out")
    clips = [corpus_dir / "clips" / name for name in CLIPS]
    common = ["transcribe", *map(str, clips), "-m", "base", "--language", "zh", "-f", "all", "-o", str(out), "--json", "-q"]
    runs: dict[str, object] = {"out": out, "references": [rows[name]["reference_text"] for name in CLIPS]}
    for script in ("keep", "tw"):
        result = CliRunner().invoke(app, [*common, "--zh-script", script], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        runs[script] = {
            "record": json.loads(result.stdout),
            "files": {
                (Path(name).stem, fmt): (out / f"{Path(name).stem}.{fmt.value}").read_text(encoding="utf-8")
                for name in CLIPS
                for fmt in OutputFormat
            },
        }
    return runs


@pytest.mark.slow
def test_real_run_redoes_the_files_when_the_script_changes(real_runs: dict) -> None:  # type: ignore[type-arg]
    for script in ("keep", "tw"):
        assert [f["status"] for f in real_runs[script]["record"]["files"]] == ["done"] * len(CLIPS), script
    for name in CLIPS:
        options = json.loads(real_runs["tw"]["files"][(Path(name).stem, OutputFormat.JSON)])["options"]
        assert (options["zh_script"], options["zh_conversion"]) == ("tw", "s2twp")


@pytest.mark.slow
def test_real_run_writes_only_traditional_characters(real_runs: dict) -> None:  # type: ignore[type-arg]
    s2t = chinese._opencc("s2t")
    # The model itself writes Simplified here, so a run without conversion would fail this test.
    assert any(s2t(text) != text for text in real_runs["keep"]["files"].values())
    checked = 0
    for (stem, fmt), text in real_runs["tw"]["files"].items():
        assert len(CJK.findall(text)) >= 8, (stem, fmt)
        assert s2t(text) == text, (stem, fmt)
        checked += 1
    assert checked == len(CLIPS) * len(OutputFormat)


@pytest.mark.slow
def test_real_run_conversion_loses_no_characters(real_runs: dict) -> None:  # type: ignore[type-arg]
    references = real_runs["references"]
    kept = [real_runs["keep"]["files"][(Path(n).stem, OutputFormat.TXT)] for n in CLIPS]
    converted = [real_runs["tw"]["files"][(Path(n).stem, OutputFormat.TXT)] for n in CLIPS]

    assert cer([convert_text(r, ZhScript.TW) for r in references], converted) <= cer(references, kept)


@pytest.mark.slow
def test_real_run_keeps_timestamps_and_segmentation(real_runs: dict) -> None:  # type: ignore[type-arg]
    for name in CLIPS:
        before = json.loads(real_runs["keep"]["files"][(Path(name).stem, OutputFormat.JSON)])
        after = json.loads(real_runs["tw"]["files"][(Path(name).stem, OutputFormat.JSON)])
        timing = lambda record: [  # noqa: E731
            (s["start"], s["end"], [(w["start"], w["end"], w["probability"]) for w in s["words"]]) for s in record["segments"]
        ]
        assert timing(after) == timing(before)
        assert [s["text"] for s in after["segments"]] == [convert_text(s["text"], ZhScript.TW) for s in before["segments"]]
        assert all("".join(w["word"] for w in s["words"]) == s["text"] for s in after["segments"])
