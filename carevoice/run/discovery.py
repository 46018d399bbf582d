"""Turn the paths a user named into a sorted, de-duplicated list of jobs, and decide output names.

Folders are walked (recursively by default) with an extension allow-list; a file named
explicitly is always tried, unless its name and first bytes say it is a transcript (one of
CareVoice's own outputs). Hidden files and folders are skipped, symlinked folders are
followed once (loops cannot hang), and two inputs that would write the same outputs are
reported instead of clobbering each other.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carevoice.run.signatures import holds_text, not_a_recording, read_head
from carevoice.settings import OutputFormat, entry_problem

AUDIO_EXTENSIONS = frozenset(
    {
        "wav", "wave", "mp3", "m4a", "mp4", "aac", "ogg", "oga", "opus", "webm", "flac", "amr", "3gp",
        "3g2", "mkv", "mka", "mov", "wma", "caf", "aif", "aiff", "aifc", "au", "m4b", "weba", "spx",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One input to transcribe.

    Attributes:
        source: The input file as the user named it (or as found in a folder).
        output_stem: Output path without extension; writers add ``.txt``, ``.srt``, ...
        display: The short name used in messages and reports.
        key: The input's name that is the same on every machine and in every run: its path below
            the folder it was found in (POSIX form), or its file name when it was named itself.
            ``--shard`` picks files by it.
    """

    source: Path
    output_stem: Path
    display: str
    key: str = ""


@dataclass(frozen=True)
class Problem:
    """An input that cannot become a job, with the one-line reason and what to do.

    ``key`` is set when the problem belongs to one file (as :attr:`Job.key`), so that exactly one
    shard reports it; None when it concerns an input as given (every shard reports it).
    """

    path: Path
    message: str
    key: str | None = None
    missing: bool = False  # an input as named that does not exist


@dataclass
class Discovery:
    """What discovery found: jobs to run and problems to report."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def real_place(folder: Path, root: Path) -> Path | None:
    """Where ``folder`` (links resolved) lies below ``root`` (links resolved), when a walk of
    ``root`` reaches it there: inside it, below no hidden folder, every folder on the way listable
    (``.`` for root itself). None otherwise: outside it, or reached only through a link."""
    real, top = os.path.realpath(folder), os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip("/") + "/"):
        return None
    below = Path(os.path.relpath(real, top))
    on_the_way = top
    for part in below.parts:
        on_the_way = os.path.join(on_the_way, part)
        if _is_hidden(part) or not os.access(on_the_way, os.R_OK | os.X_OK):
            return None
    return below


def links_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is a symbolic link to a folder a walk of ``root`` meets as itself
    (:func:`real_place`): the walk skips such a link, so each recording has one name, where it
    really is, whatever the order of the walk (``carevoice watch`` names files from events so too)."""
    return os.path.islink(path) and os.path.isdir(path) and real_place(path, root) not in (None, Path("."))


def _walk(root: Path, recursive: bool, problems: list[Problem], top: Path | None = None) -> list[Path]:
    """Audio files under root; follows symlinked folders at most once each (by device+inode), and
    not at all those that lead to a folder inside ``top`` (default: root; :func:`links_inside`)."""
    top = top or root
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            problems.append(Problem(folder, f"cannot read folder ({exc.strerror}) — check the path and permissions"))
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue  # a symlink loop or a second link to the same folder
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(folder, f"cannot list folder ({exc.strerror}) — check its permissions"))
            continue
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if not audio_name(entry.name):
                # Only a folder matters among the rest (the outputs beside the recordings are most
                # of a transcribed folder): the directory entry says so without a stat.
                try:
                    if recursive and entry.is_dir() and not (entry.is_symlink() and links_inside(Path(entry.path), top)):
                        pending.append(Path(entry.path))
                except OSError:
                    pass  # a link loop, or no permission: not a folder to walk
                continue
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False):
                found.append(path)  # the directory entry says so (no stat: a watcher's walk stats each file once, itself)
                continue
            try:
                mode = os.stat(path).st_mode  # follows symlinks
            except OSError as exc:
                if entry.is_symlink() and _has_audio_extension(path):
                    problems.append(Problem(path, f"{_broken_link(exc)} — fix or remove the link", job_key(path, root)))
                continue
            if stat.S_ISDIR(mode):
                if recursive and not (entry.is_symlink() and links_inside(path, top)):
                    pending.append(path)
            elif _has_audio_extension(path):
                if stat.S_ISREG(mode):
                    found.append(path)
                else:
                    problems.append(Problem(path, "not a regular file (pipe, socket or device) — skipped", job_key(path, root)))
    return found


