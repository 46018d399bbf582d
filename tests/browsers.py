"""Headless Chromium for the page tests: the browser fixture, and the mark that skips without one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs chromium (.ci/run): there, a missing browser is a failure, not a skip.
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CAREVOICE_REQUIRE_BROWSER"), reason="needs chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # only the page tests need playwright

    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium); CAREVOICE_REQUIRE_BROWSER is set")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
