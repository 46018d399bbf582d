"""Folder settings: a ``carevoice.toml`` in a recording's folder or any folder above it holds the
options that shape its text (docs/settings.md). Each key's value comes from, first to last: the
command line (or its environment variable), the nearest ``carevoice.toml`` that sets it, the default.
Reads files, prints nothing; a bad file is a UsageError naming the file and the key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from carevoice.errors import UsageError
from carevoice.languages import resolve_language
from carevoice.settings import (
    SUBTITLE_FORMATS,
    Choice,
    OutputFormat,
    Task,
    TranscribeSettings,
    ZhScript,
    choose_zh_script,
    hot_words,
    parse_formats,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, before it joined the standard library
    import tomli as tomllib

FOLDER_FILE = "carevoice.toml"


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('a text such as "..."')
    return value.strip()


def _language(value: Any) -> str:
    resolve_language(_text(value))  # a UsageError says which languages are close
    return _text(value)


def _one_of(kind: type[Task | ZhScript]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in {k.value for k in kind}:
            raise ValueError(f"one of {', '.join(k.value for k in kind)}")
        return str(value)

    return check


def _formats(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    parse_formats(_text(value))
    return str(value)


def _model(value: Any) -> str:
    name = _text(value)
    if any(len(part) > 255 for part in name.split("/")):  # longer than any file name: the lookup itself would fail
        raise ValueError("a model name (base, large-v3, ...) or a model folder")
    return name


def _beam_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a whole number, 1 or more")
    return value


# Whisper's prompt holds at most 223 tokens of hot words (faster-whisper cuts them at max_length // 2 - 1).
# Its tokenizers are byte-level BPE, so no token is shorter than a byte: a glossary of at most this many
# bytes of UTF-8 always fits, whatever the model, and is checked before any model is loaded.
GLOSSARY_MAX_BYTES = 223
GLOSSARY_FILE_MAX_BYTES = 65_536  # comments included; a bigger file is not a glossary


def read_glossary(path: Path) -> tuple[str, ...]:
    """A glossary file's terms: one a line, UTF-8, ``#`` starts a comment line, blank lines and
    repeats left out, spaces at either end trimmed (so a file that differs only in those, or in its
    name, gives the same terms and redoes nothing).

    Raises:
        UsageError: it cannot be read, is not UTF-8, holds no term, or is more than Whisper's prompt holds.
    """
    fix = "one term per line, UTF-8, # for comments (docs/glossary.md)"
    try:
        if path.stat().st_size > GLOSSARY_FILE_MAX_BYTES:
            raise UsageError(f"glossary {path} is larger than {GLOSSARY_FILE_MAX_BYTES // 1024} KiB", f"a glossary holds {fix}")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"glossary {path}: cannot read it ({exc.strerror})", "check the path, and that this user may read it") from None
    except UnicodeDecodeError:
        raise UsageError(f"glossary {path} is not UTF-8 text", f"save it as UTF-8: {fix}") from None
    lines = (line.strip() for line in text.splitlines())
    terms = tuple(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not terms:
        raise UsageError(f"glossary {path} holds no terms", f"write {fix}")
    size = len((" " + hot_words(terms)).encode("utf-8"))  # faster-whisper puts a space before them
    if size > GLOSSARY_MAX_BYTES:
        raise UsageError(
            f"glossary {path} is {size} bytes, more than Whisper's prompt holds ({GLOSSARY_MAX_BYTES} bytes of UTF-8)",
            "keep the terms the model gets wrong (about 70 Chinese characters or 35 English words fit)",
        )
    return terms


@dataclass(frozen=True)
class FolderKey:
    """One option a folder may set: its key in ``carevoice.toml``, its command-line option, and the
    check of a value read from a file (it returns the value as the command line would give it)."""

    key: str
    option: str
    check: Callable[[Any], Any]


# The options that shape a transcript's text (what a team chooses for its folder). A later option
# is one more entry here and one more line in with_choices.
FOLDER_KEYS = (
    FolderKey("language", "--language", _language),
    FolderKey("zh_script", "--zh-script", _one_of(ZhScript)),
    FolderKey("model", "--model", _model),
    FolderKey("formats", "--format", _formats),
    FolderKey("task", "--task", _one_of(Task)),
    FolderKey("beam_size", "--beam-size", _beam_size),
    FolderKey("glossary", "--glossary", _text),
)
# Keys whose value names a file or folder: relative to the carevoice.toml that names it, whoever runs it, from wherever.
PATH_KEYS = ("glossary",)
KEYS = {k.key: k for k in FOLDER_KEYS}


def read_folder_file(path: Path) -> dict[str, Any]:
    """The checked settings of one ``carevoice.toml``.

    Raises:
        UsageError: it cannot be read, is not TOML, or has an unknown key or a bad value.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})", "make it readable, or remove it") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML ({exc})", "fix it (docs/settings.md shows one), or remove it") from None
    values = {}
    for key, value in data.items():
        if key not in KEYS:
            raise UsageError(f"{path}: unknown key {key!r}", f"the keys a folder may set: {', '.join(KEYS)} (docs/settings.md)")
        try:
            values[key] = KEYS[key].check(value)
        except (ValueError, TypeError, UsageError) as exc:
            why = exc.message if isinstance(exc, UsageError) else f"give {exc}" if isinstance(exc, ValueError) else "not a value this key takes"
            raise UsageError(
                f"{path}: {key} = {value!r}: {why}", f"fix {key} there, or pass {KEYS[key].option} on the command line"
            ) from None
    if str(values.get("model", "")).startswith(("./", "../")):  # a model folder beside the file, not a hub name
        values["model"] = os.path.normpath(os.path.join(os.path.abspath(path.parent), values["model"]))
    for key in PATH_KEYS:
        if key in values:
            values[key] = os.path.normpath(os.path.join(os.path.abspath(path.parent), values[key]))
    return values