def find_audio_files(folders: tuple[Path, ...], recursive: bool = True, within: Path | None = None) -> tuple[list[Path], list[Problem]]:
    """Every regular audio file below the folders, as :func:`find_jobs` would walk them (hidden
    names skipped), without making jobs of them: what ``carevoice watch`` looks at on each walk;
    and the problems met (a folder that cannot be read, a broken link). ``within``: the watched
    folder these lie below (links to folders inside it are not followed, as a walk of it does not,
    not even when such a link is one of the folders)."""
    problems: list[Problem] = []
    folders = tuple(f for f in folders if within is None or not links_inside(f, within))
    return [path for folder in folders for path in _walk(folder, recursive, problems, within)], problems


def _broken_link(exc: OSError) -> str:
    return "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"


def _has_audio_extension(path: Path) -> bool:
    return audio_name(path.name)


def audio_name(name: str) -> bool:
    """Whether a file name has an audio extension (as Path.suffix reads one: ``x.wav``, not ``wav``)."""
    stem, dot, extension = name.rpartition(".")
    return bool(dot and stem and extension.lower() in AUDIO_EXTENSIONS)


def job_key(source: Path, root: Path | None) -> str:
    """The name of an input that every machine and run agrees on (see :attr:`Job.key`).

    Absolute paths and the current folder differ between the hosts of a cluster (``/mnt/a/rec``
    here, ``/data`` in a container there), so only the part below the named folder counts; a file
    named on its own is known by its name. Names that are not UTF-8 keep their bytes (surrogate escapes).
    """
    relative = source.relative_to(root) if root is not None else Path(source.name)
    return relative.as_posix()


def shard_of(key: str, count: int) -> int:
    """Which of ``count`` shards (0-based) owns the input with this key: a stable hash, not the listing order."""
    digest = hashlib.sha256(os.fsencode(key)).digest()
    return int.from_bytes(digest[:8], "big") % count


def _output_stem(source: Path, root: Path | None, output_dir: Path | None) -> Path:
    if output_dir is None:
        return source.with_suffix("")
    relative = source.relative_to(root) if root is not None else Path(source.name)
    # relative never holds '..' (it comes from walking below root), so outputs stay under output_dir.
    return output_dir / relative.with_suffix("")


def find_jobs(inputs: tuple[Path, ...], output_dir: Path | None = None, recursive: bool = True) -> Discovery:
    """Expand files and folders into jobs.

    Args:
        inputs: Files and folders as the user named them.
        output_dir: Mirror outputs under this folder instead of next to each input.
        recursive: Walk sub-folders.

    Returns:
        Jobs sorted by path and de-duplicated (the same file named twice runs once), and
        problems: missing inputs, unreadable folders, broken links, special files, and
        inputs whose outputs would collide.
    """
    result = Discovery()
    candidates: list[tuple[Path, Path | None]] = []  # (file, folder it was found under)
    for given in inputs:
        try:
            mode = os.stat(given).st_mode
        except OSError as exc:
            if exc.errno == errno.EACCES and (barred := entry_problem(given)) is not None:
                result.problems.append(Problem(given, str(barred)))  # a folder on the way bars this user
                continue
            link = os.path.islink(given)
            reason = _broken_link(exc) if link else (exc.strerror or "cannot access").lower()
            result.problems.append(Problem(given, f"{reason} — check the path", missing=exc.errno == errno.ENOENT and not link))
            continue
        if stat.S_ISDIR(mode):
            candidates.extend((f, given) for f in _walk(given, recursive, result.problems))
        elif stat.S_ISREG(mode):
            if (named_output := output_named(given)) is not None:
                result.problems.append(Problem(given, named_output, job_key(given, None)))
                continue
            candidates.append((given, None))
        else:
            result.problems.append(Problem(given, "not a regular file (pipe, socket or device) — name an audio file"))

    seen_files: set[Path] = set()
    by_stem: dict[Path, list[Job]] = {}
    # A file named both on its own and inside a named folder keeps its place in the folder's
    # mirror under --output-dir, whatever the order of the arguments.
    for source, root in sorted(candidates, key=lambda candidate: candidate[1] is None):
        key = Path(os.path.realpath(source))
        if key in seen_files:
            continue
        seen_files.add(key)
        stem = _output_stem(source, root, output_dir)
        display = str(source)
        by_stem.setdefault(Path(os.path.normpath(stem)), []).append(Job(source, stem, display, job_key(source, root)))

    for stem, jobs in by_stem.items():
        _add_unless_colliding(result, jobs, [j.display for j in jobs])
    result.jobs.sort(key=lambda j: str(j.source))
    result.problems.sort(key=lambda p: str(p.path))
    return result


