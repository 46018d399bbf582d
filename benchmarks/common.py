"""Shared pieces of the benchmarks: the corpus, text normalisation, WER/CER, and a timing table.

Benchmarks are measurements, not tests: run them by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
TRUSTED = {"human", "derived"}


@dataclass(frozen=True)
class Clip:
    path: Path
    language: str
    duration_s: float
    reference: str


def corpus_clips(languages: set[str], limit: int = 0, quality: set[str] = TRUSTED, max_s: float = 0) -> list[Clip]:
    """Corpus clips of these languages with trustworthy references, in manifest order."""
    with open(CORPUS / "manifest.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    clips = [
        Clip(CORPUS / "clips" / r["file"], r["language"], float(r["duration_s"]), r["reference_text"])
        for r in rows
        if r["language"] in languages and r["ref_quality"] in quality and (not max_s or float(r["duration_s"]) <= max_s)
    ]
    return clips[:limit] if limit else clips


def long_clips() -> list[Clip]:
    with open(CORPUS / "manifest_long.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [
        Clip(CORPUS / r["file"], r["language"], float(r["duration_s"]), r.get("reference_text", ""))
        for r in rows
    ]


def normalise_en(text: str) -> str:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()(text)


def normalise_cjk(text: str) -> str:
    """Characters only: punctuation and spaces removed (CER on Chinese)."""
    return re.sub(r"[\W_]+", "", text)


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    refs = [normalise_en(r) for r in references]
    hyps = [normalise_en(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    return jiwer.wer([r for r, _ in pairs], [h or "<empty>" for _, h in pairs])


def cer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    refs = [normalise_cjk(r) for r in references]
    hyps = [normalise_cjk(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    return jiwer.cer([r for r, _ in pairs], [h or "∅" for _, h in pairs])


def print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns), file=sys.stdout)
    print("-|-".join("-" * widths[c] for c in columns), file=sys.stdout)
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns), file=sys.stdout)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
