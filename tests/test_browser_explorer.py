"""The explorer's second pass in headless Chromium (issue 31): a first screen that does not wait for
Policy B, a served endpoint that scores like local mode, an endpoint outage shown once and recovered
from, and links from each model to its training run in the MLflow UI.

One MLflow store (SQLite) holds tiny registered models: ``pro-orchestrator`` (registered from its
training run, with the reward suite's statistics), ``pro-reward-<objective>`` and ``pro-policy-pro-wic``.
The ``pro-endpoint`` built from the same folders runs under ``mlflow models serve``; ``mlflow server``
on the same store serves the MLflow UI the links point to. Needs /usr/bin/chromium
(scripts/install_browser.sh).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, free_port
from helpers.browser import browser, require_chromium, serve_ui  # noqa: F401 (browser: a fixture)
from helpers.services import stop_server, wait_http
from helpers.ui import NAMES, build_orchestrator, build_policy, build_reward_model

pytestmark = pytest.mark.browser
require_chromium(module=True)

PROMPT = "Tell me a funny joke about a cat"
STATS = {"helpful": [0.05, 0.02], "harmless": [-0.04, 0.03], "humor": [0.01, 0.05]}
SHOTS = Path(os.environ.get("PRO_UI_SCREENSHOTS", "")) if os.environ.get("PRO_UI_SCREENSHOTS") else None


def _mlflow_bin() -> str:
    b = Path(sys.executable).with_name("mlflow")
    return str(b) if b.exists() else "mlflow"


@contextlib.contextmanager
def _serve(cmd: list[str], url: str, health: str, log: Path, env: dict):
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        wait_http(url + health, proc, log)
        yield proc
    finally:
        stop_server(proc)


def serve_endpoint(model_dir: Path, port: int, env: dict, log: Path):
    """`mlflow models serve` of the pro-endpoint pyfunc folder on 127.0.0.1:<port>."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cmd = [_mlflow_bin(), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return _serve(cmd, f"http://127.0.0.1:{port}", "/ping", log, {**env, "PATH": path})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The registered tiny models, the endpoint's pyfunc folder and the MLflow UI on the same store."""
    from pro_lib import packaging, promotion, serving, tracking
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.suite import Objective, RewardSuite

    root = tmp_path_factory.mktemp("explorer31")
    env = {**os.environ, "PRO_HOME": str(root / ".pro"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PRO_PROMOTION_SETTLE_S": "0"}
    orch = PreferenceOrchestrator.from_pretrained(build_orchestrator(root / "orch0"))
    orch.norm_stats = STATS  # what `pro orchestrator train` stores: the reward suite's statistics
    orch.save_pretrained(root / "orch")
    rms = {}
    for i, n in enumerate(NAMES):
        rms[n] = build_reward_model(root / f"rm_{n}", seed=i)
        (rms[n] / "pro_reward.json").write_text(f'{{"objective": "{n}", "input_format": "concat", "max_length": 64}}')
    RewardSuite([Objective(name=n, model=str(rms[n]), input_format="concat", max_length=64) for n in NAMES],
                stats=STATS).save(root / "suite")
    policy = build_policy(root / "policy", seed=0)
    policy_b = build_policy(root / "policy_b", seed=1, conditioning="rewards")
    serving.build_endpoint(root / "endpoint", orchestrator=root / "orch", policy=policy, suite=root / "suite")
    packaging.save_pyfunc(root / "endpoint", root / "endpoint_pyfunc")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("PRO_HOME", "MLFLOW_TRACKING_URI", "PRO_PROMOTION_SETTLE_S"):
            mp.setenv(k, env[k])
        c = tracking.client()
        run = c.create_run(tracking.ensure_experiment(), run_name="train_orchestrator")
        c.log_metric(run.info.run_id, "loss", 0.42)
        c.set_terminated(run.info.run_id)
        packaging.register_model(root / "orch", "pro-orchestrator", run_id=run.info.run_id,
                                 metrics={"orchestrator_kl": 0.3})
        for n in NAMES:
            packaging.register_model(rms[n], f"pro-reward-{n}", metrics={"accuracy": 0.6})
        packaging.register_model(policy, "pro-policy-pro-wic", metrics={"hypervolume": 0.4})
        for name in ["pro-orchestrator", "pro-policy-pro-wic"] + [f"pro-reward-{n}" for n in NAMES]:
            assert promotion.promote(name).promoted
    ui_port = free_port()
    ui_env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [_mlflow_bin(), "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1",
           "--port", str(ui_port), "--workers", "1"]
    with _serve(cmd, f"http://127.0.0.1:{ui_port}", "/health", root / "mlflow-ui.log",
                {**ui_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}):
        yield {"root": root, "env": env, "run_id": run.info.run_id, "mlflow_ui": f"http://127.0.0.1:{ui_port}",
               "policy_b": policy_b, "endpoint_pyfunc": root / "endpoint_pyfunc"}


def _ui_env(store: dict, **extra) -> dict:
    env = {**store["env"], "PRO_UI_MLFLOW_URL": store["mlflow_ui"], "PRO_UI_POLICY_B": str(store["policy_b"])}
    for var in ("PRO_UI_ORCHESTRATOR", "PRO_UI_SUITE", "PRO_UI_POLICY", "PRO_UI_ENDPOINT"):
        env.pop(var, None)
    env.update(extra)
    return env


def _new_page(browser, url: str, width: int = 1280, height: int = 800):  # noqa: F811
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    page.goto(url)
    return page


def _settle(page) -> None:
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stElementContainer\"][data-stale=\"true\"]')",
        timeout=60_000)
    page.wait_for_timeout(500)


def _generate(page, prompt: str = PROMPT) -> dict[str, str]:
    """Type the prompt, Generate with 8 tokens; the "inferred" card's text and its score caption."""
    from playwright.sync_api import expect

    tokens = page.get_by_role("spinbutton", name="max new tokens")
    tokens.fill("8")
    tokens.press("Enter")
    box = page.get_by_label("Prompt", exact=True)
    box.fill(prompt)
    box.press("Control+Enter")
    expect(page.get_by_text("Orchestrator confidence")).to_be_visible()
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_text("Scores side by side")).to_be_visible(timeout=120_000)
    card = page.get_by_role("heading", name="inferred", exact=True).locator(
        "xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
    caption = card.get_by_text(re.compile(r"^(z-score|raw score)s "))
    expect(caption).to_be_visible()
    return {"text": card.locator("[data-testid='stCode']").first.inner_text().strip(),
            "scores": caption.inner_text().strip()}


def _screenshot(page, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        _settle(page)
        page.screenshot(path=str(SHOTS / name), full_page=False)


def test_first_screen_before_policy_b_loads_then_links_to_the_training_run(store, browser, tmp_path):  # noqa: F811
    """Item 1: the weights within 15 s of opening the page, Policy B not loaded until Compare needs it.
    Item 4: the orchestrator's link opens its training run in the MLflow UI."""
    from playwright.sync_api import expect

    log = tmp_path / "server.log"
    with serve_ui([], _ui_env(store), free_port(), log, start_seconds=120) as url:
        warm = _new_page(browser, url)  # the first session imports torch and loads the orchestrator
        expect(warm.get_by_label("Prompt", exact=True)).to_be_visible(timeout=120_000)
        warm.close()
        start = time.monotonic()
        page = _new_page(browser, url)
        box = page.get_by_label("Prompt", exact=True)
        expect(box).to_be_visible(timeout=15_000)
        box.fill(PROMPT)
        box.press("Control+Enter")
        expect(page.get_by_text("Orchestrator confidence")).to_be_visible(timeout=15_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=15_000)
        usable = time.monotonic() - start
        server_log = log.read_text()
        assert f"loading policy {store['policy_b']}" not in server_log, server_log[-2000:]
        expect(page.get_by_text(re.compile("Policy B .*loads when the Compare tab first needs it"))).to_be_visible()
        _screenshot(page, "issue31_first_screen.png")

        # item 4: version, training run and a link that opens that run in the MLflow UI
        link = page.get_by_role("link", name=re.compile(r"training run train_orchestrator"))
        expect(link.first).to_be_visible()
        href = link.first.get_attribute("href")
        assert href.startswith(store["mlflow_ui"]) and href.endswith(f"/runs/{store['run_id']}"), href
        version = page.get_by_role("link", name=re.compile(r"version 1 ↗")).first
        assert version.get_attribute("href") == f"{store['mlflow_ui']}/#/models/pro-orchestrator/versions/1"
        ui = browser.new_page(viewport={"width": 1280, "height": 800})
        ui.goto(href)
        expect(ui.get_by_text("train_orchestrator").first).to_be_visible(timeout=60_000)
        expect(ui.get_by_text("0.42").first).to_be_visible(timeout=60_000)  # the run's loss
        ui.close()

        # Compare loads Policy B (its first need) and runs
        page.get_by_role("tab", name="Compare policies").click()
        expect(page.get_by_text(re.compile("is not loaded yet"))).to_be_visible()
        tokens = page.get_by_role("spinbutton", name="max new tokens")
        tokens.fill("4")
        tokens.press("Enter")
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Compare policies").click()
        expect(page.get_by_role("heading", name=re.compile(r"^B: "))).to_be_visible(timeout=120_000)
        assert f"loading policy {store['policy_b']}" in log.read_text()
        page.close()
    print(f"first screen usable after {usable:.1f} s")


def test_endpoint_scores_like_local_mode_goes_down_and_recovers(store, browser, tmp_path):  # noqa: F811
    """Items 2 and 3: the same text scores the same (z-scores) in local and endpoint mode; a served
    endpoint that stops answering is one banner naming the URL and the check, the outputs stay, and
    Reload recovers once it answers again."""
    from playwright.sync_api import expect

    with serve_ui([], _ui_env(store), free_port(), tmp_path / "local.log", start_seconds=120) as url:
        page = _new_page(browser, url, height=1600)
        local = _generate(page)
        page.close()
    assert local["scores"].startswith("z-scores by the reward suite"), local

    port = free_port()
    ep_url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(serve_endpoint(store["endpoint_pyfunc"], port, store["env"], tmp_path / "ep.log"))
        ui_url = stack.enter_context(serve_ui([], _ui_env(store, PRO_UI_ENDPOINT=ep_url), free_port(),
                                              tmp_path / "ep_ui.log", start_seconds=120))
        page = _new_page(browser, ui_url, height=1600)
        remote = _generate(page)
        assert remote["text"] == local["text"], (remote, local)
        assert remote["scores"].startswith(f"z-scores from the endpoint's answer ({ep_url})"), remote
        assert remote["scores"].rsplit(": ", 1)[1] == local["scores"].rsplit(": ", 1)[1], (remote, local)
        _screenshot(page, "issue31_endpoint_mode.png")

        stop_server(ep)  # the endpoint goes away mid-session
        box = page.get_by_label("Prompt", exact=True)
        box.fill(PROMPT + " Now.")
        box.press("Control+Enter")
        banner = page.get_by_text(re.compile(rf"The PRO endpoint at {re.escape(ep_url)} is not reachable"))
        expect(banner).to_have_count(1)
        expect(page.get_by_text(f"curl {ep_url}/ping", exact=False).first).to_be_visible()
        content = page.content()
        assert "not a WIC policy" not in content and "failed on this input" not in content
        assert "Load an orchestrator" not in content
        # the last good outputs are still on the page
        expect(page.get_by_text(remote["text"][:20], exact=False).first).to_be_visible()
        _screenshot(page, "issue31_endpoint_down.png")

        stack.enter_context(serve_endpoint(store["endpoint_pyfunc"], port, store["env"], tmp_path / "ep2.log"))
        page.get_by_role("button", name="↻ Reload").click()
        expect(banner).to_have_count(0)
        expect(page.get_by_text("Orchestrator confidence")).to_be_visible()
        page.close()
