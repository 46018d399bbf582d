"""NVIDIA GPU facts from NVML: which GPUs there are, what CUDA calls them, and one reading of
each one's utilisation and memory. Nothing here prints.

Without an NVIDIA driver every entry point still works: it reports "no NVIDIA GPU (NVML
unavailable: <reason>)" as data, never raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


def gib(mib: float | None, fmt: str = ".1f") -> str:
    """MiB as GiB for people; "n/a" for a reading the GPU did not give."""
    return "n/a" if mib is None else format(mib / 1024, fmt)


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def unavailable_message(reason: str) -> str:
    """The one line shown when there is no usable NVML (no driver, no GPU, no nvidia-ml-py)."""
    return f"no NVIDIA GPU (NVML unavailable: {reason})"


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU, by its CUDA index (as --gpus and CUDA_VISIBLE_DEVICES count). Fields
    a GPU does not report are None, shown as n/a (a MIG slice reports no utilisation; restricted
    permissions can hide memory too)."""

    index: int
    util_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    power_w: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None


@dataclass(frozen=True)
class GpuDevice:
    """Static facts about one GPU plus its load at the moment it was read (NVML's index)."""

    index: int
    name: str
    memory_total_mib: float | None
    memory_used_mib: float | None
    util_pct: float | None
    uuid: str = ""
    compute_capability: str | None = None  # e.g. "12.0"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid or None,
            "compute_capability": self.compute_capability,
            "memory_total_mib": rounded(self.memory_total_mib, 0),
            "memory_used_mib": rounded(self.memory_used_mib, 0),
            "util_pct": self.util_pct,
        }


@dataclass(frozen=True)
class NvmlInfo:
    """What NVML says about this machine.

    Attributes:
        available: NVML loaded and initialised.
        reason: Why it is unavailable (empty when available).
        driver_version: e.g. "550.54.15".
        cuda_driver_version: Highest CUDA version the driver supports, e.g. "12.4".
        devices: Every GPU NVML lets this process read.
        refused: (NVML index, reason) of each GPU that refused access: not ours (another job's).
    """

    available: bool
    reason: str = ""
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    devices: tuple[GpuDevice, ...] = ()
    refused: tuple[tuple[int, str], ...] = ()

    @property
    def has_gpu(self) -> bool:
        return self.available and bool(self.devices)

    def describe(self) -> str:
        """One line for people: the GPUs, or why there are none."""
        if not self.available:
            return unavailable_message(self.reason)
        if not self.devices and self.refused:
            return f"no NVIDIA GPU this process may use ({', '.join(f'GPU{i}' for i, _ in self.refused)} refused access: not ours)"
        if not self.devices:
            return f"no NVIDIA GPU (NVML found no device; driver {self.driver_version})"
        gpus = ", ".join(f"{d.name} ({gib(d.memory_total_mib, '.0f')} GiB)" for d in self.devices)
        return f"{gpus}; driver {self.driver_version}, CUDA {self.cuda_driver_version or '?'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason or None,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "devices": [d.to_dict() for d in self.devices],
            "refused": [{"index": i, "reason": reason} for i, reason in self.refused],
        }


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def nvml_reason(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return "nvidia-ml-py is not installed"
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _uuid(nvml: Any, handle: Any) -> str:
    try:
        return _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception:
        return ""


def _optional(read: Callable[[], float]) -> float | None:
    """A reading some GPUs do not support (power, clocks on some boards, MIG slices)."""
    try:
        return float(read())
    except Exception:
        return None


def visible_gpus(cuda_count: int, nvml_uuids: Sequence[str | None], env: dict[str, str] | None = None) -> list[str | None]:
    """The UUID of the physical GPU behind each CUDA device index (None where it cannot be told).

    NVML numbers GPUs in PCI bus order and ignores CUDA_VISIBLE_DEVICES; CUDA renumbers the GPUs
    that variable lists (indices, or UUIDs and their prefixes, or MIG names; not PCI bus ids:
    https://docs.nvidia.com/cuda/cuda-programming-guide/05-appendices/environment-variables.html),
    in its own order unless CUDA_DEVICE_ORDER is PCI_BUS_ID (CareVoice sets that before CUDA starts,
    when it is not set). So GPU 1 of a run can be NVML's GPU 3, another tenant's GPU 1. CUDA sees
    only the GPUs this process may open: under Slurm or a cgroup, NVML counts the node's GPUs and
    refuses the others' (None here), and CUDA's index 0 is the first GPU of the job's own.

    Args:
        cuda_count: How many CUDA devices there are.
        nvml_uuids: Every GPU's UUID, in NVML (PCI) order: None for one that refused access, "" for
            one whose UUID NVML did not give.
        env: The environment (default: this process's).

    Returns:
        A GPU UUID, or a MIG device's name as CUDA_VISIBLE_DEVICES gives it (``MIG-<uuid>``, or the
        legacy ``MIG-GPU-<uuid>/<gi>/<ci>``), per CUDA index.
    """
    env = dict(os.environ) if env is None else env
    ours = [u for u in nvml_uuids if u is not None]
    told = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID" or len(ours) == 1
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        physical: list[str | None] = [u or None for u in ours] if told else [None] * len(ours)
    else:
        physical = []
        for entry in (e.strip() for e in listed.split(",")):
            if entry.isdigit() and int(entry) < len(ours):
                physical.append((ours[int(entry)] or None) if told else None)
            elif entry.startswith(("GPU-", "MIG-")):
                matches = [u for u in ours if u and u.startswith(entry)]
                physical.append(matches[0] if len(matches) == 1 else (entry if entry.startswith("MIG-") else None))
            else:
                break  # CUDA ignores an invalid entry and every one after it
    return (physical + [None] * cuda_count)[:cuda_count]


def mig_handle(nvml: Any, name: str) -> Any:
    """NVML's handle for a MIG device as CUDA_VISIBLE_DEVICES names it: ``MIG-<uuid>``, or the
    legacy ``MIG-GPU-<uuid>/<gpu instance>/<compute instance>`` of drivers before R470."""
    if not name.startswith("MIG-GPU-"):
        return nvml.nvmlDeviceGetHandleByUUID(name)
    gpu_uuid, gpu_instance, compute_instance = name.removeprefix("MIG-").split("/")
    gpu = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid)
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot)
        except Exception:  # an empty slot
            continue
        if (nvml.nvmlDeviceGetGpuInstanceId(mig), nvml.nvmlDeviceGetComputeInstanceId(mig)) == (int(gpu_instance), int(compute_instance)):
            return mig
    raise LookupError("no such MIG device")


