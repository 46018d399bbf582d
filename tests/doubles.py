"""Test doubles, all in one place (no GPU and no model needed): the engine, and the GPU side of
CareVoice's outside libraries. A fake engine is for pipeline and CLI logic only, never the only test
of transcription (STYLE.md): the engine tests run the real tiny.en model on real audio.

``FakeEngine`` stands in for a loaded model (``carevoice.engine.whisper.Engine``), with what the
runner needs of one (``EngineFacts`` and ``BatchEngine`` in carevoice.run.pipeline: ``ref``,
``device``, ``compute_type``, ``device_index``, ``features``, ``run_batch``). Each chunk becomes
``fake_chunk_result``: one segment of two words whose text is the chunk's length (deterministic,
instant, so two runs write the same bytes). It takes the device and CUDA index it is loaded on
(compute type float16 on "cuda", int8 on the CPU), an optional delay a batch (``delay_s``: so that
several engines overlap, or a slow engine holds decoding back), a ``gate`` (a threading.Event the
test sets: each batch waits for it, so a test decides when a long batch ends, and ``inside`` is set
while a batch is in the engine), a bug (``bug_from_batch``: that batch and every later one raise
ZeroDivisionError, which is no EngineError, so it escapes the per-file handling as a bug in an
engine would), a failure of every chunk it is handed (``refuse``: the EngineError each comes back
as, failing its file), and records the chunks of every batch it was handed (``batches``; ``calls`` and
``entered`` count them). ``fake_load`` makes an ``Engine.load`` that builds one (into a list, to
see what was loaded; ``only_on`` asserts the one device it may be asked for); it needs no fixture,
so a driver script run in a child process uses it too (with tests/ put on ``sys.path`` first). The
``fake_engines`` fixture installs it and returns the list of engines built (one a run).

``FakeNvml`` is a ``pynvml`` module: GPUs with names, UUIDs, PCI bus ids, compute capabilities,
memory and utilisation; MIG devices (no utilisation; a GPU's ``slices``, found by MIG UUID or by
GPU and compute instance); another job's GPU (``denied``: NVML counts it and refuses its handle,
CUDA does not see it); ``NVMLError`` on chosen calls of chosen GPUs; a driver that disappears
after some readings. The ``fake_nvml`` fixture puts one in ``sys.modules["pynvml"]``.

``FakeCuda`` is the CUDA side of CTranslate2, at the narrowest seam CareVoice uses:
``get_cuda_device_count``, ``get_supported_compute_types`` per device, ``models.Whisper`` on
``device="cuda"``, and ``StorageView``. A real CPU model does every computation (so transcripts
are real); the double adds what a GPU does differently: the CUDA numbering that
``CUDA_VISIBLE_DEVICES`` makes (set it before installing; a ``denied`` GPU is not seen at all), a compute type a GPU cannot run
refused as CTranslate2 refuses it, a full GPU (out of memory at loading), cuBLAS missing (raised at
the first matrix product, as CTranslate2's dynamic loader does), out of memory from a chosen batch
size, arrays that live on a device (``to_device`` has no index and copies to the current device,
GPU 0, as CTranslate2's does), and the device of every array handed to each model
(``FakeCuda.handed``). The ``fake_cuda`` fixture installs one (build it with ``.gpus(...)``).

Messages are CTranslate2's own (src/cuda/utils.h, src/cuda/cublas_stub.cc, src/types.cc).

``MISBEHAVING_WORKER_ARGV`` starts a decode worker (carevoice.run.pyav_worker) whose decode
(``misbehaving_decode``) hangs on a file whose name holds ``hang``, ends its process on ``exit`` and
crashes it with a segmentation fault on ``segv``, holds it on ``held`` until the test makes the file's
``.go`` sibling; it decodes every other file for real.

``nfs_flock`` is ``fcntl.flock`` as a Linux NFS client runs it (CIFS too, since Linux 5.5): a POSIX
lock on the whole file. Install it where carevoice.run.locks sees ``fcntl.flock`` (monkeypatch).

Kept beside the one test that needs them, because each scripts a single behaviour of a real object
rather than standing in for a whole one: ``ScriptedDecoder`` and ``RecordingCopy`` in
tests/engine/test_engine.py (a real decoder whose outcomes a policy table scripts, and its seeded
copies counted), ``FakeRay`` in tests/run/test_no_ray.py (Ray missing), ``Broken`` in
tests/run/test_chinese.py (an OpenCC that fails to load), ``FailingBackend`` in
tests/cli/test_rerun_cli.py (a backend that raises while results arrive), and spies wrapped around
the real ``Engine.run_batch`` (tests/run/test_batching.py, tests/cli/test_robustness.py,
tests/cli/test_privacy.py).
"""