OUTPUT_EXTENSIONS = frozenset(fmt.value for fmt in OutputFormat)


def output_named(path: Path) -> str | None:
    """Why a file named on the command line is one of CareVoice's own outputs rather than a
    recording (one line: what it is, and which recording to name instead), or None. Only its name
    and its first bytes count: a ``.txt`` holding audio (a phone app's naming) is a recording."""
    extension = path.suffix.lower().removeprefix(".")
    if extension not in OUTPUT_EXTENSIONS:
        return None
    head = read_head(path)
    if head and not holds_text(head) and not_a_recording(head) is None:
        return None
    try:
        names = sorted(name for name in os.listdir(path.parent) if Path(name).stem == path.stem and audio_name(name))
    except OSError:
        names = []
    instead = f": {path.with_name(names[0])}" if names else " (.wav, .mp3, .m4a …)"
    return f"not a recording: .{extension} is what CareVoice writes (a transcript) — name the recording instead{instead}"


def _add_unless_colliding(result: Discovery, jobs: list[Job], names: list[str]) -> None:
    """Jobs that write the same outputs (``names``: every input that does) become problems."""
    if len(names) == 1:
        result.jobs.extend(jobs)
        return
    for job in jobs:
        result.problems.append(
            Problem(
                job.source,
                f"outputs would collide with another input ({', '.join(names)} all write {job.output_stem.name}.*) — "
                "rename one, or transcribe them separately with different --output-dir",
                job.key,
            )
        )


def find_jobs_among(
    paths: list[Path], roots: tuple[Path, ...], output_dir: Path | None = None, named: Callable[[Path, str], list[str]] | None = None
) -> Discovery:
    """Jobs for files found below watched folders (``carevoice watch``): each as :func:`find_jobs`
    on the folders would make it, and checked for collisions as it checks them without walking the
    folders again: with the audio files beside it, and with --output-dir, with those at the same
    place below every other folder (their outputs meet in the same mirror).

    Args:
        paths: Files below ``roots`` (as the roots are spelled).
        roots: The folders, as the user named them.
        output_dir: As for :func:`find_jobs`.
        named: The names of the audio files in a folder whose name without extension is the given
            one (a watcher knows them from its book of arrivals: listing a folder of 20,000
            transcribed recordings for each arrival cost more than the arrival). Default: the
            folder is listed, once per call.
    """
    result = Discovery()
    listings: dict[Path, dict[str, list[str]]] = {}

    def listed(folder: Path, stem: str) -> list[str]:
        if folder not in listings:
            by_stem: dict[str, list[str]] = {}
            try:
                for name in sorted(os.listdir(folder)):
                    if not _is_hidden(name) and _has_audio_extension(Path(name)):
                        by_stem.setdefault(Path(name).stem, []).append(name)
            except OSError:
                pass
            listings[folder] = by_stem
        return listings[folder].get(stem, [])

    siblings = named or listed
    for source in sorted(set(paths), key=str):
        root = next((r for r in roots if source.is_relative_to(r)), None)
        if root is None:
            continue
        below = source.parent.relative_to(root)
        folders = [source.parent] if output_dir is None else list(dict.fromkeys(r / below for r in roots))
        stem_name = source.with_suffix("").name
        names = [str(folder / n) for folder in folders for n in siblings(folder, stem_name) if (folder / n).is_file()]
        job = Job(source, _output_stem(source, root, output_dir), str(source), job_key(source, root))
        _add_unless_colliding(result, [job], names or [str(source)])
    return result


def select_shard(found: Discovery, index: int, count: int) -> Discovery:
    """The part of a discovery that shard ``index`` (0-based) of ``count`` owns.

    Call it on everything found, after the collision check: two colliding inputs are then
    reported the same whichever shards they fall in. Problems with an input as given (a missing
    file, an unreadable folder) stay in every shard, since every shard was given that input.
    """
    return Discovery(
        jobs=[job for job in found.jobs if shard_of(job.key, count) == index],
        problems=[p for p in found.problems if p.key is None or shard_of(p.key, count) == index],
    )
