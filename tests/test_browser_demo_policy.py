"""End-to-end after `make demo`: the explorer opens on the registered PRO-WIC champion, and its output
follows the weights a user sets (headless Debian Chromium through Playwright).

Uses the MLflow store of a `make demo` run: ``PRO_DEMO_STORE`` (where tests/test_pipelines_demo.py's main-job
test leaves its store; .ci/run sets it and runs that test first), else ``PRO_DEMO_HOME``, else ``<repo>/.pro``.
Skips when that store has no ``pro-policy-pro-wic@champion``; fails instead under ``PRO_CI_REQUIRE=demo-store``.
Slow: the trained SmolLM2 generates on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, free_port, require
from helpers.browser import corner_outputs, require_chromium, serve_ui

pytestmark = [pytest.mark.browser, pytest.mark.slow]
require_chromium(module=True)

PROMPT = "Can you tell me about the Moon?"
# two corners the demo policy follows on every held-out demo prompt type (docs/results_wic.md: own-style
# share 0.97 at helpful=1 and humor=1; 0.60 at harmless=1, where joke requests still get a joke)
CORNERS = ("humor", "helpful")


def demo_store() -> Path:
    """The PRO_HOME of a `make demo` run (see the module docstring for where it is looked for)."""
    return Path(os.environ.get("PRO_DEMO_STORE") or os.environ.get("PRO_DEMO_HOME") or REPO / ".pro")


def _demo_store() -> Path:
    home = demo_store()
    if not (home / "mlflow.db").is_file():
        require("demo-store", f"no `make demo` store at {home} (run `make demo`, or run "
                              "tests/test_pipelines_demo.py's main-job test with PRO_DEMO_STORE set first)")
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
        require("demo-store", f"{home} has no pro-policy-pro-wic@champion; run `make demo` first "
                              f"({check.stderr.strip()[-500:]})")
    with serve_ui([], env, free_port(), tmp_path_factory.mktemp("demo_ui") / "server.log",
                  start_seconds=120) as url:
        yield {"url": url, "env": env}


def test_champion_follows_corner_weights_in_chromium(demo_explorer, browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 2400})
    page.set_default_timeout(120_000)
    page.goto(demo_explorer["url"])
    expect(page.get_by_text("PRO preference explorer").first).to_be_visible(timeout=120_000)
    # the sidebar opened on the registered champion policy
    # (the sidebar resolves the registry's models after the first paint: give it the page's timeout)
    expect(page.get_by_text(re.compile(r"pro-policy-pro-wic.*champion")).first).to_be_visible(timeout=120_000)
    texts = corner_outputs(page, CORNERS, PROMPT)
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
