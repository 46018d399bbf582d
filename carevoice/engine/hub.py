"""Pull a catalogue model from the Hugging Face hub (or the mirror ``HF_ENDPOINT`` names) into the
cache, so that it works offline for good.

Every file is checked against the size and hash the hub lists for it (``sha256`` of LFS files, the
git blob id of small ones); an interrupted download resumes where it stopped (an HTTP ``Range``
request on its ``.part`` file); the model's folder appears only when it is complete (built under a
staging name, then renamed). urllib's default opener honours ``https_proxy`` / ``http_proxy`` /
``no_proxy`` (its ProxyHandler), so nothing here configures a proxy.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from carevoice.engine.catalogue import CatalogueModel
from carevoice.engine.models import check_model_folder, pulled_dir, vocabulary_size
from carevoice.errors import SetupError

ENV_ENDPOINT = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
# What faster-whisper itself downloads of a model repository (faster_whisper.utils.download_model).
MODEL_PATTERNS = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.")
# Whisper's timestamp tokens: the model's vocabulary has them; older tokenizer.json files leave them out
# (openai/whisper-large-v2), newer ones list them as added tokens (openai/whisper-large-v3-turbo).
TIMESTAMP_TOKENS = 1501
ATTEMPTS = 3  # per file, each resuming where the last stopped
BLOCK_BYTES = 1 << 20
TIMEOUT_S = 60.0
PULL_RECORD = "carevoice-pull.json"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repository, as its API lists it.

    Attributes:
        repo: The repository it comes from.
        revision: The commit of ``repo`` it is downloaded at.
        path: Its path in the repository.
        size: Its size in bytes.
        sha256: Of its contents (LFS files), else None.
        git_sha1: Its git blob id (small files kept in git), else None.
    """

    repo: str
    revision: str
    path: str
    size: int
    sha256: str | None
    git_sha1: str | None


