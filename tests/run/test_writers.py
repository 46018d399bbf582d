"""writers.py: the pure renderers on hand-built transcripts (whole outputs), subtitle limits, and
the atomic, resumable writing of outputs."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from carevoice import __version__
from carevoice.files import rename_noreplace
from carevoice.run import writers
from carevoice.run.planning import output_state
from carevoice.run.records import Provenance, read_record
from carevoice.run.rules import IN_THE_WAY_HINT, OutputState
from carevoice.run.writers import (
    RENDERERS,
    TEMP_SUFFIX,
    atomic_write,
    conflict_name,
    format_timestamp,
    remove_stale_temp_files,
    render_json,
    render_srt,
    render_tsv,
    render_txt,
    render_vtt,
    subtitle_cues,
    to_ms,
    transcript_from_json,
    write_outputs,
)
from carevoice.settings import DEFAULT_FORMATS as DEFAULT
from carevoice.settings import OutputFormat
from carevoice.transcript import Segment, Transcript, Word

TEXT = {"task": "transcribe", "language": None, "beam_size": 5, "zh_script": "keep"}
PROVENANCE = Provenance("run-1", "tiny.en", "m1", 1, TEXT, None, True)
ALL = tuple(OutputFormat)
# The subtitle limits from the issue, written here rather than imported: a test must not move with the code.
MAX_CUE_MS = 7000
MAX_CUE_CHARS = 84


def word(start_s: float, end_s: float, text: str) -> Word:
    return Word(start_s, end_s, text, 0.9)


def segment(start_s: float, end_s: float, text: str, words: tuple[Word, ...] = (), id: int = 0) -> Segment:
    return Segment(id, start_s, end_s, text, avg_logprob=-0.25, no_speech_prob=0.01, compression_ratio=1.2, words=words, language="en")


def transcript(*segments: Segment, language: str = "en", duration_s: float = 20.0) -> Transcript:
    return Transcript(language, 0.97, duration_s, tuple(segments), model="tiny.en", options={"beam_size": 5})


TWO_SHORT = transcript(
    segment(0.0, 2.5, " Hello there.", (word(0.0, 0.5, " Hello"), word(0.6, 2.5, " there."))),
    segment(3.0, 4.0, " Bye.", (word(3.0, 4.0, " Bye."),), id=1),
)
# Twelve 0.9 s words, one per second: 11.9 s of speech in one segment.
LONG_BY_TIME = transcript(
    segment(0.0, 11.9, " " + " ".join(f"w{i}" for i in range(12)), tuple(word(i, i + 0.9, f" w{i}") for i in range(12)))
)
# Twenty 6-character words in 6 s: 139 characters in one segment.
LONG_BY_CHARS = transcript(
    segment(
        0.0,
        6.0,
        "".join(f" word{i:02d}" for i in range(20)),
        tuple(word(0.3 * i, 0.3 * i + 0.3, f" word{i:02d}") for i in range(20)),
    )
)
# 48 characters over 20 s and no word timings: at most 16.8 characters fit in 7 s.
LONG_NO_WORDS = transcript(segment(0.0, 20.0, " one two three four five six seven eight nine ten"))
# 169 characters, short and long tokens mixed: an even split by token count would overflow 84.
MIXED_NO_WORDS = transcript(segment(0.0, 6.0, " " + " ".join(["a"] * 10 + ["abcdefghijklmn"] * 10)))
CJK_SENTENCE = "欢迎大家来体验达摩院推出的语音识别模型"  # 19 characters, no spaces
# 38 characters over 12 s, no spaces and no word timings: split between characters.
CJK_NO_WORDS = transcript(segment(0.0, 12.0, CJK_SENTENCE * 2), language="zh")
# One character per 0.4 s word: 7.6 s, split at 7 s and joined without spaces.
CJK_WORDS = transcript(
    segment(0.0, 7.6, CJK_SENTENCE, tuple(word(0.4 * i, 0.4 * i + 0.4, ch) for i, ch in enumerate(CJK_SENTENCE))),
    language="zh",
)
EMPTY = transcript(duration_s=3.0)
SILENT_SEGMENT = transcript(segment(0.0, 1.0, "  "))


# --- whole outputs ------------------------------------------------------------------------------


def test_srt_and_vtt_of_two_short_segments() -> None:
    assert render_srt(TWO_SHORT) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nBye.\n"
    )
    assert render_vtt(TWO_SHORT) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:03.000 --> 00:00:04.000\nBye.\n"
    )


def test_txt_and_tsv_of_two_short_segments() -> None:
    assert render_txt(TWO_SHORT) == "Hello there.\nBye.\n"
    assert render_tsv(TWO_SHORT) == "start\tend\ttext\n0\t2500\tHello there.\n3000\t4000\tBye.\n"


def test_tsv_fields_never_hold_tabs_or_newlines() -> None:
    messy = transcript(segment(1.0, 2.0, " one\ttwo\nthree  four "))
    assert render_tsv(messy) == "start\tend\ttext\n1000\t2000\tone two three four\n"


def test_long_segment_with_words_splits_at_seven_seconds() -> None:
    assert render_srt(LONG_BY_TIME) == (
        "1\n00:00:00,000 --> 00:00:06,900\nw0 w1 w2 w3 w4 w5 w6\n\n"
        "2\n00:00:07,000 --> 00:00:11,900\nw7 w8 w9 w10 w11\n"
    )


def test_long_segment_with_words_splits_at_84_characters_and_wraps_in_two_lines() -> None:
    assert render_srt(LONG_BY_CHARS) == (
        "1\n00:00:00,000 --> 00:00:03,600\n"
        "word00 word01 word02 word03 word04 word05\nword06 word07 word08 word09 word10 word11\n\n"
        "2\n00:00:03,600 --> 00:00:06,000\n"
        "word12 word13 word14 word15\nword16 word17 word18 word19\n"
    )


def test_long_segment_without_words_fills_cues_up_to_seven_seconds() -> None:
    # 20 s / 48 characters = 416.7 ms per character; a separator's time belongs to the cue before it.
    assert render_srt(LONG_NO_WORDS) == (
        "1\n00:00:00,000 --> 00:00:05,833\none two three\n\n"
        "2\n00:00:05,833 --> 00:00:11,667\nfour five six\n\n"
        "3\n00:00:11,667 --> 00:00:16,667\nseven eight\n\n"
        "4\n00:00:16,667 --> 00:00:20,000\nnine ten\n"
    )


def test_segment_without_words_never_exceeds_84_characters_whatever_its_token_lengths() -> None:
    long = "abcdefghijklmn"
    assert render_srt(MIXED_NO_WORDS) == (
        "1\n00:00:00,000 --> 00:00:02,840\n"
        f"a a a a a a a a a a {long}\n{long} {long} {long}\n\n"
        "2\n00:00:02,840 --> 00:00:05,503\n"
        f"{long} {long} {long}\n{long} {long}\n\n"
        "3\n00:00:05,503 --> 00:00:06,000\n"
        f"{long}\n"
    )


def test_cjk_without_words_splits_between_characters() -> None:
    text = CJK_SENTENCE * 2
    # 12 s / 38 characters = 315.8 ms per character: 22 characters fit in 7 s.
    assert render_srt(CJK_NO_WORDS) == (
        f"1\n00:00:00,000 --> 00:00:06,947\n{text[:22]}\n\n"
        f"2\n00:00:06,947 --> 00:00:12,000\n{text[22:]}\n"
    )


def test_cjk_words_are_joined_without_spaces() -> None:
    assert render_vtt(CJK_WORDS) == (
        "WEBVTT\n\n"
        f"00:00:00.000 --> 00:00:06.800\n{CJK_SENTENCE[:17]}\n\n"
        f"00:00:06.800 --> 00:00:07.600\n{CJK_SENTENCE[17:]}\n"
    )
    assert render_txt(CJK_WORDS) == CJK_SENTENCE + "\n"


@pytest.mark.parametrize("with_words", [True, False], ids=["word", "no-words"])
def test_one_word_longer_than_seven_seconds_is_cut_not_split_into_letters(with_words: bool) -> None:
    words = (word(0.0, 9.0, " Hmm."),) if with_words else ()
    assert render_srt(transcript(segment(0.0, 9.0, " Hmm.", words))) == "1\n00:00:00,000 --> 00:00:07,000\nHmm.\n"


@pytest.mark.parametrize("empty", [EMPTY, SILENT_SEGMENT], ids=["no-segments", "blank-segment"])
def test_empty_transcript(empty: Transcript) -> None:
    assert render_srt(empty) == ""
    assert render_vtt(empty) == "WEBVTT\n\n"
    assert render_txt(empty) == ""
    assert render_tsv(empty) == "start\tend\ttext\n"
    assert list(srt.parse(render_srt(empty))) == []
    assert webvtt.from_string(render_vtt(empty)).captions == []


def test_json_holds_everything_and_keeps_cjk_readable() -> None:
    rendered = render_json(CJK_WORDS)
    assert CJK_SENTENCE in rendered  # ensure_ascii=False: no \\u escapes
    data = json.loads(rendered)
    assert data == {
        "language": "zh",
        "language_probability": 0.97,
        "duration": 20.0,
        "speech_detected": True,
        "text": CJK_SENTENCE,
        "segments": [
            {
                "id": 0,
                "start": 0.0,
                "end": 7.6,
                "text": CJK_SENTENCE,
                "avg_logprob": -0.25,
                "no_speech_prob": 0.01,
                "compression_ratio": 1.2,
                "language": "en",
                "words": [
                    {"start": w.start_s, "end": w.end_s, "word": w.text, "probability": 0.9} for w in CJK_WORDS.segments[0].words
                ],
            }
        ],
        "model": "tiny.en",
        "options": {"beam_size": 5},
        "carevoice_version": __version__,
    }


def test_json_of_empty_transcript() -> None:
    data = json.loads(render_json(EMPTY))
    assert (data["text"], data["segments"], data["duration"]) == ("", [], 3.0)


def test_timestamps_always_have_hours_and_come_from_integer_milliseconds() -> None:
    assert format_timestamp(3_723_456, ",") == "01:02:03,456"
    assert format_timestamp(0, ".") == "00:00:00.000"
    assert format_timestamp(100 * 3_600_000, ",") == "100:00:00,000"
    assert [to_ms(s) for s in (1.2345, 2.0006, -0.2)] == [1234, 2001, 0]


# --- subtitle limits, for every hand-built case ----------------------------------------------------

CASES = {
    "two-short": TWO_SHORT,
    "long-by-time": LONG_BY_TIME,
    "long-by-chars": LONG_BY_CHARS,
    "long-no-words": LONG_NO_WORDS,
    "mixed-no-words": MIXED_NO_WORDS,
    "cjk-no-words": CJK_NO_WORDS,
    "cjk-words": CJK_WORDS,
    # One word that the aligner stretched over 9 s, and a gapless segment longer than 7 s.
    "long-single-word": transcript(segment(0.0, 9.0, " Hmm.", (word(0.0, 9.0, " Hmm."),))),
    "long-single-token": transcript(segment(0.0, 9.0, " Hmm.")),
}


def assert_cues_within_limits(starts_ms: list[int], ends_ms: list[int], texts: list[str]) -> None:
    assert texts, "no cues to check"
    for start, end, text in zip(starts_ms, ends_ms, texts):
        assert 0 <= start < end <= start + MAX_CUE_MS
        assert 0 < len(text.replace("\n", " ")) <= MAX_CUE_CHARS
        assert text.count("\n") <= 1
    assert starts_ms == sorted(starts_ms)
    assert all(end <= following for end, following in zip(ends_ms, starts_ms[1:]))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_srt_parses_and_obeys_cue_limits(case: Transcript) -> None:
    cues = list(srt.parse(render_srt(case)))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert_cues_within_limits(
        [c.start // timedelta(milliseconds=1) for c in cues],
        [c.end // timedelta(milliseconds=1) for c in cues],
        [c.content for c in cues],
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_vtt_parses_and_obeys_cue_limits(case: Transcript) -> None:
    rendered = render_vtt(case)
    captions = webvtt.from_string(rendered).captions
    timing_lines = [line for line in rendered.splitlines() if "-->" in line]
    assert len(timing_lines) == len(captions) and not any("," in line for line in timing_lines)
    assert_cues_within_limits(
        [c.start_time.in_milliseconds() for c in captions],
        [c.end_time.in_milliseconds() for c in captions],
        [c.text for c in captions],
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cues_keep_every_character(case: Transcript) -> None:
    def squeeze(text: str) -> str:
        return "".join(text.split())

    assert squeeze("".join(c.text for c in subtitle_cues(case))) == squeeze(case.text)


# --- atomic writing -------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_atomic_write_creates_an_ordinary_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write(target, b"hello\n")
    assert target.read_bytes() == b"hello\n"
    mask = os.umask(0o022)
    os.umask(mask)
    assert writers.current_umask() == mask
    assert target.stat().st_mode & 0o777 == writers.file_mode() == 0o666 & ~mask
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["disk-full", "ctrl-c"])
def test_atomic_write_failure_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old complete text\n")

    def fail(*args: object) -> None:
        raise failure

    monkeypatch.setattr(writers.os, "replace", fail)
    with pytest.raises(type(failure)):
        atomic_write(target, b"new text that never lands\n")
    assert target.read_bytes() == b"old complete text\n"
    assert leftovers(tmp_path) == []


def state(stem: Path, fmt: OutputFormat) -> OutputState:
    return output_state(stem, fmt, read_record(stem))


def test_write_outputs_writes_every_format_and_a_complete_record(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    written = write_outputs(stem, ALL, TWO_SHORT, PROVENANCE).outputs
    assert written == tuple(tmp_path / f"visit.{f.value}" for f in ALL)
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8") == "Hello there.\nBye.\n"
    assert (tmp_path / "visit.srt").read_text(encoding="utf-8") == render_srt(TWO_SHORT)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".visit.carevoice.json", *(p.name for p in written)])
    record = read_record(stem)
    assert record is not None and record.complete and (record.model, record.text, record.run_id) == ("tiny.en", TEXT, "run-1")
    for fmt in ALL:
        entry = record.outputs[fmt.value]
        assert entry.identity is not None and entry.identity.same_stat(os.stat(tmp_path / f"visit.{fmt.value}"))
        assert state(stem, fmt) is OutputState.OURS


def test_a_json_output_gives_back_the_transcript_it_was_rendered_from() -> None:
    for case in (TWO_SHORT, LONG_BY_TIME):
        again = transcript_from_json(render_json(case).encode("utf-8"))
        assert {fmt: RENDERERS[fmt](again) for fmt in ALL} == {fmt: RENDERERS[fmt](case) for fmt in ALL}


def test_an_edited_output_is_not_ours_and_a_touched_one_still_is(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    (tmp_path / "visit.txt").write_text("my corrections\n", encoding="utf-8")
    os.utime(tmp_path / "visit.srt")  # touched: its stat differs, its bytes do not
    assert state(stem, OutputFormat.TXT) is OutputState.FOREIGN
    assert state(stem, OutputFormat.SRT) is OutputState.OURS
    (tmp_path / "visit.json").unlink()
    assert state(stem, OutputFormat.JSON) is OutputState.MISSING


def test_a_users_own_file_is_foreign(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("shopping list\n", encoding="utf-8")
    assert state(tmp_path / "notes", OutputFormat.TXT) is OutputState.FOREIGN


def test_a_crash_between_outputs_leaves_whole_files_that_are_still_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)  # an earlier, complete run
    before = {f: (tmp_path / f"visit.{f.value}").read_bytes() for f in ALL}
    real_write = writers.atomic_write
    calls = []

    def crash_on_third(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 3:  # record, txt, then the crash while writing srt
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(writers, "atomic_write", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(stem, ALL, LONG_BY_TIME, PROVENANCE, old=read_record(stem), keep=())
    assert calls == [".visit.carevoice.json", "visit.txt", "visit.srt"]
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8") == render_txt(LONG_BY_TIME)
    for fmt in ALL[1:]:
        assert (tmp_path / f"visit.{fmt.value}").read_bytes() == before[fmt]  # untouched, whole
    assert leftovers(tmp_path) == []
    record = read_record(stem)
    assert record is not None and not record.complete  # so the next run redoes it ...
    assert all(state(stem, fmt) is OutputState.OURS for fmt in ALL)  # ... and may replace every file


def test_removed_and_kept_outputs_are_recorded_as_such(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    old = read_record(stem)
    txt_before = (tmp_path / "visit.txt").stat().st_mtime_ns
    write_outputs(stem, (OutputFormat.SRT,), LONG_BY_TIME, PROVENANCE, remove=(OutputFormat.VTT, OutputFormat.TSV), keep=(OutputFormat.TXT, OutputFormat.JSON), old=old)
    assert not (tmp_path / "visit.vtt").exists() and not (tmp_path / "visit.tsv").exists()
    assert (tmp_path / "visit.txt").stat().st_mtime_ns == txt_before
    record = read_record(stem)
    assert record is not None and sorted(record.outputs) == ["json", "srt", "txt"]
    assert record.outputs["txt"] == old.outputs["txt"]  # type: ignore[union-attr]


def test_write_outputs_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder should be\n", encoding="utf-8")
    with pytest.raises(writers.OutputError) as caught:
        write_outputs(blocker / "visit", ALL, TWO_SHORT, PROVENANCE)
    assert "cannot write outputs" in caught.value.message and "\n" not in str(caught.value)
    assert blocker.read_text(encoding="utf-8") == "a file where a folder should be\n"


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead_pid = 2**22 + 1  # above Linux's largest pid_max: no such process
    stale = tmp_path / f".visit.txt.{dead_pid}.abc123{TEMP_SUFFIX}"
    live = tmp_path / f".visit.srt.{os.getpid()}.def456{TEMP_SUFFIX}"
    own = tmp_path / "visit.txt"
    for path in (stale, live, own):
        path.write_text("x", encoding="utf-8")
    assert remove_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, own.name])


def test_an_output_edited_after_the_plan_is_neither_replaced_nor_removed_nor_kept_as_ours(tmp_path: Path) -> None:
    """A file waits minutes between its plan and its writing: a person's edit meanwhile wins."""
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    old = read_record(stem)
    (tmp_path / "visit.txt").write_text("the nurse's own words\n", encoding="utf-8")
    with pytest.raises(writers.OutputError) as caught:
        write_outputs(stem, (OutputFormat.TXT,), LONG_BY_TIME, PROVENANCE, old=old)
    assert str(caught.value) == f"visit.txt exists and was not written by CareVoice (or was edited) — {IN_THE_WAY_HINT[True]}"
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8") == "the nurse's own words\n"
    (tmp_path / "visit.vtt").write_text("WEBVTT\n\nedited\n", encoding="utf-8")
    write_outputs(stem, (OutputFormat.SRT,), LONG_BY_TIME, PROVENANCE, remove=(OutputFormat.VTT,), keep=(OutputFormat.TXT, OutputFormat.JSON), old=old)
    assert (tmp_path / "visit.vtt").read_text(encoding="utf-8") == "WEBVTT\n\nedited\n"  # not removed
    record = read_record(stem)
    assert record is not None and sorted(record.outputs) == ["json", "srt"]  # the edited txt is no longer listed as ours
    forced = write_outputs(stem, (OutputFormat.TXT,), LONG_BY_TIME, PROVENANCE, old=record, overwrite=True)
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8") == render_txt(LONG_BY_TIME)  # --overwrite: replaced ...
    assert [p.read_text(encoding="utf-8") for p in forced.aside] == ["the nurse's own words\n"]  # ... and the edit kept aside


