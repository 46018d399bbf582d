"""Record real follow-up decisions: every (outcome, decision) the engine's policy makes on corpus clips.

Runs CareVoice's engine (the batch runner, default options, the base model) over the corpus clips of
the given languages whose licence allows copying into tests/data (public domain, CC0, CC BY, MIT),
records each decision of carevoice.engine.policy.decide with the outcome it was made on (the engine's
``observe``), and keeps up to
``--per-kind`` rows of each (action, reason). The table is what tests/engine/test_policy.py checks the
policy against: re-record it (and read the diff) whenever the policy changes on purpose.

Usage: python benchmarks/record_outcomes.py [--lang en] [--out tests/data/policy_outcomes.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORPUS, REPO  # noqa: E402

ALLOWED = ("public domain", "cc0", "cc by", "mit")
EXCLUDED = ("test-only", "ldc-licensed", "research-use", "not stated")


def allowed_clips(languages: set[str]) -> list[dict[str, str]]:
    with open(CORPUS / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [
        r
        for r in rows
        if r["language"] in languages
        and any(a in r["license"].lower() for a in ALLOWED)
        and not any(e in r["license"].lower() for e in EXCLUDED)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--model", default="base")
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "policy_outcomes.json")
    args = parser.parse_args()

    from carevoice.engine.decoder import load_decoder
    from carevoice.engine.models import resolve_model
    from carevoice.engine.whisper import Engine
    from carevoice.run.audio import find_ffmpeg
    from carevoice.run.chunking import prepare_file
    from carevoice.run.discovery import find_jobs
    from carevoice.run.pipeline import BatchRunner
    from carevoice.settings import DecodeSettings, EngineSettings, default_cache_dir

    clips = allowed_clips(set(args.lang.split(",")))
    by_path = {CORPUS / "clips" / r["file"]: r for r in clips}
    ref = resolve_model(args.model, default_cache_dir())
    recorded: list[dict[str, object]] = []
    settings = EngineSettings(model=args.model)
    engine = Engine(
        load_decoder(settings, ref, "cpu"), settings.windows_s, observe=lambda o, d: recorded.append({"outcome": o, "decision": d})
    )
    ffmpeg = find_ffmpeg()
    jobs = find_jobs(tuple(by_path)).jobs
    runner = BatchRunner([engine], DecodeSettings(), lambda job: prepare_file(job, ffmpeg))
    for _ in runner.run(jobs):
        pass

    kinds: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for entry in recorded:
        outcome, decision = entry["outcome"], entry["decision"]
        kinds[(decision.action.value, decision.reason.name)].append(
            {
                "action": decision.action.value,
                "reason": decision.reason.name,
                "at_s": decision.at_s,
                "outcome": {
                    "tokens": list(outcome.tokens),
                    "timestamp_begin": outcome.timestamp_begin,
                    "eot": outcome.eot,
                    "text": outcome.text,
                    "avg_logprob": outcome.avg_logprob,
                    "no_speech_prob": outcome.no_speech_prob,
                    "window_frames": outcome.window_frames,
                    "duration_s": outcome.duration_s,
                    "covered_s": outcome.covered_s,
                    "speech_from": [[k, v] for k, v in outcome.speech_from.items()],
                },
            }
        )
    rows = []
    for (action, reason), entries in sorted(kinds.items()):
        rows.extend(entries[: args.per_kind])
        print(f"{action:9} {reason:22} {len(entries):4} recorded", file=sys.stderr)
    sources = sorted({f"{r['file']}\t{r['license']}" for r in clips})
    table = {
        "about": "Real outcomes of one decode and the follow-up decided, recorded by benchmarks/record_outcomes.py "
        f"with model {ref.model_id}, default options, on corpus clips ({args.lang}) whose licence allows copying "
        "(the clips' texts appear in token form and as text; sources and licences below).",
        "sources": sources,
        "rows": rows,
    }
    args.out.write_text(json.dumps(table, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} rows of {len(recorded)} decisions -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
