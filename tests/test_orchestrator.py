import json

import numpy as np
import pytest
import torch

from pro_lib.config import build_config
from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.evaluation import OrchestratorEvalConfig, evaluate_orchestrator
from pro_lib.io import write_jsonl
from pro_lib.orchestrator import (OrchestratorTrainConfig, PreferenceOrchestrator, kl_loss,
                                  train_orchestrator)
from pro_lib.suite import Objective, RewardSuite, ScoreConfig, score_and_target

OBJECTIVES = ["helpful", "humor"]


def _pairs(n=48):
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"tell me a joke about cat number {i}", "chosen": "ha ha ha funny " * 3,
                         "rejected": "no"})
        else:
            rows.append({"prompt": f"explain step {i} of baking bread", "chosen": "mix knead bake",
                         "rejected": "dunno"})
    return rows


@pytest.fixture
def targets_dir(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", _pairs())
    cfg = build_config(ScoreConfig, {"data": str(tmp_path / "train.jsonl"), "output_dir": str(tmp_path / "targets"),
                                     "objectives": ["helpful=fn:scorers:polite_reward",
                                                    "humor=fn:scorers:length_reward"]})
    m = score_and_target(cfg)
    assert m["n_scored"] == 48
    return tmp_path / "targets"


def _train(targets_dir, out, tiny_encoder_dir, **kw):
    cfg = build_config(OrchestratorTrainConfig, {"targets": str(targets_dir), "backbone": str(tiny_encoder_dir),
                                                 "output_dir": str(out), "batch_size": 8, "max_length": 32,
                                                 "learning_rate": 1e-3, "progress": False, **kw})
    return train_orchestrator(cfg)


def test_kl_directions():
    target = torch.tensor([[0.9, 0.1]])
    pred = torch.log(torch.tensor([[0.6, 0.4]]))
    rev = 0.6 * np.log(0.6 / 0.9) + 0.4 * np.log(0.4 / 0.1)
    fwd = 0.9 * np.log(0.9 / 0.6) + 0.1 * np.log(0.1 / 0.4)
    assert kl_loss(pred, target, "reverse").item() == pytest.approx(rev, rel=1e-5)
    assert kl_loss(pred, target, "forward").item() == pytest.approx(fwd, rel=1e-5)
    with pytest.raises(ConfigError):
        kl_loss(pred, target, "sideways")


def test_untrained_orchestrator_starts_uniform_and_rows_sum_to_one(tiny_encoder_dir):
    orch = PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), OBJECTIVES, max_length=16)
    w = orch.predict(["a", "a longer prompt here", "b"], batch_size=2)
    assert w.shape == (3, 2) and np.allclose(w, 0.5)
    with pytest.raises(DataError, match="prompt 1 is empty"):
        orch.predict(["ok", "  "])
    with pytest.raises(ConfigError, match="at least 2 objectives"):
        PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), ["only"])


def test_train_learns_targets_and_round_trips(targets_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "orch"
    m = _train(targets_dir, out, tiny_encoder_dir, epochs=6)
    assert m["train_steps"] == 36
    losses = json.loads((out / "train_metrics.json").read_text())["losses"]
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    orch = PreferenceOrchestrator.from_pretrained(out)
    assert orch.objectives == OBJECTIVES
    assert orch.norm_stats is not None and set(orch.norm_stats) == set(OBJECTIVES)
    prompts = ["tell me a joke about cat number 99", "explain step 98 of baking bread"]
    w = orch.predict(prompts)
    assert w[0, 1] > w[1, 1]  # the joke prompt leans to humor more than the baking prompt
    # batched/sorted prediction equals one-by-one prediction
    single = np.concatenate([orch.predict([p]) for p in prompts])
    assert np.allclose(w, single, atol=1e-5)


def test_resume_after_kill_continues_from_checkpoint(targets_dir, tiny_encoder_dir, tmp_path, monkeypatch):
    import pro_lib.orchestrator as mod

    full = _train(targets_dir, tmp_path / "ref", tiny_encoder_dir, epochs=2, save_steps=4)
    ref_losses = json.loads((tmp_path / "ref" / "train_metrics.json").read_text())["losses"]

    calls = {"n": 0}
    real = mod.kl_loss

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # killed during step 7; the last checkpoint is at step 4
        return real(*a, **k)

    monkeypatch.setattr(mod, "kl_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _train(targets_dir, tmp_path / "run", tiny_encoder_dir, epochs=2, save_steps=4)
    assert not (tmp_path / "run").exists()  # nothing half-written where the model goes
    monkeypatch.setattr(mod, "kl_loss", real)
    m = _train(targets_dir, tmp_path / "run", tiny_encoder_dir, epochs=2, save_steps=4)
    assert m["train_steps"] == full["train_steps"] == 12
    losses = json.loads((tmp_path / "run" / "train_metrics.json").read_text())["losses"]
    assert np.allclose(losses, ref_losses, atol=1e-4)  # same batches, same result as an unbroken run


def test_corrupt_or_missing_checkpoints(targets_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "orch"
    _train(targets_dir, out, tiny_encoder_dir, epochs=1)
    with pytest.raises(CheckpointError, match="pro_orchestrator.json is missing"):
        PreferenceOrchestrator.from_pretrained(tmp_path / "nowhere")
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        PreferenceOrchestrator.from_pretrained(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        PreferenceOrchestrator.from_pretrained(out)
    ckpt = out.with_name("orch.checkpoints") / "last.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.*--resume never to start over"):
        _train(targets_dir, out, tiny_encoder_dir, epochs=1)


def test_k_mismatch_between_orchestrator_and_suite(targets_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "orch"
    _train(targets_dir, out, tiny_encoder_dir, epochs=1)
    orch = PreferenceOrchestrator.from_pretrained(out)
    suite3 = RewardSuite([Objective(name=n, function="scorers:length_reward") for n in ("a", "b", "c")])
    with pytest.raises(ConfigError, match="K mismatch.*2 objectives.*has 3"):
        orch.check_objectives(suite3.names)
    # the evaluation stage checks it too
    suite3.fit_normalization(np.random.default_rng(0).normal(size=(5, 3)))
    suite3.save(targets_dir / "suite")
    with pytest.raises(ConfigError, match="K mismatch"):
        evaluate_orchestrator(build_config(OrchestratorEvalConfig, {
            "orchestrator": str(out), "data": str(tmp_path / "train.jsonl"),
            "train_targets": str(targets_dir), "output_dir": str(tmp_path / "ev"), "progress": False}))


def test_evaluate_writes_table_and_json(targets_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "orch"
    _train(targets_dir, out, tiny_encoder_dir, epochs=6)
    m = evaluate_orchestrator(build_config(OrchestratorEvalConfig, {
        "orchestrator": str(out), "data": str(tmp_path / "train.jsonl"), "train_targets": str(targets_dir),
        "output_dir": str(tmp_path / "ev"), "progress": False}))
    res = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(res["methods"]) == {"orchestrator", "uniform", "best_fixed"}
    assert m["orchestrator_mse"] < m["uniform_mse"]
    assert "orchestrator / best fixed MSE" in (tmp_path / "ev" / "eval_table.txt").read_text()
