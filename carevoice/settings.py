"""Frozen option sets for each command, their defaults and environment variables; validated once.

The CLI builds these from flags; everything below it only reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from carevoice import files
from carevoice.errors import CareVoiceError, UsageError
from carevoice.languages import LANGUAGES, closest_codes, locale_chinese_script, resolve_language

# Whisper's input: mono float32 samples at 16 kHz (carevoice.run.audio decodes every recording to it).
SAMPLE_RATE_HZ = 16_000
# The bundled sample recording (JFK, 11 s): the README's quickstart, doctor's and bench's probe.
SAMPLE_PATH = Path(__file__).parent / "samples" / "jfk.flac"

ENV_MODEL = "CAREVOICE_MODEL"
ENV_DEVICE = "CAREVOICE_DEVICE"
ENV_CACHE_DIR = "CAREVOICE_CACHE_DIR"

DEFAULT_MODEL = "base"
DEFAULT_BEAM_SIZE = 5
# Chunks per engine call. CPU: beyond 8 the int8 GEMMs are already saturated on a few cores
# and a bigger batch only delays the first outputs; CUDA: big batches keep the GPU busy.
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 16}
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}
# Encoder windows (seconds) a chunk may run in: the shortest that holds it (carevoice.engine.policy).
# Not a command-line option: the benchmarks measure others through EngineSettings.
DEFAULT_WINDOWS_S = (10.0, 15.0, 20.0, 30.0)


def hot_words(glossary: tuple[str, ...]) -> str:
    """A glossary's terms as the decoder's hot words: a list that ends like a sentence. Whisper writes
    in the style of its prompt: terms joined by spaces alone, or by commas without the full stop,
    made base drop the punctuation of what it heard ("Five, Five", benchmarks/glossary.py)."""
    return ", ".join(glossary) + "."


class Device(str, Enum):
    """Where inference runs."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"


class ZhScript(str, Enum):
    """The script Chinese text is written in (``--zh-script``).

    Attributes:
        AUTO: Per file, the script most of its Chinese characters are in (carevoice.run.chinese.decide_auto):
            a file that mixes both is converted to it, a file in one script stays as the model wrote it.
        KEEP: Whatever the model wrote (no conversion; it may mix both scripts in one file).
        TW: Traditional characters with Taiwan phrasing (OpenCC ``s2twp``: 软件→軟體, 视频→影片, 内存→記憶體).
        HK: Traditional characters, Hong Kong variants (OpenCC ``s2hk``); no phrase substitution.
        SIMPLIFIED: Simplified characters (OpenCC ``t2s``).
    """

    AUTO = "auto"
    KEEP = "keep"
    TW = "tw"
    HK = "hk"
    SIMPLIFIED = "simplified"


# The locale of messages, in POSIX precedence: the first of these that is set and not empty names it.
LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


DEFAULT_SCRIPT_REASON = "default: each file in the script most of its Chinese characters are in"


