"""`carevoice doctor`: will CareVoice work here, and if not, what to do. A tuple of small checks,
each returning a CheckResult; :func:`run_checks` never raises.

Everything that can be broken (numpy, ffmpeg-python, faster-whisper, ctranslate2) is imported
inside the checks, so a broken install is reported instead of taking doctor down with it. The
GPU inference check runs in a child process per GPU: a missing cuBLAS can abort the process that uses it.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carevoice import interrupts
from carevoice.engine import cuda_probe, nvml
from carevoice.engine.build import package_versions
from carevoice.engine.cuda_probe import (
    CUBLAS_LIBRARY,
)
from carevoice.engine.devices import choose_compute_type
from carevoice.engine.models import resolve_model
from carevoice.engine.nvml import gib, visible_gpus
from carevoice.errors import CareVoiceError, ExitCode
from carevoice.run.chinese import self_test
from carevoice.settings import (
    SAMPLE_PATH,
    SAMPLE_RATE_HZ,
    DecodeSettings,
    DoctorSettings,
    EngineSettings,
)

if TYPE_CHECKING:
    import numpy as np

    from carevoice.engine.models import ModelRef
    from carevoice.engine.nvml import NvmlInfo
    from carevoice.run.audio import Ffmpeg

SPEECH_OFFSET_S = 0.3  # the sample's first word starts here
TONE_RATE_HZ = 48_000
TONE_HZ = 440.0
ROUND_TRIP_TOLERANCE_S = 0.1  # encoder priming/padding (AAC adds ~21 ms)
MIN_TONE_RMS = 0.05  # the tone is written at amplitude 0.5 (RMS ~0.35); silence means a broken decode
LOW_DISK_BYTES = 1 << 30
FFMPEG_VERSION_TIMEOUT_S = 20.0
ENCODE_TIMEOUT_S = 30.0
PACKAGES = ("carevoice", "faster-whisper", "ctranslate2", "numpy", "onnxruntime", "ffmpeg-python", "nvidia-ml-py")
REQUIRED_PACKAGES = frozenset(PACKAGES) - {"nvidia-ml-py"}  # without NVML CareVoice still runs, just unmonitored


class CheckStatus(str, Enum):
    """Outcome of one check. Only FAIL makes `doctor` exit 1."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # does not apply here (e.g. GPU checks without a GPU)


@dataclass(frozen=True)
class CheckResult:
    """One line of the doctor's report: what was checked, the outcome, a one-line detail, the fix."""

    name: str
    status: CheckStatus
    detail: str
    hint: str = ""
    trace: str = ""  # the traceback of a check that crashed, for --traceback; not in JSON

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "hint": self.hint or None}


@dataclass
class Context:
    """Facts that later checks reuse (found by earlier ones)."""

    settings: DoctorSettings
    backend_problem: str | None = None
    ffmpeg: Ffmpeg | None = None
    model_ref: ModelRef | None = None
    speech: np.ndarray | None = None  # 1 s of the bundled sample, decoded by CareVoice
    nvml: NvmlInfo | None = None
    cuda_devices: int = 0
    cuda_compute_types: frozenset[str] = field(default_factory=frozenset)
    cuda: list[CudaDevice] = field(default_factory=list)


def check_python(ctx: Context) -> CheckResult:
    version = platform.python_version()
    detail = f"Python {version} ({platform.python_implementation()}, {platform.system()} {platform.machine()}) at {sys.executable}"
    if sys.version_info < (3, 10):
        return CheckResult("python", CheckStatus.FAIL, detail, "CareVoice needs Python 3.10 or newer")
    return CheckResult("python", CheckStatus.PASS, detail)


