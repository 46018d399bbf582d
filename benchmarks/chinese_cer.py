"""CER on the corpus Mandarin and Cantonese clips for each --zh-script option, with and without an
initial prompt in the target script (issue 7).

Plain faster-whisper, sequential (``WhisperModel.transcribe``), multilingual ``base`` int8 on the CPU,
beam 5, language ``zh`` for both sets (``base`` has no ``yue`` token). One model load; each clip is
transcribed once per prompt setting, and the script options are derived from those outputs by converting
them with OpenCC. References (Simplified) are converted the same way as the hypotheses, so a column
measures recognition in that script, not the script itself.

Prompt settings:
  none         no initial prompt
  simplified   "以下是普通话的句子。"
  traditional  "以下是普通話的句子。"

Usage:
  python benchmarks/chinese_cer.py                         # all clips, 2 CPU threads
  python benchmarks/chinese_cer.py --limit 3 --out /tmp/zh.json
Results: a markdown table on stdout; with --out, every hypothesis as JSON (to re-score without rerunning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clip, cer, corpus_clips, normalise_cjk  # noqa: E402

from carevoice.run.chinese import convert_text  # noqa: E402
from carevoice.settings import ZhScript  # noqa: E402

# "repo-gt" is a docs ground-truth column: good, unverified; "model"/"partial"/"prompt" are not references.
QUALITY = {"human", "derived", "repo-gt"}
SETS = {"Mandarin": {"zh-CN"}, "Cantonese": {"yue"}}
PROMPTS: dict[str, str | None] = {
    "none": None,
    "simplified": "以下是普通话的句子。",
    "traditional": "以下是普通話的句子。",
}
SCRIPTS = (ZhScript.KEEP, ZhScript.SIMPLIFIED, ZhScript.TW, ZhScript.HK)


def load_model(threads: int):  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    from carevoice.engine.models import resolve_model

    ref = resolve_model("base", Path("/tmp/cvcache"))
    return WhisperModel(ref.load_from, device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(model, clip: Clip, prompt: str | None, beam: int) -> str:  # type: ignore[no-untyped-def]
    segments, _ = model.transcribe(str(clip.path), language="zh", beam_size=beam, initial_prompt=prompt)
    return "".join(s.text for s in segments).strip()  # draining the generator runs the work


def traditional_share(texts: list[str]) -> float:
    """Share of the CJK characters that a Traditional->Simplified conversion changes (the output's script)."""
    chars = changed = 0
    for text in texts:
        text = normalise_cjk(text)
        simplified = convert_text(text, ZhScript.SIMPLIFIED)
        if len(simplified) == len(text):
            chars += len(text)
            changed += sum(a != b for a, b in zip(text, simplified))
    return changed / chars if chars else 0.0


def score(clips: list[Clip], hypotheses: list[str]) -> dict[str, float]:
    references = [c.reference for c in clips]
    return {
        script.value: cer(
            [convert_text(r, script) for r in references], [convert_text(h, script) for h in hypotheses]
        )
        for script in SCRIPTS
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="clips per set (0 = all)")
    parser.add_argument("--out", type=Path, help="write every hypothesis here as JSON")
    args = parser.parse_args()

    model = load_model(args.threads)
    results: dict[str, dict[str, list[str]]] = {}
    clips_by_set = {name: corpus_clips(langs, limit=args.limit, quality=QUALITY) for name, langs in SETS.items()}
    for name, clips in clips_by_set.items():
        results[name] = {}
        for setting, prompt in PROMPTS.items():
            started = time.monotonic()
            results[name][setting] = [transcribe(model, clip, prompt, args.beam) for clip in clips]
            audio_s = sum(c.duration_s for c in clips)
            print(
                f"{name} prompt={setting}: {len(clips)} clips, {audio_s:.0f} s audio in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    print("| set | clips | prompt | " + " | ".join(f"CER {s.value}" for s in SCRIPTS) + " | Traditional share | prompt leaks |")
    print("|---|---|---|" + "---|" * len(SCRIPTS) + "---|---|")
    for name, clips in clips_by_set.items():
        for setting, prompt in PROMPTS.items():
            hypotheses = results[name][setting]
            scores = score(clips, hypotheses)
            # A leak: the prompt (in either script) shows up in the output text.
            leaks = sum("普通话的句子" in convert_text(h, ZhScript.SIMPLIFIED) for h in hypotheses)
            print(
                f"| {name} | {len(clips)} | {setting} | "
                + " | ".join(f"{100 * scores[s.value]:.1f} %" for s in SCRIPTS)
                + f" | {100 * traditional_share(hypotheses):.0f} % | {leaks} |"
            )
    if args.out:
        record = {
            name: [
                {"file": c.path.name, "reference": c.reference, **{s: results[name][s][i] for s in PROMPTS}}
                for i, c in enumerate(clips)
            ]
            for name, clips in clips_by_set.items()
        }
        args.out.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
