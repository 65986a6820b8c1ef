"""Real-model tests of the core (bundled MiniLM, shared HH-RLHF data). Marked slow."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_bundled_minilm_orchestrator_predicts():
    from pro_lib.orchestrator import PreferenceOrchestrator

    orch = PreferenceOrchestrator.from_backbone("minilm", ["helpful", "harmless", "humor"])
    w = orch.predict(["How do I bake bread?", "Tell me a joke"])
    assert w.shape == (2, 3) and np.allclose(w.sum(1), 1)


def test_hh_pipeline_quick_end_to_end(shared_data, tmp_path):
    """The documented HH experiment in --quick mode: every stage runs on real data and models."""
    out = tmp_path / "hh"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "experiments" / "orchestrator_hh.py"),
                           "--quick", "--data-dir", str(shared_data / "hh-rlhf"), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Preference Orchestrator vs fixed weights" in proc.stdout
    res = json.loads((out / "orchestrator_eval" / "eval.json").read_text())
    assert res["objectives"] == ["helpful", "harmless"]
    assert set(res["methods"]) == {"orchestrator", "uniform", "best_fixed"}
    for name in ("helpful", "harmless"):
        m = json.loads((out / "rewards" / name / "eval_metrics.json").read_text())
        assert 0.0 <= m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"] <= 1.0
