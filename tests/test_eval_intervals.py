"""MORLHF evaluation: paired differences between policies on the same prompts, with bootstrap intervals."""

from __future__ import annotations

import numpy as np

from pro_lib.morlhf_eval import format_differences, paired_differences


def test_paired_differences_follow_the_data():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 2))
    z = {"reference": base, "pro": base + [0.5, 0.0] + rng.normal(scale=0.05, size=(40, 2)), "plain": base.copy()}
    w = {"uniform": np.full((40, 2), 0.5)}
    diffs = paired_differences(z, w, ["a", "b"], n_boot=500)
    pairs = [(d["a"], d["b"]) for d in diffs]
    assert pairs == [("pro", "reference"), ("plain", "reference"), ("pro", "plain")]
    pro_ref = diffs[0]
    m, lo, hi = pro_ref["diff"]["a"]
    assert abs(m - 0.5) < 0.05 and lo > 0.4 and hi < 0.6  # a real shift: interval excludes 0
    m, lo, hi = pro_ref["diff"]["b"]
    assert lo < 0 < hi  # noise only on b
    assert abs(pro_ref["diff"]["weighted_uniform"][0] - 0.25) < 0.05
    assert diffs[1]["diff"]["a"] == [0.0, 0.0, 0.0]
    table = format_differences(diffs)
    assert "| pro - reference |" in table and "]*" in table and "weighted (uniform)" in table
