"""File assembly: chunk results from shared batches -> one transcript on the file's own timeline."""

from __future__ import annotations

from pathlib import Path

from carevoice.engine.whisper import ItemResult
from carevoice.run.assembly import FileChunks, assemble
from carevoice.run.discovery import Job
from carevoice.transcript import Segment, Word

OPTIONS = {"model": "m", "beam_size": 5}


def segment(start_s: float, end_s: float, text: str, language: str = "en") -> Segment:
    words = (Word(start_s, (start_s + end_s) / 2, " a", 0.9), Word((start_s + end_s) / 2, end_s, " b.", 0.8))
    return Segment(7, start_s, end_s, text, -0.2, 0.01, 1.1, words, language)


def test_chunks_are_placed_at_their_offsets_and_numbered_in_order() -> None:
    first = ItemResult("en", 0.9, [segment(0.1, 2.0, " One."), segment(2.5, 4.0, " Two.")])
    second = ItemResult("en", 0.8, [segment(0.0, 1.2345, " Three.")])
    transcript = assemble([first, second], [0.0, 30.0004], 32.0, model="m", options=OPTIONS, language=None)
    assert [(s.id, s.start_s, s.end_s, s.text) for s in transcript.segments] == [
        (0, 0.1, 2.0, " One."),
        (1, 2.5, 4.0, " Two."),
        (2, 30.0, 31.235, " Three."),  # rounded to the millisecond on the file's timeline
    ]
    assert [(w.start_s, w.end_s) for w in transcript.segments[2].words] == [(30.0, 30.618), (30.618, 31.235)]
    assert (transcript.language, transcript.language_probability, transcript.duration_s) == ("en", 0.9, 32.0)
    assert transcript.speech_detected and transcript.model == "m" and transcript.options == OPTIONS


def test_the_file_language_is_the_one_most_of_its_speech_is_in() -> None:
    short_german = ItemResult("de", 0.7, [segment(0.0, 2.0, " Hallo.", "de")])
    long_english = ItemResult("en", 0.6, [segment(0.0, 9.0, " A long English stretch.")])
    transcript = assemble([short_german, long_english], [0.0, 10.0], 20.0, model="m", options=OPTIONS, language=None)
    assert (transcript.language, transcript.language_probability) == ("en", 0.6)
    assert [s.language for s in transcript.segments] == ["de", "en"]  # each segment keeps its own


def test_a_file_without_speech_keeps_the_language_given_or_detected() -> None:
    silent = ItemResult("fr", 0.4, [])
    detected = assemble([silent], [0.0], 3.0, model="m", options=OPTIONS, language=None)
    assert (detected.language, detected.language_probability, detected.speech_detected) == ("fr", 0.0, False)
    given = assemble([silent], [0.0], 3.0, model="m", options=OPTIONS, language="de")
    assert (given.language, given.language_probability, given.segments) == ("de", 1.0, ())
    nothing = assemble([], [], 0.5, model="m", options=OPTIONS, language=None)
    assert (nothing.language, nothing.segments, nothing.speech_detected) == ("", (), False)


def test_a_file_is_complete_once_every_chunk_is_back_and_none_failed() -> None:
    file = FileChunks(Job(Path("a.wav"), Path("a"), "a.wav"))
    file.offsets_s = (0.0, 30.0)
    assert not file.complete
    file.results[1] = ItemResult("en", 1.0, [segment(0.0, 1.0, " Later.")])
    assert not file.complete
    file.results[0] = ItemResult("en", 1.0, [segment(0.0, 1.0, " First.")])
    assert file.complete
    assert [s.text for s in file.transcript(model="m", options=OPTIONS, language=None).segments] == [" First.", " Later."]
    file.failed = "out of memory"
    assert not file.complete
    no_chunks = FileChunks(Job(Path("b.wav"), Path("b"), "b.wav"))
    assert no_chunks.complete  # decoded, and no speech chunk to wait for
