"""The demo page as the browser tests use it: constants and user actions."""

from __future__ import annotations

import os
import re

from playwright.sync_api import Locator, Page, expect

from tests.helpers import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "tests" / "artifacts"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Playwright's expectations retry until this many milliseconds (no fixed sleeps).
expect.set_options(timeout=10_000)


def sign_in(page: Page, user: str) -> None:
    page.locator("#username").fill(user)
    page.locator("#password").fill(f"{user}-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_have_text(re.compile(rf"^{user} "))
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")


def join(page: Page, room: str) -> None:
    page.locator("#room-input").fill(room)
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#room-title")).to_have_text(f"# {room}")
    expect(page.locator("#message-input")).to_be_enabled()


def enter(page: Page, user: str, room: str) -> None:
    sign_in(page, user)
    join(page, room)


def send(page: Page, text: str) -> None:
    page.locator("#message-input").fill(text)
    page.get_by_role("button", name="Send").click()
    # the ack renders the sender's own copy and clears the input
    expect(page.locator("#message-input")).to_have_value("")


def say(sender: Page, receiver: Page, text: str) -> Locator:
    """`sender` sends `text`; returns it as rendered on `receiver`'s page, once there."""
    send(sender, text)
    received = message(receiver, text)
    expect(received).to_be_visible()
    return received


def message(page: Page, text: str) -> Locator:
    """The rendered message whose text is exactly `text`."""
    return page.locator("#messages li.message").filter(
        has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$")))
