"""Issue 23 §4 in `carevoice watch`: a file dropped in the folder that is no recording (a scanned
PDF saved as ``.m4a``) fails at once with the line that says what it is; it does not wait ten
minutes as an upload cut short would, nor --settle-unsized as a format that states no length.
A recording cut short still waits for the rest of its upload.

The real CLI in a child process, real ffmpeg and the real tiny.en model; waits are for lines.
"""

from __future__ import annotations

from pathlib import Path

from watchers import Watcher, done, start, upload  # noqa: F401  (start: a fixture)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def test_a_file_that_is_no_recording_fails_at_once_and_the_watcher_goes_on(tmp_path: Path, start) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher: Watcher = start(inbox, "--settle", "0.5s", "--gather", "0s")
    watcher.wait_for(r"listening for file-system events")
    (inbox / "scan.m4a").write_bytes(PDF)

    line = watcher.wait_for(r"scan\.m4a")  # the first line about it: no "waiting", no hold for --settle-unsized
    assert line.endswith(
        f"error: {inbox / 'scan.m4a'}: not a recording: it is a PDF document — check that the right file was saved under this name"
    )
    (inbox / "jfk.wav").write_bytes(upload("jfk"))
    watcher.wait_for(done("jfk.wav"))
    code, _ = watcher.stop()
    assert code == 0, "\n".join(watcher.lines)
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == ["jfk.json", "jfk.txt", "jfk.wav", "scan.m4a"]
    assert (inbox / "scan.m4a").read_bytes() == PDF