def test_a_record_that_makes_no_sense_reads_as_none(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    path = tmp_path / ".visit.carevoice.json"
    raw = json.loads(path.read_text(encoding="ascii"))
    for broken in ({**raw, "engine_revision": "x"}, {**raw, "engine_revision": [1]}, {**raw, "outputs": {"txt": {"name": 3}}}, [raw]):
        path.write_text(json.dumps(broken), encoding="ascii")
        record = read_record(stem)
        assert record is None or "txt" not in record.outputs


# --- issue 23: a person's edit kept aside under a conflict copy name -------------------------------

EDITED_AT_S = 1_796_545_440  # when the nurse saved her edit: named in the conflict copy (local time)


def edited(path: Path, text: bytes) -> bytes:
    path.write_bytes(text)
    os.utime(path, (EDITED_AT_S, EDITED_AT_S))
    return text


def test_a_conflict_name_says_when_the_edit_was_saved_and_is_never_a_recording_or_taken() -> None:
    stamp = datetime.fromtimestamp(EDITED_AT_S).strftime("%Y-%m-%d %H%M")
    assert conflict_name("visit.txt", EDITED_AT_S) == f"visit (edited {stamp}, conflict).txt"
    assert conflict_name("visit.txt", EDITED_AT_S, 2) == f"visit (edited {stamp}, conflict 2).txt"
    assert conflict_name("visit.tar.json", EDITED_AT_S) == f"visit.tar (edited {stamp}, conflict).json"
    long = "会" * 83 + ".txt"  # 253 bytes: the copy's name keeps its end and fits in a file name
    assert len(os.fsencode(conflict_name(long, EDITED_AT_S))) <= 255 and conflict_name(long, EDITED_AT_S).endswith(", conflict).txt")


def test_a_replaced_recordings_edited_outputs_are_kept_aside_byte_for_byte_and_the_new_ones_written(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    old = read_record(stem)
    txt = edited(tmp_path / "visit.txt", b"Hello there, Mrs Jones (room 12).\r\nBye.\n")
    vtt = edited(tmp_path / "visit.vtt", b"WEBVTT\n\nmy corrections\n")
    written = write_outputs(
        stem, DEFAULT, LONG_BY_TIME, PROVENANCE, remove=(OutputFormat.TSV,), aside=(OutputFormat.TXT, OutputFormat.VTT), old=old
    )
    stamp = datetime.fromtimestamp(EDITED_AT_S).strftime("%Y-%m-%d %H%M")
    assert written.aside == (tmp_path / f"visit (edited {stamp}, conflict).txt", tmp_path / f"visit (edited {stamp}, conflict).vtt")
    assert [p.read_bytes() for p in written.aside] == [txt, vtt]
    assert written.aside[0].stat().st_mtime == EDITED_AT_S  # the edit keeps its time
    assert written.outputs == tuple(tmp_path / f"visit.{f.value}" for f in DEFAULT)
    assert (tmp_path / "visit.txt").read_text(encoding="utf-8") == render_txt(LONG_BY_TIME)
    assert not (tmp_path / "visit.vtt").exists() and not (tmp_path / "visit.tsv").exists()  # nothing of the old recording
    assert sorted(read_record(stem).outputs) == ["json", "srt", "txt"]  # type: ignore[union-attr]

    # A second replacement, the new transcript edited in the same minute: a new name, the first copy untouched.
    again = edited(tmp_path / "visit.txt", b"second edit\n")
    second = write_outputs(stem, DEFAULT, TWO_SHORT, PROVENANCE, aside=(OutputFormat.TXT,), old=read_record(stem))
    assert second.aside == (tmp_path / f"visit (edited {stamp}, conflict 2).txt",)
    assert second.aside[0].read_bytes() == again and written.aside[0].read_bytes() == txt


def test_an_edit_kept_aside_never_replaces_a_file_already_under_that_name(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    stamp = datetime.fromtimestamp(EDITED_AT_S).strftime("%Y-%m-%d %H%M")
    squatter = tmp_path / f"visit (edited {stamp}, conflict).txt"
    squatter.write_bytes(b"someone else's file\n")
    edit = edited(tmp_path / "visit.txt", b"the nurse's words\n")
    written = write_outputs(stem, DEFAULT, LONG_BY_TIME, PROVENANCE, aside=(OutputFormat.TXT,), old=read_record(stem))
    assert written.aside == (tmp_path / f"visit (edited {stamp}, conflict 2).txt",)
    assert written.aside[0].read_bytes() == edit and squatter.read_bytes() == b"someone else's file\n"


def test_an_edit_planned_aside_but_put_back_as_carevoice_wrote_it_is_simply_replaced(tmp_path: Path) -> None:
    stem = tmp_path / "visit"
    write_outputs(stem, ALL, TWO_SHORT, PROVENANCE)
    written = write_outputs(stem, DEFAULT, LONG_BY_TIME, PROVENANCE, aside=(OutputFormat.TXT,), old=read_record(stem))
    assert written.aside == () and sorted(p.name for p in tmp_path.iterdir() if "conflict" in p.name) == []


def test_a_move_that_may_not_replace_refuses_a_taken_name_and_moves_in_one_step(tmp_path: Path) -> None:
    (tmp_path / "visit.txt").write_text("corrected by a nurse\n", encoding="utf-8")
    (tmp_path / "taken.txt").write_text("someone else's\n", encoding="utf-8")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "visit.txt", tmp_path / "taken.txt")
    assert (tmp_path / "taken.txt").read_text(encoding="utf-8") == "someone else's\n"
    inode = (tmp_path / "visit.txt").stat().st_ino
    assert rename_noreplace(tmp_path / "visit.txt", tmp_path / "aside.txt")  # Linux, on this file system: one step
    assert not (tmp_path / "visit.txt").exists() and (tmp_path / "aside.txt").stat().st_ino == inode
