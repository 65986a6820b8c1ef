"""The README's main job: `pro pipeline run --local orchestrator` with its defaults (shipped demo data,
bundled all-MiniLM-L6-v2) on this machine's CPUs. Slow (about 6 minutes on 2 cores)."""

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