from __future__ import annotations

import fcntl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from carevoice.engine.models import ModelRef
from carevoice.engine.whisper import Engine, EngineItem, ItemResult
from carevoice.errors import EngineError
from carevoice.settings import DecodeSettings, EngineSettings
from carevoice.transcript import Segment, Word

# --- the engine ------------------------------------------------------------------------------------


def fake_chunk_result(item: EngineItem) -> ItemResult:
    """What a stand-in engine makes of a chunk: its length as text, two words (for pipeline tests)."""
    d = round(item.duration_s, 3)
    words = (Word(0.0, d / 2, " Chunk", 0.9), Word(d / 2, d, f" {d}.", 0.8))
    return ItemResult("en", 1.0, [Segment(0, 0.0, d, f" Chunk {d}.", -0.1, 0.01, 1.0, words, "en")])


class FakeEngine:
    """A loaded model where only the pipeline is under test (see the module docstring)."""

    def __init__(
        self, ref: ModelRef, device: str = "cpu", device_index: int = 0, delay_s: float = 0.0,
        gate: threading.Event | None = None, bug_from_batch: int | None = None, refuse: EngineError | None = None,
    ) -> None:  # fmt: skip
        self.ref = ref
        self.device = device
        self.device_index = device_index
        self.compute_type = "float16" if device == "cuda" else "int8"
        self.delay_s = delay_s
        self.gate = gate
        self.bug_from_batch = bug_from_batch
        self.refuse = refuse
        self.inside = threading.Event()  # a batch is in run_batch now
        self.batches: list[int] = []  # the chunks of each run_batch call, in order

    @property
    def calls(self) -> int:
        return len(self.batches)

    @property
    def entered(self) -> int:
        """Chunks that have reached the engine (counted as a batch arrives, before its delay)."""
        return sum(self.batches)

    def features(self, samples: np.ndarray) -> np.ndarray:
        return np.zeros((80, max(1, len(samples) // 160)), dtype=np.float32)

    def run_batch(self, items: list[EngineItem], options: DecodeSettings) -> list[ItemResult | EngineError]:
        self.batches.append(len(items))
        self.inside.set()
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.gate is not None:
                self.gate.wait()
            if self.bug_from_batch is not None and self.calls >= self.bug_from_batch:
                raise ZeroDivisionError("float division by zero")  # a bug in an engine: no EngineError
            if self.refuse is not None:
                return [self.refuse for _ in items]
            return [fake_chunk_result(item) for item in items]
        finally:
            self.inside.clear()


def fake_load(
    built: list[FakeEngine] | None = None,
    delay_s: float = 0.0,
    only_on: str | None = None,
    bug_from_batch: int | None = None,
    refuse: EngineError | None = None,
) -> Any:
    """An ``Engine.load`` (a classmethod) that builds a FakeEngine on the device and index asked
    for, appended to ``built``; ``only_on``: the one device it may be asked for (asserted);
    ``bug_from_batch`` and ``refuse``: see FakeEngine."""

    def load(cls: type[Engine], settings: EngineSettings, ref: ModelRef, device: str, device_index: int = 0) -> FakeEngine:
        assert only_on is None or device == only_on, f"Engine.load asked for {device!r}"
        engine = FakeEngine(ref, device, device_index, delay_s, bug_from_batch=bug_from_batch, refuse=refuse)
        if built is not None:
            built.append(engine)
        return engine

    return classmethod(load)


@pytest.fixture
def fake_engines(monkeypatch: pytest.MonkeyPatch) -> list[FakeEngine]:
    """Engine.load builds FakeEngines; the list holds every one built (one a run on the CPU)."""
    built: list[FakeEngine] = []
    monkeypatch.setattr(Engine, "load", fake_load(built))
    return built


OUT_OF_MEMORY = "CUDA failed with error out of memory"
CUBLAS_MISSING = "Library libcublas.so.12 is not found or cannot be loaded"
ALL_TYPES = frozenset({"float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16"})


@dataclass
class FakeGpu:
    """One physical GPU, as both doubles see it."""

    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    bus_id: str = "00000000:01:00.0"
    capability: tuple[int, int] = (9, 0)
    compute_types: frozenset[str] = ALL_TYPES
    memory_total_mib: float = 143_771.0
    memory_used_mib: float = 1_024.0
    util_pct: float = 50.0
    full: bool = False  # another tenant's job holds its memory: loading a model runs out of it
    cublas_missing: bool = False
    oom_from_batch: int | None = None  # a batch of this many chunks or more runs out of memory
    mig: bool = False  # a MIG slice: no utilisation reading
    refuse: frozenset[str] = frozenset()  # NVML calls that fail on it (restricted permissions)
    denied: bool = False  # another job's GPU (Slurm, cgroups): NVML counts it but refuses a handle, CUDA does not see it
    slices: tuple[FakeGpu, ...] = ()  # its MIG devices (each a FakeGpu with mig=True and its instance)
    instance: tuple[int, int] = (0, 0)  # a MIG device's GPU instance and compute instance ids


def h200s(count: int) -> list[FakeGpu]:
    """``count`` H200s, told apart by UUID, bus id and utilisation (GPU i: 10 * (i + 1) %)."""
    return [
        FakeGpu(uuid=f"GPU-{i:08d}-aaaa-bbbb-cccc-{i:012d}", bus_id=f"00000000:{i + 1:02x}:00.0", util_pct=10.0 * (i + 1))
        for i in range(count)
    ]


RTX_5070_TI = FakeGpu(
    name="NVIDIA GeForce RTX 5070 Ti",
    uuid="GPU-5070ae00-0000-0000-0000-000000000000",
    capability=(12, 0),
    compute_types=frozenset({"float32", "float16", "bfloat16"}),  # CTranslate2 4.6.2–4.6.x: no INT8 on sm_120
    memory_total_mib=16_303.0,
)


def cuda_order(gpus: list[FakeGpu], visible: str | None) -> list[FakeGpu]:
    """The GPUs CUDA numbers 0, 1, … (PCI order, as CareVoice asks), as CUDA_VISIBLE_DEVICES says;
    CUDA sees only the GPUs this process may open, and its indices count those alone."""
    gpus = [g for g in gpus if not g.denied]
    if visible is None:
        return gpus
    picked = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit() and int(entry) < len(gpus):
            picked.append(gpus[int(entry)])
        elif entry.startswith("GPU-") and len(matches := [g for g in gpus if g.uuid.startswith(entry)]) == 1:
            picked.append(matches[0])
        else:
            break
    return picked


# --- NVML ------------------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    """A ``pynvml`` module over FakeGpus (NVML's order: PCI order, CUDA_VISIBLE_DEVICES ignored)."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, gpus: list[FakeGpu], vanish_after: int | None = None) -> None:
        self.gpus = gpus
        self.vanish_after = vanish_after  # readings of memory before the driver disappears
        self.readings = 0

    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        if self.vanish_after is not None and self.readings > self.vanish_after:
            raise NVMLError("Driver Not Loaded")
        gpu = getattr(handle, "mig", None) or self.gpus[handle.index]
        if call in gpu.refuse:
            raise NVMLError("Insufficient Permissions")
        return gpu

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.86.10"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12080

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if self.gpus[index].denied:
            raise NVMLError("Insufficient Permissions")  # NVML_ERROR_NO_PERMISSION, as pynvml words it
        return SimpleNamespace(index=index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return self.nvmlDeviceGetHandleByIndex(index)
            for mig in gpu.slices:
                if mig.uuid == uuid:
                    return SimpleNamespace(index=index, mig=mig)
        raise NVMLError("Not Found")

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        return len(self._gpu(handle, "mig").slices)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        slices = self._gpu(handle, "mig").slices
        if index >= len(slices):
            raise NVMLError("Not Found")
        return SimpleNamespace(index=handle.index, mig=slices[index])

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._gpu(handle, "instance").instance[0]

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._gpu(handle, "instance").instance[1]

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "uuid").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, "name").name

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._gpu(handle, "capability").capability

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle, "memory")
        self.readings += 1
        return SimpleNamespace(used=gpu.memory_used_mib * 2**20, total=gpu.memory_total_mib * 2**20)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu(handle, "utilization")
        if gpu.mig:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=gpu.util_pct, memory=10)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return int(self._gpu(handle, "power").util_pct * 5000)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return 40 + int(self._gpu(handle, "temperature").util_pct // 5)

    def nvmlDeviceGetClockInfo(self, handle: Any, kind: int) -> int:
        self._gpu(handle, "clock")
        return 1500 if kind == self.NVML_CLOCK_SM else 2600


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeNvml]:
    """Call with the GPUs (and ``vanish_after``) to install a FakeNvml as ``pynvml``."""

    def install(gpus: list[FakeGpu], vanish_after: int | None = None) -> FakeNvml:
        fake = FakeNvml(gpus, vanish_after)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


