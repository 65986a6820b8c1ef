"""Prompt subsets are stratified random samples: every source in proportion, for WIC evaluation,
MORLHF training and MORLHF evaluation (issue 13: the first-N-in-file-order samples were all helpful)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pro_lib.data import load_prompt_pool, source_mix, stratified_order, stratified_sample

# 3:2 helpful:harmless, written source by source (helpful first), like the HH split in file order.
N_HELPFUL, N_HARMLESS = 60, 40


@pytest.fixture()
def mixed_split(tmp_path) -> Path:
    rows = [{"prompt": f"Human: helpful question {i} about bread? Assistant:", "chosen": " yes", "rejected": " no",
             "source": "helpful-base"} for i in range(N_HELPFUL)]
    rows += [{"prompt": f"Human: harmless question {i} about locks? Assistant:", "chosen": " no", "rejected": " ok",
              "source": "harmless-base"} for i in range(N_HARMLESS)]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _assert_in_proportion(counts: dict, n: int) -> None:
    """Each source within one prompt of its share of n (a stratified sample's rounding error)."""
    total = N_HELPFUL + N_HARMLESS
    assert sum(counts.values()) == n
    assert abs(counts.get("helpful-base", 0) - n * N_HELPFUL / total) <= 1, counts
    assert abs(counts.get("harmless-base", 0) - n * N_HARMLESS / total) <= 1, counts


def test_every_prefix_and_block_of_the_order_is_in_proportion():
    sources = ["a"] * 70 + ["b"] * 20 + ["c"] * 10
    order = stratified_order(sources, seed=3)
    assert sorted(order) == list(range(100))
    for m in range(1, 101):  # every prefix: each source within one item of its share
        c = Counter(sources[i] for i in order[:m])
        for s, share in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
            assert abs(c[s] - m * share) <= 1, (m, c)
    for start in range(0, 100, 10):  # blocks (online rounds) too, within one item per boundary
        c = Counter(sources[i] for i in order[start:start + 10])
        assert abs(c["a"] - 7) <= 2 and abs(c["b"] - 2) <= 2 and abs(c["c"] - 1) <= 2, c


def test_sample_is_seeded_random_and_independent_of_file_order():
    items = list(range(50))
    sources = ["x"] * 25 + ["y"] * 25
    a = stratified_sample(items, 10, sources=sources, seed=0)
    assert a == stratified_sample(items, 10, sources=sources, seed=0)
    assert a != stratified_sample(items, 10, sources=sources, seed=1)
    assert a != items[:10] and Counter(sources[i] for i in a) == {"x": 5, "y": 5}
    # the same set whatever the order the sources come in
    rev = list(reversed(items))
    b = stratified_sample(rev, 10, sources=[sources[i] for i in rev], seed=0)
    assert len(set(b)) == 10 and Counter(sources[i] for i in b) == {"x": 5, "y": 5}
    assert stratified_sample(items, None, sources=sources) != items  # all, in a stratified order
    assert sorted(stratified_sample(items, None, sources=sources)) == items


def test_wic_eval_prompt_sample_holds_every_source(tmp_path, mixed_split):
    from pro_lib import testing
    from pro_lib.wic import evaluation as wic_eval
    from helpers.wic import NAMES, make_suite

    policy = testing.build_tiny_policy(tmp_path / "policy", NAMES)
    cfg = wic_eval.WICEvalConfig(policies=[f"p={policy}"], data=[str(mixed_split)], max_prompts=20, grid_step=1.0,
                                 max_new_tokens=2, bootstrap=0, output_dir=str(tmp_path / "eval"))
    wic_eval.evaluate_wic(cfg, suite=make_suite())
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    _assert_in_proportion(report["source_mix"], 20)
    pool, sources = load_prompt_pool([str(mixed_split)])
    by_prompt = dict(zip(pool, sources))
    used = {json.loads(line)["prompt"] for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()}
    _assert_in_proportion(source_mix(by_prompt[p] for p in used), 20)
    assert "harmless-base 8 (40%)" in (tmp_path / "eval" / "eval_table.md").read_text()


def test_wic_online_rounds_hold_every_source(tmp_path, mixed_split):
    from pro_lib.wic import rounds as wic_rounds

    pool, sources = load_prompt_pool([str(mixed_split)])
    by_prompt = dict(zip(pool, sources))
    seen = set()
    for r in (1, 2, 3):
        chosen = wic_rounds.round_prompts(pool, r, 10, seed=0, sources=sources)
        _assert_in_proportion(source_mix(by_prompt[p] for p in chosen), 10)
        seen |= set(chosen)
    assert len(seen) == 30  # consecutive rounds take new prompts


def test_morlhf_train_and_eval_prompt_samples_hold_every_source(tmp_path, mixed_split):
    from pro_lib.morlhf import train_morlhf
    from pro_lib.morlhf_eval import MorlhfEvalConfig, evaluate_morlhf
    from helpers.morlhf import make_policy, make_suite, tiny_cfg

    cfg = tiny_cfg(tmp_path, str(mixed_split), name="run", split="all", max_prompts=20, max_steps=1, save_steps=1)
    policy = make_policy()
    m = train_morlhf(cfg, suite=make_suite(), policy=policy)
    _assert_in_proportion(m["source_mix"], 20)
    pool, sources = load_prompt_pool([str(mixed_split)])
    by_prompt = dict(zip(pool, sources))
    trained = [json.loads(line)["prompt"] for line in (Path(cfg.output_dir) / "prompts.jsonl").read_text().splitlines()]
    _assert_in_proportion(source_mix(by_prompt[p] for p in trained), 20)

    ecfg = MorlhfEvalConfig(runs=[cfg.output_dir], output_dir=str(tmp_path / "eval"), split="all", max_prompts=10,
                            max_new_tokens=2)
    evaluate_morlhf(ecfg, suite=make_suite(), policies={"reference": make_policy(), cfg.output_dir: policy})
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    _assert_in_proportion(report["prompts"]["source_mix"], 10)
    used = {json.loads(line)["prompt"] for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()}
    _assert_in_proportion(source_mix(by_prompt[p] for p in used), 10)
    assert "harmless-base 4 (40%)" in (tmp_path / "eval" / "eval_table.md").read_text()


def test_wic_offline_subset_is_stratified(tmp_path, mixed_split):
    from pro_lib import testing
    from pro_lib.wic import offline as wic_offline
    from helpers.wic import NAMES, make_suite

    policy = testing.build_tiny_policy(tmp_path / "policy", NAMES)
    cfg = wic_offline.WICOfflineConfig(policy=str(policy), data=[str(mixed_split)], max_examples=10,
                                       output_dir=str(tmp_path / "off"))
    from pro_lib.policy import load_policy

    recs, info = wic_offline.build_offline_examples(cfg, make_suite(), load_policy(str(policy))[1])
    _assert_in_proportion(info["source_mix"], 10)
    assert np.isfinite(np.stack([r["z"] for r in recs])).all()
