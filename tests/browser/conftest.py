"""Fixtures of the browser tests: headless Chromium driven by Selenium, and a
deployment to point it at: two real instances behind a real nginx.

Nothing is downloaded. Chromium and chromedriver come from the system
(Debian: ``chromium`` and ``chromium-driver``); Selenium is given both paths,
so Selenium Manager is never run. A test that lacks any of them is skipped
with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ops.local import procs
from ops.local.procs import Proc
from tests.support import Instance
from tests.support.timeouts import scaled

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1100,720",
)


def _executable(name: str, fallback: str) -> str | None:
    path = shutil.which(name) or fallback
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


@dataclass(frozen=True)
class Browser:
    """What it takes to start a driven Chromium."""

    webdriver: Any  # the selenium.webdriver module
    chromium: str
    chromedriver: str


@pytest.fixture(scope="session")
def browser() -> Browser:
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    chromium = _executable("chromium", "/usr/bin/chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    chromedriver = _executable("chromedriver", "/usr/bin/chromedriver")
    if chromedriver is None:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    return Browser(webdriver, chromium, chromedriver)


@pytest.fixture
def chrome(browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """``chrome(name)``: a fresh headless Chromium (own profile, so own
    localStorage); every one is quit when the test ends."""
    # Belt and braces: even if something asked Selenium Manager, it must not fetch.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    wd = browser.webdriver
    drivers: list[Any] = []

    def start(name: str) -> Any:
        profile = tmp_path / f"profile-{name}"
        profile.mkdir()
        options = wd.ChromeOptions()
        options.binary_location = browser.chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = wd.ChromeService(
            executable_path=browser.chromedriver, log_output=str(tmp_path / f"chromedriver-{name}.log")
        )
        driver = wd.Chrome(service=service, options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(scaled(30))
        driver.set_script_timeout(scaled(10))
        return driver

    yield start
    for driver in reversed(drivers):
        try:
            driver.quit()
        except Exception:  # noqa: BLE001 - a crashed browser must not hide the test's own failure
            pass


@dataclass
class Deployment:
    a: Instance
    b: Instance
    nginx: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx.port}"

    def by_id(self, instance_id: str) -> Instance:
        for inst in (self.a, self.b):
            if inst.instance_id == instance_id:
                return inst
        raise LookupError(f"no instance {instance_id!r} in this deployment")


@pytest.fixture
def deployment(make_instance: Callable[..., Instance], tmp_path: Path) -> Iterator[Deployment]:
    """Two instances on the session redis, behind a real nginx on a free port."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    a, b = make_instance("A"), make_instance("B")
    proxy = procs.start_nginx(procs.free_port(), [a.port, b.port], tmp_path / "nginx")
    try:
        yield Deployment(a, b, proxy)
    finally:
        procs.stop(proxy.pid, scaled(5), proxy.started)
