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


def _morlhf_hh_script():
    """scripts/experiments/morlhf_hh.py as a module (it is a script, not part of pro_lib)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "morlhf_hh.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("morlhf_hh_script", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def _fake_seed_eval(folder, seed, prompts, shifts, rng):
    """An evaluation folder as evaluate_morlhf writes it: eval.json (with its paired differences) + samples.jsonl
    with per-sample scores."""
    import json

    folder.mkdir(parents=True)
    runs = {"PRO": f"/r/seed-{seed}/pro-morlhf", "plain": f"/r/seed-{seed}/morlhf",
            "shuf": f"/r/seed-{seed}/pro-morlhf-shuffled"}
    base = rng.normal(size=(len(prompts), 2))
    w = {"uniform": np.tile([0.5, 0.5], (len(prompts), 1)), "orchestrator": np.tile([0.25, 0.75], (len(prompts), 1))}
    diffs = paired_differences({label: base + shift for label, shift in shifts.items()}, w, ["a", "b"], n_boot=200)
    (folder / "eval.json").write_text(json.dumps({"objectives": ["a", "b"], "weightings": ["uniform", "orchestrator"],
                                                  "runs": {k: v for k, v in runs.items() if k in shifts},
                                                  "differences": diffs}))
    with open(folder / "samples.jsonl", "w") as f:
        for label, shift in shifts.items():
            for p, z in zip(prompts, base + shift):
                f.write(json.dumps({"policy": label, "prompt": p, "response": "r", "scores": {"a": z[0], "b": z[1]},
                                    "weighted": {"uniform": z.mean(), "orchestrator": 0.25 * z[0] + 0.75 * z[1]}})
                        + "\n")


def test_repeat_seed_summary_pools_runs_not_only_prompts(tmp_path):
    """morlhf_hh.py --seeds: per seed the paired difference over prompts; pooled, an interval that also
    covers the spread between seeds (a control that differs by seed must not look like a sure effect)."""
    import json

    import pytest

    mod = _morlhf_hh_script()
    rng = np.random.default_rng(0)
    prompts = [f"prompt {i}" for i in range(30)]
    for s, drift in zip((0, 1, 2), (-0.6, 0.0, 0.6)):  # the shuffled run lands elsewhere in every seed
        _fake_seed_eval(tmp_path / f"seed-{s}" / "eval", s, prompts,
                        {"reference": 0.0, "shuf": 1.0 + drift, "PRO": 1.0, "plain": 0.0}, rng)
    mod.seeds_summary(tmp_path, [0, 1, 2], n_boot=500)
    res = json.loads((tmp_path / "seeds.json").read_text())
    pro_ref = res["pairs"]["pro-morlhf - reference"]["a"]
    assert pro_ref["pooled"] == pytest.approx([1.0, 1.0, 1.0])  # the same shift in every seed and prompt
    ctrl = res["pairs"]["pro-morlhf - pro-morlhf-shuffled"]["weighted (orchestrator)"]
    assert [ctrl[s][0] for s in "012"] == pytest.approx([0.6, 0.0, -0.6])
    for s in "012":
        assert ctrl[s][1] == pytest.approx(ctrl[s][0]) == pytest.approx(ctrl[s][2])  # no spread within a seed
    # A seed's row is its own evaluation's paired difference; eval.json holds shuf - PRO (run order), so the
    # PRO - shuffled rows above came through the reversal.
    seed0 = json.loads((tmp_path / "seed-0" / "eval" / "eval.json").read_text())["differences"]
    assert any((d["a"], d["b"]) == ("shuf", "PRO") for d in seed0)
    ref = next(d for d in seed0 if (d["a"], d["b"]) == ("PRO", "reference"))["diff"]["weighted_uniform"]
    assert res["pairs"]["pro-morlhf - reference"]["weighted (uniform)"]["0"] == pytest.approx(ref)
    m, lo, hi = ctrl["pooled"]
    assert m == pytest.approx(0.0, abs=1e-9) and lo < -0.3 and hi > 0.3  # the seeds' spread is in the interval
    table = (tmp_path / "seeds_summary.md").read_text()
    assert "## pro-morlhf - pro-morlhf-shuffled" in table and "| pooled |" in table

    # A seed evaluated on other prompts cannot be paired: refused by name.
    _fake_seed_eval(tmp_path / "seed-3" / "eval", 3, prompts[::-1], {"reference": 0.0, "PRO": 1.0}, rng)
    with pytest.raises(SystemExit, match="seed 3 was evaluated on other held-out prompts"):
        mod.seeds_summary(tmp_path, [0, 3], n_boot=50)
