"""Playwright fixtures: Debian's Chromium (Playwright's own browser download does not work here).

Screenshots go to ``test-artifacts/browser/<session>/`` (ignored by git, removed by ``make clean``;
``RECSYS_TEST_ARTIFACTS`` moves the root), one PNG per step, named ``<test>-<nn>-<step>.png``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def ui_artifacts() -> Path:
    root = Path(os.environ.get("RECSYS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "browser" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (not skipped when missing: CI must install it)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, done by .ci/run)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # the React UI renders after its API calls: 5 s is too short here
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        yield browser
        browser.close()


class Shots:
    """Numbered full-page screenshots of one test."""

    def __init__(self, folder: Path, test: str) -> None:
        self.folder, self.test, self.n = folder, re.sub(r"\W+", "_", test), 0

    def __call__(self, page, step: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.test}-{self.n:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(ui_artifacts, request) -> Shots:
    return Shots(ui_artifacts, request.node.name)


@pytest.fixture
def context(chromium) -> Iterator:
    ctx = chromium.new_context(viewport={"width": 1440, "height": 1000})
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(2 * TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def sign_in(live_stack):
    """``sign_in(page, user="admin")``: log in through the SimpleAuthManager form, as a person would."""

    def _sign_in(page, username: str = "admin") -> None:
        base_url = live_stack.airflow_url
        page.goto(base_url + "/")
        page.wait_for_url(re.compile(r"/auth/login"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(live_stack.credentials()[username])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(re.escape(base_url) + r"/?$"))

    return _sign_in
