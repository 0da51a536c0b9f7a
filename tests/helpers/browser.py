"""Helpers of the browser tests: Debian's Chromium, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the browser and its driver are the system's (``UCLSER_CHROMIUM``,
``UCLSER_CHROMEDRIVER``, default ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, which
``.ci/run`` installs with apt-get), and giving Selenium the driver's path skips Selenium Manager.
Chromium starts headless, with a fresh profile, and without any of its own network traffic (this
machine reaches nothing but package registries).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    chromium = os.environ.get("UCLSER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("UCLSER_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if all(os.access(p, os.X_OK) and Path(p).is_file() for p in (chromium, driver)):
        return chromium, driver
    return None


def require_browser() -> tuple[str, str]:
    """The browser's paths, or skip the test (cleanly) where Chromium, its driver or Selenium is missing."""
    paths = browser_paths()
    if paths is None:
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (make install)")
    return paths


@contextlib.contextmanager
def chromium(profile: Path, size: tuple[int, int] = (1400, 1000)) -> Iterator:
    """A headless Chromium (a Selenium WebDriver) with a fresh profile in ``profile``; its console is logged."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    """The console's errors (uncaught exceptions, failed loads, console.error) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on the test's output
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A static HTTP server of ``folder`` on 127.0.0.1 (a free port), as GitHub Pages serves it: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.25):
    """Poll ``condition`` until it returns something true (returned) or fail after ``timeout`` s naming ``what``."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except StaleElementReferenceException:  # the page replaced an element between two reads: not yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def screenshot(driver, name: str, fallback_dir: Path, public: bool = True) -> Path:
    """Save a PNG of the window as ``<folder>/<name>.png``.

    The folder: ``UCLSER_SCREENSHOTS`` for a ``public`` one (`make screenshots`: figures/), else ``fallback_dir``
    (the test's temporary folder, which pytest keeps for a look after a failure).
    """
    folder = Path(os.environ.get("UCLSER_SCREENSHOTS") or fallback_dir) if public else fallback_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# JavaScript run in the page (execute_async_script: the last argument is the callback) --------------------------------

#: Every <img> and <audio>/<source> source of the page, each loaded afresh: images must decode to a
#: non-empty picture, sounds must give a duration. Returns [[kind, src (cut), problem or ""], ...].
CHECK_MEDIA_JS = """
const done = arguments[arguments.length - 1];
const short = (s) => s.length > 90 ? s.slice(0, 90) + '...' : s;
const images = [...document.querySelectorAll('img')].map((e) => e.currentSrc || e.src).filter(Boolean);
const sounds = [...document.querySelectorAll('audio')].flatMap(
  (a) => [a.getAttribute('src') ? a.src : null, ...[...a.querySelectorAll('source')].map((s) => s.src)]
).filter(Boolean);
const loadImage = (src) => new Promise((resolve) => {
  const img = new Image();
  img.onload = () => resolve(['img', short(src), img.naturalWidth > 0 ? '' : 'empty picture']);
  img.onerror = () => resolve(['img', short(src), 'failed to load']);
  img.src = src;
});
const loadSound = (src) => new Promise((resolve) => {
  const audio = new Audio();
  audio.preload = 'metadata';
  audio.onloadedmetadata = () => resolve(['audio', short(src), audio.duration > 0 ? '' : 'zero duration']);
  audio.onerror = () => resolve(['audio', short(src), 'failed to load (' + (audio.error && audio.error.code) + ')']);
  audio.src = src;
});
Promise.all([...images.map(loadImage), ...sounds.map(loadSound)]).then(done);
"""
