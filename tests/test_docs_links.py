"""The README and docs/ pages: every relative link and image resolves, every #anchor names a heading.

A reader who lands on any page from a link must be able to follow every link on it. External
links (http, https, mailto) are not fetched. Anchors follow GitHub's rule for heading ids:
lower-case, punctuation dropped except - and _, each space a -, a repeated heading gets -1, -2, ...
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# The pages issue 21 asked for; the README must link each one.
REQUIRED_PAGES = {
    "reruns.md", "watch.md", "chinese.md", "scale-out.md", "gpu-and-containers.md", "report.md",
    "bench.md", "development.md",
}
# The five-minute page: at 9 KB it holds the quickstart, the everyday commands, the option table,
# exit codes, models and links; the long sections (48 KB before issue 21) live in docs/.
README_MAX_BYTES = 12_000
# Links found over all pages when this was written: 78. Far fewer means the parser broke.
MIN_LINKS = 70

# The two quickstart command lines, byte for byte (CI and .ci/run run them).
QUICKSTART = (
    '```\npython3 -m venv .venv && .venv/bin/pip install ".[models,ffmpeg]" && .venv/bin/carevoice transcribe carevoice/samples/jfk.flac -o out/\n```',
    '```\npython3 -m venv .venv && .venv/bin/pip install -e ".[models,ffmpeg,plot,test]" && .venv/bin/python -m pytest\n```',
)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and ![alt](target), also nested as [![alt](img)](target); an optional "title".
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def prose(text: str) -> str:
    """The page without fenced code blocks, where '#' lines and brackets are not Markdown."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Every link and image target on a page, outside code blocks and code spans."""
    body = CODE_SPAN.sub("", prose(text))
    return INLINE_LINK.findall(body) + REFERENCE_DEF.findall(body)


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text without markup, lower-case, punctuation dropped but - and _."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image counts by its text
    text = re.sub(r"[`*]", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ids of a page's headings, numbered as GitHub numbers repeats."""
    seen: dict[str, int] = {}
    ids = set()
    for _, heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        ids.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return ids


def problems(page: Path, root: Path = REPO) -> list[str]:
    """One line per link on the page that does not resolve, or that leaves ``root``."""
    found = []
    for target in links(page.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}: ({target})"
        if not resolved.is_relative_to(root):
            found.append(f"{where} leaves the repository")
        elif not resolved.is_file():
            found.append(f"{where}: no file {resolved.relative_to(root)}")
        elif fragment:
            if resolved.suffix != ".md":
                found.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(fragment) not in anchors(resolved):
                found.append(f"{where}: no heading #{fragment} in {resolved.relative_to(root)}")
    return found


def test_slug_follows_github():
    assert slug("Options of `carevoice transcribe`") == "options-of-carevoice-transcribe"
    assert slug("Many hosts on Ray: `--ray ADDRESS`") == "many-hosts-on-ray---ray-address"
    assert slug("`carevoice doctor`: will it work here?") == "carevoice-doctor-will-it-work-here"
    assert slug("Chinese: Traditional or Simplified") == "chinese-traditional-or-simplified"
    assert slug("Dependencies and the lock file") == "dependencies-and-the-lock-file"


def test_a_broken_link_is_caught(tmp_path):
    """The checker itself: a missing file, a missing heading and an escape are each reported."""
    tmp_path = tmp_path.resolve()
    (tmp_path / "other.md").write_text("# Other\n\n## Real heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#real-heading) [self](#page) [web](https://example.org/x#y)\n"
        "[gone](missing.md) [bad](other.md#nowhere) ![img](nope.png) [out](../x.md)\n"
        "```\n[in code](ignored.md)\n# not a heading\n```\n`[span](ignored.md)`\n",
        encoding="utf-8",
    )
    reported = problems(page, root=tmp_path)
    assert len(reported) == 4, reported
    assert any("missing.md" in line for line in reported)
    assert any("#nowhere" in line for line in reported)
    assert any("nope.png" in line for line in reported)
    assert any("leaves the repository" in line for line in reported)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves(page):
    assert problems(page) == []


def test_the_links_were_found():
    """Guard: the parametrized test above checked real links, on every page asked for."""
    assert {p.name for p in PAGES} >= {"README.md", *REQUIRED_PAGES}
    total = sum(len(links(p.read_text(encoding="utf-8"))) for p in PAGES)
    assert total >= MIN_LINKS, f"only {total} links found in {len(PAGES)} pages"


def test_readme_is_the_five_minute_page():
    text = README.read_text(encoding="utf-8")
    size = len(text.encode("utf-8"))
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move long sections into docs/"
    for command in QUICKSTART:
        assert command in text
    assert "`.ci/run` runs exactly this" in text


def test_readme_links_every_docs_page():
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README.read_text(encoding="utf-8"))
        if not EXTERNAL.match(target)
    }
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert unlinked == []
