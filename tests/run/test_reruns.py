"""The rerun rules as a pure decision: a recording's record and what is on disk -> what a run does.
One row per case a user meets (the CLI tests in test_rerun_cli.py run the same cases for real)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from carevoice.run.records import Identity, OutputEntry, Record
from carevoice.run.rules import (
    Action,
    Decision,
    FailedBefore,
    FileFacts,
    OutputState,
    Reason,
    RunFacts,
    after_failure,
    decide,
)
from carevoice.settings import OutputFormat

TXT, SRT, VTT, JSON, TSV = OutputFormat.TXT, OutputFormat.SRT, OutputFormat.VTT, OutputFormat.JSON, OutputFormat.TSV
DEFAULT = (TXT, SRT, JSON)
TEXT = {"task": "transcribe", "language": None, "beam_size": 5, "zh_script": "keep"}
RUN = RunFacts(DEFAULT, words=True, model="base", model_sha256="m1", engine_revision=1, text=TEXT)
INPUT = Identity(10, 1, 1, 7, 1, "a" * 64)


def record(*formats: OutputFormat, words: bool = True, **changes: object) -> Record:
    outputs = {f.value: OutputEntry(f"a.{f.value}", f"{f.value}-hash", None, None, words) for f in formats}
    base = Record(True, "run-1", "0.2.0", 1, "base", "m1", dict(TEXT), INPUT, outputs)
    return replace(base, **changes)  # type: ignore[arg-type]


def facts(rec: Record | None, changed: bool | None = False, **states: OutputState) -> FileFacts:
    recorded = {OutputFormat(f) for f in rec.outputs} if rec else set()
    outputs = {f: OutputState.OURS for f in recorded}
    outputs.update({OutputFormat(k): v for k, v in states.items()})
    return FileFacts(rec, changed if rec else None, outputs)


MISSING, OURS, FOREIGN = OutputState.MISSING, OutputState.OURS, OutputState.FOREIGN

CASES = [
    # (id, facts, run, expected plan)
    ("new file", facts(None, txt=MISSING, srt=MISSING, json=MISSING), RUN, Decision(Action.TRANSCRIBE, Reason.NEW, write=DEFAULT)),
    ("new file next to a person's txt", facts(None, txt=FOREIGN, srt=MISSING, json=MISSING), RUN,
     Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,))),
    ("unchanged", facts(record(*DEFAULT)), RUN, Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("touched or copied: same bytes", facts(record(*DEFAULT), changed=False), RUN, Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("a subset of what is current", facts(record(*DEFAULT)), replace(RUN, formats=(TXT,), words=False),
     Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("replaced recording", facts(record(*DEFAULT), changed=True), RUN,
     Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT)),
    ("replaced recording: an earlier -f vtt is removed", facts(record(*DEFAULT, VTT), changed=True), RUN,
     Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT, remove=(VTT,))),
    # Issue 23: a person's edit of the old recording's transcript is kept aside (a conflict copy), never
    # left under the new recording's name, never lost.
    ("replaced recording, its txt edited by a nurse: the edit kept aside", facts(record(*DEFAULT), changed=True, txt=FOREIGN), RUN,
     Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT, aside=(TXT,))),
    ("replaced recording: an edited vtt, not asked for, kept aside", facts(record(*DEFAULT, VTT), changed=True, vtt=FOREIGN), RUN,
     Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT, aside=(VTT,))),
    ("replaced recording, --overwrite: the edited vtt is kept aside", facts(record(*DEFAULT, VTT), changed=True, vtt=FOREIGN),
     replace(RUN, overwrite=True), Decision(Action.REDO, Reason.OVERWRITE, write=DEFAULT, aside=(VTT,))),
    ("replaced recording, its json edited: kept aside, and the file transcribed (never rendered from it)",
     facts(record(*DEFAULT), changed=True, json=FOREIGN), RUN, Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT, aside=(JSON,))),
    ("replaced recording, a stopped run's record: the edit kept aside", facts(record(*DEFAULT, complete=False), changed=True, txt=FOREIGN),
     RUN, Decision(Action.REDO, Reason.UNFINISHED, write=DEFAULT, aside=(TXT,))),
    ("same recording, another model, an edited txt: never overwritten", facts(record(*DEFAULT), txt=FOREIGN), replace(RUN, model="tiny.en"),
     Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,))),
    ("an edited txt, --overwrite: replaced, and the edit kept aside", facts(record(*DEFAULT), txt=FOREIGN), replace(RUN, overwrite=True),
     Decision(Action.REDO, Reason.OVERWRITE, write=DEFAULT, aside=(TXT,))),
    ("an edited vtt not asked for, --overwrite: left alone (it describes this recording)", facts(record(*DEFAULT, VTT), vtt=FOREIGN),
     replace(RUN, overwrite=True), Decision(Action.REDO, Reason.OVERWRITE, write=DEFAULT)),
    ("new file next to a person's txt, --overwrite: replaced, the person's file kept aside", facts(None, txt=FOREIGN, srt=MISSING, json=MISSING),
     replace(RUN, overwrite=True), Decision(Action.REDO, Reason.OVERWRITE, write=DEFAULT, aside=(TXT,))),
    ("other weights under the same name", facts(record(*DEFAULT)), replace(RUN, model_sha256="m2"),
     Decision(Action.REDO, Reason.MODEL_CHANGED, write=DEFAULT)),
    ("another model", facts(record(*DEFAULT)), replace(RUN, model="tiny.en"),
     Decision(Action.REDO, Reason.MODEL_CHANGED, write=DEFAULT, detail="--model base → tiny.en")),
    ("a hub model not downloaded yet: compared by name", facts(record(*DEFAULT)), replace(RUN, model_sha256=None),
     Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("recorded before its hub model was hashed: compared by name", facts(record(*DEFAULT, model_sha256=None)), RUN,
     Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("a newer engine", facts(record(*DEFAULT)), replace(RUN, engine_revision=2), Decision(Action.REDO, Reason.ENGINE_CHANGED, write=DEFAULT)),
    ("another language", facts(record(*DEFAULT)), replace(RUN, text={**TEXT, "language": "de"}),
     Decision(Action.REDO, Reason.OPTIONS_CHANGED, write=DEFAULT, detail="--language (detect) → de")),
    ("another script for Chinese", facts(record(*DEFAULT)), replace(RUN, text={**TEXT, "zh_script": "tw"}),
     Decision(Action.REDO, Reason.OPTIONS_CHANGED, write=DEFAULT, detail="--zh-script keep → tw")),
    ("-f vtt after the default: added from the JSON", facts(record(*DEFAULT), vtt=MISSING), replace(RUN, formats=(VTT,)),
     Decision(Action.ADD, Reason.NEW_FORMATS, write=(VTT,), keep=DEFAULT, from_json=True, formats=(VTT,))),
    ("the default again after -f vtt: nothing to do", facts(record(*DEFAULT, VTT)), RUN, Decision(Action.SKIP, Reason.CURRENT, keep=(*DEFAULT, VTT))),
    ("a deleted srt", facts(record(*DEFAULT), srt=MISSING), RUN,
     Decision(Action.ADD, Reason.OUTPUT_MISSING, write=(SRT,), keep=(TXT, JSON), from_json=True, formats=(SRT,))),
    ("-f srt after -f txt: no JSON, transcribed again for srt only", facts(record(TXT, words=False), srt=MISSING),
     replace(RUN, formats=(SRT,)), Decision(Action.ADD, Reason.NEW_FORMATS, write=(SRT,), keep=(TXT,), formats=(SRT,))),
    ("a tsv made without words, asked for with subtitles", facts(record(TXT, TSV, words=False), srt=MISSING),
     replace(RUN, formats=(TSV, SRT)), Decision(Action.ADD, Reason.WORD_TIMES, write=(TSV, SRT), keep=(TXT,), formats=(TSV, SRT))),
    ("an edited txt of the same transcript: kept as the person left it, no failure", facts(record(*DEFAULT), txt=FOREIGN), RUN,
     Decision(Action.SKIP, Reason.EDITED, keep=(SRT, JSON), formats=(TXT,), detail="kept txt as a person edited it")),
    ("an edited txt, and an srt missing: the new record could not keep the edit listed, so it still blocks",
     facts(record(*DEFAULT), txt=FOREIGN, srt=MISSING), RUN, Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,))),
    ("a txt CareVoice never wrote, asked for: in the way", facts(record(SRT, JSON), txt=FOREIGN), RUN,
     Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,))),
    ("an edited txt, not asked for: left alone", facts(record(*DEFAULT), txt=FOREIGN), replace(RUN, formats=(SRT,)),
     Decision(Action.SKIP, Reason.CURRENT, keep=(SRT, JSON))),
    ("--overwrite", facts(record(*DEFAULT)), replace(RUN, overwrite=True), Decision(Action.REDO, Reason.OVERWRITE, write=DEFAULT)),
    ("a run that stopped while writing", facts(record(*DEFAULT, complete=False)), RUN, Decision(Action.REDO, Reason.UNFINISHED, write=DEFAULT)),
    ("a record from before identities were kept", facts(record(*DEFAULT, version=1, input=None, engine_revision=0)), RUN,
     Decision(Action.REDO, Reason.OLD_RECORD, write=DEFAULT)),
]


@pytest.mark.parametrize(("case", "file_facts", "run", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_case_gets_its_plan(case: str, file_facts: FileFacts, run: RunFacts, expected: Decision) -> None:
    assert decide(file_facts, run) == expected


# What a failure last time (a note beside the outputs, carevoice.run.failures) makes of a decision.
FAILED = FailedBefore("2026-12-05 21:04", "not a recording", unchanged=True)
FAILED_THEN_CHANGED = replace(FAILED, unchanged=False)
TRY_AGAIN = "failed last time, 2026-12-05 21:04: not a recording"
AFTER_FAILURE = [
    # (id, decision without the note, the note, expected plan)
    ("no note", Decision(Action.TRANSCRIBE, Reason.NEW, write=DEFAULT), None, Decision(Action.TRANSCRIBE, Reason.NEW, write=DEFAULT)),
    ("failed, unchanged since", Decision(Action.TRANSCRIBE, Reason.NEW, write=DEFAULT), FAILED,
     Decision(Action.TRY_AGAIN, Reason.FAILED_BEFORE, write=DEFAULT, detail=TRY_AGAIN)),
    ("failed, copied again since", Decision(Action.TRANSCRIBE, Reason.NEW, write=DEFAULT), FAILED_THEN_CHANGED,
     Decision(Action.TRANSCRIBE, Reason.CHANGED_SINCE_FAILED, write=DEFAULT)),
    ("a finished file's recording replaced by one that failed", Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT, remove=(VTT,)),
     FAILED, Decision(Action.TRY_AGAIN, Reason.FAILED_BEFORE, write=DEFAULT, remove=(VTT,), detail=TRY_AGAIN)),
    ("... and replaced again since: a plain redo", Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT), FAILED_THEN_CHANGED,
     Decision(Action.REDO, Reason.RECORDING_CHANGED, write=DEFAULT)),
    ("a skipped file's note is not read", Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT), FAILED,
     Decision(Action.SKIP, Reason.CURRENT, keep=DEFAULT)),
    ("an output in the way still blocks it", Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,)), FAILED,
     Decision(Action.FAIL, Reason.FOREIGN_OUTPUT, formats=(TXT,))),
]


@pytest.mark.parametrize(("case", "decision", "failed", "expected"), AFTER_FAILURE, ids=[c[0] for c in AFTER_FAILURE])
def test_what_a_failure_last_time_makes_of_a_decision(case: str, decision: Decision, failed: FailedBefore | None, expected: Decision) -> None:
    assert after_failure(decision, failed) == expected


def test_every_action_and_reason_is_in_the_table() -> None:
    plans = [c[3] for c in CASES + AFTER_FAILURE]
    assert {p.action for p in plans} == set(Action)
    assert {p.reason for p in plans} == set(Reason) - {Reason.PROBLEM}  # PROBLEM comes from claims.output_problem


def test_only_the_engine_cases_need_the_engine() -> None:
    assert [c[0] for c in CASES if decide(c[1], c[2]).needs_engine and decide(c[1], c[2]).action is Action.ADD] == [
        "-f srt after -f txt: no JSON, transcribed again for srt only",
        "a tsv made without words, asked for with subtitles",
    ]
