"""Browser tests: the real portal under waitress on a free port, driven by headless Chromium.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run); Playwright never
downloads a browser here.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from app.recording import reset_recorder
from tests.integration.portal.scenario import PASSWORD, seed_scenario

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


class LiveServer:
    """The portal app served by waitress in a thread, on a port the OS picks."""

    def __init__(self, app) -> None:
        from waitress.server import create_server

        self.server = create_server(app, host="127.0.0.1", port=0, threads=6, ident="airlock-test")
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, name="portal-under-test", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


# Package scope, not session: Playwright's sync API keeps an event loop running in the
# main thread until it stops, and every later `asyncio.run()` in the suite would fail.
@pytest.fixture(scope="package")
def browser() -> Browser:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def scenario(sqlite_store):
    reset_recorder()
    sc = seed_scenario()
    yield sc
    reset_recorder()


@pytest.fixture
def live(scenario, monkeypatch):
    from app.portal import create_app

    monkeypatch.setenv("AIRLOCK_PORTAL_POLL_SECONDS", "0.5")
    server = LiveServer(create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser, live):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=live.url)
    # Nothing outside this machine exists: fail such requests at once instead of hanging.
    context.route("http*://**", lambda route: route.continue_()
                  if route.request.url.startswith(("http://127.0.0.1", "http://localhost")) else route.abort())
    p = context.new_page()
    p.set_default_timeout(15_000)
    p.dialogs = []  # every dialog that opens is recorded (an XSS alert would show here)
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    yield p
    context.close()


def login(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("nav.side")


def forget_session(page: Page) -> None:
    """Drop the signed-in session as a new browser would.

    Leave the portal first: its pollers answer with a refreshed session cookie, and one
    landing after `clear_cookies` would sign the page straight back in.
    """
    page.goto("about:blank")
    page.context.clear_cookies()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
