"""languages.py: the table of language codes is Whisper's own (faster-whisper's list of the codes its
tokenizer knows), so a code CareVoice accepts is one the model can be asked for, and none is missing."""

from __future__ import annotations

from faster_whisper.tokenizer import _LANGUAGE_CODES

from carevoice.languages import LANGUAGES, resolve_language


def test_the_codes_are_whispers_own() -> None:
    assert len(LANGUAGES) == 100
    assert set(LANGUAGES) == set(_LANGUAGE_CODES)


def test_every_code_resolves_to_itself() -> None:
    assert [resolve_language(code).code for code in LANGUAGES] == list(LANGUAGES)
