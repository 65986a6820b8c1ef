"""End-to-end: `pro ui` on loopback, driven by Debian's Chromium through Playwright.

Types a prompt, moves a slider with the keyboard, generates, and saves a screenshot that is checked
to be the explorer (not an error page). Needs /usr/bin/chromium (scripts/install_browser.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_ui_support import tiny_models  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing; run scripts/install_browser.sh", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def explorer(tiny_models, tmp_path):  # noqa: F811
    """`pro ui` serving the tiny models on 127.0.0.1; stopped (whole process group) on teardown."""
    if tiny_models["policy"] is None:
        pytest.skip("pro_lib.wic is not available yet: no WIC policy to generate with")
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "PRO_HOME": str(tmp_path / "pro_home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'no-registry.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tiny_models["module_dir"])]),
        "OMP_NUM_THREADS": "1",
    })
    cmd = [sys.executable, "-m", "pro_lib.cli", "ui", "--port", str(port), "--host", "127.0.0.1",
           "--orchestrator", str(tiny_models["orchestrator"]), "--suite", str(tiny_models["suite"]),
           "--policy", str(tiny_models["policy"])]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("the explorer did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
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


def test_explorer_in_headless_chromium(explorer, tmp_path):
    from PIL import Image, ImageStat
    from playwright.sync_api import expect, sync_playwright

    shot = tmp_path / "explorer.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(45_000)
            page.goto(explorer)
            expect(page.get_by_text("PRO preference explorer")).to_be_visible()

            # type a prompt (Ctrl+Enter submits a Streamlit text area)
            box = page.get_by_label("Prompt", exact=True)
            box.fill("Tell me a funny joke about a cat")
            box.press("Control+Enter")
            expect(page.get_by_text("Orchestrator confidence")).to_be_visible()
            caption = page.get_by_text("override:", exact=False).first
            expect(caption).to_be_visible()
            before = caption.inner_text()

            # move the first objective's slider with the keyboard; the others rebalance
            slider = page.get_by_role("slider").first
            slider.focus()
            for _ in range(10):
                slider.press("ArrowLeft")
            expect(caption).not_to_have_text(before)
            after = caption.inner_text()
            assert "sum 1.000" in after, after

            # generate side by side and wait for the scores
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text("Scores side by side")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("weighted (own w)").first).to_be_visible()

            assert page.locator("[data-testid='stException']").count() == 0
            assert "Traceback" not in page.content()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    # the screenshot is the explorer, not a blank or error page
    img = Image.open(shot).convert("L")
    assert img.size[0] >= 1000 and img.size[1] >= 800
    assert ImageStat.Stat(img).stddev[0] > 10, "the screenshot looks blank"
    print(f"screenshot: {shot} ({shot.stat().st_size} bytes), slider: {before!r} -> {after!r}")