class PullProgress(Protocol):
    """Where a pull reports its bytes (a progress bar)."""

    def start(self, name: str, total_bytes: int, done_bytes: int) -> None: ...

    def advance(self, count_bytes: int) -> None: ...


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` (a mirror), else huggingface.co."""
    return (os.environ.get(ENV_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")


def _open(request: urllib.request.Request | str) -> http.client.HTTPResponse:
    """Open a URL through the proxy the environment names now (urlopen's opener keeps the first it saw)."""
    return urllib.request.build_opener().open(request, timeout=TIMEOUT_S)  # type: ignore[no-any-return]


def _network_error(what: str, exc: BaseException) -> SetupError:
    reason = getattr(exc, "reason", None) or exc
    return SetupError(
        f"cannot download {what} from {endpoint()} ({reason})",
        "check the connection (a mirror: HF_ENDPOINT; a proxy: https_proxy), then run the same command again: it resumes",
    )


def list_files(repo: str, revision: str = "main") -> list[RemoteFile]:
    """The model files of ``repo`` at the commit ``revision`` names (hub API, with blob hashes).

    Raises:
        SetupError: the hub cannot be reached or does not know the repository.
    """
    url = f"{endpoint()}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
    try:
        with _open(url) as response:
            listing = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _network_error(f"the file list of {repo}", exc) from None
    commit = str(listing.get("sha") or revision)
    files = []
    for sibling in listing.get("siblings", []):
        path = sibling["rfilename"]
        if "/" in path or not path.startswith(MODEL_PATTERNS):
            continue
        lfs = sibling.get("lfs") or {}
        size = lfs.get("size", sibling.get("size"))
        files.append(RemoteFile(repo, commit, path, int(size), lfs.get("sha256"), None if lfs else sibling.get("blobId")))
    return files


def mismatch(path: Path, expected: RemoteFile) -> str | None:
    """Why a downloaded file is not the one the hub lists (None: it is)."""
    size = path.stat().st_size
    if size != expected.size:
        return f"{size} bytes instead of {expected.size}"
    if expected.sha256:
        digest = hashlib.sha256()
        want = expected.sha256
    elif expected.git_sha1:
        digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        want = expected.git_sha1
    else:
        return None  # the hub gave no hash: the size is all there is to check
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
    return None if digest.hexdigest() == want else f"its hash is {digest.hexdigest()[:12]}…, the hub lists {want[:12]}…"


def download(remote: RemoteFile, part: Path, progress: PullProgress) -> None:
    """Download ``remote`` (at its repository's own revision) into ``part``, resuming from the bytes
    already there, trying again a few times.

    Raises:
        SetupError: the download fails ATTEMPTS times in a row (``part`` keeps what arrived).
    """
    url = f"{endpoint()}/{remote.repo}/resolve/{remote.revision}/{quote(remote.path)}"
    failure: BaseException | None = None
    for _ in range(ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        if have >= remote.size:
            return
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with _open(request) as response:
                resumed = response.status == 206
                if have and not resumed:  # the server ignored the range: start again
                    progress.advance(-have)
                with open(part, "ab" if resumed else "wb") as out:
                    while block := response.read(BLOCK_BYTES):
                        out.write(block)
                        progress.advance(len(block))
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError; IncompleteRead: the connection dropped
            failure = exc
    if part.exists() and part.stat().st_size >= remote.size:
        return
    raise _network_error(f"{remote.path} of {remote.repo}", failure or OSError("the download stopped"))


@contextmanager
def _pull_lock(cache_dir: Path, name: str) -> Iterator[None]:
    lock_path = cache_dir / "models" / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SetupError(f"another `carevoice models pull {name}` is under way", "wait for it to finish") from None
        yield


def _model_files(model: CatalogueModel) -> list[RemoteFile]:
    """The files that make a complete folder, each at its own repository's commit: the repository's,
    plus a tokenizer from ``model.tokenizer_repo`` when the repository has none."""
    files = list_files(model.repo)
    if not any(f.path == "model.bin" for f in files):
        raise SetupError(f"{model.repo} on {endpoint()} has no model.bin", "check HF_ENDPOINT: the mirror may not have this model")
    if model.tokenizer_repo and not any(f.path == "tokenizer.json" for f in files):
        files += [f for f in list_files(model.tokenizer_repo) if f.path == "tokenizer.json"]
    return files


def _revisions(files: list[RemoteFile]) -> dict[str, str]:
    """The commit of each repository the files come from (what a staging folder's parts belong to)."""
    return {f.repo: f.revision for f in files}


def _staged_revisions(record: Path) -> dict[str, str] | None:
    """The revisions a staging folder's record names; None when it has none or cannot be read (its
    parts then count as another revision's)."""
    try:
        staged = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return staged.get("revisions") if isinstance(staged, dict) else None


def _tokenizer_fits(folder: Path) -> str | None:
    """Why a folder's tokenizer.json does not belong to its model's vocabulary (None: it does)."""
    try:
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        ids = set(tokenizer["model"]["vocab"].values()) | {t["id"] for t in tokenizer.get("added_tokens", [])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"tokenizer.json cannot be read ({type(exc).__name__})"
    vocabulary, tokens = vocabulary_size(folder), max(ids) + 1
    if vocabulary is None or vocabulary in (tokens, tokens + TIMESTAMP_TOKENS):
        return None
    return (
        f"tokenizer.json has {tokens} tokens, the model's vocabulary {vocabulary} (neither with nor without {TIMESTAMP_TOKENS} timestamps)"
    )


def pull_model(model: CatalogueModel, cache_dir: Path, progress: PullProgress) -> Path:
    """Download ``model`` into the cache (once) and return its folder.

    Raises:
        SetupError: the hub cannot be reached, a file does not match its hash (it is deleted), or the
            result is incomplete.
    """
    target = pulled_dir(model.name, cache_dir)
    if target.is_dir():
        return target
    with _pull_lock(cache_dir, model.name):
        if target.is_dir():  # another pull completed it before this one took the lock
            return target
        files = _model_files(model)
        revisions = _revisions(files)
        staging = target.with_name(f".{model.name}.download")
        record = staging / PULL_RECORD
        if staging.is_dir() and _staged_revisions(record) != revisions:
            shutil.rmtree(staging)  # parts of other revisions
        staging.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"name": model.name, "repo": model.repo, "revisions": revisions}), encoding="utf-8")
        done = sum(min(_size(staging / f.path) or _size(staging / f"{f.path}.part"), f.size) for f in files)
        progress.start(model.name, sum(f.size for f in files), done)
        for remote in files:
            final, part = staging / remote.path, staging / f"{remote.path}.part"
            if final.is_file():
                continue
            download(remote, part, progress)
            wrong = mismatch(part, remote)
            if wrong:
                part.unlink()
                raise SetupError(
                    f"{remote.path} of {remote.repo} from {endpoint()} is not the file the hub lists ({wrong}): deleted",
                    f"run `carevoice models pull {model.name}` again; if it fails the same way, the mirror or proxy serves other files",
                )
            os.replace(part, final)
        check_model_folder(staging)
        wrong = _tokenizer_fits(staging)
        if wrong:
            raise SetupError(
                f"the files of {model.name} do not fit together: {wrong}", "report it: the catalogue names the wrong tokenizer"
            )
        pulled = {
            "name": model.name,
            "repo": model.repo,
            "commit": revisions[model.repo],
            "revisions": revisions,
            "endpoint": endpoint(),
            "files": [asdict(f) for f in files],
        }
        record.write_text(json.dumps(pulled, indent=1), encoding="utf-8")
        os.replace(staging, target)
    return target


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
