"""Playwright for Python driving Debian's chromium (headless, launched by path: no
browser download), against the real gunicorn servers of tests/conftest.py.

Screenshots go to tests/artifacts/ (git-ignored). Every page must run without a
JavaScript error, a Content-Security-Policy violation or an HTTP error response.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.browser.pages import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LAPTOP


# Package scope: Playwright's sync API keeps its asyncio loop marked as running in this
# thread until it stops, and asyncio.run() elsewhere in the suite then refuses to start.
@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: scripts/ensure-test-tools.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def open_page(browser):
    """open_page(url, viewport=LAPTOP, allow=()) -> a Page of its own browser context (own
    storage). Console errors fail the test, except those containing a text in `allow`
    (a refusal the test causes on purpose)."""
    contexts, problems = [], []

    def open_(url: str, viewport: dict = LAPTOP, allow: tuple[str, ...] = ()) -> Page:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        # (a WebSocket that fails while a server restarts is logged too: not a problem)
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if re.search("Content Security Policy|Failed to load resource", msg.text)
                and not any(text in msg.text for text in allow) else None)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


@pytest.fixture(scope="session")
def screenshot():
    """screenshot(page, name): tests/artifacts/<name>.png, the whole page."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page: Page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
