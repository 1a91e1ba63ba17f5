"""Fixtures for the console: one secured sample province per test session (loaded once, ~100 residents),
served by a real uvicorn server on a loopback port, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from changbai.web.sample import PASSWORD, World, build_world
from tests.conftest import LiveServer, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("console"), residents=100)
    yield w
    w.platform.db.dispose()


@pytest.fixture(scope="session")
def console(world: World) -> Iterator[LiveServer]:
    live = LiveServer(world.platform.build_app(), free_port()).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests skipped: {CHROMIUM} is missing (apt-get install -y chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is not installed (pip install -e .[test])")
    with sync_playwright() as p:
        yield p.chromium


class Browser:
    """One fresh browser profile (its own cookies), signed in or not."""

    def __init__(self, chromium: Any, base: str, width: int = 1366, height: int = 768) -> None:
        self.dir = tempfile.mkdtemp(prefix="changbai-chromium-")
        self.context = chromium.launch_persistent_context(
            self.dir,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
            locale="zh-CN",
        )
        self.context.set_default_timeout(15000)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.base = base

    def go(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page

    def sign_in(self, username: str, role: str) -> Any:
        page = self.go("/console/")
        if role == "resident":
            page.click("#signin-resident")
        else:
            page.select_option("#role", role)
            page.click("#signin-staff")
        page.wait_for_url("**/auth/authorize**")
        page.fill("#u", username)
        page.fill("#p", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console/**")
        return page

    def close(self) -> None:
        self.context.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def browser(chromium: Any, console: LiveServer) -> Iterator[Any]:
    opened: list[Browser] = []

    def open_(width: int = 1366, height: int = 768) -> Browser:
        b = Browser(chromium, console.url, width, height)
        opened.append(b)
        return b

    yield open_
    for b in opened:
        b.close()
