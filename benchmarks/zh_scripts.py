"""One script per file (issue 23): the script of each Chinese corpus transcript as the model writes it
(``--zh-script keep``, the default before issue 23) and under today's default (``auto``), with CER.

Two runs of ``carevoice transcribe`` over every zh-CN and yue clip of the corpus, as a user's plain run
makes them (language detected per file, txt and json), with the locale variables removed so that the
default is ``auto``. Each transcript is classified by carevoice.run.chinese.count_scripts: Traditional,
Simplified, mixed, or neither (no character that differs between the scripts). CER is over the clips
with trustworthy references (as benchmarks/chinese_cer.py), against the Simplified reference as it is
("as written") and with both sides converted to Simplified ("script-blind": recognition alone).

Usage:
  python benchmarks/zh_scripts.py --out /tmp/zh-scripts      # ≈ 3 min per run on 2 shared CPU cores
Results: a markdown table on stdout; the transcripts stay under --out/keep and --out/auto.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clip, cer, corpus_clips

from carevoice.run.chinese import convert_text, count_scripts, decide_auto
from carevoice.settings import LOCALE_VARIABLES, ZhScript

LANGUAGES = {"zh-CN", "yue"}
QUALITY = {"human", "derived", "repo-gt"}  # as chinese_cer.py: the clips whose reference is a transcript
EVERY_QUALITY = QUALITY | {"model", "partial", "prompt"}
RUNS = {"keep": ["--zh-script", "keep"], "auto": []}  # auto: the default, with no locale to say otherwise


def transcribe(clips: list[Clip], out: Path, extra: list[str], model: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARIABLES}
    command = [sys.executable, "-m", "carevoice", "transcribe", *(str(c.path) for c in clips), "-m", model, "-f", "txt,json"]
    result = subprocess.run([*command, "-o", str(out), "-q", "--json", *extra], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"carevoice exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def script_of(text: str) -> str:
    counts = count_scripts(text)
    if counts.traditional and counts.simplified:
        return f"mixed ({counts.traditional} T, {counts.simplified} S)"
    return "Traditional" if counts.traditional else "Simplified" if counts.simplified else "neither"


def simplified(text: str) -> str:
    return convert_text(text, ZhScript.SIMPLIFIED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--out", type=Path, help="keep the transcripts here (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="zh-scripts-"))

    clips = corpus_clips(LANGUAGES, quality=EVERY_QUALITY)
    texts: dict[str, list[str]] = {}
    for name, extra in RUNS.items():
        transcribe(clips, out / name, extra, args.model)
        texts[name] = [(out / name / f"{c.path.stem}.txt").read_text(encoding="utf-8") for c in clips]

    print("| file | language | keep (before) | auto (the default) | auto's conversion | text changed |")
    print("|---|---|---|---|---|---|")
    for i, clip in enumerate(clips):
        record = json.loads((out / "auto" / f"{clip.path.stem}.json").read_text(encoding="utf-8"))
        kept, auto = texts["keep"][i], texts["auto"][i]
        conversion = record["options"]["zh_conversion"] or "none"
        print(
            f"| {clip.path.name} | {record['language']} | {script_of(kept)} | {script_of(auto)} | "
            f"{conversion} ({decide_auto(count_scripts(kept)).reason}) | {'yes' if kept != auto else 'no'} |"
        )

    print("\n| set | clips | CER keep, as written | CER auto, as written | CER keep, script-blind | CER auto, script-blind |")
    print("|---|---|---|---|---|---|")
    trusted = {c.path.name for c in corpus_clips(LANGUAGES, quality=QUALITY)}
    for language in sorted(LANGUAGES):
        chosen = [i for i, c in enumerate(clips) if c.language == language and c.path.name in trusted]
        cells = [
            f"{100 * cer([blind(clips[i].reference) for i in chosen], [blind(texts[name][i]) for i in chosen]):.1f} %"
            for blind in (str, simplified)
            for name in RUNS
        ]
        print(f"| {language} | {len(chosen)} | " + " | ".join(cells) + " |")
    print(f"\ntranscripts: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
