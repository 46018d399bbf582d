"""What a ward glossary buys, and what it must never do (issue 25 §2), through the real CLI.

For the Mandarin and English corpus sets: CER / WER without and with a glossary of a few domain
terms taken from some clips' references, which of those terms each transcript has where its
reference has them (found), and every glossary term a transcript has that its reference lacks
(inserted; a term already there without the glossary is Whisper's own and not counted). Then the
glossary over audio without its words: 10 s of silence, white noise ("hiss"), pink noise ("hum"),
each at three levels, and the English clips for the Mandarin glossary: inserted must be 0.

Usage:
  python benchmarks/glossary.py --model base --out benchmarks/results/glossary-base.json
Results: a markdown table on stdout; with --out, every hypothesis as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import clips_of, score, transcribe
from common import Clip

from carevoice.run.chinese import convert_text
from carevoice.settings import ZhScript

# Terms of the Fun-ASR-Nano hot-word clips (medical, chemistry, history, maths, physics) and two others.
ZH_TERMS = ("肾脏", "肾小球", "细胞膜", "孔隙", "含氧酸盐", "犹地亚", "大希律王", "微分形式", "碰撞理论", "挥发性", "溃疡", "早孕因子")
# Names in the LJ Speech clips on the history of printing.
EN_TERMS = ("Gutenberg", "Schoeffer", "Sweynheim", "Pannartz", "Subiaco", "Maintz", "Strasburg", "Basle", "Lubeck", "Quilter")


def flat(text: str, zh: bool) -> str:
    return convert_text(text, ZhScript.SIMPLIFIED) if zh else text.lower()


def counts(clips: list[Clip], texts: dict[str, str], terms: tuple[str, ...], zh: bool, plain: dict[str, str] | None = None) -> dict[str, object]:
    """Terms found where the reference has them, and terms inserted where it does not (beyond ``plain``'s)."""
    found, wanted, inserted = [], 0, []
    for clip in clips:
        ref, hyp = flat(clip.reference, zh), flat(texts[clip.path.name], zh)
        before = flat((plain or {}).get(clip.path.name, ""), zh)
        for term in terms:
            t = flat(term, zh)
            if t in ref:
                wanted += 1
                if t in hyp:
                    found.append(term)
            elif hyp.count(t) > before.count(t):
                inserted.append({"clip": clip.path.name, "term": term})
    return {"found": found, "wanted": wanted, "inserted": inserted}


def write_wav(path: Path, samples: np.ndarray) -> Clip:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return Clip(path, "none", len(samples) / 16_000, "")


def noises(folder: Path) -> list[Clip]:
    rng = np.random.default_rng(25)
    n = 10 * 16_000
    clips = [write_wav(folder / "silence.wav", np.zeros(n, np.float32))]
    for level in (0.01, 0.05, 0.2):
        clips.append(write_wav(folder / f"hiss-{level}.wav", (rng.standard_normal(n) * level).astype(np.float32)))
        spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
        pink = np.fft.irfft(spectrum, n)
        clips.append(write_wav(folder / f"hum-{level}.wav", (pink / np.abs(pink).max() * level * 3).astype(np.float32)))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows, hypotheses = [], {}
    with tempfile.TemporaryDirectory(prefix="cv-glossary-") as tmp:
        glossaries = {}
        for name, terms in (("zh", ZH_TERMS), ("en", EN_TERMS)):
            glossaries[name] = Path(tmp) / f"{name}.txt"
            glossaries[name].write_text("\n".join(terms) + "\n", encoding="utf-8")
        (Path(tmp) / "noise").mkdir()
        runs = [
            ("zh", clips_of("zh", 0), "zh", ZH_TERMS, True),
            ("en", clips_of("en", 0), "en", EN_TERMS, False),
            ("noise, zh glossary", noises(Path(tmp) / "noise"), "zh", ZH_TERMS, True),
            ("noise, en glossary", noises(Path(tmp) / "noise"), "en", EN_TERMS, False),
        ]
        for name, clips, language, terms, zh in runs:
            options = ("--zh-script", "keep") if zh else ()
            plain, _ = transcribe(clips, args.model, language, options, "cpu", args.threads)
            glossed, _ = transcribe(clips, args.model, language, (*options, "--glossary", str(glossaries["zh" if zh else "en"])), "cpu", args.threads)
            row: dict[str, object] = {"set": name, "clips": len(clips)}
            if not name.startswith("noise"):
                row |= {"without": round(score(name, clips, plain), 4), "with": round(score(name, clips, glossed), 4)}
            before, after = counts(clips, plain, terms, zh), counts(clips, glossed, terms, zh, plain)
            row |= {"wanted": after["wanted"], "found_without": before["found"], "found_with": after["found"], "inserted": after["inserted"]}
            rows.append(row)
            hypotheses[name] = {"without": plain, "with": glossed}
            print(json.dumps(row, ensure_ascii=False), file=sys.stderr)
    print("| set | clips | error without | error with | terms found without | with | inserted |\n|---|---|---|---|---|---|---|")
    for r in rows:
        err = (f"{r['without']:.2%}", f"{r['with']:.2%}") if "with" in r else ("", "")
        found = f"{len(r['found_without'])}/{r['wanted']}", f"{len(r['found_with'])}/{r['wanted']}"  # type: ignore[arg-type]
        print(f"| {r['set']} | {r['clips']} | {err[0]} | {err[1]} | {found[0]} | {found[1]} | {len(r['inserted'])} |")  # type: ignore[arg-type]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "rows": rows, "hypotheses": hypotheses}, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
