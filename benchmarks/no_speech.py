"""Whispers and the no-VAD decode (issue 23): the CLI on the corpus clips of one language, WER or CER
against the references, and the files that ended "no speech heard" or went through the decode without VAD.

    python benchmarks/no_speech.py OUT [--lang en|zh-CN] [--repo DIR] [-- CLI options, e.g. -m tiny.en]

``--repo``: run the CareVoice of another checkout (``python -m carevoice`` from that folder), e.g. the
commit before a change, exported with ``git archive``. Prints one line of numbers and the files whose
text differs from an earlier run's when ``--compare EARLIER_OUT`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cer, corpus_clips, wer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--compare", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    options = argv[cut + 1 :]
    clips = corpus_clips({args.lang})
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for clip in clips:
        shutil.copyfile(clip.path, args.out / clip.path.name)
    started = time.monotonic()
    command = [sys.executable, "-m", "carevoice", "transcribe", str(args.out), "-f", "txt", "--json", "-q", "--device", "cpu", *options]
    done = subprocess.run(command, check=False, cwd=args.repo, capture_output=True, text=True)
    elapsed_s = time.monotonic() - started
    report = json.loads(done.stdout)
    texts = [(args.out / clip.path.name).with_suffix(".txt").read_text(encoding="utf-8") for clip in clips]
    score = (wer if args.lang == "en" else cer)([c.reference for c in clips], texts)
    statuses = {Path(f["file"]).name: f["status"] for f in report["files"]}
    unheard = sorted(name for name, status in statuses.items() if status == "no_speech")
    empty = sorted(c.path.name for c, t in zip(clips, texts) if not t.strip())
    print(
        f"{args.lang}: {len(clips)} clips, {'WER' if args.lang == 'en' else 'CER'} {score:.4f}, wall {elapsed_s:.1f} s, "
        f"exit {done.returncode}, counts {report['counts']}, redecoded chunks {report['redecoded_chunks']}, empty {empty}, no_speech {unheard}"
    )
    if args.compare:
        for clip, text in zip(clips, texts):
            earlier = (args.compare / clip.path.name).with_suffix(".txt").read_text(encoding="utf-8")
            if earlier != text:
                print(f"  differs: {clip.path.name}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