# --- CTranslate2's CUDA side ------------------------------------------------------------------------


class FakeArray:
    """A StorageView as the double sees it: real host data, and the device it "lives" on."""

    def __init__(self, real: Any, device: str = "cpu", index: int = 0) -> None:
        self.real = real
        self.device = device
        self.index = index

    @property
    def shape(self) -> Any:
        return self.real.shape

    @property
    def where(self) -> str:
        return "cpu" if self.device == "cpu" else f"cuda:{self.index}"

    def to_device(self, device: Any) -> FakeArray:
        # CTranslate2's to_device(Device.cuda) takes no index: the copy lands on the current device, 0.
        return FakeArray(self.real, "cpu" if str(device).endswith("cpu") else "cuda", 0)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = np.asarray(self.real)
        return data if dtype is None else data.astype(dtype)


def unwrap(value: Any) -> Any:
    return value.real if isinstance(value, FakeArray) else value


@dataclass
class FakeCuda:
    """The CUDA side of CTranslate2 over FakeGpus (see the module docstring)."""

    physical: list[FakeGpu] = field(default_factory=list)
    visible: list[FakeGpu] = field(default_factory=list)
    handed: dict[int, Counter[str]] = field(default_factory=dict)  # CUDA index -> where its inputs lived
    batches: dict[int, list[int]] = field(default_factory=dict)  # CUDA index -> chunks of each generate
    loaded: list[tuple[int, str]] = field(default_factory=list)  # (CUDA index, compute type) of each model


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[FakeGpu]], FakeCuda]:
    """Call with the physical GPUs to install the double into the real ``ctranslate2`` module
    (CUDA_VISIBLE_DEVICES, if a test sets it, must be set first)."""
    import os

    import ctranslate2

    real_whisper, real_storage, real_types = ctranslate2.models.Whisper, ctranslate2.StorageView, ctranslate2.get_supported_compute_types

    def install(gpus: list[FakeGpu]) -> FakeCuda:
        cuda = FakeCuda(gpus, cuda_order(gpus, os.environ.get("CUDA_VISIBLE_DEVICES")))

        class StorageView:
            @staticmethod
            def from_array(array: Any) -> FakeArray:
                return FakeArray(real_storage.from_array(array))

        def supported(device: str, device_index: int = 0) -> set[str]:
            if device != "cuda":
                return real_types(device, device_index)
            if device_index >= len(cuda.visible):
                raise RuntimeError("CUDA failed with error invalid device ordinal")
            return set(cuda.visible[device_index].compute_types)

        def whisper(path: str, device: str = "cpu", device_index: int = 0, compute_type: str = "default", intra_threads: int = 0, **_: Any) -> Any:
            return FakeWhisper(cuda, real_whisper, path, device, device_index, compute_type, intra_threads)

        monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: len(cuda.visible))
        monkeypatch.setattr(ctranslate2, "get_supported_compute_types", supported)
        monkeypatch.setattr(ctranslate2.models, "Whisper", whisper)
        monkeypatch.setattr(ctranslate2, "StorageView", StorageView)
        return cuda

    return install


