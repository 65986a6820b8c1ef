"""The README's orchestrator pipeline and main job (`make demo`: `pro pipeline run --local pro_wic`) with their
defaults (shipped demo data, bundled all-MiniLM-L6-v2 and SmolLM2) on this machine's CPUs. Slow: about 6 minutes
for the orchestrator pipeline on 2 cores, the main job about 15.

The main-job test leaves its store (PRO_HOME: MLflow database, artifacts, pipeline outputs) in ``PRO_DEMO_STORE``
when that is set (a fresh folder: it is emptied first), so that tests/test_browser_demo_policy.py can run the
explorer on the champion it registered (.ci/run runs the two in that order)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1500)   # the budget is 15 minutes on 2 cores; pytest's default 600 s is too tight
def test_demo_command_end_to_end(tmp_path):
    pro = Path(sys.executable).with_name("pro")
    env = {**os.environ, "PRO_HOME": str(tmp_path / ".pro")}
    env.pop("MLFLOW_TRACKING_URI", None)   # the demo's default: SQLite under PRO_HOME
    proc = subprocess.run([str(pro), "pipeline", "run", "--local", "orchestrator"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for name in ("pro-orchestrator", "pro-reward-helpful", "pro-reward-harmless", "pro-reward-humor"):
        assert name in out
    assert "champion=v1" in out and f"sqlite:///{tmp_path / '.pro' / 'mlflow.db'}" in out
    assert "mlflow ui --backend-store-uri" in out

    # the champion is a useful orchestrator: it beats the best fixed weighting on held-out prompts
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / '.pro' / 'mlflow.db'}"
    listing = subprocess.run([str(pro), "registry", "list", "pro-orchestrator", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    import json

    (v,) = json.loads(listing.stdout)
    assert v["aliases"] == ["champion"]
    assert v["metrics"]["mse_ratio_vs_best_fixed"] < 1.0, v["metrics"]
    weights = subprocess.run([str(pro), "weights", "Tell me a joke about penguins.", "--json"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert weights.returncode == 0, weights.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)   # 12.4-16 minutes on 2 cores (docs/results_wic.md); a hang fails in 40
def test_main_job_trains_a_policy_that_follows_its_weights(tmp_path, monkeypatch):
    """`make demo`: the whole pro_wic pipeline with its defaults (demo data, bundled SmolLM2, one online
    round) registers pro-policy-pro-wic@champion and a pro-orchestrator@champion that beats the best fixed
    weighting, and on held-out demo prompts every objective's weight response is above 0 with its 95%
    bootstrap interval above 0 (measured by the pipeline's own evaluation)."""
    import json
    import shutil

    from pipelines.report import weight_response_of_run

    home = Path(os.environ["PRO_DEMO_STORE"]) if os.environ.get("PRO_DEMO_STORE") else tmp_path / ".pro"
    if home.exists():
        shutil.rmtree(home)
    pro = Path(sys.executable).with_name("pro")
    env = {**os.environ, "PRO_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([str(pro), "pipeline", "run", "--local", "pro_wic"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3600)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every interval is above 0" in proc.stdout and "pro ui" in proc.stdout and "pro generate" in proc.stdout

    monkeypatch.setenv("PRO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    from pro_lib import registry, tracking

    (v,) = registry.list_versions("pro-policy-pro-wic")
    assert v["aliases"] == ["champion"]
    # the orchestrator part (what test_demo_command_end_to_end checks on the orchestrator pipeline alone)
    (o,) = registry.list_versions("pro-orchestrator")
    assert o["aliases"] == ["champion"] and o["metrics"]["mse_ratio_vs_best_fixed"] < 1.0, o["metrics"]
    (parent,) = tracking.client().search_runs([tracking.ensure_experiment()], "tags.`pro.role` = 'pipeline'")
    ev = weight_response_of_run(parent.info.run_id)
    boot = ev["bootstrap"]
    (label,) = boot["weight_response"]
    for name, value, (lo, hi) in zip(ev["objectives"], boot["weight_response"][label],
                                     boot["weight_response_ci"][label]):
        assert value > 0 and lo > 0, (name, value, lo, hi, json.dumps(boot)[:2000])

    # what `make demo` shows (checked last: the result above matters more): a line per stage, the table, the
    # log's path; under 60 lines in all
    (log,) = (home / "logs").glob("pro_wic-*.log")
    assert f"full log: {log}" in proc.stdout and "Executing task" in log.read_text()
    for stage in ("train-reward-model [humor]", "evaluate-orchestrator", "wic-offline-sft", "wic-online-sample",
                  "wic-evaluate"):
        assert f"= {stage}" in proc.stdout, stage
    shown = proc.stdout.splitlines() + proc.stderr.splitlines()
    assert len(shown) < 60, "\n".join(shown)
