"""Planning a run, as docs/reruns.md tells it: validate, find the inputs, pick this shard, resolve
the model; then for each recording gather its facts once (its record, its stat — its bytes only
when the stat differs —, its outputs, and whether they may be written there) and decide once
(carevoice.run.rules.decide). Reads only, and nothing loads: ``--dry-run`` prints a plan and stops,
a run carries it out (carevoice.run.tidying, then carevoice.run.claims under each file's lock).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carevoice import files
from carevoice.engine.decoder import cached_model_dir
from carevoice.engine.models import (
    ModelRef,
    is_multilingual,
    resolve_model,
    weights_digest,
)
from carevoice.engine.policy import ENGINE_REVISION
from carevoice.errors import Cause, OutputError, UsageError
from carevoice.folders import FOLDER_FILE, FolderFiles, choices_key, effective_choices, with_choices
from carevoice.results import NO_SPEECH_HEARD, FileResult, FileStatus
from carevoice.run.discovery import Job, find_jobs, select_shard
from carevoice.run.failures import failed_before
from carevoice.run.names import name_problem
from carevoice.run.records import Identity, Record, read_record
from carevoice.run.rules import (
    IN_THE_WAY_HINT,
    Action,
    Decision,
    FileFacts,
    OutputState,
    Reason,
    RunFacts,
    after_failure,
    decide,
)
from carevoice.run.writers import output_path
from carevoice.settings import OutputFormat, TranscribeSettings


@dataclass(frozen=True)
class FilePlan:
    """The plan for one recording: the decision, with the facts it was made from.

    Attributes:
        job: The input.
        decision: What the run does with it, and why.
        record: Its record as read for the plan (None: none).
        input: The recording's identity when its bytes were found unchanged (the record's, with the
            current stat), else None (it is identified again while it is decoded).
        problem: With FAIL, the one line that says why and what to do.
        cause: With FAIL, why when the fault may pass while the recording stays the same (a folder
            made writable: ``carevoice watch`` tries the file again); None: it fails until it changes.
    """

    job: Job
    decision: Decision
    record: Record | None = None
    input: Identity | None = None
    problem: str = ""
    cause: Cause | None = None

    @property
    def settled(self) -> bool:
        """Nothing to do for it in this run: skipped or failed already."""
        return self.decision.action in (Action.SKIP, Action.FAIL)

    def result(self) -> FileResult:
        """The FileResult of a settled file."""
        if self.decision.action is Action.FAIL:
            return FileResult(self.job.source, FileStatus.FAILED, error=self.problem, cause=self.cause)
        # Its outputs and length, as its record has them: the report shows what a skipped file has.
        record = self.record
        outputs = tuple(output_path(self.job.output_stem, f) for f in OutputFormat if record is not None and f in record.formats)
        duration_s = record.duration_s if record is not None and record.duration_s is not None else 0.0
        unheard = record is not None and not record.heard  # skipped, but still for a person to listen to
        note = self.decision.why + (f"; {NO_SPEECH_HEARD}" if unheard else "")
        return FileResult(self.job.source, FileStatus.SKIPPED, outputs=outputs, duration_s=duration_s, note=note)


@dataclass(frozen=True)
class GroupPlan:
    """The files of a run that share one set of options (their folders' carevoice.toml files agree).

    Attributes:
        settings: The options these files get.
        ref: Their model.
        run: What this group makes (carevoice.run.rules.RunFacts).
        files: Each file's plan, in input order.
    """

    settings: TranscribeSettings
    ref: ModelRef
    run: RunFacts
    files: list[FilePlan]

    @property
    def jobs(self) -> list[Job]:
        """What the engine (or the recorded JSON) has to do, in input order."""
        return [p.job for p in self.files if not p.settled]


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before any model loads: what to do with each file, and with which options and model.

    Attributes:
        settings: The run's options, as given (before any folder's carevoice.toml).
        run_id: This run's id, written into every record it makes.
        groups: The files, by the options they get (one group unless folders set other options).
        problems: Inputs that are not files to plan (collisions, broken links).
        found: Inputs found before --shard picked this run's part.
    """

    settings: TranscribeSettings
    run_id: str
    groups: list[GroupPlan]
    problems: list[FileResult]
    found: int

    @property
    def files(self) -> list[FilePlan]:
        """Each input's plan (``--dry-run`` prints them), group by group."""
        return [p for group in self.groups for p in group.files]

    @property
    def jobs(self) -> list[Job]:
        """What the engine (or the recorded JSON) has to do."""
        return [p.job for p in self.files if not p.settled]

    @property
    def settled(self) -> list[FileResult]:
        """Files settled without work: skipped, or failed before any (sorted by name)."""
        return sorted(self.problems + [p.result() for p in self.files if p.settled], key=lambda r: str(r.source))

    def only_group(self, why: str) -> GroupPlan:
        """The one group of a run that cannot run several (``why``: what cannot).

        Raises:
            UsageError: folders set different options.
        """
        if len(self.groups) != 1:
            raise UsageError(f"{why}: the folders' {FOLDER_FILE} files set different options", "run each folder on its own")
        return self.groups[0]


def plan_run(settings: TranscribeSettings) -> RunPlan:
    """Validate, discover, pick this shard, read the folders' settings and plan each file: all
    cheap, no model loaded.

    Raises:
        UsageError: bad options (a folder's carevoice.toml included) or nothing to transcribe.
        SetupError: the model cannot be found.
    """
    settings.validate()
    found = find_jobs(settings.inputs, settings.output_dir, settings.recursive)
    if not found.jobs and not found.problems:
        raise UsageError("no audio files found", "name audio files, or folders holding .wav/.mp3/.m4a/… files")
    if not found.jobs and all(p.missing for p in found.problems):
        named = ", ".join(str(p.path) for p in found.problems[:3]) + (" …" if len(found.problems) > 3 else "")
        raise UsageError(f"nothing to transcribe: no such file or folder ({named})", "check the paths")
    total_found = len(found.jobs) + sum(p.key is not None for p in found.problems)
    every_input = found.jobs
    if settings.shard is not None:
        # After the collision check, which must see every input. A shard left with nothing is
        # not an error: with more shards than files some are empty, and a job array must not fail.
        found = select_shard(found, settings.shard.index, settings.shard.count)
    problems = [FileResult(p.path, FileStatus.FAILED, error=p.message) for p in found.problems]
    groups = []
    for group_settings, jobs in group_jobs(found.jobs or [], settings, FolderFiles()) or [(settings, [])]:
        ref = resolve_run_model(group_settings)
        run = run_facts(group_settings, ref.model_id, model_identity(ref, group_settings.engine.cache_dir), ENGINE_REVISION)
        groups.append(GroupPlan(group_settings, ref, run, plan_files(jobs, group_settings, run, every_input)))
    return RunPlan(settings, uuid.uuid4().hex, groups, problems, total_found)


def settings_for(folder: Path, settings: TranscribeSettings, folders: FolderFiles) -> TranscribeSettings:
    """The options the recordings in ``folder`` get: the run's, with what the carevoice.toml files
    of that folder and those above it set for options the run was not given.

    Raises:
        UsageError: one of those files is bad.
    """
    if not settings.choices:  # settings built without the command line (a bench, a test): no folder settings
        return settings
    choices = effective_choices(settings.choices, folders.choices(folder))
    if choices == settings.choices:
        return settings
    return with_choices(settings, choices)


def group_jobs(jobs: list[Job], settings: TranscribeSettings, folders: FolderFiles) -> list[tuple[TranscribeSettings, list[Job]]]:
    """The jobs by the options they get (in input order within each group, groups in order of their first job).

    Raises:
        UsageError: a folder's carevoice.toml is bad, or sets an option the others reject.
    """
    groups: dict[tuple[tuple[str, str], ...], tuple[TranscribeSettings, list[Job]]] = {}
    for job in jobs:
        own = settings_for(job.source.parent, settings, folders)
        key = choices_key(own.choices)
        if key not in groups:
            own.decode.validate()
            groups[key] = (own, [])
        groups[key][1].append(job)
    return list(groups.values())


def resolve_run_model(settings: TranscribeSettings) -> ModelRef:
    """The model of a run, checked against its --language (cheap: nothing is loaded).

    Raises:
        UsageError: a language the model does not know.
        SetupError: the model cannot be found.
    """
    ref = resolve_model(settings.engine.model, settings.engine.cache_dir)
    if settings.decode.language not in (None, "en") and is_multilingual(ref) is False:
        raise UsageError(
            f"--language {settings.decode.language}: the model {ref.model_id} knows only English",
            "leave --language out (or pass -l en), or use a multilingual model such as --model base",
        )
    return ref


def model_identity(ref: ModelRef, cache_dir: Path, engine: Any = None) -> str | None:
    """The SHA-256 of the model's weights; None for a hub model not downloaded yet (records then
    compare it by name until it is). ``engine``: a loaded engine, whose files are on disk."""
    if ref.is_local:
        folder: Path | None = Path(ref.load_from)
    elif engine is not None and hasattr(engine, "decoder"):
        folder = Path(engine.decoder.model_path)
    else:
        folder = cached_model_dir(ref.load_from, str(cache_dir / "hub"))
    if folder is None:
        return None
    try:
        return weights_digest(folder, cache_dir)
    except OSError:
        return None


def run_facts(settings: TranscribeSettings, model: str, model_sha256: str | None, engine_revision: int) -> RunFacts:
    """What this run makes, for every file's plan."""
    return RunFacts(
        formats=settings.formats,
        words=settings.decode.word_timestamps,
        model=model,
        model_sha256=model_sha256,
        engine_revision=engine_revision,
        text=settings.decode.text_options(),
        overwrite=settings.overwrite,
        offers_overwrite=settings.offers_overwrite,
    )


def plan_file(job: Job, run: RunFacts) -> FilePlan:
    """Plan one recording (the outputs' own safety is checked by :func:`plan_files`)."""
    facts, unchanged = gather_facts(job, run.formats)
    decision = decide(facts, run)
    if decision.action in (Action.TRANSCRIBE, Action.REDO):  # only then: a skipped file costs no look for a note
        decision = after_failure(decision, failed_before(job.output_stem, job.source))
    problem = blocked_message(job, decision, run) if decision.action is Action.FAIL else ""
    return FilePlan(job, decision, facts.record, unchanged, problem)


def plan_files(
    jobs: list[Job],
    settings: TranscribeSettings,
    run: RunFacts,
    every_input: list[Job] | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> list[FilePlan]:
    """Plan every job, in order: what to transcribe, redo or add, what is settled (skipped or failed).

    ``every_input``: all inputs of the run when ``jobs`` is one shard of them (default: ``jobs``);
    no output may replace any of their recordings, whichever shard they are in. ``on_planned``:
    called after each file with how many are planned so far (a watcher beats while it plans a
    whole folder). Reads only: carrying the plans out starts with carevoice.run.tidying.tidy.
    """
    sources: set[str] | None = None  # the inputs' real paths: asked only once a file is to be written
    planned = []
    for job in jobs:
        entry = plan_file(job, run)
        if not entry.settled:
            if sources is None:
                sources = {os.path.realpath(j.source) for j in (jobs if every_input is None else every_input)}
            if (problem := output_problem(job, settings, sources)) is not None:
                entry = FilePlan(job, Decision(Action.FAIL, Reason.PROBLEM), entry.record, problem=str(problem), cause=problem.cause)
        planned.append(entry)
        if on_planned is not None:
            on_planned(len(planned))
    return planned


def gather_facts(job: Job, formats: Sequence[OutputFormat]) -> tuple[FileFacts, Identity | None]:
    """What is known of one recording now; and its identity when its bytes are the recorded ones."""
    record = read_record(job.output_stem)
    changed: bool | None = None
    unchanged_identity = None
    if record is not None and record.input is not None:
        try:
            st = os.stat(job.source)
            if record.input.same_stat(st):
                changed, unchanged_identity = False, record.input
            else:
                changed = files.sha256_of(job.source) != record.input.sha256
                unchanged_identity = None if changed else record.input.with_stat(st)
        except OSError:
            changed = True  # unreadable now: it is decoded again, and fails there with ffmpeg's reason
    recorded = record.formats if record is not None else set()
    outputs = {fmt: output_state(job.output_stem, fmt, record) for fmt in set(formats) | recorded}
    return FileFacts(record, changed, outputs), unchanged_identity


def output_state(stem: Path, fmt: OutputFormat, record: Record | None) -> OutputState:
    """Whether an output path is empty, holds what CareVoice wrote, or something else. Its bytes
    are read only when its stat differs from the one recorded."""
    path = output_path(stem, fmt)
    try:
        st = os.stat(path)
    except OSError:  # nothing there, or a link that leads nowhere (a person's: not provably ours)
        return OutputState.FOREIGN if os.path.lexists(path) else OutputState.MISSING
    entry = record.outputs.get(fmt.value) if record is not None else None
    if entry is None:
        return OutputState.FOREIGN
    if entry.identity is not None and entry.identity.same_stat(st):
        return OutputState.OURS
    try:
        return OutputState.OURS if record.ours(fmt.value, files.sha256_of(path)) else OutputState.FOREIGN  # type: ignore[union-attr]
    except OSError:
        return OutputState.FOREIGN  # cannot be read (no permission): not provably ours


def output_problem(job: Job, settings: TranscribeSettings, sources: set[str]) -> OutputError | None:
    """Why this job's outputs must not be written where they would go, or None.

    What no option may allow: an output replacing a recording of this run (``visit.txt`` that is
    really audio), with --output-dir an output landing outside it through a symbolic link, and an
    output name longer than a file name may be. And, for as long as it lasts, a folder this user
    cannot write in (its cause, Cause.FOLDER, says so).
    """
    for fmt in settings.formats:
        target = output_path(job.output_stem, fmt)
        if os.path.realpath(target) in sources:
            return OutputError(
                f"its output {target.name} would replace an input recording", "rename the recording so that its extension says what it is"
            )
        if (too_long := name_problem(target.name)) is not None:
            return OutputError(too_long)
    folder = job.output_stem.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return OutputError(
            f"cannot write to {folder}",
            "make the folder writable (in a container: docker run --user with the folder's owner), or choose another --output-dir",
            cause=Cause.FOLDER,
        )
    if settings.output_dir is not None:
        root = os.path.realpath(settings.output_dir)
        folder = os.path.realpath(job.output_stem.parent)
        if folder != root and not folder.startswith(root.rstrip(os.sep) + os.sep):
            return OutputError(
                f"its output folder {job.output_stem.parent} leads outside --output-dir (through a symbolic link)",
                "remove the link or choose another --output-dir",
            )
    return None


def blocked_message(job: Job, decision: Decision, run: RunFacts) -> str:
    """The one line for a file whose outputs include one a person wrote or edited (the recording is
    the same: the edit describes it), with what the command's user can do about it."""
    fmt = decision.formats[0]
    name = output_path(job.output_stem, fmt).name
    hint = IN_THE_WAY_HINT[run.offers_overwrite]
    if fmt in run.formats:
        return f"{name} exists and was not written by CareVoice (or was edited) — {hint}"
    return f"{name} was edited since CareVoice wrote it, and belongs to a transcript that is out of date — {hint}"


def redo_note(planned: FilePlan) -> str | None:
    """Why a file that is being transcribed (again) is: ``redo: recording changed since …``, ``redo: --zh-script tw → keep``,
    ``try again: failed last time, …``, ``transcribe: changed since it failed last time``."""
    decision = planned.decision
    if decision.action in (Action.REDO, Action.TRY_AGAIN) or decision.reason is Reason.CHANGED_SINCE_FAILED:
        return f"{decision.action.value}: {decision.why}"
    if decision.action is Action.ADD:
        return f"redo: {decision.why}; wrote {', '.join(f.value for f in decision.write)} only"
    return None