def check_packages(ctx: Context) -> CheckResult:
    versions = package_versions(PACKAGES)
    detail = " · ".join(f"{name} {version or 'missing'}" for name, version in versions.items())
    missing = sorted(name for name in REQUIRED_PACKAGES if versions[name] is None)
    try:
        # in the check: a broken install fails this check, not doctor
        from carevoice.engine.decoder import backend_problem

        ctx.backend_problem = backend_problem()
    except Exception as exc:  # numpy itself broken: the decoder cannot even be imported
        ctx.backend_problem = f"carevoice.engine.decoder cannot be imported ({type(exc).__name__}: {str(exc)[:160]})"
    if missing:
        return CheckResult(
            "packages", CheckStatus.FAIL, f"{', '.join(missing)} not installed; {detail}", "pip install --force-reinstall carevoice"
        )
    if ctx.backend_problem:
        return CheckResult(
            "packages",
            CheckStatus.FAIL,
            f"{ctx.backend_problem}; {detail}",
            "reinstall it: pip install --force-reinstall 'faster-whisper==1.2.1' 'ctranslate2>=4.6.3,<5'",
        )
    if versions["nvidia-ml-py"] is None:
        return CheckResult("packages", CheckStatus.WARN, detail, "pip install nvidia-ml-py to see GPU utilisation")
    return CheckResult("packages", CheckStatus.PASS, detail)


