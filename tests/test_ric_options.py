"""RiC baselines as in RiC's released code (ric/utils.py): offline SFT on chosen and rejected responses
with their own reward tags; each online round's SFT set mixes in the quantile-filtered offline data and
the kept samples of earlier rounds. Tiny random policies and in-process reward functions (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pro_lib import testing
from pro_lib.wic import offline as wic_offline, rounds as wic_rounds
from helpers.wic import NAMES, make_suite


def _pairs(tmp_path):
    rows = []
    for i in range(8):
        rows.append({"prompt": f"\n\nHuman: can you help me {i} ?\n\nAssistant:",
                     "chosen": "yes i can help you" + " help" * (i % 4), "rejected": "no harm harm" + " harm" * (i % 3)})
        rows.append({"prompt": f"\n\nHuman: tell me about harm {i} ?\n\nAssistant:",
                     "chosen": "that is not safe . sorry" + " safe" * (i % 3), "rejected": "yes harm harm"})
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


SFT = dict(epochs=1.0, batch_size=8, learning_rate=1e-3, max_length=64, save_steps=1000)


def test_ric_offline_trains_on_chosen_and_rejected_with_their_own_tags(tmp_path):
    data = _pairs(tmp_path)
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    assert wic_offline.RiCOfflineConfig().responses == "both" and wic_offline.WICOfflineConfig().responses == "chosen"
    cfg = wic_offline.RiCOfflineConfig(policy=str(base), data=[str(data)], suite=None, output_dir=str(tmp_path / "ric"),
                                       **SFT)
    m = wic_offline.train_wic_offline(cfg, suite=make_suite())
    assert m["n_pairs"] == 16 and m["sft_examples"] == 32
    ex = [json.loads(line) for line in (tmp_path / "ric" / "examples.jsonl").read_text().splitlines()]
    assert sorted({e["side"] for e in ex}) == ["chosen", "rejected"]
    by = {(e["prompt"].split("<W1>")[0], e["side"]): e for e in ex}
    prompt = next(p for p, side in by if side == "rejected" and "help me" in p)
    chosen, rejected = by[(prompt, "chosen")], by[(prompt, "rejected")]
    assert rejected["completion"].startswith("no harm harm") and chosen["completion"].startswith("yes i can help")
    # each response carries its own scores: the rejected one scores lower on both objectives here
    assert np.all(np.array(rejected["z"]) < np.array(chosen["z"]))
    assert chosen["prompt"] != rejected["prompt"]  # different tags in the prompt
    # --responses chosen restores the PRO-WIC SFT set
    cfg2 = wic_offline.RiCOfflineConfig(policy=str(base), data=[str(data)], output_dir=str(tmp_path / "ric2"),
                                        responses="chosen", **SFT)
    assert wic_offline.train_wic_offline(cfg2, suite=make_suite())["sft_examples"] == 16


def test_ric_online_rounds_mix_offline_data_and_earlier_rounds(tmp_path):
    data = _pairs(tmp_path)
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    wic_offline.train_wic_offline(wic_offline.RiCOfflineConfig(policy=str(base), data=[str(data)],
                                                               output_dir=str(tmp_path / "off"), **SFT),
                                  suite=make_suite())
    on = wic_rounds.RiCOnlineConfig(policy=str(tmp_path / "off"), data=[str(data)], rounds=2, prompts_per_round=4,
                                    samples_per_prompt=2, max_new_tokens=4, rejection="none",
                                    output_dir=str(tmp_path / "on"), **SFT)
    assert on.replay_offline == -1 and on.replay_rounds
    wic_rounds.wic_online(on, suite=make_suite())
    rounds = [json.loads(line) for line in (tmp_path / "on" / "rounds.jsonl").read_text().splitlines()]
    offline = wic_rounds.offline_replay(on.policy, on.replay_offline, quantile=on.quantile, seed=on.seed)
    z = np.array([json.loads(line)["z"] for line in (tmp_path / "off" / "examples.jsonl").read_text().splitlines()])
    assert 0 < len(offline) == int((z >= np.quantile(z, 0.7, axis=0)).any(axis=1).sum()) < len(z)
    r1, r2 = rounds
    assert r1["sft_examples_offline"] == r2["sft_examples_offline"] == len(offline)
    assert r1["sft_examples_previous_rounds"] == 0 and r2["sft_examples_previous_rounds"] == r1["sft_examples_new"] > 0
    assert r2["sft_examples"] == r2["sft_examples_new"] + r1["sft_examples_new"] + len(offline)
    # PRO-WIC's online stage trains on this round's kept samples only
    pro = wic_rounds.WICOnlineLoopConfig(policy=str(tmp_path / "off"), data=[str(data)], rounds=1, prompts_per_round=4,
                                         samples_per_prompt=2, max_new_tokens=4, rejection="none", preferences="ric",
                                         output_dir=str(tmp_path / "pro"), **SFT)
    wic_rounds.wic_online(pro, suite=make_suite())
    row = json.loads((tmp_path / "pro" / "rounds.jsonl").read_text().splitlines()[0])
    assert row["sft_examples"] == row["sft_examples_new"] and row["sft_examples_offline"] == 0


def test_orchestrator_control_preferences():
    """Controls for the acceptance claim: the orchestrator's weights shuffled across prompts (same
    distribution, no prompt information) and their mean as one constant vector."""
    from helpers.wic import StandInOrchestrator

    prompts = [f"help me {i}" for i in range(10)] + [f"x {i}" for i in range(10)]
    orch = StandInOrchestrator()

    def prefs(source):
        return wic_rounds.sample_preferences(source, prompts, NAMES, np.random.default_rng(0), orchestrator=orch)

    w, sh, mean = prefs("orchestrator"), prefs("orchestrator-shuffled"), prefs("orchestrator-mean")
    assert sorted(map(tuple, sh.tolist())) == sorted(map(tuple, w.tolist())) and not np.allclose(sh, w)
    assert np.allclose(mean, w.mean(axis=0)) and mean.shape == w.shape


def test_kfp_sft_half_replays_offline_examples_like_the_loop(tmp_path):
    """`replay_offline` reaches the KFP SFT half (the main job's online round): sample_online_round ->
    train_wic_online(replay_offline=N, offline_policy=...) trains the same policy on the same examples as
    the CLI loop with --replay-offline N, and names the missing examples.jsonl when pointed elsewhere."""
    from safetensors.torch import load_file

    from pro_lib.errors import DataError

    data = _pairs(tmp_path)
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    off = tmp_path / "off"
    wic_offline.train_wic_offline(wic_offline.WICOfflineConfig(policy=str(base), data=[str(data)],
                                                               output_dir=str(off), **SFT), suite=make_suite())
    sampling = dict(policy=str(off), data=[str(data)], prompts_per_round=4, samples_per_prompt=2, max_new_tokens=4,
                    preferences="ric", rejection="none", seed=2)
    sft = {**SFT, "batch_size": 2}
    loop = wic_rounds.WICOnlineLoopConfig(**sampling, **sft, rounds=1, replay_offline=3,
                                          output_dir=str(tmp_path / "loop"))
    wic_rounds.wic_online(loop, suite=make_suite())
    row = json.loads((tmp_path / "loop" / "rounds.jsonl").read_text().splitlines()[0])
    assert row["sft_examples_offline"] == 3 and row["sft_examples"] == row["sft_examples_new"] + 3

    wic_rounds.sample_online_round(wic_rounds.WICSampleConfig(**sampling, round_index=1,
                                                              output_dir=str(tmp_path / "sampled")), suite=make_suite())
    half = wic_rounds.WICOnlineConfig(policy=str(off), samples=[str(tmp_path / "sampled")], seed=2, replay_offline=3,
                                      offline_policy=str(off), output_dir=str(tmp_path / "kfp"), **sft)
    m = wic_rounds.train_wic_online(half)
    assert m["sft_examples_offline"] == 3 and m["sft_examples"] == m["sft_examples_new"] + 3 == row["sft_examples"]
    trained = [load_file(d / "model.safetensors") for d in (tmp_path / "loop" / "policy", tmp_path / "kfp")]
    for name, tensor in trained[0].items():
        np.testing.assert_allclose(tensor.numpy(), trained[1][name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)

    # a later round's input policy has no examples.jsonl: without --offline-policy the error says where to look
    with pytest.raises(DataError, match=r"examples\.jsonl.*--offline-policy"):
        wic_rounds.train_wic_online(wic_rounds.WICOnlineConfig(policy=str(tmp_path / "kfp"),
                                                               samples=[str(tmp_path / "sampled")], replay_offline=3,
                                                               output_dir=str(tmp_path / "kfp2"), **sft))
