"""LoRA policies kept as adapters (pro_lib.adapters): train, save, load onto their base, share a base,
interpolate as Rewarded Soups. Tiny models from configs: seconds on a CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pro_lib import adapters, testing, wic
from pro_lib.wic import sft, soups, offline as wic_offline, rounds as wic_rounds
from pro_lib.artifacts import AdapterManifest
from pro_lib.errors import CheckpointError

from helpers.wic import NAMES, make_suite, write_tiny_pairs  # noqa: F401


@pytest.fixture
def pairs_file(tmp_path):
    return write_tiny_pairs(tmp_path / "pairs.jsonl", 8)


plain_base = testing.build_plain_lm


def _sft(**kw):
    return dict(epochs=1.0, batch_size=4, learning_rate=1e-2, max_length=64, save_steps=1000, **kw)


def _logits(policy, text="can you help me ? <W1> 0.70 <W2> 0.30"):
    enc = policy.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return policy.model(**enc).logits


def test_lora_offline_saves_the_adapter_over_its_base(tmp_path, pairs_file):
    base = plain_base(tmp_path / "base")
    cfg = wic_offline.WICOfflineConfig(policy=str(base), data=[str(pairs_file)], output_dir=str(tmp_path / "lora"),
                                       tau=0.5, lora_r=4, lora_alpha=8, **_sft())
    m = wic_offline.train_wic_offline(cfg, suite=make_suite())
    assert m["sft_steps"] == 4
    out = tmp_path / "lora"
    meta = AdapterManifest.load(out)
    assert meta.base == str(base.resolve()) and meta.base_digest.startswith("sha256:") and meta.rank == 4
    assert not (out / "config.json").exists() and not list(out.glob("model*.safetensors"))  # no merged model
    # only LoRA matrices and the K tag rows are in the adapter (not the embedding matrix)
    state = adapters.adapter_state(out)
    rows = [k for k in state if "trainable_tokens" in k]
    assert rows and all(state[k].shape == (2, 32) for k in rows), {k: tuple(v.shape) for k, v in state.items()}
    assert all("lora_" in k or "trainable_tokens" in k for k in state)
    assert any(float(v.abs().sum()) > 0 for k, v in state.items() if "lora_B" in k)  # it trained
    # loaded onto its base: a WIC policy whose tag rows are the trained ones, not the base's init
    pol = wic.WICPolicy.from_pretrained(out)
    assert adapters.is_peft(pol.model) and pol.objectives == NAMES and pol.base_ref == str(base.resolve())
    plain = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    assert not torch.allclose(_logits(pol), _logits(plain))
    assert pol.generate(["can you help me ?"], weights=[0.5, 0.5], max_new_tokens=3)


def test_adapter_round_trip_is_exact_and_full_finetune_is_unchanged(tmp_path):
    base = plain_base(tmp_path / "base")
    examples = [{"prompt": "can you help me ? <W1> 0.80 <W2> 0.20", "completion": "yes i can help"}] * 8
    pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    sft.sft_train(pol, examples, sft.SFTOptions(**_sft(lora_r=4)), tmp_path / "w")
    assert adapters.is_peft(pol.model)
    trained = _logits(pol)
    pol.save_pretrained(tmp_path / "saved")
    again = wic.WICPolicy.from_pretrained(tmp_path / "saved")
    assert torch.equal(_logits(again), trained)
    # only the adapter trained: the base's own weights are those of the folder
    full = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    sft.sft_train(full, examples, sft.SFTOptions(**_sft()), tmp_path / "w2")
    full.save_pretrained(tmp_path / "full")
    assert (tmp_path / "full" / "config.json").is_file() and not AdapterManifest.exists(tmp_path / "full")


def test_wrong_or_missing_base_is_a_clear_error(tmp_path):
    base = plain_base(tmp_path / "base")
    other = plain_base(tmp_path / "other", seed=1)
    pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    sft.sft_train(pol, [{"prompt": "help ? <W1> 0.50 <W2> 0.50", "completion": "yes"}] * 4,
                          sft.SFTOptions(**_sft(lora_r=2)), tmp_path / "w")
    pol.save_pretrained(tmp_path / "adapter")
    with pytest.raises(CheckpointError) as err:
        wic.WICPolicy.from_pretrained(tmp_path / "adapter", base=other)
    text = str(err.value)
    assert str(base.resolve()) in text and str(other) in text and "digest" in text and "re-train" in text
    shutil.move(base, tmp_path / "moved")
    with pytest.raises(CheckpointError, match="missing here"):
        wic.WICPolicy.from_pretrained(tmp_path / "adapter")
    # the same base at another place is accepted (checked by content, not by path)
    assert wic.WICPolicy.from_pretrained(tmp_path / "adapter", base=tmp_path / "moved").K == 2


def test_online_round_continues_the_adapter_or_merges_it(tmp_path):
    base = plain_base(tmp_path / "base")
    pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
    ex = [{"prompt": "help ? <W1> 0.50 <W2> 0.50", "completion": "yes i can help"}] * 4
    sft.sft_train(pol, ex, sft.SFTOptions(**_sft(lora_r=2)), tmp_path / "w")
    pol.save_pretrained(tmp_path / "offline")
    before = adapters.adapter_state(tmp_path / "offline")
    on = wic.WICPolicy.from_pretrained(tmp_path / "offline", trainable=True)
    sft.sft_train(on, ex, sft.SFTOptions(**_sft(lora_r=2)), tmp_path / "w2")
    on.save_pretrained(tmp_path / "online")
    meta = AdapterManifest.load(tmp_path / "online")
    assert meta.base == str(base.resolve())  # the same base, the adapter trained on
    after = adapters.adapter_state(tmp_path / "online")
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)
    # a full fine-tune (no --lora-r) of an adapter policy merges it first and saves a full model
    full = wic.WICPolicy.from_pretrained(tmp_path / "offline", trainable=True)
    sft.sft_train(full, ex, sft.SFTOptions(**_sft()), tmp_path / "w3")
    full.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "config.json").is_file() and not AdapterManifest.exists(tmp_path / "merged")


def test_rewarded_soups_interpolate_lora_experts_as_adapters(tmp_path, pairs_file):
    base = plain_base(tmp_path / "base")
    cfg = soups.SoupsTrainConfig(policy=str(base), data=[str(pairs_file)], output_dir=str(tmp_path / "soup"),
                                 lora_r=2, lora_alpha=4, **_sft())
    soups.train_soups(cfg, suite=make_suite())
    for name in NAMES:
        assert AdapterManifest.load(tmp_path / "soup" / name).base == str(base.resolve())
    soup = soups.SoupPolicy.load(tmp_path / "soup")
    assert soup.adapters and adapters.is_peft(soup.policy.model)
    alone = {n: wic.WICPolicy.from_pretrained(tmp_path / "soup" / n) for n in NAMES}
    soup.set_weights([1.0, 0.0])
    assert torch.equal(_logits(soup.policy), _logits(alone["helpful"]))  # weight 1: exactly that expert
    soup.set_weights([0.0, 1.0])
    assert torch.equal(_logits(soup.policy), _logits(alone["harmless"]))
    soup.set_weights([0.5, 0.5])
    mid = _logits(soup.policy)
    assert not torch.allclose(mid, _logits(alone["helpful"])) and not torch.allclose(mid, _logits(alone["harmless"]))
    # the mixture is the mean of the adapters' tensors
    states = [adapters.adapter_state(tmp_path / "soup" / n) for n in NAMES]
    from peft import get_peft_model_state_dict

    now = get_peft_model_state_dict(soup.policy.model)
    key = next(k for k in states[0] if "lora_B" in k)
    assert torch.allclose(now[key], (states[0][key] + states[1][key]) / 2)
    assert soup.generate(["can you help me ?"], [0.3, 0.7], max_new_tokens=3)


def test_one_base_many_adapters(tmp_path):
    """Two adapters of one base loaded for serving share one base model; each answers as it does alone."""
    base = plain_base(tmp_path / "base")
    for i, name in enumerate(["a1", "a2"]):
        pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
        ex = [{"prompt": "help ? <W1> 0.50 <W2> 0.50", "completion": ["yes i can help", "no sorry"][i]}] * 4
        sft.sft_train(pol, ex, sft.SFTOptions(**_sft(lora_r=2, seed=i)), tmp_path / f"w{i}")
        pol.save_pretrained(tmp_path / name)
    alone = [_logits(wic.WICPolicy.from_pretrained(tmp_path / n)) for n in ("a1", "a2")]
    adapters.clear_shared()
    try:
        one = wic.WICPolicy.from_pretrained(tmp_path / "a1", shared_base=True)
        two = wic.WICPolicy.from_pretrained(tmp_path / "a2", shared_base=True)
        assert adapters.shared_bases() == 1 and one.model._shared is two.model._shared
        base_params = {id(p) for p in one.model.get_base_model().parameters()}
        assert base_params == {id(p) for p in two.model.get_base_model().parameters()}
        for _ in range(2):  # switching back and forth
            assert torch.equal(_logits(two), alone[1]) and torch.equal(_logits(one), alone[0])
        assert one.generate(["help ?"], weights=[0.5, 0.5], max_new_tokens=2)
        # the same adapter twice is loaded once
        wic.WICPolicy.from_pretrained(tmp_path / "a1", shared_base=True)
        assert len(one.model._shared.adapters) == 2
    finally:
        adapters.clear_shared()


def test_morlhf_lora_saves_an_adapter_over_its_policy(tmp_path):
    """MORLHF with --lora-r: trl's peft_config; the policy folder is the adapter over --policy, and the
    evaluation's loader reads it onto that base."""
    from pro_lib.adapters import load_causal_lm
    from pro_lib.morlhf import MorlhfTrainConfig, train_morlhf
    from pro_lib.policy import load_tokenizer

    rows = [{"prompt": f"Human: can you help me {i} ? Assistant:", "chosen": " yes", "rejected": " no"}
            for i in range(16)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain_base(tmp_path / "base")
    tok = load_tokenizer(tmp_path / "base")
    cfg = MorlhfTrainConfig(policy=str(tmp_path / "base"), suite="in-process", data=[str(tmp_path / "pairs.jsonl")],
                            output_dir=str(tmp_path / "run"), weights="uniform", max_steps=2, save_steps=2,
                            num_generations=4, batch_size=8, max_completion_length=6, learning_rate=5e-2, beta=0.05,
                            max_prompts=16, seed=0, lora_r=2, lora_alpha=4)
    train_morlhf(cfg, suite=make_suite())
    folder = tmp_path / "run" / "policy"
    meta = AdapterManifest.load(folder)
    assert meta.base == str((tmp_path / "base").resolve()) and meta.rank == 2
    assert not (folder / "config.json").exists() and (folder / adapters.ADAPTER_WEIGHTS).is_file()
    loaded, _ = load_causal_lm(folder)
    assert adapters.is_peft(loaded)
    ids = tok(["can you help me ?"], return_tensors="pt")
    with torch.no_grad():
        base_model, _ = load_causal_lm(tmp_path / "base")
        assert not torch.allclose(loaded(**ids).logits, base_model(**ids).logits)  # the adapter moved it


def _two_adapters(tmp_path):
    base = plain_base(tmp_path / "base")
    for i, name in enumerate(["a1", "a2"]):
        pol = wic.WICPolicy.from_pretrained(base, objectives=NAMES)
        ex = [{"prompt": pol.condition(["help ?"], [0.5, 0.5])[0], "completion": ["yes i can help", "no sorry"][i]}] * 4
        sft.sft_train(pol, ex, sft.SFTOptions(**_sft(lora_r=2, seed=i)), tmp_path / f"w{i}")
        pol.save_pretrained(tmp_path / name)
    return base


def test_endpoint_switches_adapters_per_request(tmp_path, tiny_encoder_dir):
    import pandas as pd

    from pro_lib import serving
    from pro_lib.errors import DataError
    from pro_lib.orchestrator import PreferenceOrchestrator

    _two_adapters(tmp_path)
    PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), NAMES, max_length=32).save_pretrained(tmp_path / "orch")
    serving.build_endpoint(tmp_path / "endpoint", orchestrator=tmp_path / "orch", policy=tmp_path / "a1",
                           policies={"second": tmp_path / "a2"})
    want = {n: wic.WICPolicy.from_pretrained(tmp_path / n).generate(["help ?"], weights=[0.5, 0.5], max_new_tokens=4)
            for n in ("a1", "a2")}
    adapters.clear_shared()
    try:
        ep = serving.Endpoint(tmp_path / "endpoint")
        assert adapters.shared_bases() == 1  # two policies, one base in memory
        frame = pd.DataFrame({"prompt": ["help ?"], "weights": [[0.5, 0.5]]})
        for _ in range(2):
            assert ep.predict(frame, {"max_new_tokens": 4, "policy": "second"})["response"].tolist() == want["a2"]
            assert ep.predict(frame, {"max_new_tokens": 4})["response"].tolist() == want["a1"]
        with pytest.raises(DataError, match="no policy 'third'.*'second'"):
            ep.predict(frame, {"policy": "third"})
    finally:
        adapters.clear_shared()
