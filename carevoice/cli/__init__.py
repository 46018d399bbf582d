"""The command line: the Typer app, one module per command. Parse -> settings -> call -> render ->
exit code. The only package that exits; nothing imports it.

``import carevoice.cli`` stays cheap (faster_whisper, ctranslate2 and matplotlib load only when a
command needs them), so ``--help`` is instant and ``doctor`` works when they are broken.
"""