def locale_of(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that name the user's locale, as set (a run keeps them, so a decision made later is pure)."""
    return {name: environ[name] for name in LOCALE_VARIABLES if environ.get(name)}


def choose_zh_script(script: Choice, language: Choice, locale: Mapping[str, str]) -> Choice:
    """The script for Chinese text, and what chose it (issue 23): what was said for this run
    (``--zh-script``, else a ``-l`` tag such as ``zh-TW``), then what the nearest ``carevoice.toml``
    says (its ``zh_script``, else its language's tag), then the user's locale (``zh_TW`` → tw,
    ``zh_HK`` → hk, ``zh_CN`` / ``zh_SG`` → simplified), else auto: one script per file, never a mix.

    Args:
        script: ``--zh-script`` (value None when nothing set it), and where it came from.
        language: ``--language`` as given (a code, name or tag; None: detect), and where it came from.
        locale: LC_ALL, LC_MESSAGES and LANG, where set (:func:`locale_of`).
    """
    tag = resolve_language(str(language.value)).zh_script if language.value else None
    for said in (True, False):  # said for this run, then a folder's file
        if script.value is not None and script.given is said:
            return Choice(str(script.value), script.source)
        if tag is not None and language.given is said:
            return Choice(tag, f"--language {language.value}, {language.source}")
    name = next((n for n in LOCALE_VARIABLES if locale.get(n)), None)
    from_locale = None if name is None else locale_chinese_script(locale[name])
    if name is not None and from_locale is not None:
        return Choice(from_locale, f"locale {name}={locale[name]}")
    return Choice(ZhScript.AUTO.value, DEFAULT_SCRIPT_REASON)


class Task(str, Enum):
    """Whisper's two tasks."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class OutputFormat(str, Enum):
    """Files written next to each input."""

    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"
    JSON = "json"
    TSV = "tsv"


SUBTITLE_FORMATS = frozenset({OutputFormat.SRT, OutputFormat.VTT})
DEFAULT_FORMATS = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.JSON)


def parse_formats(text: str) -> tuple[OutputFormat, ...]:
    """Parse a comma list such as ``"srt,json"`` (or ``"all"``) into formats, keeping order.

    Raises:
        UsageError: an unknown format name.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(OutputFormat)
    known = {f.value for f in OutputFormat}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(
            f"unknown output format {', '.join(unknown) or repr(text)}",
            f"choose from {', '.join(sorted(known))} or all",
        )
    return tuple(dict.fromkeys(OutputFormat(n) for n in names))


def default_cache_dir() -> Path:
    """Where assembled models live: $CAREVOICE_CACHE_DIR, else $XDG_CACHE_HOME/carevoice."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carevoice"


@dataclass(frozen=True)
class EngineSettings:
    """How to load and run the model (shared by transcribe, bench and doctor)."""

    model: str = DEFAULT_MODEL
    device: Device = Device.AUTO
    compute_type: str | None = None  # None: DEFAULT_COMPUTE_TYPE for the resolved device
    cpu_threads: int = 0  # 0: let CTranslate2 use every core
    cache_dir: Path = field(default_factory=default_cache_dir)
    windows_s: tuple[float, ...] = DEFAULT_WINDOWS_S  # encoder windows (benchmarks only)


@dataclass(frozen=True)
class DecodeSettings:
    """What the model is asked to do; these options shape the text, so they key resume."""

    task: Task = Task.TRANSCRIBE
    language: str | None = None  # None: detect per file
    beam_size: int = DEFAULT_BEAM_SIZE
    word_timestamps: bool = True
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE for the resolved device
    zh_script: ZhScript = ZhScript.AUTO  # the script Chinese text is written in (carevoice.run.chinese)
    glossary: tuple[str, ...] = ()  # a ward's terms, given to the decoder as hot words (carevoice.folders.read_glossary)

    @property
    def hotwords(self) -> str | None:
        """The glossary as the decoder's hot words (faster-whisper's ``hotwords``); None without one."""
        return hot_words(self.glossary) if self.glossary else None

    def validate(self) -> None:
        """Raises: UsageError: a bad beam or batch size, or a language Whisper does not know (the CLI
        resolves names and tags to codes first)."""

        if self.beam_size < 1:
            raise UsageError("--beam-size must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.language is not None and self.language not in LANGUAGES:
            raise UsageError(
                f"--language {self.language!r} is not a language code Whisper knows", f"did you mean {', '.join(closest_codes(self.language))}?"
            )

    def text_options(self) -> dict[str, Any]:
        """The options that shape a transcript's words (with the model and the engine revision):
        a transcript made with other values is out of date. Word timestamps change only timing
        (carevoice.run.rules), and batch size, device and compute type only the last digits.
        A glossary is there by its terms (not its file's name or path), and only when there is one:
        a record made before glossaries existed stays current."""
        options: dict[str, Any] = {
            "task": self.task.value,
            "language": self.language,
            "beam_size": self.beam_size,
            "zh_script": self.zh_script.value,
        }
        if self.glossary:
            options["glossary"] = list(self.glossary)
        return options


@dataclass(frozen=True)
class Shard:
    """``--shard K/N``: this run does shard ``index`` (0-based, like Kubernetes' JOB_COMPLETION_INDEX) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``"K/N"`` with 0 <= K < N.

    Raises:
        UsageError: not two integers, N below 1, or K outside 0..N-1.
    """
    index_text, sep, count_text = text.strip().partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1:
        raise UsageError(f"--shard {text!r} is not K/N", "pass e.g. --shard 0/4 (shards are numbered from 0)")
    if not 0 <= index < count:
        raise UsageError(
            f"--shard {text}: K must be between 0 and {count - 1}",
            f"shards are numbered from 0: --shard 0/{count} … --shard {count - 1}/{count}",
        )
    return Shard(index, count)


ENTER_HINT = (
    "let this user enter it (x permission); "
    "a systemd unit with ProtectHome=yes cannot enter /home: use ProtectHome=read-only and ReadWritePaths="
)


def entry_problem(path: Path) -> CareVoiceError | None:
    """Why this user cannot reach ``path`` (a folder on the way it may not enter), and what to do;
    None when nothing bars the way. Each caller says what it means: a usage error, or a failed file."""
    barred = files.barred_folder(path)
    return None if barred is None else CareVoiceError(f"cannot enter folder {barred} (permission denied)", ENTER_HINT)


def check_folder_option(option: str, path: Path | None) -> None:
    """A folder option (``--output-dir``, ``--report-dir``) names a folder, or where one can be made.

    Raises:
        UsageError: it is not a folder, or this user cannot reach it.
    """
    if path is None:
        return
    if (barred := entry_problem(path)) is not None:
        raise UsageError(f"{option} {path}: {barred.message}", barred.hint)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is not a folder", "name a folder (it is created if missing)")


COMMAND_LINE = "command line"
DEFAULT = "default"


@dataclass(frozen=True)
class Choice:
    """One option's value and where it came from: COMMAND_LINE, an environment variable
    (``$CAREVOICE_MODEL``), a ``carevoice.toml`` path, or DEFAULT."""

    value: Any
    source: str

    @property
    def given(self) -> bool:
        """Said for this run (command line or environment): no folder's file overrides it."""
        return self.source == COMMAND_LINE or self.source.startswith("$")


INPUTS_SHOWN = 20


@dataclass(frozen=True)
class TranscribeSettings:
    """Everything `carevoice transcribe` was asked to do."""

    inputs: tuple[Path, ...]
    output_dir: Path | None = None
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    overwrite: bool = False
    recursive: bool = True
    decode_workers: int = 0  # 0: derived from the core count
    report_path: Path | None = None
    shard: Shard | None = None  # None: every input
    gpus: tuple[int, ...] | None = None  # CUDA device indices, one engine each; None: every device CTranslate2 sees
    ray_address: str | None = None  # None: this process; "local": a new Ray here; else ray.init's address ("auto", host:port)
    ray_actors: int = 0  # 0: one per GPU of the cluster, else as many CPU actors as its CPUs allow
    ray_files_per_task: int = 0  # 0: four batches' worth
    dry_run: bool = False  # plan only: say what a run would do, touch nothing
    # The options that shape the text, by carevoice.folders key, and where each came from (empty:
    # no folder settings, as in a bench or a test that builds settings itself).
    choices: Mapping[str, Choice] = field(default_factory=dict)
    locale: Mapping[str, str] = field(default_factory=dict)  # the user's locale (settings.locale_of): it may choose the Chinese script
    zh_script_source: str = DEFAULT_SCRIPT_REASON  # what chose decode.zh_script (choose_zh_script), for --dry-run
    offers_overwrite: bool = True  # False under `carevoice watch`, which has no --overwrite: advice names only what its user can do

    def options(self) -> dict[str, Any]:
        """The run's options as its report shows them (the first inputs only: a shell glob can name thousands)."""
        return {
            "inputs": [str(p) for p in self.inputs[:INPUTS_SHOWN]],
            "inputs_total": len(self.inputs),
            "output_dir": None if self.output_dir is None else str(self.output_dir),
            "format": [f.value for f in self.formats],
            "model": self.engine.model,
            "device": self.engine.device.value,
            "compute_type": self.engine.compute_type,
            "batch_size": self.decode.batch_size,
            **self.decode.text_options(),
            "word_timestamps": self.decode.word_timestamps,
            "overwrite": self.overwrite,
            "recursive": self.recursive,
            "shard": None if self.shard is None else str(self.shard),
            "gpus": None if self.gpus is None else list(self.gpus),
            "ray": self.ray_address,
        }

    def validate(self) -> None:
        """Check everything that is cheap to check, before any model is loaded.

        Raises:
            UsageError: the first problem found.
        """
        if not self.inputs:
            raise UsageError("no input files or folders given", "name at least one recording or folder")
        if self.decode_workers < 0:
            raise UsageError("--decode-workers must be 0 (auto) or more")
        if not self.formats:
            raise UsageError("no output format chosen", "pass e.g. -f txt,srt,json")
        check_folder_option("--output-dir", self.output_dir)
        self.decode.validate()
        if self.ray_actors < 0 or self.ray_files_per_task < 0:
            raise UsageError("--ray-actors and --ray-files-per-task must be 0 (auto) or more")
        if self.ray_address is None and (self.ray_actors or self.ray_files_per_task):
            raise UsageError("--ray-actors and --ray-files-per-task need --ray", "add --ray ADDRESS (e.g. --ray auto)")
        if self.ray_address is not None and self.gpus is not None:
            raise UsageError("--gpus chooses GPUs of this machine; with --ray each actor gets one GPU from Ray", "drop --gpus")
        if self.gpus is not None and self.engine.device is Device.CPU:
            raise UsageError("--gpus chooses CUDA devices, but --device cpu was asked for", "drop --gpus, or use --device cuda")


def parse_gpus(text: str) -> tuple[int, ...] | None:
    """Parse ``--gpus``: a comma list of CUDA device indices such as ``"0,2"``, or ``all`` (None).

    Raises:
        UsageError: not a list of distinct indices from 0 up.
    """
    if text.strip().lower() == "all":
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or not all(n.isdigit() for n in names):
        raise UsageError(f"--gpus {text!r} is not a list of GPU indices", "pass e.g. --gpus 0,2 (as CUDA numbers them), or all")
    indices = tuple(int(n) for n in names)
    if len(set(indices)) != len(indices):
        raise UsageError(f"--gpus {text!r} names a GPU twice", "name each GPU once, e.g. --gpus 0,2")
    return indices


def parse_devices(text: str) -> tuple[Device, ...]:
    """Parse a comma list such as ``"cuda,cpu"`` into devices, keeping order (``auto`` is not a device to bench).

    Raises:
        UsageError: an unknown or empty device list.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = (Device.CUDA.value, Device.CPU.value)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"unknown device {', '.join(unknown) or repr(text)}", "pass --devices cuda,cpu (or one of them)")
    return tuple(dict.fromkeys(Device(n) for n in names))


DEFAULT_GPU_PROBE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class DoctorSettings:
    """What `carevoice doctor` checks: the model and the output folder a transcribe run would use."""

    output_dir: Path = Path(".")
    engine: EngineSettings = field(default_factory=EngineSettings)
    gpu_timeout_s: float = DEFAULT_GPU_PROBE_TIMEOUT_S
    quick: bool = False  # only the sub-second checks (a quick look before a run): no decoding, no inference

    def validate(self) -> None:
        """Raises: UsageError: a bad option."""
        if self.gpu_timeout_s <= 0:
            raise UsageError("--gpu-timeout must be more than 0 seconds")


@dataclass(frozen=True)
class BenchSettings:
    """Everything `carevoice bench` was asked to measure. ``engine.device`` is unused: see ``devices``."""

    inputs: tuple[Path, ...] = ()  # empty: the bundled sample
    devices: tuple[Device, ...] = (Device.CUDA, Device.CPU)
    runs: int = 3
    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    compare: bool = False  # add plain faster-whisper rows
    recursive: bool = True
    gpu_timeout_s: float = DEFAULT_GPU_PROBE_TIMEOUT_S

    def validate(self) -> None:
        """Raises: UsageError: the first bad option."""
        if self.runs < 1:
            raise UsageError("--runs must be at least 1")
        if not self.devices or Device.AUTO in self.devices:
            raise UsageError("name the devices to compare", "pass --devices cuda,cpu (or one of them)")
        self.decode.validate()
        if self.gpu_timeout_s <= 0:
            raise UsageError("--gpu-timeout must be more than 0 seconds")


ENV_HEARTBEAT = "CAREVOICE_HEARTBEAT"
DEFAULT_SETTLE_S = 10.0
# A file whose format does not state its length (carevoice.watch.uploads.states_length) is taken only
# once unchanged this long (or --settle, if longer): a copy cut short would look like a whole recording.
DEFAULT_SETTLE_UNSIZED_S = 60.0
DEFAULT_GATHER_S = 1.0
# A folder watched through file-system events is also walked this often, for events the kernel
# dropped (an inotify queue overflow) or never sent.
RESCAN_S = 300.0
DEFAULT_HEALTH_MAX_AGE_S = 300.0
# A file that failed for a cause outside the recording (the engine, a full disk: carevoice.errors.Cause)
# is tried again, unchanged, after each of these waits: six tries over an hour, then it waits for a change.
RETRY_AFTER_S = (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0)


def default_heartbeat() -> Path:
    """Where ``watch`` beats and ``health`` looks ($CAREVOICE_HEARTBEAT, else one file per user in /tmp)."""
    return Path(os.environ.get(ENV_HEARTBEAT) or f"/tmp/carevoice-watch-{os.getuid()}.json")


@dataclass(frozen=True)
class WatchSettings:
    """Everything `carevoice watch` was asked to do.

    Attributes:
        transcribe: What each file gets, as with ``transcribe`` (inputs are the folders watched).
        settle_s: A file is taken only once its size and modification time have stayed the same this long.
        settle_unsized_s: As ``settle_s``, for a file whose format does not state its length (at least ``settle_s``).
        poll_s: Walk the folders this often instead of listening for file-system events (None: events,
            unless the folder is on a network or FUSE file system, where they are not sent).
        gather_s: Once a file is ready, wait this long for others to share its batches.
        report_dir: Where each day's JSON report goes (None: no reports).
        heartbeat: The file the watcher rewrites while it works (``carevoice health`` reads it).
        incomplete_wait_s: A file that stays truncated (an upload given up) this long is reported as failed.
        retry_after_s: The waits before each new try of a file that failed for a passing cause.
    """

    transcribe: TranscribeSettings
    settle_s: float = DEFAULT_SETTLE_S
    settle_unsized_s: float = DEFAULT_SETTLE_UNSIZED_S
    poll_s: float | None = None
    gather_s: float = DEFAULT_GATHER_S
    report_dir: Path | None = None
    heartbeat: Path = field(default_factory=default_heartbeat)
    incomplete_wait_s: float = 600.0
    retry_after_s: tuple[float, ...] = RETRY_AFTER_S

    def validate(self) -> None:
        """Raises: UsageError: a folder that is not one or cannot be reached, or a bad duration."""
        self.transcribe.validate()
        for folder in self.transcribe.inputs:
            if (barred := entry_problem(folder)) is not None:
                raise UsageError(f"cannot watch {folder}: {barred.message}", barred.hint)
            if not folder.is_dir():
                raise UsageError(f"{folder} is not a folder", "carevoice watch takes folders; use carevoice transcribe for files")
        if self.settle_s < 0 or self.gather_s < 0:
            raise UsageError("--settle and --gather must be 0 or more")
        if self.settle_unsized_s < self.settle_s:
            raise UsageError(
                f"--settle-unsized ({self.settle_unsized_s:g} s) is shorter than --settle ({self.settle_s:g} s)",
                "give --settle-unsized at least as long as --settle",
            )
        if self.poll_s is not None and self.poll_s <= 0:
            raise UsageError("--poll must be more than 0 seconds")
        check_folder_option("--report-dir", self.report_dir)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``"10"``, ``"10s"``, ``"500ms"``, ``"2m"`` or ``"1h"``.

    Raises:
        UsageError: not a number of seconds, or with a unit not in ms, s, m, h.
    """
    value = text.strip().lower()
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(number) :] or "s"
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except (ValueError, KeyError):
        raise UsageError(f"{option} {text!r} is not a duration", f"pass e.g. {option} 10s (units: ms, s, m, h)") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise UsageError(f"{option} {text!r} is not a duration", f"pass e.g. {option} 10s")
    return seconds
