"""A watcher's files by the options their folders' carevoice.toml files give them, and the models
those options name, each loaded once (the first time a file of such a folder comes). A folder whose
options are bad, or name a model that cannot load, fails its own files, not the watcher.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from carevoice.engine.devices import engines_label
from carevoice.engine.models import ModelRef
from carevoice.engine.policy import ENGINE_REVISION
from carevoice.errors import SetupError, UsageError
from carevoice.folders import FOLDER_FILE, FolderFiles, choices_key
from carevoice.run.chinese import load_converter
from carevoice.run.discovery import Job
from carevoice.run.planning import model_identity, resolve_run_model, run_facts, settings_for
from carevoice.run.rules import RunFacts
from carevoice.run.runs import load_engines
from carevoice.settings import TranscribeSettings
from carevoice.watch.log import WatchLog

Group = tuple[TranscribeSettings, RunFacts, list[Job]]
Refused = tuple[Job, str, tuple[Path, ...]]  # a job its folders' options refuse, why, and where a change may lift it


def model_problem(settings: TranscribeSettings, exc: SetupError) -> str:
    """The one line for a file whose options name a model that cannot load, naming the model and the file that named it."""
    model = settings.engine.model
    reason = exc.message if model in exc.message else f"{model}: {exc.message}"
    source = settings.choices["model"].source if "model" in settings.choices else ""
    if source.endswith(FOLDER_FILE):
        return f"the model named in {source} cannot load ({reason}) — fix or remove its model line"
    return f"the model cannot load ({reason})" + (f" — {exc.hint}" if exc.hint else "")


def lifted_by(folder: Path) -> tuple[Path, ...]:
    """Where a change may lift what a folder's options refuse: the folder, and each carevoice.toml at
    or above it (named as the watcher names paths: from the folder as given, absolute above it)."""
    above = [] if folder.is_absolute() else list(Path(os.path.abspath(folder)).parents)[len(folder.parts) :]
    return (folder, *(f / FOLDER_FILE for f in (folder, *folder.parents, *above) if (f / FOLDER_FILE).is_file()))


class FolderModels:
    """The models a watcher has loaded, by name, and the grouping of each set of files by options.

    Args:
        log: Where a model loaded later is said.
        loaded: The models loaded at start: name -> (reference, engines).
    """

    def __init__(self, log: WatchLog, loaded: dict[str, tuple[ModelRef, list[Any]]]) -> None:
        self.log = log
        self.loaded = loaded

    def group(self, jobs: list[Job], settings: TranscribeSettings) -> tuple[list[Group], list[Refused]]:
        """The jobs by the options their folders give them (the files are read afresh for each set:
        an edited carevoice.toml counts from the next arrival), with what each group makes; and the
        jobs whose folders' files are bad, or name a model that cannot take them or cannot load,
        with why and where a change may lift it. Each set of options is tried once per call."""
        folders = FolderFiles()
        groups: dict[tuple[tuple[str, str], ...], Group] = {}
        refused: dict[tuple[tuple[str, str], ...], str] = {}
        bad = []
        for job in jobs:
            try:
                own = settings_for(job.source.parent, settings, folders)
            except (UsageError, OSError) as exc:  # a bad carevoice.toml, or one that cannot be read
                bad.append((job, str(exc) if isinstance(exc, UsageError) else f"cannot read its folders' settings ({exc.strerror})", lifted_by(job.source.parent)))
                continue
            key = choices_key(own.choices)
            if key not in groups and key not in refused:
                try:
                    own.decode.validate()
                    ref, engines = self.engines(own)
                    facts = run_facts(own, ref.model_id, model_identity(ref, own.engine.cache_dir, engines[0]), ENGINE_REVISION)
                    groups[key] = (own, facts, [])
                except UsageError as exc:
                    refused[key] = str(exc)
                except SetupError as exc:  # this folder's model: the watcher goes on with the others
                    refused[key] = model_problem(own, exc)
                except OSError as exc:  # a model name the file system refuses to look up
                    refused[key] = model_problem(own, SetupError(f"cannot look it up ({exc.strerror})"))
            if key in refused:
                bad.append((job, refused[key], lifted_by(job.source.parent)))
            else:
                groups[key][2].append(job)
        return list(groups.values()), bad

    def engines(self, settings: TranscribeSettings) -> tuple[ModelRef, list[Any]]:
        """The model these options name, loaded once.

        Raises:
            UsageError: the model does not know the options' language.
            SetupError: it cannot load.
        """
        ref = resolve_run_model(settings)
        if ref.model_id not in self.loaded:
            load_converter(settings.decode.zh_script)
            engines, choice = load_engines(settings, ref)
            self.log.loaded(ref, engines_label(engines), choice)
            self.loaded[ref.model_id] = (ref, engines)
        return self.loaded[ref.model_id]