def check_ffmpeg(ctx: Context) -> CheckResult:
    # in the check: a broken install fails this check, not doctor
    from carevoice.run.audio import find_ffmpeg

    try:
        found = find_ffmpeg()
    except CareVoiceError as exc:
        return CheckResult("ffmpeg", CheckStatus.FAIL, exc.message, exc.hint)
    where = f"{found.path} ({found.source.value})"
    fix = "fix or remove it, or point CAREVOICE_FFMPEG at a working ffmpeg (pip install 'carevoice[ffmpeg]' bundles one)"
    try:
        proc = subprocess.run(
            [found.path, "-hide_banner", "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FFMPEG_VERSION_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return CheckResult("ffmpeg", CheckStatus.FAIL, f"{where} did not answer within {FFMPEG_VERSION_TIMEOUT_S:.0f} s", fix)
    except OSError as exc:
        return CheckResult("ffmpeg", CheckStatus.FAIL, f"{where} cannot be run ({exc.strerror})", fix)
    first = proc.stdout.decode("utf-8", "replace").strip().splitlines()[:1]
    if proc.returncode != 0 or not first or not first[0].startswith("ffmpeg version"):
        return CheckResult("ffmpeg", CheckStatus.FAIL, f"{where} does not work (`ffmpeg -version` exited {proc.returncode})", fix)
    version = first[0].split()[2] if len(first[0].split()) > 2 else "?"
    ctx.ffmpeg = found
    return CheckResult("ffmpeg", CheckStatus.PASS, f"{where}, version {version}")


def write_tone(path: Path, duration_s: float = 1.0) -> None:
    """A mono 16-bit 48 kHz sine WAV (stdlib only: the test must not depend on what it tests)."""
    frames = int(duration_s * TONE_RATE_HZ)
    data = struct.pack(
        f"<{frames}h", *(int(0.5 * 32767 * math.sin(2 * math.pi * TONE_HZ * i / TONE_RATE_HZ)) for i in range(frames))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_RATE_HZ)
        out.writeframes(data)


@dataclass(frozen=True)
class RoundTrip:
    """A container/codec pair users' devices produce, and the ffmpeg encoder that makes a test file."""

    label: str
    suffix: str
    encoder: str

    @property
    def name(self) -> str:
        return f"decode {self.label}"


ROUND_TRIPS = (
    RoundTrip("Ogg/Opus", ".ogg", "libopus"),  # WhatsApp / Telegram voice notes
    RoundTrip("WebM/Opus", ".webm", "libopus"),  # browser MediaRecorder
    RoundTrip("M4A/AAC", ".m4a", "aac"),  # iPhone / Android recorders
)


def check_round_trip(ctx: Context, trip: RoundTrip) -> CheckResult:
    """Encode 1 s of tone with ffmpeg, decode it back through CareVoice's decoder, check its length."""
    import numpy as np  # in the check: a broken install fails this check, not doctor

    # in the check: a broken install fails this check, not doctor
    from carevoice.run.audio import decode_audio

    if ctx.ffmpeg is None:
        return CheckResult(trip.name, CheckStatus.SKIP, "not tested: no working ffmpeg (see ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="carevoice-doctor-") as tmp:
        source, encoded = Path(tmp) / "tone.wav", Path(tmp) / f"tone{trip.suffix}"
        write_tone(source)
        command = [ctx.ffmpeg.path, "-nostdin", "-v", "error", "-y", "-i", str(source), "-c:a", trip.encoder, str(encoded)]
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=ENCODE_TIMEOUT_S)
            encode_error = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if proc.returncode else None
        except (OSError, subprocess.TimeoutExpired) as exc:
            encode_error = [type(exc).__name__]
        if encode_error is not None:
            return CheckResult(
                trip.name,
                CheckStatus.WARN,
                f"not tested: this ffmpeg cannot encode a {trip.label} test file ({trip.encoder}: {(encode_error or ['failed'])[0][:120]})",
                "decoding may still work; a full ffmpeg build (apt-get install ffmpeg) can run this check",
            )
        fix = "this ffmpeg cannot decode it: install a full build (apt-get install ffmpeg) or set CAREVOICE_FFMPEG"
        try:
            samples = decode_audio(encoded, ctx.ffmpeg, timeout_s=ENCODE_TIMEOUT_S)
        except CareVoiceError as exc:
            return CheckResult(trip.name, CheckStatus.FAIL, exc.message, fix)
    duration_s = len(samples) / SAMPLE_RATE_HZ
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if abs(duration_s - 1.0) > ROUND_TRIP_TOLERANCE_S:
        return CheckResult(trip.name, CheckStatus.FAIL, f"1 s of {trip.label} decoded to {duration_s:.3f} s", fix)
    if rms < MIN_TONE_RMS:
        return CheckResult(trip.name, CheckStatus.FAIL, f"1 s of {trip.label} decoded to silence (RMS {rms:.3f})", fix)
    return CheckResult(trip.name, CheckStatus.PASS, f"1 s tone → {trip.label} → {duration_s:.3f} s at 16 kHz")


def _speech_second(ctx: Context) -> np.ndarray | None:
    """One second of the bundled speech sample, decoded by CareVoice (None without ffmpeg)."""
    # in the check: a broken install fails this check, not doctor
    from carevoice.run.audio import decode_audio

    if ctx.ffmpeg is None:
        return None
    try:
        samples = decode_audio(SAMPLE_PATH, ctx.ffmpeg, timeout_s=ENCODE_TIMEOUT_S)
    except CareVoiceError:
        return None
    start = int(SPEECH_OFFSET_S * SAMPLE_RATE_HZ)
    return samples[start : start + SAMPLE_RATE_HZ].copy()


def check_model(ctx: Context) -> CheckResult:
    """Resolve the model, load it on the CPU, transcribe one second of speech (the text is never shown)."""
    import numpy as np  # in the check: a broken install fails this check, not doctor

    from carevoice.engine.whisper import (  # in the check: a broken install fails this check, not doctor
        Engine,
        EngineItem,
    )

    engine_settings = ctx.settings.engine
    try:
        ref = resolve_model(engine_settings.model, engine_settings.cache_dir)
        started = time.monotonic()
        engine = Engine.load(
            EngineSettings(model=engine_settings.model, cpu_threads=engine_settings.cpu_threads, cache_dir=engine_settings.cache_dir),
            ref,
            "cpu",
        )
    except CareVoiceError as exc:
        return CheckResult("model", CheckStatus.FAIL, f"{engine_settings.model!r}: {exc.message}", exc.hint)
    load_s = time.monotonic() - started
    ctx.model_ref = ref
    ctx.speech = _speech_second(ctx)
    speech = ctx.speech is not None
    samples = ctx.speech if speech else np.sin(np.arange(SAMPLE_RATE_HZ) * 2 * np.pi * TONE_HZ / SAMPLE_RATE_HZ).astype(np.float32)
    started = time.monotonic()
    try:
        item = EngineItem(samples, engine.features(samples), engine.window_frames(1.0, None), None)
        (result,) = engine.run_batch([item], DecodeSettings(word_timestamps=False))
        if isinstance(result, CareVoiceError):
            raise result
    except CareVoiceError as exc:
        return CheckResult("model", CheckStatus.FAIL, f"{ref.model_id} loads but cannot transcribe on cpu: {exc.message}", exc.hint)
    infer_s = time.monotonic() - started
    segments = len(result.segments)
    what = "1 s of the bundled speech sample" if speech else "1 s of test tone (no ffmpeg to decode the speech sample)"
    detail = (
        f"{ref.model_id} from {ref.origin} ({ref.load_from}); loads on cpu ({engine.compute_type}) in {load_s:.1f} s; "
        f"{what} transcribed in {infer_s:.2f} s ({segments} segment(s))"
    )
    if speech and segments == 0:
        return CheckResult(
            "model", CheckStatus.WARN, detail, "the model produced no text for clear speech: it may be damaged or not a Whisper model"
        )
    return CheckResult("model", CheckStatus.PASS, detail)


def check_opencc(ctx: Context) -> CheckResult:
    """OpenCC loads and converts a known sentence to Taiwan Traditional (what --zh-script auto, the default, and tw/hk/simplified use)."""

    ok, detail = self_test()
    if ok:
        return CheckResult("Chinese script (OpenCC)", CheckStatus.PASS, detail)
    return CheckResult(
        "Chinese script (OpenCC)",
        CheckStatus.FAIL,
        detail,
        "pip install --force-reinstall opencc (Chinese transcripts need it: every script choice but keep, the default auto included)",
    )


def check_nvml(ctx: Context) -> CheckResult:

    info = ctx.nvml = nvml.read_nvml_info()
    if not info.has_gpu:
        return CheckResult("NVIDIA GPU", CheckStatus.SKIP, info.describe())
    gpus = "; ".join(
        f"GPU{d.index} {d.name} (compute capability {d.compute_capability or '?'}): "
        f"{gib(d.memory_used_mib)}/{gib(d.memory_total_mib, '.0f')} GiB used, {'n/a' if d.util_pct is None else f'{d.util_pct:.0f}%'} busy"
        for d in info.devices
    )
    refused = "".join(f"; GPU{i} refused access ({reason}): not ours, left out" for i, reason in info.refused)
    return CheckResult(
        "NVIDIA GPU", CheckStatus.PASS, f"driver {info.driver_version} (CUDA {info.cuda_driver_version or '?'}); {gpus}{refused}"
    )


@dataclass(frozen=True)
class CudaDevice:
    """What doctor knows of one CUDA device (by CUDA's index, as --gpus counts)."""

    index: int
    name: str
    compute_capability: str | None
    compute_types: frozenset[str]
    runs: str  # the compute type a run uses there (carevoice.engine.devices.choose_compute_type)


def cuda_devices(ctx: Context) -> list[CudaDevice]:
    """Every CUDA device, with the facts NVML has of the physical GPU behind it."""
    # in the check: a broken install fails this check, not doctor
    from carevoice.engine.decoder import cuda_compute_types

    nvml = ctx.nvml.devices if ctx.nvml is not None else ()
    behind = visible_gpus(ctx.cuda_devices, [d.uuid for d in nvml])
    devices = []
    for index in range(ctx.cuda_devices):
        gpu = next((d for d in nvml if d.uuid and d.uuid == behind[index]), None)
        types = cuda_compute_types(index)
        runs = choose_compute_type(ctx.settings.engine.compute_type, types).compute_type
        devices.append(CudaDevice(index, gpu.name if gpu else "?", gpu.compute_capability if gpu else None, types, runs))
    return devices


def check_cuda(ctx: Context) -> CheckResult:
    from carevoice.engine.decoder import (  # in the check: a broken install fails this check, not doctor
        CUBLAS_HINT,
        cuda_device_count,
    )

    if ctx.backend_problem and "ctranslate2" in ctx.backend_problem:
        return CheckResult("CUDA (ctranslate2)", CheckStatus.FAIL, ctx.backend_problem, "see packages")
    ctx.cuda_devices = cuda_device_count()
    nvml_gpu = ctx.nvml is not None and ctx.nvml.has_gpu
    if ctx.cuda_devices == 0:
        if nvml_gpu:
            return CheckResult(
                "CUDA (ctranslate2)",
                CheckStatus.FAIL,
                "the driver sees a GPU but CTranslate2 sees no CUDA device",
                "CTranslate2 4.x needs CUDA 12 (driver ≥ 525); check `nvidia-smi` and CUDA_VISIBLE_DEVICES",
            )
        return CheckResult("CUDA (ctranslate2)", CheckStatus.SKIP, "no GPU: CTranslate2 sees no CUDA device")
    devices = ctx.cuda = cuda_devices(ctx)
    ctx.cuda_compute_types = devices[0].compute_types
    detail = f"{ctx.cuda_devices} CUDA device(s): " + "; ".join(
        f"{d.index} {d.name} (compute capability {d.compute_capability or '?'}): "
        f"{', '.join(sorted(d.compute_types)) or 'no compute type'} — runs {d.runs}"
        for d in devices
    )
    loads, why = cuda_probe.load_cublas()
    if not loads:
        return CheckResult("CUDA (ctranslate2)", CheckStatus.FAIL, f"{detail}; {CUBLAS_LIBRARY} does not load ({why})", CUBLAS_HINT)
    slow = [d for d in devices if "float16" not in d.compute_types]
    if slow:
        return CheckResult(
            "CUDA (ctranslate2)",
            CheckStatus.WARN,
            f"{detail}; {why}",
            f"GPU {', '.join(str(d.index) for d in slow)} has no fast float16: a run uses {slow[0].runs} there",
        )
    return CheckResult("CUDA (ctranslate2)", CheckStatus.PASS, f"{detail}; {why}")


def check_gpu_inference(ctx: Context) -> CheckResult:
    """A real second of transcription on every CUDA device, each in a child process of its own."""
    # in the check: a broken install fails this check, not doctor
    from carevoice.engine.decoder import CUBLAS_HINT

    name = "GPU inference"
    if ctx.cuda_devices == 0:
        return CheckResult(name, CheckStatus.SKIP, "no GPU")
    if ctx.model_ref is None:
        return CheckResult(name, CheckStatus.SKIP, "not tested: no model to run (see model)")
    devices = ctx.cuda or cuda_devices(ctx)
    results = []
    with tempfile.TemporaryDirectory(prefix="carevoice-doctor-") as tmp:
        audio = None
        if ctx.speech is not None:
            audio = Path(tmp) / "speech.f32"
            ctx.speech.astype("<f4").tofile(audio)
        download_root = None if ctx.model_ref.is_local else str(ctx.settings.engine.cache_dir / "hub")
        for device in devices:
            probe = cuda_probe.probe_cuda_inference(ctx.model_ref.load_from, device.runs, audio, ctx.settings.gpu_timeout_s, download_root, device.index)
            results.append((device.index, probe))
    failed = [(i, p) for i, p in results if not p.ok]
    detail = "; ".join(f"GPU {i}: {p.detail}" for i, p in results)
    if failed:
        status = CheckStatus.FAIL if len(failed) == len(results) else CheckStatus.WARN
        hint = CUBLAS_HINT if status is CheckStatus.FAIL else f"a run leaves out GPU {', '.join(str(i) for i, _ in failed)} (or choose GPUs: carevoice transcribe --gpus)"
        return CheckResult(name, status, detail, hint)
    return CheckResult(name, CheckStatus.PASS, f"{ctx.model_ref.model_id} on cuda: {detail}")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(ctx: Context) -> CheckResult:
    folder = ctx.settings.output_dir
    name = "output folder"
    if folder.exists() and not folder.is_dir():
        return CheckResult(name, CheckStatus.FAIL, f"{folder} exists and is not a folder", "check another folder: carevoice doctor FOLDER")
    target = folder if folder.exists() else _existing_ancestor(folder)
    if not target.is_dir():
        return CheckResult(name, CheckStatus.FAIL, f"{folder} cannot be created: {target} is not a folder", "name another folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".carevoice-doctor-", dir=target)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return CheckResult(
            name, CheckStatus.FAIL, f"{target} is not writable ({exc.strerror})", "fix its permissions, or check another folder: carevoice doctor FOLDER"
        )
    free = shutil.disk_usage(target).free
    where = f"{folder} is writable" if folder.exists() else f"{folder} will be created (in {target}, writable)"
    detail = f"{where}; {free / (1 << 30):.1f} GiB free"
    if free < LOW_DISK_BYTES:
        return CheckResult(name, CheckStatus.WARN, detail, "free some space: outputs are small, but the model cache needs ~150 MB")
    return CheckResult(name, CheckStatus.PASS, detail)


Check = Callable[[Context], CheckResult]


def _round_trip_check(trip: RoundTrip) -> Check:
    def check(ctx: Context) -> CheckResult:
        return check_round_trip(ctx, trip)

    check.__name__ = f"check_{trip.suffix.lstrip('.')}"
    return check


# Order matters: later checks use what earlier ones found (ffmpeg, the model, the GPU).
CHECKS: tuple[tuple[str, Check], ...] = (
    ("python", check_python),
    ("packages", check_packages),
    ("ffmpeg", check_ffmpeg),
    *((trip.name, _round_trip_check(trip)) for trip in ROUND_TRIPS),
    ("model", check_model),
    ("Chinese script (OpenCC)", check_opencc),
    ("NVIDIA GPU", check_nvml),
    ("CUDA (ctranslate2)", check_cuda),
    ("GPU inference", check_gpu_inference),
    ("output folder", check_output),
)


# Checks that take well under a second (doctor --quick; the container HEALTHCHECK is carevoice health).
QUICK_CHECKS = frozenset({"python", "packages", "ffmpeg", "NVIDIA GPU", "output folder"})


def run_checks(settings: DoctorSettings, checks: tuple[tuple[str, Check], ...] = CHECKS) -> Iterator[CheckResult]:
    """Run every check in order, yielding each result as it finishes. Never raises for a check's failure.

    A check that crashes (a bug, or a library failing in a way nobody foresaw) becomes a FAIL
    line naming the exception type; KeyboardInterrupt still stops the run.
    """
    ctx = Context(settings)
    for name, check in checks:
        interrupts.check()  # a stop signal whose exception a finalizer dropped still stops the checks
        if settings.quick and name not in QUICK_CHECKS:
            continue
        try:
            yield check(ctx)
        except Exception as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else ""
            yield CheckResult(
                name,
                CheckStatus.FAIL,
                f"the check itself failed ({type(exc).__name__}{': ' + reason if reason else ''})",
                "rerun with --traceback and report it",
                trace=traceback.format_exc(),
            )


def exit_status(results: list[CheckResult]) -> ExitCode:
    """OK when nothing failed (warnings and skips allowed), FAILED otherwise."""
    return ExitCode.FAILED if any(r.status is CheckStatus.FAIL for r in results) else ExitCode.OK
