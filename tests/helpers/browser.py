"""Headless Chromium (Debian's, through Playwright) and `pro ui` on a loopback port, for the browser tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def require_chromium(*, module: bool = False) -> None:
    """Skip (fail under ``PRO_CI_REQUIRE=chromium``) without Chromium or Playwright."""
    if not Path(CHROMIUM).exists():
        require("chromium", f"{CHROMIUM} is missing; run scripts/install_browser.sh", module=module)
    if importlib.util.find_spec("playwright") is None:
        require("chromium", "playwright is not installed (pip install playwright)", module=module)


@contextlib.contextmanager
def serve_ui(flags: list[str], env: dict, port: int, log_path: Path, *, start_seconds: float):
    """`pro ui <flags>` on 127.0.0.1:<port> until the block ends (then the whole process group stops)."""
    cmd = [sys.executable, "-m", "pro_lib.cli", "ui", "--port", str(port), "--host", "127.0.0.1", *flags]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + start_seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("the explorer did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        assert proc.poll() is not None, "the streamlit server is still running"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def corner_outputs(page, corners, prompt: str) -> dict[str, str]:
    """Type ``prompt``, then per corner: type ``<corner>=1``, Apply, Generate; the "override" output's text."""
    from playwright.sync_api import expect

    box = page.get_by_label("Prompt", exact=True)
    box.fill(prompt)
    box.press("Control+Enter")
    expect(page.get_by_text("Orchestrator confidence")).to_be_visible(timeout=120_000)
    texts = {}
    for corner in corners:
        typed = page.get_by_placeholder(re.compile("=…"))
        typed.fill(f"{corner}=1")
        typed.press("Enter")
        page.wait_for_timeout(2000)  # let the rerun that commits the typed text land before Apply
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_text("override:", exact=False).first).to_contain_text(f"{corner}=1.00", timeout=60_000)
        page.get_by_role("button", name=re.compile("^Generate")).click()
        # the "override" card of this run: its caption is exactly the weights ("helpful=0.00, ..., humor=1.00";
        # the line under the sliders reads "override: ... (sum 1.000)"), and its code block is the reply
        caption = page.get_by_text(re.compile(rf"^(?=.*\b{corner}=1\.00\b)[a-z_]+=[0-9.]+(, [a-z_]+=[0-9.]+)*$"))
        expect(caption.first).to_be_visible(timeout=600_000)
        card = caption.first.locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
        # the card appears while tokens still stream in: read it once generation has finished
        expect(page.get_by_text("generating…")).to_have_count(0, timeout=600_000)
        expect(card.get_by_role("heading", name="override", exact=True)).to_be_visible()
        texts[corner] = card.locator("[data-testid='stCode']").first.inner_text().strip()
    return texts
