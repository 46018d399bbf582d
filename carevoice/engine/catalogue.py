"""The model catalogue: the Whisper models CareVoice knows by name, where each comes from, and what it
needs on disk and in GPU memory. Data only (and one lookup); the figures' sources are in docs/models.md.

Sizes on disk are the hub's (or measured here, for the two models the offline packages carry). GPU
memory is an estimate from the parameter count unless a source published a measurement: weights at
the compute type's bytes per parameter, plus CTranslate2's working memory for one beam-5 decode
(fitted to faster-whisper's published large-v2 figures). A CareVoice run batches several chunks and
needs more; it sizes its batches to the free memory it finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# Bytes per parameter of the weights as CTranslate2 holds them for each compute type (int8_float16:
# int8 matrices, float16 for the rest: about one byte per parameter).
WEIGHT_BYTES = {"float32": 4.0, "float16": 2.0, "int8_float16": 1.0, "int8": 1.0}
COMPUTE_TYPES = ("float16", "int8_float16", "int8")
# Working memory of one beam-5 decode: fitted to faster-whisper's README (large-v2 on an RTX 3070 Ti,
# beam 5: float16 4525 MB, int8 2926 MB; the weights are 3.09 GB and 1.55 GB of that).
WORK_BASE_MIB = 500.0
WORK_PER_MPARAM_MIB = 0.6
MIB = 1 << 20


class Source(str, Enum):
    """Where a figure comes from."""

    MEASURED = "measured here"
    HUB = "hub file listing"
    PUBLISHED = "published"
    ESTIMATE = "estimate from parameter count"


@dataclass(frozen=True)
class CatalogueModel:
    """One model CareVoice can pull by name.

    Attributes:
        name: What --model and `carevoice models pull` take.
        repo: The Hugging Face repository of its CTranslate2 conversion.
        parameters_m: Millions of parameters (OpenAI's model card, or the fine-tune's base).
        disk_mb: Size of its files on disk, MB (10^6 bytes).
        disk_source: Where disk_mb comes from.
        languages: The languages it is good at, for people.
        english_only: Knows only English (the ``.en`` models).
        licence: The weights' licence.
        faster_whisper_knows: faster-whisper downloads it by this name itself (faster_whisper.utils._MODELS).
        tokenizer_repo: A repository whose tokenizer.json completes the folder when ``repo`` has none.
        gpu_mib_published: GPU memory a source measured, per compute type (beam 5, batch 1).
        note: Published accuracy or caveats, with their source.
    """

    name: str
    repo: str
    parameters_m: int
    disk_mb: int
    disk_source: Source
    languages: str
    english_only: bool = False
    licence: str = "MIT"
    faster_whisper_knows: bool = True
    tokenizer_repo: str | None = None
    gpu_mib_published: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def gpu_mib(self, compute_type: str) -> tuple[int, Source]:
        """GPU memory for one beam-5 decode at ``compute_type``, and where the figure comes from."""
        if compute_type in self.gpu_mib_published:
            return self.gpu_mib_published[compute_type], Source.PUBLISHED
        weights_mib = self.parameters_m * 1e6 * WEIGHT_BYTES[compute_type] / MIB
        return round(weights_mib + WORK_BASE_MIB + WORK_PER_MPARAM_MIB * self.parameters_m), Source.ESTIMATE


MULTI = "99 languages"
CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("tiny", "Systran/faster-whisper-tiny", 39, 75, Source.HUB, MULTI),
    CatalogueModel("tiny.en", "Systran/faster-whisper-tiny.en", 39, 78, Source.MEASURED, "English", english_only=True),
    CatalogueModel("base", "Systran/faster-whisper-base", 74, 148, Source.MEASURED, MULTI),
    CatalogueModel("base.en", "Systran/faster-whisper-base.en", 74, 145, Source.HUB, "English", english_only=True),
    CatalogueModel("small", "Systran/faster-whisper-small", 244, 484, Source.HUB, MULTI),
    CatalogueModel("small.en", "Systran/faster-whisper-small.en", 244, 484, Source.HUB, "English", english_only=True),
    CatalogueModel("medium", "Systran/faster-whisper-medium", 769, 1530, Source.HUB, MULTI),
    CatalogueModel("medium.en", "Systran/faster-whisper-medium.en", 769, 1530, Source.HUB, "English", english_only=True),
    CatalogueModel(
        "large-v2",
        "Systran/faster-whisper-large-v2",
        1550,
        3090,
        Source.HUB,
        MULTI,
        gpu_mib_published={"float16": 4525, "int8": 2926},  # faster-whisper README (RTX 3070 Ti, beam 5)
    ),
    CatalogueModel(
        "large-v3",
        "Systran/faster-whisper-large-v3",
        1550,
        3090,
        Source.HUB,
        "100 languages",
        note="128 mel bins; CER 8.95 on CommonVoice16-zh-TW (Breeze-ASR-25 model card)",
    ),
    CatalogueModel(
        "turbo",
        "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        809,
        1620,
        Source.HUB,
        "100 languages",
        note="large-v3 with 4 decoder layers: near large-v3 accuracy, several times faster; 128 mel bins",
    ),
    CatalogueModel(
        "breeze-asr-25",
        "phate334/Breeze-ASR-25-int8-CT2",
        1550,
        1550,
        Source.PUBLISHED,
        "zh-TW + English",
        licence="Apache-2.0",
        faster_whisper_knows=False,
        tokenizer_repo="openai/whisper-large-v2",
        note=(
            "MediaTek-Research/Breeze-ASR-25, a large-v2 fine-tune (int8 conversion): CER 7.97 on CommonVoice16-zh-TW, "
            "13.01 on CSZS zh-en (model card)"
        ),
    ),
)


def find_model(name: str) -> CatalogueModel | None:
    """The catalogue's entry called ``name``, or None."""
    return next((model for model in CATALOGUE if model.name == name), None)