class NvmlSession:
    """An initialised NVML session over some GPUs; :meth:`open` returns None (with a reason) when
    there is none. ``handles``: (label, handle) — the label is the index a run calls the GPU by.
    ``refused``: (NVML index, reason) of each GPU that refused a handle: not ours (another job's,
    under Slurm or a cgroup), left out."""

    def __init__(self, nvml: Any, handles: list[tuple[int, Any]], refused: Sequence[tuple[int, str]] = ()) -> None:
        self.nvml = nvml
        self.handles = handles
        self.refused = tuple(refused)

    @classmethod
    def open(cls, cuda_indices: Sequence[int] | None = None) -> tuple[NvmlSession | None, str]:
        """Every GPU NVML lets this process read, by NVML index; or the GPUs behind these CUDA
        device indices (a GPU that cannot be matched to one is left out: its numbers would be
        another GPU's). Each GPU is opened alone: NVML's count includes GPUs that refuse access."""
        try:
            import pynvml  # no NVIDIA driver or nvidia-ml-py reads as no GPU

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError, ...
            return None, nvml_reason(exc)
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:
            cls._shutdown(pynvml)
            return None, nvml_reason(exc)
        every: list[Any] = []
        refused = []
        for i in range(count):
            try:
                every.append(pynvml.nvmlDeviceGetHandleByIndex(i))
            except Exception as exc:  # NVML_ERROR_NO_PERMISSION: another job's GPU (a lost GPU, too)
                every.append(None)
                refused.append((i, nvml_reason(exc)))
        if cuda_indices is None:
            return cls(pynvml, [(i, h) for i, h in enumerate(every) if h is not None], refused), ""
        uuids = [None if h is None else _uuid(pynvml, h) for h in every]
        behind = visible_gpus(max(cuda_indices, default=-1) + 1, uuids)
        handles = []
        for index in cuda_indices:
            uuid = behind[index]
            try:
                if uuid is not None:
                    handles.append((index, every[uuids.index(uuid)] if uuid in uuids else mig_handle(pynvml, uuid)))
            except Exception:  # a MIG device NVML does not know: left out, like a GPU it cannot match
                continue
        return cls(pynvml, handles, refused), ""

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        self._shutdown(self.nvml)

    def sample(self) -> list[GpuSample]:
        """Read every GPU once. A reading a GPU refuses (a MIG slice, restricted permissions) is
        None; when not one reading of any GPU comes back, the driver is gone: NVMLError."""
        nvml = self.nvml
        samples, failures = [], []

        def read(call: Callable[[], float]) -> float | None:
            try:
                return float(call())
            except Exception as exc:
                failures.append(exc)
                return None

        for index, handle in self.handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                failures.append(exc)
                memory = None
            samples.append(
                GpuSample(
                    index=index,
                    util_pct=read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    memory_used_mib=memory.used / MIB if memory is not None else None,
                    memory_total_mib=memory.total / MIB if memory is not None else None,
                    power_w=read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                    temperature_c=read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                    sm_clock_mhz=read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
                    memory_clock_mhz=read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
                )
            )
        if failures and len(failures) == 6 * len(self.handles):
            raise failures[-1]
        return samples

    def info(self) -> NvmlInfo:
        nvml = self.nvml
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _optional(nvml.nvmlSystemGetCudaDriverVersion_v2)
        cuda_text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None
        now = {s.index: s for s in self.sample()}
        devices = []
        for i, handle in self.handles:
            uuid = _uuid(nvml, handle)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except Exception:
                capability = None
            devices.append(
                GpuDevice(i, _text(nvml.nvmlDeviceGetName(handle)), now[i].memory_total_mib, now[i].memory_used_mib, now[i].util_pct, uuid, capability)
            )
        return NvmlInfo(True, "", driver, cuda_text, tuple(devices), self.refused)


def read_nvml_info() -> NvmlInfo:
    """Driver version and each GPU's name, memory and utilisation now. Never raises."""
    session, reason = NvmlSession.open()
    if session is None:
        return NvmlInfo(False, reason)
    try:
        return session.info()
    except Exception as exc:
        return NvmlInfo(False, nvml_reason(exc))
    finally:
        session.close()