class FolderFiles:
    """The ``carevoice.toml`` files of a run's folders, each read once (a run asks per recording)."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, Any]] = {}
        self._folders: dict[str, dict[str, Choice]] = {}

    def choices(self, folder: Path) -> dict[str, Choice]:
        """What the files in ``folder`` and every folder above it set, the nearest winning key by key.

        Raises:
            UsageError: one of those files is bad.
        """
        here = os.path.abspath(folder)
        if here in self._folders:
            return self._folders[here]
        parent = os.path.dirname(here)
        above = {} if parent == here else self.choices(Path(parent))
        path = Path(here) / FOLDER_FILE
        own = {key: Choice(value, str(path)) for key, value in self._read(path).items()}
        self._folders[here] = merged = {**above, **own}
        return merged

    def _read(self, path: Path) -> dict[str, Any]:
        key = str(path)
        if key not in self._files:
            self._files[key] = read_folder_file(path) if path.is_file() else {}
        return self._files[key]


def effective_choices(given: Mapping[str, Choice], folder: Mapping[str, Choice]) -> dict[str, Choice]:
    """Each option's choice for one folder: what was given for the run, else its folders' files, else the default."""
    return {key: given[key] if given[key].given or key not in folder else folder[key] for key in given}


def with_choices(base: TranscribeSettings, choices: Mapping[str, Choice]) -> TranscribeSettings:
    """``base`` with the options that shape the text set as ``choices`` say (values as the command line takes them).

    Raises:
        UsageError: a bad value (a language or format the command line would refuse too).
    """
    value = {key: choice.value for key, choice in choices.items()}
    language = resolve_language(value["language"]) if value["language"] else None
    formats = parse_formats(value["formats"])
    script = choose_zh_script(choices["zh_script"], choices["language"], base.locale)  # kept with where it came from
    glossary = value.get("glossary")
    decode = replace(
        base.decode,
        glossary=() if glossary is None else read_glossary(Path(glossary)),
        task=Task(value["task"]),
        language=language.code if language else None,
        beam_size=value["beam_size"],
        word_timestamps=bool(SUBTITLE_FORMATS.intersection(formats)) or OutputFormat.JSON in formats,
        zh_script=ZhScript(script.value),
    )
    return replace(
        base, formats=formats, engine=replace(base.engine, model=value["model"]), decode=decode, choices=dict(choices), zh_script_source=script.source
    )


def choices_key(choices: Mapping[str, Choice]) -> tuple[tuple[str, Any], ...]:
    """What files share one group of a run by: their options' values (not where each came from)."""
    return tuple((key, str(choices[key].value)) for key in sorted(choices))


def option_sources(settings: TranscribeSettings) -> list[tuple[str, str, str]]:
    """Each option that shapes the text, its value and where it came from (``--dry-run`` shows them):
    ``("--zh-script", "tw", "/ward/carevoice.toml")``."""
    if not settings.choices:
        return []
    decode = settings.decode
    values = {
        "language": decode.language or "(detect)",
        "zh_script": decode.zh_script.value,
        "model": settings.engine.model,
        "formats": ",".join(f.value for f in settings.formats),
        "task": decode.task.value,
        "beam_size": str(decode.beam_size),
    }
    if decode.glossary:  # none is no option worth a line
        values["glossary"] = f"{settings.choices['glossary'].value} ({len(decode.glossary)} terms)"
    sources = {key: choice.source for key, choice in settings.choices.items()} | {"zh_script": settings.zh_script_source}
    return [(KEYS[key].option, values[key], sources[key]) for key in KEYS if key in values]
