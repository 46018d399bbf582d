"""A watcher's files by the options their folders' carevoice.toml files give them, and the models
those options name, each loaded once (the first time a file of such a folder comes).
"""

from __future__ import annotations

from typing import Any

from carevoice.engine.devices import engines_label
from carevoice.engine.models import ModelRef
from carevoice.engine.policy import ENGINE_REVISION
from carevoice.errors import UsageError
from carevoice.folders import FolderFiles, choices_key
from carevoice.run.chinese import load_converter
from carevoice.run.discovery import Job
from carevoice.run.planning import model_identity, resolve_run_model, run_facts, settings_for
from carevoice.run.rules import RunFacts
from carevoice.run.runs import load_engines
from carevoice.settings import TranscribeSettings
from carevoice.watch.log import WatchLog

Group = tuple[TranscribeSettings, RunFacts, list[Job]]


class FolderModels:
    """The models a watcher has loaded, by name, and the grouping of each set of files by options.

    Args:
        log: Where a model loaded later is said.
        loaded: The models loaded at start: name -> (reference, engines).
    """

    def __init__(self, log: WatchLog, loaded: dict[str, tuple[ModelRef, list[Any]]]) -> None:
        self.log = log
        self.loaded = loaded

    def group(self, jobs: list[Job], settings: TranscribeSettings) -> tuple[list[Group], list[tuple[Job, str]]]:
        """The jobs by the options their folders give them (the files are read afresh for each set:
        an edited carevoice.toml counts from the next arrival), with what each group makes; and the
        jobs whose folders' files are bad (or name a model that cannot take them), with why."""
        folders = FolderFiles()
        groups: dict[tuple[tuple[str, str], ...], Group] = {}
        bad = []
        for job in jobs:
            try:
                own = settings_for(job.source.parent, settings, folders)
                key = choices_key(own.choices)
                if key not in groups:
                    own.decode.validate()
                    ref, engines = self.engines(own)
                    facts = run_facts(own, ref.model_id, model_identity(ref, own.engine.cache_dir, engines[0]), ENGINE_REVISION)
                    groups[key] = (own, facts, [])
            except UsageError as exc:
                bad.append((job, f"{exc.message} — {exc.hint}" if exc.hint else exc.message))
                continue
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
