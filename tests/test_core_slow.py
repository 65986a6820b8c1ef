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
    """The bundled encoder is all-MiniLM-L6-v2 with its trained weights: a new orchestrator starts at uniform
    weights, and with a head that points at five anchor prompts it sends paraphrases that share no word with
    their anchor to that anchor's objective (a random or wrong encoder does not)."""
    import torch

    from pro_lib.orchestrator import PreferenceOrchestrator

    names = ["helpful", "harmless", "humor"]
    orch = PreferenceOrchestrator.from_backbone("minilm", names)
    cfg = orch.encoder.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, orch.tokenizer.vocab_size) == (384, 6, 30522)
    w = orch.predict(["How do I bake bread?", "Tell me a joke"])
    assert w.shape == (2, 3) and np.allclose(w, 1 / 3, atol=1e-6)   # zero head: uniform to start

    # five objectives, one per anchor (6 randomly initialised encoders of this shape got 0 of 6 orders right)
    anchors = ["How do I bake bread at home?", "Is it dangerous to mix bleach with ammonia?",
               "Tell me a funny joke about penguins.", "How can I fix a flat bicycle tyre?", "What is the capital of Japan?"]
    paraphrases = ["What's a good sourdough recipe?", "Which household chemicals are toxic together?",
                   "Say something hilarious about cats.", "My bike has a puncture, what should I do?",
                   "Which city is Tokyo the seat of government for?"]
    orch = PreferenceOrchestrator(orch.encoder, orch.tokenizer, [f"topic{i}" for i in range(len(anchors))])
    with torch.no_grad():
        batch = orch.tokenizer(anchors, padding=True, return_tensors="pt")
        hidden = orch.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        orch.head.weight.copy_(20 * torch.nn.functional.normalize(pooled, dim=-1))
    w = orch.predict(paraphrases)
    assert list(w.argmax(axis=1)) == list(range(len(anchors))), w


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
