"""Scaling: RTFx and peak memory of the compute-only bound at several batch sizes and thread counts.

Each setting runs `throughput.py --runners bound` in its own process, so every peak-memory figure
belongs to that setting alone (the model, the pre-decoded clips and the batch).

Usage:
  python benchmarks/scaling.py --limit 40                       # batch 1,4,8,16,32 at 2 threads; batch 8 at 1 thread
  python benchmarks/scaling.py --batch-sizes 8,16 --threads 1,2
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

from common import print_table  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--model", default="base")
    parser.add_argument("--batch-sizes", default="1,4,8,16,32")
    parser.add_argument("--threads", default="", help="thread counts to try at batch 8 (default: 1 and all cores)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})
    settings = [(int(b), cores) for b in args.batch_sizes.split(",")]
    settings += [(8, t) for t in threads if (8, t) not in settings]
    rows = []
    for batch_size, thread_count in settings:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [sys.executable, str(HERE / "throughput.py"), "--runners", "bound", "--lang", args.lang,
                 "--limit", str(args.limit), "--model", args.model, "--batch-size", str(batch_size),
                 "--threads", str(thread_count), "--out", out.name],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            (row,) = json.loads(Path(out.name).read_text())["rows"]
        rows.append({"batch_size": batch_size, "threads": thread_count, **row})
        print(f"# batch {batch_size}, threads {thread_count}: RTFx {row['rtfx']:.2f}", file=sys.stderr, flush=True)
    score = "cer" if "cer" in rows[0] else "wer"
    print(f"model={args.model} int8 beam=5 lang={args.lang} clips={rows[0]['files']} audio_s={rows[0]['audio_s']:.0f}")
    print_table(rows, ["batch_size", "threads", "wall_s", "rtfx", score, "peak_rss_mb"])
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
