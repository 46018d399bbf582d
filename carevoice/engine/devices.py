"""Where a run's inference goes: a device choice as a record of facts and a reason, no sentences
(carevoice.render.words words it), and a run's engines as a short label. The CUDA facts come from
carevoice.engine.decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from carevoice.errors import SetupError
from carevoice.settings import Device

# On CUDA, without --compute-type: float16 where the GPU has fast float16, else INT8 weights with
# float32 arithmetic (what `carevoice doctor` recommends there), else float32.
CUDA_COMPUTE_PREFERENCE = ("float16", "int8_float32", "float32")


class ComputeReason(str, Enum):
    """Why a GPU runs the compute type it does."""

    ASKED = "asked"  # --compute-type, and the GPU runs it
    BEST = "best"  # the first of CUDA_COMPUTE_PREFERENCE the GPU runs
    NOT_SUPPORTED = "not_supported"  # --compute-type names a type the GPU cannot run: the best it can


@dataclass(frozen=True)
class ComputeChoice:
    """The compute type of one device, and why (``asked``: what --compute-type said, if anything)."""

    compute_type: str
    reason: ComputeReason
    asked: str | None = None


def choose_compute_type(asked: str | None, supported: frozenset[str]) -> ComputeChoice:
    """The compute type for a CUDA device that runs ``supported`` (CTranslate2's list for it;
    empty when it cannot tell, which trusts what was asked, or float16).

    A type the GPU cannot run is never asked of CTranslate2 (it raises): an RTX 5070 Ti (compute
    capability 12.0) runs no INT8 with CTranslate2 4.6.2–4.6.x, so ``int8_float16`` there becomes
    float16, and the run header says so.
    """
    if asked is not None and (not supported or asked in supported or asked == "auto"):
        return ComputeChoice(asked, ComputeReason.ASKED, asked)
    best = next((t for t in CUDA_COMPUTE_PREFERENCE if t in supported), CUDA_COMPUTE_PREFERENCE[0])
    return ComputeChoice(best, ComputeReason.BEST if asked is None else ComputeReason.NOT_SUPPORTED, asked)


class DeviceReason(str, Enum):
    """Why the run is on its device."""

    ASKED = "asked"  # --device cuda or --device cpu
    AUTO_CUDA = "auto_cuda"  # auto: CTranslate2 sees CUDA devices
    AUTO_NO_CUDA = "auto_no_cuda"  # auto: it sees none
    AUTO_CUDA_UNUSABLE = "auto_cuda_unusable"  # auto picked CUDA, the model could not load there: CPU


@dataclass(frozen=True)
class DeviceChoice:
    """The device a run uses and why.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        reason: Why.
        cuda_devices: How many CUDA devices CTranslate2 sees.
        gpus: The CUDA devices an engine was loaded on (one engine each; empty on the CPU).
        gpus_asked: What --gpus named (None: not given).
        problem: With AUTO_CUDA_UNUSABLE, why CUDA could not be used (one line).
        compute: Each GPU's compute type and why, in the order of ``gpus``.
        dropped: GPUs that could not load or run the model, and why (one line each): the run
            goes on with the others.
    """

    device: Literal["cuda", "cpu"]
    reason: DeviceReason
    cuda_devices: int = 0
    gpus: tuple[int, ...] = ()
    gpus_asked: tuple[int, ...] | None = None
    problem: str = ""
    compute: tuple[ComputeChoice, ...] = ()
    dropped: tuple[tuple[int, str], ...] = ()

    @property
    def fell_back(self) -> bool:
        """CUDA was picked but did not work: a warning the user must see."""
        return self.reason is DeviceReason.AUTO_CUDA_UNUSABLE


@dataclass(frozen=True)
class ClusterPlacement:
    """Where a Ray run goes: how many actors (one model each) on which kind of device."""

    device: Literal["cuda", "cpu"]
    actors: int
    files_per_task: int


def choose_device(requested: Device, cuda_devices: int) -> DeviceChoice:
    """Pick the device for ``--device`` when CTranslate2 sees ``cuda_devices`` CUDA devices.

    Raises:
        SetupError: CUDA was asked for but CTranslate2 sees no CUDA device.
    """
    if requested is Device.CUDA:
        if cuda_devices == 0:
            raise SetupError(
                "--device cuda asked for, but CTranslate2 sees no CUDA device",
                "check `nvidia-smi` and `carevoice doctor`, or use --device cpu",
            )
        return DeviceChoice("cuda", DeviceReason.ASKED, cuda_devices)
    if requested is Device.CPU:
        return DeviceChoice("cpu", DeviceReason.ASKED, cuda_devices)
    if cuda_devices > 0:
        return DeviceChoice("cuda", DeviceReason.AUTO_CUDA, cuda_devices)
    return DeviceChoice("cpu", DeviceReason.AUTO_NO_CUDA, cuda_devices)


def gpu_indices(asked: tuple[int, ...] | None, visible: int) -> tuple[int, ...]:
    """The CUDA devices to load an engine on: those asked for, else every one CTranslate2 sees.

    Raises:
        SetupError: an index CTranslate2 does not see.
    """
    if asked is None:
        return tuple(range(max(visible, 1)))
    unseen = [i for i in asked if i >= visible]
    if unseen:
        raise SetupError(
            f"--gpus {','.join(map(str, asked))}: CTranslate2 sees {visible} CUDA device(s), numbered 0 to {visible - 1}",
            "name GPUs from that range (CUDA_VISIBLE_DEVICES renumbers them), or leave --gpus out to use every one",
        )
    return asked


def engines_label(engines: Sequence[Any]) -> str:
    """The engines of a run as a label (run header, summary, day report): ``cuda ×2 (float16)``, ``cpu (int8)``."""
    compute_types = ", ".join(dict.fromkeys(e.compute_type for e in engines))
    count = f" ×{len(engines)}" if len(engines) > 1 else ""
    return f"{engines[0].device}{count} ({compute_types})"