class FakeWhisper:
    """``ctranslate2.models.Whisper``: on the CPU the real model; on "cuda" the real model on the
    CPU, behaving as the GPU it stands for."""

    def __init__(self, cuda: FakeCuda, real_whisper: Any, path: str, device: str, index: int, compute_type: str, threads: int) -> None:
        self.cuda = cuda
        self.device = device
        self.device_index = [index]  # CTranslate2 lists the model's devices
        self.gpu: FakeGpu | None = None
        if device == "cuda":
            if index >= len(cuda.visible):
                raise RuntimeError("CUDA failed with error invalid device ordinal")
            self.gpu = cuda.visible[index]
            if compute_type not in self.gpu.compute_types and compute_type not in ("default", "auto"):
                raise ValueError(
                    f"Requested {compute_type} compute type, but the target device or backend do not support efficient {compute_type} computation."
                )
            if self.gpu.full:
                raise RuntimeError(OUT_OF_MEMORY)
            cuda.loaded.append((index, compute_type))
        self.real = real_whisper(path, device="cpu", compute_type="int8", intra_threads=threads or 2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _arrive(self, array: Any, chunks: int) -> None:
        """An input reaches the model: note where it lived; then what this GPU does with a GEMM."""
        if self.gpu is None:
            return
        index = self.device_index[0]
        self.cuda.handed.setdefault(index, Counter())[array.where if isinstance(array, FakeArray) else "cpu"] += 1
        if self.gpu.cublas_missing:
            raise RuntimeError(CUBLAS_MISSING)
        if self.gpu.oom_from_batch is not None and chunks >= self.gpu.oom_from_batch:
            raise RuntimeError(OUT_OF_MEMORY)

    def _out(self, real: Any) -> Any:
        return FakeArray(real, "cuda", self.device_index[0]) if self.gpu is not None else FakeArray(real)

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        self._arrive(features, int(features.shape[0]))
        encoded = self.real.encode(unwrap(features), to_cpu=True)
        return FakeArray(encoded) if to_cpu else self._out(encoded)

    def generate(self, features: Any, prompts: Any, **options: Any) -> Any:
        self._arrive(features, len(prompts))
        if self.gpu is not None:
            self.cuda.batches.setdefault(self.device_index[0], []).append(len(prompts))
        return self.real.generate(unwrap(features), prompts, **options)

    def detect_language(self, features: Any) -> Any:
        self._arrive(features, int(features.shape[0]))
        return self.real.detect_language(unwrap(features))

    def align(self, features: Any, *args: Any, **options: Any) -> Any:
        self._arrive(features, int(features.shape[0]))
        return self.real.align(unwrap(features), *args, **options)


def arrays_elsewhere(cuda: FakeCuda) -> dict[int, Counter[str]]:
    """For each GPU, the arrays handed to its model that lived on another GPU."""
    return {i: Counter({w: n for w, n in where.items() if w not in ("cpu", f"cuda:{i}")}) for i, where in cuda.handed.items() if any(w not in ("cpu", f"cuda:{i}") for w in where)}


# --- the kernel on a network share -------------------------------------------------------------------


def nfs_flock(fd: int, operation: int) -> None:
    """``flock`` on NFS: emulated as an ``fcntl`` byte-range lock on the whole file (flock(2), "NFS
    details"). So an exclusive lock needs a descriptor open for writing (fcntl(2): F_WRLCK on a
    read-only one is EBADF), and it conflicts with a POSIX lock of another process, as the server
    makes another host's lock conflict."""
    fcntl.lockf(fd, operation)


def misbehaving_decode(path: bytes) -> tuple[dict[str, Any], bytes | None]:
    """A decode worker's decode that hangs, exits or crashes as the file's name says (see the docstring)."""
    import os  # only in a worker process
    import signal  # only in a worker process

    from carevoice.run.pyav_worker import decode_file  # only in a worker process

    name = os.path.basename(path)
    if b"hang" in name:
        time.sleep(3600)
    if b"held" in name:  # until the test makes "<path>.go" (a minute at most)
        deadline = time.monotonic() + 60
        while not os.path.exists(path + b".go") and time.monotonic() < deadline:
            time.sleep(0.01)
    if b"exit" in name:
        os._exit(3)
    if b"segv" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_file(path)


_TESTS = str(Path(__file__).resolve().parent)
MISBEHAVING_WORKER_ARGV = (
    sys.executable, "-I", "-c",
    f"import sys; sys.path[:0] = [{_TESTS!r}, {str(Path(_TESTS).parent)!r}]; import doubles; from carevoice.run.pyav_worker import serve; "
    + "serve(doubles.misbehaving_decode)",
)  # fmt: skip
