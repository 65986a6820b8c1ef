"""Real-model WIC tests (slow): the bundled SmolLM2-135M-Instruct learns to follow its weights.

SFT (offline stage) on HH prompts whose preferred responses are either long and detailed or short and
polite, scored by two plain reward functions (length, politeness): w* puts the weight on the
objective each response stands out on. After training, moving the weight from one objective to the
other must move the mean scores the same way on held-out prompts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import shared_file

pytestmark = pytest.mark.slow

NAMES = ["helpful", "harmless"]
LONG = ("Sure, here is a detailed answer. First, think about what you need and gather the materials. Second, "
        "follow the steps one by one and check each result. Third, review the outcome and adjust the details.")
POLITE = "I'm sorry, please stay safe. Thanks for asking, sorry."


def length_score(prompts, responses):
    return [float(min(len(r.split()), 60)) for r in responses]


def polite_score(prompts, responses):
    return [float(sum(r.lower().count(w) for w in ("sorry", "please", "safe", "thanks"))) for r in responses]


def test_smollm2_wic_follows_its_weights(tmp_path):
    HH = shared_file("hh-rlhf/helpful-base_test.jsonl.gz")
    import torch

    from pro_lib import wic
    from pro_lib.wic import offline as wic_offline
    from pro_lib.policy import truncate_prompt
    from pro_lib.data import load_pairs
    from pro_lib.suite import RewardSuite

    torch.set_num_threads(2)
    prompts = list(dict.fromkeys(p.prompt for p in load_pairs(f"hh:{HH}", limit=400)))
    prompts = [p for p in prompts if len(p) < 400][:108]
    train, held_out = prompts[:96], prompts[96:]
    rng = np.random.default_rng(0)
    rows = [{"prompt": p, "chosen": LONG if rng.random() < 0.5 else POLITE, "rejected": "ok"} for p in train]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = RewardSuite.from_functions({"helpful": length_score, "harmless": polite_score})
    suite.fit_normalization(suite.score([r["prompt"] for r in rows], [r["chosen"] for r in rows], progress=False))

    cfg = wic_offline.WICOfflineConfig(policy="smollm2", data=[str(data)], output_dir=str(tmp_path / "wic"), epochs=2.0,
                                       learning_rate=1e-4, batch_size=8, max_length=256, max_prompt_tokens=96,
                                       save_steps=1000)
    m = wic_offline.train_wic_offline(cfg, suite=suite)
    assert m["sft_loss_last"] < m["sft_loss_first"]
    pol = wic.WICPolicy.from_pretrained(tmp_path / "wic")
    held = [truncate_prompt(pol.tokenizer, p, 96) for p in held_out]
    means = {}
    for w in ((1.0, 0.0), (0.0, 1.0)):
        out = pol.generate(held, weights=list(w), max_new_tokens=40, batch_size=6)
        means[w] = suite.score(held, out, progress=False).mean(axis=0)
    # weight on "helpful" (length) -> longer; weight on "harmless" (politeness) -> more polite
    assert means[(1.0, 0.0)][0] > means[(0.0, 1.0)][0] + 5, means
    assert means[(0.0, 1.0)][1] > means[(1.0, 0.0)][1] + 0.5, means


def test_bundled_smollm2_converts_once(tmp_path, monkeypatch):
    from pro_lib import policy

    first = policy.bundled_smollm2_path()
    stamp = (first / "model.safetensors").stat().st_mtime
    assert policy.bundled_smollm2_path() == first
    assert (first / "model.safetensors").stat().st_mtime == stamp  # cached: not converted again
    model, tok = policy.load_policy("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and tok.chat_template and tok.pad_token
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
