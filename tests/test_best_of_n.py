"""Best-of-N under per-prompt weights (issue 28 item 5): the selection, the experiment's statistics, the
endpoint's ``best_of_n`` param and ``pro generate --best-of-n``, all on tiny models (seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pro_lib import best_of_n as bon
from pro_lib.errors import DataError

NAMES = ["helpful", "harmless"]


# -- selection and statistics on synthetic numbers -------------------------------------------------

def test_select_is_the_argmax_of_the_weighted_score():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 5, 2))
    weights = rng.dirichlet([1, 1], size=6)
    picked = bon.select(scores, weights)
    for i in range(6):  # written out: sum_k w_k r_k per candidate, then the best one
        totals = [sum(weights[i, k] * scores[i, j, k] for k in range(2)) for j in range(5)]
        assert picked[i] == int(np.argmax(totals))
        assert bon.weighted_scores(scores, weights)[i] == pytest.approx(totals)
    # a corner weight picks the best candidate on that objective alone; the first on a tie
    assert list(bon.select(scores, np.array([1.0, 0.0]))) == list(scores[:, :, 0].argmax(1))
    assert bon.select(np.zeros((1, 3, 2)), np.array([0.5, 0.5]))[0] == 0


def test_best_of_n_keeps_the_best_candidate_of_each_prompt_and_checks_its_inputs():
    def generate(n):  # prompt-major, as num_return_sequences gives them
        return [f"p{i} c{j}" for i in range(2) for j in range(n)]

    table = {"p0 c0": [0, 0], "p0 c1": [3, -1], "p0 c2": [1, 1], "p1 c0": [0, 2], "p1 c1": [2, 0], "p1 c2": [-5, 5]}
    res = bon.best_of_n(generate, lambda p, r: np.array([table[x] for x in r], float), ["a", "b"],
                        np.array([[0.9, 0.1], [0.2, 0.8]]), 3)
    # p0: 0, 2.6, 1.0 -> c1; p1: 1.6, 0.4, 3.0 -> c2
    assert res.responses == ["p0 c1", "p1 c2"] and list(res.index) == [1, 2]
    assert res.weighted == pytest.approx(np.array([[0, 2.6, 1.0], [1.6, 0.4, 3.0]]))
    assert res.scores.tolist() == [[3, -1], [-5, 5]]
    assert res.candidates[1] == ["p1 c0", "p1 c1", "p1 c2"] and res.n == 3
    for bad, why in ((0, "must be >= 1 and <= 64, got 0"), (65, "<= 64"), (2.5, "integer"), (True, "integer")):
        with pytest.raises(DataError, match=why):
            bon.check_n(bad)
    assert bon.check_n(None) == 1 and bon.check_n(4.0) == 4
    with pytest.raises(DataError, match="expected 6 candidates"):
        bon.best_of_n(lambda n: ["x"], lambda p, r: np.zeros((len(r), 2)), ["a", "b"], np.ones((2, 2)) / 2, 3)


def test_evaluate_selection_judges_each_weighting_with_the_other_suite():
    """Four prompts (two per source), three candidates: the numbers worked out by hand."""
    sources = ["helpful-base", "helpful-base", "harmless-base", "harmless-base"]
    # selection suite: candidate 1 is the helpful one, candidate 2 the harmless one, candidate 0 neither
    sel = np.tile(np.array([[0.0, 0.0], [2.0, -1.0], [-1.0, 2.0]]), (4, 1, 1))
    judge = sel * 0.5 + np.arange(4)[:, None, None] * 0.01       # agrees with the selection suite
    weightings = {"oracle": np.array([[1, 0], [1, 0], [0, 1], [0, 1]], float),
                  "uniform": np.array([0.5, 0.5]),
                  "shuffled": np.array([[0, 1], [0, 1], [1, 0], [1, 0]], float)}
    res = bon.evaluate_selection(sel, judge, weightings, sources, {"helpful-base": 0, "harmless-base": 1}, NAMES,
                                 ns=(1, 3), n_boot=200)
    assert res["sources"] == {"harmless-base": 2, "helpful-base": 2}
    one, three = res["by_n"][1], res["by_n"][3]
    # N = 1: every weighting keeps candidate 0, so every difference is exactly 0
    assert all(r["choice"] == [0, 0, 0, 0] for r in one["weightings"].values())
    assert all(d == [0.0, 0.0, 0.0] for d in one["differences"].values())
    assert sorted(one["differences"]) == ["oracle - shuffled", "oracle - uniform", "shuffled - uniform"]
    # N = 3: oracle picks 1, 1, 2, 2; shuffled the opposite; uniform ties (0.5 each) -> the first, 1
    w = three["weightings"]
    assert w["oracle"]["choice"] == [1, 1, 2, 2] and w["shuffled"]["choice"] == [2, 2, 1, 1]
    assert w["uniform"]["choice"] == [1, 1, 1, 1]
    matched = {name: np.array([judge[i, c, [0, 0, 1, 1][i]] for i, c in enumerate(r["choice"])])
               for name, r in w.items()}
    assert w["oracle"]["source_matched"] == pytest.approx(matched["oracle"].mean())
    assert w["oracle"]["source_matched"] == pytest.approx(1.0 + 0.015)
    assert w["shuffled"]["source_matched"] == pytest.approx(-0.5 + 0.015)
    assert w["uniform"]["by_source"]["harmless-base"]["harmless"] == pytest.approx(-0.5 + 0.025)
    mean, lo, hi = three["differences"]["oracle - shuffled"]
    assert mean == pytest.approx(1.5) and lo == pytest.approx(1.5) and hi == pytest.approx(1.5)
    mean, lo, hi = three["differences"]["oracle - uniform"]
    assert mean == pytest.approx(0.75) and 0 <= lo <= mean <= hi <= 1.5
    assert "higher" in bon.verdict(0.75, 0.1, 1.5, what="oracle", than="uniform")
    assert "no difference" in bon.verdict(0.1, -0.2, 0.3, what="a", than="b")
    assert "lower" in bon.verdict(-0.3, -0.5, -0.1, what="a", than="b")
    with pytest.raises(DataError, match="outside 1..3"):
        bon.evaluate_selection(sel, judge, weightings, sources, {"helpful-base": 0, "harmless-base": 1}, NAMES,
                               ns=(4,))


def test_paired_interval_resamples_prompts_keeping_pairs():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 2.0, 3.0])
    assert bon.paired_interval(a, b) == pytest.approx((1.0, 1.0, 1.0))   # a constant difference: no spread
    mean, lo, hi = bon.paired_interval(np.array([1.0, -1.0] * 20), np.zeros(40), n_boot=500)
    assert mean == 0 and lo < 0 < hi


# -- the product: the endpoint and `pro generate` on tiny models ------------------------------------

def _suite(root: Path, tiny_reward_dir: Path) -> Path:
    objs = []
    for i, n in enumerate(NAMES):
        shutil.copytree(tiny_reward_dir, root / f"rm_{n}")
        (root / f"rm_{n}" / "pro_reward.json").write_text(
            json.dumps({"objective": n, "input_format": "pair" if i == 0 else "response", "max_length": 64}))
        objs.append({"name": n, "model": str(root / f"rm_{n}"), "input_format": "pair" if i == 0 else "response",
                     "max_length": 64})
    (root / "suite").mkdir()
    (root / "suite" / "suite.yaml").write_text(yaml.safe_dump(
        {"objectives": objs, "stats": {"helpful": [0.1, 2.0], "harmless": [-0.2, 0.5]}}))
    return root / "suite"


@pytest.fixture
def tiny_system(tmp_path, tiny_encoder_dir, tiny_reward_dir):
    from pro_lib import serving
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.testing import build_tiny_policy

    PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), NAMES, max_length=32).save_pretrained(tmp_path / "orch")
    suite = _suite(tmp_path, tiny_reward_dir)
    build_tiny_policy(tmp_path / "policy", NAMES)
    serving.build_endpoint(tmp_path / "endpoint", orchestrator=tmp_path / "orch", policy=tmp_path / "policy",
                           suite=suite)
    return {"orch": tmp_path / "orch", "suite": suite, "policy": tmp_path / "policy", "endpoint": tmp_path / "endpoint",
            "root": tmp_path}


def _independent_choice(policy_dir, suite_dir, prompt, w, n, **gen):
    """The candidates regenerated with the same seed, scored by a separately loaded suite, weighted by hand."""
    from pro_lib.suite import RewardSuite
    from pro_lib.wic import WICPolicy

    cands = WICPolicy.from_pretrained(policy_dir).generate([prompt], np.asarray([w]), num_return_sequences=n,
                                                           do_sample=True, **gen)
    suite = RewardSuite.load(suite_dir)
    z = suite.normalize(suite.score([prompt] * n, cands, progress=False))
    weighted = [float(w[0] * z[j, 0] + w[1] * z[j, 1]) for j in range(n)]
    return cands, z, weighted


def test_endpoint_best_of_n_returns_the_candidate_the_suite_ranks_first(tiny_system):
    from pro_lib import serving

    ep = serving.Endpoint(tiny_system["endpoint"])
    prompt = "How do I bake bread?"
    df = pd.DataFrame({"prompt": [prompt]})
    # N = 1 (the default) is today's answer: the same columns and values as without the param
    base = ep.predict(df, {"max_new_tokens": 6})
    pd.testing.assert_frame_equal(ep.predict(df, {"max_new_tokens": 6, "best_of_n": 1}), base)
    assert "best_of_n" not in base.columns
    out = ep.predict(df, {"max_new_tokens": 6, "best_of_n": 4, "seed": 11})
    w = out.loc[0, ["weight_helpful", "weight_harmless"]].to_numpy(dtype=float)
    cands, z, weighted = _independent_choice(tiny_system["policy"], tiny_system["suite"], prompt, w, 4,
                                             max_new_tokens=6, seed=11, batch_size=2)
    assert len(set(cands)) > 1, "sampling gave four identical candidates: the check below would be empty"
    best = int(np.argmax(weighted))
    assert out.loc[0, "response"] == cands[best]
    assert out.loc[0, "candidate_weighted_scores"] == pytest.approx(weighted, abs=1e-5)
    assert out.loc[0, "weighted_score"] == pytest.approx(max(weighted), abs=1e-5)
    assert out.loc[0, ["score_helpful", "score_harmless"]].tolist() == pytest.approx(z[best].tolist(), abs=1e-5)
    assert out.loc[0, "best_of_n"] == 4


def test_endpoint_best_of_n_refuses_what_it_cannot_do(tiny_system):
    from pro_lib import serving

    ep = serving.Endpoint(tiny_system["endpoint"])
    df = pd.DataFrame({"prompt": ["hi"]})
    with pytest.raises(DataError, match="best_of_n must be >= 1 and <= 64, got 0"):
        ep.predict(df, {"best_of_n": 0})
    with pytest.raises(DataError, match="drop score=false"):
        ep.predict(df, {"best_of_n": 2, "score": False, "max_new_tokens": 2})
    root = tiny_system["root"]
    serving.build_endpoint(root / "no_suite", orchestrator=tiny_system["orch"], policy=tiny_system["policy"])
    with pytest.raises(DataError, match="needs a reward suite"):
        serving.Endpoint(root / "no_suite").predict(df, {"best_of_n": 2, "max_new_tokens": 2})
    # the signature carries the param (so `mlflow models serve` passes it through), default 1
    from pro_lib import packaging

    sig = packaging.signature_for("endpoint", {"objectives": NAMES, "suite": True})
    (spec,) = [p for p in sig.params.params if p.name == "best_of_n"]
    assert spec.default == 1


def test_pro_generate_best_of_n(tiny_system, capsys):
    from pro_lib.cli import main
    from pro_lib.suite import RewardSuite

    policy, suite = str(tiny_system["policy"]), str(tiny_system["suite"])
    prompt = "Is it safe to mix bleach and vinegar?"
    common = ["generate", prompt, "--policy", policy, "--weights", "0.3,0.7", "--max-new-tokens", "6", "--json"]
    assert main(common) == 0
    today = json.loads(capsys.readouterr().out)
    assert main([*common, "--best-of-n", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == today          # N = 1: unchanged
    assert main([*common, "--best-of-n", "3", "--suite", suite, "--seed", "5"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    texts = [c["response"] for c in rec["candidates"]]
    assert len(texts) == 3 and rec["best_of_n"] == 3
    s = RewardSuite.load(suite)
    z = s.normalize(s.score([prompt] * 3, texts, progress=False))
    weighted = 0.3 * z[:, 0] + 0.7 * z[:, 1]
    assert [c["weighted_score"] for c in rec["candidates"]] == pytest.approx(weighted.tolist(), abs=1e-5)
    assert rec["response"] == texts[int(np.argmax(weighted))]
    assert list(rec["scores"].values()) == pytest.approx(z[int(np.argmax(weighted))].tolist(), abs=1e-5)
    # bad input: stopped before any model loads, with the flag named
    assert main([*common, "--best-of-n", "2"]) == 2
    assert "--best-of-n 2 needs --suite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--best-of-n", "0"])
    assert "--best-of-n: must be >= 1 and <= 64, got 0" in capsys.readouterr().err
