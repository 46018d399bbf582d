"""The options transcribe and watch share (what each file gets), where each came from, and the settings they make.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from carevoice.folders import with_choices
from carevoice.settings import (
    COMMAND_LINE,
    DEFAULT,
    ENV_DEVICE,
    ENV_MODEL,
    Choice,
    DecodeSettings,
    Device,
    EngineSettings,
    Task,
    TranscribeSettings,
    ZhScript,
    locale_of,
    parse_gpus,
)

# Options that transcribe and watch share: what each file gets.
FormatsOption = Annotated[str, typer.Option("-f", "--format", help="Comma list of txt,srt,vtt,json,tsv (or all).")]
OutputDirOption = Annotated[
    Optional[Path], typer.Option("-o", "--output-dir", help="Write outputs under this folder, mirroring the input tree.")
]
ModelOption = Annotated[
    str, typer.Option("-m", "--model", envvar=ENV_MODEL, help="Model folder, or a name: base (offline default), tiny.en, large-v3, turbo, …")
]
DeviceOption = Annotated[Device, typer.Option("--device", envvar=ENV_DEVICE, help="auto = CUDA when available, else CPU.")]
GpusOption = Annotated[
    Optional[str],
    typer.Option(
        "--gpus",
        metavar="0,2",
        help="CUDA devices to use, one engine each, fed from one batch queue (default: every GPU CTranslate2 sees; "
        "not with --device cpu).",
    ),
]
ComputeTypeOption = Annotated[
    Optional[str], typer.Option("--compute-type", help="CTranslate2 compute type (default: float16 on CUDA, int8 on CPU).")
]
BatchSizeOption = Annotated[Optional[int], typer.Option("--batch-size", help="Speech chunks per batch (default: 16 CUDA, 8 CPU).")]
BeamSizeOption = Annotated[int, typer.Option("--beam-size", help="Beam search width.")]
LanguageOption = Annotated[
    Optional[str],
    typer.Option(
        "-l",
        "--language",
        help="Language: a code (en, zh, yue), a name (english, mandarin, cantonese) or a tag (zh-TW = zh with "
        "--zh-script tw, zh-HK, zh-CN, en-US); default: detect per file.",
    ),
]
TaskOption = Annotated[Task, typer.Option("--task", help="transcribe, or translate to English.")]
ZhScriptOption = Annotated[
    Optional[ZhScript],
    typer.Option(
        "--zh-script",
        help="Script of Chinese text (zh, yue): auto = each file in the script most of its Chinese characters are "
        "in, never a mix; keep = as the model wrote it (may mix both); tw = Traditional, Taiwan phrasing; hk = "
        "Traditional, Hong Kong; simplified. Default: what a --language tag such as zh-TW says, else a carevoice.toml, else the locale "
        "(LC_ALL, LC_MESSAGES, LANG: zh_TW → tw, zh_HK → hk, zh_CN or zh_SG → simplified), else auto.",
    ),
]
GlossaryOption = Annotated[
    Optional[Path],
    typer.Option(
        "--glossary",
        metavar="FILE",
        help="A ward's words (drugs, procedures, places), one per line, UTF-8, # for comments: given to the model as hot words, "
        "the same for every file; at most 223 bytes (docs/glossary.md). Default: a carevoice.toml's glossary, else none.",
    ),
]
RecursiveOption = Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk sub-folders.")]
DecodeWorkersOption = Annotated[
    int, typer.Option("--decode-workers", help="Files decoded at once (PyAV workers or the ffmpeg program; 0 = auto).")
]
CpuThreadsOption = Annotated[int, typer.Option("--cpu-threads", help="CPU inference threads (0 = every CPU this process may use: its affinity and container limit).")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary on stderr.")]
TracebackOption = Annotated[bool, typer.Option("--traceback", help="Show tracebacks for errors (may be long).")]
DEFAULT_FORMATS_TEXT = "txt,srt,json"


def text_choices(ctx: typer.Context, **values: Any) -> dict[str, Choice]:
    """The options that shape the text (carevoice.folders.FOLDER_KEYS, by key), with where each came
    from: the command line, its environment variable, or the default (which a folder's
    carevoice.toml overrides)."""
    envvars = {"model": ENV_MODEL}
    choices = {}
    for key, value in values.items():
        plain = value.value if isinstance(value, Enum) else value
        source = ctx.get_parameter_source(key)
        where = {"COMMANDLINE": COMMAND_LINE, "ENVIRONMENT": f"${envvars.get(key, '')}"}.get(getattr(source, "name", ""), DEFAULT)
        choices[key] = Choice(plain, where)
    return choices


def transcribe_settings(
    paths: list[Path],
    choices: dict[str, Choice],
    output_dir: Path | None,
    device: Device,
    gpus: str | None,
    compute_type: str | None,
    batch_size: int | None,
    recursive: bool,
    decode_workers: int,
    cpu_threads: int,
) -> TranscribeSettings:
    """What each file gets, from the options transcribe and watch share (before any folder's
    carevoice.toml: carevoice.run.planning applies those per recording).

    Raises:
        UsageError: a bad language or format given on the command line.
    """
    base = TranscribeSettings(
        inputs=tuple(paths),
        output_dir=output_dir,
        engine=EngineSettings(device=device, compute_type=compute_type, cpu_threads=cpu_threads),
        decode=DecodeSettings(batch_size=batch_size),
        recursive=recursive,
        decode_workers=decode_workers,
        gpus=None if gpus is None else parse_gpus(gpus),
        locale=locale_of(os.environ),
    )
    return with_choices(base, choices)
