"""Accuracy of one model on the corpus, through the real CLI (issue 25 §3): English WER, Mandarin CER
script-blind (reference and transcript both in Simplified) and as written with ``--zh-script tw``
(the transcript against the reference converted to Traditional, Taiwan phrasing, with OpenCC).

Each set is one ``python -m carevoice transcribe`` of a folder of links to the clips (``-o`` a
temporary folder, ``-f txt``, beam 5), so the number is what a user gets. Any model folder or name
``--model`` takes works (a catalogue name must already be on disk: the run sets HF_HUB_OFFLINE).

Usage:
  python benchmarks/accuracy.py --model tiny.en --sets en --out benchmarks/results/accuracy-tiny.en.json
  python benchmarks/accuracy.py --model base --sets en,zh,zh-tw --out benchmarks/results/accuracy-base.json
  python benchmarks/accuracy.py --model /models/breeze-asr-25 --device cuda --sets zh,zh-tw,en
Results: a markdown table on stdout; with --out, the table's numbers and every hypothesis as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Clip, cer, corpus_clips, wer

from carevoice.run.chinese import convert_text
from carevoice.settings import ZhScript

# "repo-gt" is a docs ground-truth column (good, unverified); "model"/"partial"/"prompt" are not references.
ZH_QUALITY = {"human", "derived", "repo-gt"}
# Set name -> (manifest language, the CLI's -l, extra options, metric).
SETS = {
    "en": ("en", "en", (), "WER"),
    "zh": ("zh-CN", "zh", ("--zh-script", "keep"), "CER script-blind"),
    "zh-tw": ("zh-CN", "zh", ("--zh-script", "tw"), "CER as written, tw"),
}


def clips_of(name: str, limit: int) -> list[Clip]:
    language = SETS[name][0]
    return corpus_clips({language}, limit, quality=ZH_QUALITY if language == "zh-CN" else {"human", "derived"})


def transcribe(clips: list[Clip], model: str, language: str, options: tuple[str, ...], device: str, threads: int) -> tuple[dict[str, str], float]:
    """Each clip's text (by file name) from one CLI run over links to them, and the run's wall time."""
    with tempfile.TemporaryDirectory(prefix="cv-accuracy-") as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        for clip in clips:
            (inputs / clip.path.name).symlink_to(clip.path)
        command = [sys.executable, "-m", "carevoice", "transcribe", str(inputs), "-o", str(outputs), "-f", "txt", "-q",
                   "-m", model, "-l", language, "--device", device, "--cpu-threads", str(threads), *options]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, check=False)
        elapsed_s = time.perf_counter() - started
        if done.returncode not in (0, 1):
            raise SystemExit(f"carevoice exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        texts = {}
        for clip in clips:
            txt = outputs / clip.path.with_suffix(".txt").name
            texts[clip.path.name] = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
        return texts, elapsed_s


def score(name: str, clips: list[Clip], texts: dict[str, str]) -> float:
    refs = [c.reference for c in clips]
    hyps = [texts[c.path.name] for c in clips]
    if name == "en":
        return wer(refs, hyps)
    if name == "zh":  # script-blind: both sides in Simplified
        return cer([convert_text(r, ZhScript.SIMPLIFIED) for r in refs], [convert_text(h, ZhScript.SIMPLIFIED) for h in hyps])
    return cer([convert_text(r, ZhScript.TW) for r in refs], hyps)  # as written: the reference in Traditional too


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--sets", default="en,zh,zh-tw", help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="first N clips of each set (0: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows, hypotheses = [], {}
    for name in args.sets.split(","):
        _, language, options, metric = SETS[name]
        clips = clips_of(name, args.limit)
        texts, elapsed_s = transcribe(clips, args.model, language, options, args.device, args.threads)
        rows.append({"set": name, "metric": metric, "clips": len(clips), "audio_s": round(sum(c.duration_s for c in clips), 1),
                     "error_rate": round(score(name, clips, texts), 4), "elapsed_s": round(elapsed_s, 1)})  # fmt: skip
        hypotheses[name] = texts
        print(f"{name}: {rows[-1]['error_rate']:.2%} {metric} on {len(clips)} clips ({elapsed_s:.0f} s)", file=sys.stderr)
    print("| model | set | metric | clips | audio (s) | error rate |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {args.model} | {r['set']} | {r['metric']} | {r['clips']} | {r['audio_s']} | {r['error_rate']:.2%} |")
    if args.out:
        facts = {"model": args.model, "device": args.device, "threads": args.threads, "commit": git_commit(),
                 "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": rows,
                 "hypotheses": hypotheses}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(facts, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
