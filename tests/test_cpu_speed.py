"""CPU training speed-ups (pro_lib.policy): padding-free batches, bf16 only where the CPU has it (seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from pro_lib import policy as pol_mod
from pro_lib import testing, wic
from pro_lib.wic import offline as wic_offline


def test_padding_free_batch_gives_the_padded_batch_loss(tmp_path):
    """Concatenated examples must not attend to each other: the loss equals the padded batch's."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    path = testing.build_tiny_policy(tmp_path / "tiny", ["helpful", "harmless"], hidden_size=32, num_layers=2)
    policy = wic.WICPolicy.from_pretrained(path)
    model = policy.model.eval()
    rng = np.random.default_rng(0)
    examples = []
    for n in (5, 11, 3, 8):  # different lengths: the padded batch has pads, the packed one none
        ids = rng.integers(3, len(policy.tokenizer), size=n).tolist()
        examples.append({"input_ids": ids, "completion_mask": [0] * (n // 2) + [1] * (n - n // 2)})
    pad_id = policy.tokenizer.pad_token_id
    losses = {}
    for free in (False, True):
        batch = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=free)(
            [dict(e) for e in examples])
        assert ("attention_mask" in batch) != free
        kw = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels", "position_ids")}
        with torch.no_grad():  # use_cache=False as trl's SFTTrainer passes it (a cache hides the packing)
            losses[free] = float(model(**kw, use_cache=False).loss)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_fit_completions_keeps_every_example_within_max_length(tmp_path):
    path = testing.build_tiny_policy(tmp_path / "tiny", ["helpful", "harmless"])
    tok = wic.WICPolicy.from_pretrained(path).tokenizer
    long = " ".join(["help"] * 50)
    out = pol_mod.fit_completions(tok, [{"prompt": "can you help me ?", "completion": long},
                                        {"prompt": "tell me", "completion": "yes"}], max_length=20)
    assert out[1]["completion"] == "yes"
    n = len(tok("can you help me ?")["input_ids"]) + len(tok(out[0]["completion"])["input_ids"])
    assert n + 1 <= 20 and out[0]["completion"].startswith("help help")


def test_bf16_only_where_the_cpu_computes_it(monkeypatch, caplog):
    monkeypatch.setattr(pol_mod, "cpu_has_native_bf16", lambda: False)
    assert pol_mod.resolve_bf16(True, "cpu") is False
    assert "no native bf16" in caplog.text
    assert pol_mod.resolve_bf16(True, "cuda") is True
    monkeypatch.setattr(pol_mod, "cpu_has_native_bf16", lambda: True)
    assert pol_mod.resolve_bf16(True, "cpu") is True
    assert pol_mod.resolve_bf16(False, "cpu") is False


def test_sft_with_padding_free_and_bf16_trains(tmp_path):
    from helpers.wic import make_suite

    rows = [{"prompt": f"can you help me {i} ?", "chosen": "yes i can help you help", "rejected": "no"}
            for i in range(8)]
    data = tmp_path / "pairs.jsonl"
    import json

    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = testing.build_tiny_policy(tmp_path / "tiny", ["helpful", "harmless"])
    cfg = wic_offline.WICOfflineConfig(policy=str(path), data=[str(data)], output_dir=str(tmp_path / "out"), epochs=1.0,
                                       batch_size=4, max_length=64, learning_rate=1e-3, padding_free=True, bf16=True,
                                       save_steps=100)
    m = wic_offline.train_wic_offline(cfg, suite=make_suite())
    assert m["sft_steps"] == 2 and np.isfinite(m["sft_loss_last"])
    assert wic.WICPolicy.from_pretrained(tmp_path / "out").objectives == ["helpful", "harmless"]


def test_compact_lm_head_gives_the_same_loss_and_gradients_and_is_scoped(tmp_path):
    """Scoring only the completion positions on a CPU (pro_lib.policy.compact_lm_head_on_cpu) changes
    nothing but the time: same loss, entropy and accuracy, same gradients; trl is restored after."""
    import torch
    from trl.trainer import utils as trl_utils

    path = testing.build_tiny_policy(tmp_path / "tiny", ["helpful", "harmless"], hidden_size=32, num_layers=2)
    model = wic.WICPolicy.from_pretrained(path).model.train()
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(3, model.config.vocab_size - 3, size=(2, 12)))
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt: no loss
    cpu = torch.device("cpu")
    original = trl_utils._use_triton
    results = {}
    for compact in (False, True):
        model.zero_grad(set_to_none=True)
        with pol_mod.compact_lm_head_on_cpu(compact):   # False: trl's own CPU path (the bench's "before")
            assert trl_utils._use_triton(cpu) is compact
            out = model(input_ids=ids, labels=labels, fused_lm_head=True, use_cache=False)
            out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[compact] = (float(out.loss.detach()), out.entropy.detach().clone(), out.is_top1.clone(), grads)
    assert trl_utils._use_triton is original and trl_utils._use_triton(cpu) is False
    (l0, e0, t0, g0), (l1, e1, t1, g1) = results[False], results[True]
    assert l1 == pytest.approx(l0, rel=1e-6)
    assert torch.allclose(e0, e1, atol=1e-6) and torch.equal(t0, t1)
    assert len(g0) == len(g1) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))


def test_share_cpu_threads_splits_the_cores(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv(pol_mod.PARALLEL_TASKS_ENV, raising=False)
    assert pol_mod.share_cpu_threads() is None and torch.get_num_threads() == before
    try:
        monkeypatch.setattr(pol_mod.os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
        monkeypatch.setenv(pol_mod.PARALLEL_TASKS_ENV, "2")
        assert pol_mod.share_cpu_threads() == 4 and torch.get_num_threads() == 4
        monkeypatch.setenv(pol_mod.PARALLEL_TASKS_ENV, "16")
        assert pol_mod.share_cpu_threads() == 1
        for bad in ("two", "0"):
            monkeypatch.setenv(pol_mod.PARALLEL_TASKS_ENV, bad)
            with pytest.raises(pol_mod.ConfigError, match="PRO_PARALLEL_TASKS"):
                pol_mod.share_cpu_threads()
    finally:
        torch.set_num_threads(before)
