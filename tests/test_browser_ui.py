"""End-to-end: `pro ui` on loopback, driven by Debian's Chromium through Playwright.

Types a prompt, moves a slider with the keyboard, generates, and saves a screenshot that is checked
to be the explorer (not an error page). Needs /usr/bin/chromium (scripts/install_browser.sh).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import REPO, free_port
from helpers.browser import corner_outputs, require_chromium, serve_ui
from helpers.ui import NAMES

pytestmark = pytest.mark.browser
require_chromium(module=True)


@pytest.fixture(scope="module")
def explorer(tiny_models, tmp_path_factory):
    """`pro ui` serving the tiny models on 127.0.0.1; stopped (whole process group) on teardown."""
    from pro_lib.testing import build_tiny_policy

    tmp = tmp_path_factory.mktemp("explorer")
    # a bigger random policy than the AppTest one: 1024 tokens take seconds, so Stop lands mid-run
    policy = build_tiny_policy(tmp / "policy", NAMES, hidden_size=384, num_layers=6,
                               max_positions=2048)
    port = free_port()
    env = dict(os.environ)
    env.update({
        "PRO_HOME": str(tmp / "pro_home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'no-registry.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(tiny_models["module_dir"])]),
        "OMP_NUM_THREADS": "1",
    })
    cmd = ["--orchestrator", str(tiny_models["orchestrator"]), "--suite", str(tiny_models["suite"]),
           "--policy", str(policy)]
    with serve_ui(cmd, env, port, tmp / "server.log", start_seconds=60) as url:
        yield {"url": url, "log": tmp / "server.log"}


@pytest.fixture
def page(browser, explorer):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    page.set_default_timeout(45_000)
    # expect()'s own default is 5 s: on 2 busy cores (CI, or a training run beside the suite) the orchestrator's
    # first inference takes longer, and the test failed waiting for the chart, not on a defect
    expect.set_options(timeout=45_000)
    page.goto(explorer["url"])
    expect(page.get_by_text("PRO preference explorer").first).to_be_visible()
    yield page
    page.close()
    expect.set_options(timeout=5_000)


def _type_prompt(page, text: str):
    from playwright.sync_api import expect

    box = page.get_by_label("Prompt", exact=True)
    box.fill(text)
    box.press("Control+Enter")  # submits a Streamlit text area
    expect(page.get_by_text("Orchestrator confidence")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()  # the weights chart rendered


def _move_slider(page, name: str, presses: int) -> tuple[str, str]:
    """Move one objective's slider with the keyboard; returns the override caption before/after."""
    from playwright.sync_api import expect

    caption = page.get_by_text("override:", exact=False).first
    expect(caption).to_be_visible()
    before = caption.inner_text()
    slider = page.get_by_role("slider", name=name)
    slider.focus()
    for _ in range(presses):
        slider.press("ArrowLeft")
    expect(caption).not_to_have_text(before)
    page.wait_for_timeout(1500)  # let the last keypress' rerun land
    return before, caption.inner_text()


def _check_not_error_page(page, shot: Path):
    from PIL import Image, ImageStat

    # Let a rerun finish first: Streamlit fades elements it is still recomputing (data-stale),
    # and a screenshot of that faded page would look blank on a loaded machine.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stElementContainer\"][data-stale=\"true\"]')",
        timeout=60_000)
    page.wait_for_timeout(500)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Traceback" not in page.content()
    page.screenshot(path=str(shot), full_page=True)
    img = Image.open(shot).convert("L")
    assert img.size[0] >= 1000 and img.size[1] >= 800
    assert ImageStat.Stat(img).stddev[0] > 10, "the screenshot looks blank"


def test_prompt_and_slider_in_headless_chromium(page, tmp_path):
    _type_prompt(page, "Tell me a funny joke about a cat")
    before, after = _move_slider(page, "helpful", 10)
    assert "sum 1.000" in after, after
    shot = tmp_path / "explorer_weights.png"
    _check_not_error_page(page, shot)
    print(f"screenshot {shot}; override {before!r} -> {after!r}")


def test_generate_in_headless_chromium(page, explorer, tmp_path):
    from playwright.sync_api import expect

    _type_prompt(page, "Tell me a funny joke about a cat")
    _move_slider(page, "helpful", 10)
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("Scores side by side")).to_be_visible(timeout=90_000)
    for label in ("inferred", "override", "uniform"):  # the three outputs, side by side
        expect(page.get_by_role("heading", name=label, exact=True)).to_be_visible()
    codes = page.locator("[data-testid='stCode']")
    expect(codes).to_have_count(3)  # retried until the page settles
    for i in range(3):
        expect(codes.nth(i)).to_have_text(re.compile(r"\S"))  # each output has text
    # per-output score tables and the side-by-side table (grids draw on a canvas: count them)
    expect(page.locator("[data-testid='stDataFrame']")).to_have_count(4)
    expect(page.get_by_text("stopped")).to_have_count(0)
    page.set_viewport_size({"width": 1500, "height": 2600})  # the outputs sit below the fold
    shot = tmp_path / "explorer_generate.png"
    _check_not_error_page(page, shot)
    print(f"screenshot {shot}")


def test_stop_a_running_generation_in_headless_chromium(page, tmp_path):
    from playwright.sync_api import expect

    _type_prompt(page, "Explain how tides work")
    tokens = page.get_by_label("max new tokens")
    tokens.fill("1024")
    tokens.press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("generating…").first).to_be_visible()
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.get_by_text("— stopped").first).to_be_visible()
    expect(page.get_by_text("Scores side by side")).to_have_count(0)  # the run did not finish
    _check_not_error_page(page, tmp_path / "explorer_stopped.png")


def test_typed_corner_weights_reach_the_override_output(page):
    """The flow of tests/test_browser_demo_policy.py on the tiny explorer: each typed corner generates
    an "override" output under exactly those weights."""
    texts = corner_outputs(page, ("humor", "harmless"), prompt="Tell me a funny joke about a cat")
    assert set(texts) == {"humor", "harmless"} and all(texts.values()), texts
