"""A real browser for the console's tests: Playwright for Python driving Debian's chromium.

Playwright's sync API runs in ONE worker thread per test (its objects belong to
the thread that made them); the test's trio side keeps the relay, agents and
fake backend, and the browser script reaches them with `trio.from_thread.run`.
Every Playwright wait is bounded by its default timeout, so a hung page fails
the test instead of hanging the suite.

Without chromium or Playwright the tests skip with a loud reason, except under
CI=true, where that is a failure (`make deps-system` installs chromium).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["AXE", "CHROMIUM", "BrowserRun", "require_browser", "run_in_browser"]

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
TIMEOUT_MS = 15_000


def require_browser() -> None:
    """Skip loudly (fail under CI=true) when the browser is missing."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install playwright==1.65.3)"
    if reason is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium, or make deps-system)"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")


@attrs.define(eq=False)
class BrowserRun:
    """What a browser script gets: a context, its first page, and the page's errors."""

    browser: Browser
    context: BrowserContext
    page: Page
    base: str
    errors: list[str] = attrs.field(factory=list)

    def watch(self, page: Page) -> None:
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def new_context(self, **options: object) -> tuple[BrowserContext, Page]:
        # bypass_csp: Playwright's own helpers are scripts the CSP would block;
        # the CSP header itself is checked separately.
        context = self.browser.new_context(bypass_csp=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        self.watch(page)
        return context, page

    def login(self, page: Page, token: str) -> None:
        page.goto(self.base + "/console")
        page.fill("#token", token)
        page.click("form.login button[type=submit]")
        page.wait_for_selector("#live.on")


async def run_in_browser(
    base: str, script: Callable[[BrowserRun], None], **context_options: object
) -> list[str]:
    """Run `script` against a fresh chromium in a worker thread; return the browser's errors."""

    def in_thread() -> list[str]:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                args=["--no-sandbox"],
            )
            try:
                run = BrowserRun(browser, *_first(browser, context_options), base)
                run.watch(run.page)
                script(run)
                return run.errors
            finally:
                browser.close()

    return await trio.to_thread.run_sync(in_thread)


def _first(browser: Browser, options: dict[str, object]) -> tuple[BrowserContext, Page]:
    context = browser.new_context(bypass_csp=True, **options)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()
