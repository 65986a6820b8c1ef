"""End-to-end after `make demo`: the explorer opens on the registered PRO-WIC champion, and its output
follows the weights a user sets (headless Debian Chromium through Playwright).

Uses the MLflow store that `make demo` wrote (``<repo>/.pro``, or ``PRO_DEMO_HOME``); skips when that
store has no ``pro-policy-pro-wic@champion``. Slow: the trained SmolLM2 generates on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_browser_ui import REPO, _free_port, browser, serve_ui  # noqa: F401 (browser: a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = "Can you tell me about the Moon?"
# two corners the demo policy follows on every held-out demo prompt type (docs/results_wic.md: own-style
# share 0.97 at helpful=1 and humor=1; 0.60 at harmless=1, where joke requests still get a joke)
CORNERS = ("humor", "helpful")


def _demo_store() -> Path:
    home = Path(os.environ.get("PRO_DEMO_HOME", REPO / ".pro"))
    db = home / "mlflow.db"
    if not db.is_file():
        pytest.skip(f"no `make demo` store at {home} (run `make demo`, or set PRO_DEMO_HOME)")
    return home


@pytest.fixture(scope="module")
def demo_explorer(tmp_path_factory):
    """`pro ui` with no model flags on the `make demo` store: it must pick the registry's champions."""
    home = _demo_store()
    env = {**os.environ, "PRO_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "PYTHONPATH": str(REPO)}
    for var in ("PRO_UI_ORCHESTRATOR", "PRO_UI_SUITE", "PRO_UI_POLICY", "PRO_UI_POLICY_B"):
        env.pop(var, None)
    check = subprocess.run([sys.executable, "-m", "pro_lib.cli", "registry", "list", "pro-policy-pro-wic", "--json"],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    if check.returncode != 0 or '"champion"' not in check.stdout:
        pytest.skip(f"{home} has no pro-policy-pro-wic@champion; run `make demo` first")
    with serve_ui([], env, _free_port(), tmp_path_factory.mktemp("demo_ui") / "server.log",
                  start_seconds=120) as url:
        yield {"url": url, "env": env}


def corner_outputs(page, corners, prompt: str = PROMPT) -> dict[str, str]:
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


def test_champion_follows_corner_weights_in_chromium(demo_explorer, browser, tmp_path, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 2400})
    page.set_default_timeout(120_000)
    page.goto(demo_explorer["url"])
    expect(page.get_by_text("PRO preference explorer").first).to_be_visible(timeout=120_000)
    # the sidebar opened on the registered champion policy
    # (the sidebar resolves the registry's models after the first paint: give it the page's timeout)
    expect(page.get_by_text(re.compile(r"pro-policy-pro-wic.*champion")).first).to_be_visible(timeout=120_000)
    texts = corner_outputs(page, CORNERS)
    page.screenshot(path=str(tmp_path / "demo_corners.png"), full_page=True)
    page.close()
    print(texts)
    a, b = CORNERS
    assert texts[a] and texts[b] and texts[a] != texts[b]

    # the scores the explorer shows: the registry's reward models (champions) on the two outputs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", demo_explorer["env"]["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("PRO_HOME", demo_explorer["env"]["PRO_HOME"])
    from pro_lib.orchestrator import PreferenceOrchestrator
    from ui.backend import Backend

    be = Backend(demo_explorer["env"]["MLFLOW_TRACKING_URI"])
    orch = PreferenceOrchestrator.from_pretrained("models:/pro-orchestrator@champion")
    suite = be.load_suite(be.resolve_per_objective("champion", orch.objectives, orch.norm_stats).load_ref)
    scores, _ = be.score(suite, PROMPT, [texts[a], texts[b]], orch.objectives)
    idx = {n: i for i, n in enumerate(orch.objectives)}
    assert np.isfinite(scores).all()
    assert scores[0, idx[a]] > scores[1, idx[a]], scores  # humor=1: the funnier reply
    assert scores[1, idx[b]] > scores[0, idx[b]], scores  # helpful=1: the more detailed one
