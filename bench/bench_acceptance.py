#!/usr/bin/env python
"""Online-stage acceptance rate: orchestrator weights vs random preferences, on the same policy and prompts.

The paper's claim: weights the orchestrator picks for a prompt waste less sampling on preference
combinations the prompt cannot satisfy, so more samples clear the rejection bar. One sampling round
(no SFT) per preference source, same policy, prompts, seed and rejection rule (fixed bars: the
offline data's per-objective 0.7 quantile, weighted by each sample's weights); printed as a table
with a 95% interval from a bootstrap over prompts.
The per-round numbers of the full online runs are in runs/wic_hh/*/rounds.jsonl.

    flock /tmp/pro-heavy.lock .venv/bin/python bench/bench_acceptance.py   # needs runs/hh + runs/wic_hh
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prompt_bootstrap_ci(recs, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the acceptance rate, resampling prompts (a prompt's samples are not independent)."""
    import numpy as np

    from pro_lib.evaluation import ratio_interval

    by_prompt: dict[str, list[bool]] = {}
    for r in recs:
        by_prompt.setdefault(r["prompt"], []).append(bool(r["kept"]))
    kept = np.array([sum(v) for v in by_prompt.values()], dtype=float)
    total = np.array([len(v) for v in by_prompt.values()], dtype=float)
    return ratio_interval(kept, total, n_boot=n_boot, seed=seed)  # sum(kept) / sum(total), prompts resampled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=str(REPO / "runs" / "wic_hh" / "pro_wic_offline"), help="WIC policy")
    ap.add_argument("--suite", default=str(REPO / "runs" / "hh" / "suite"))
    ap.add_argument("--orchestrator", default=str(REPO / "runs" / "hh" / "orchestrator"))
    ap.add_argument("--data", default=str(REPO / "runs" / "hh" / "data" / "eval.jsonl"), help="prompt source")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--sources", default="orchestrator,dirichlet,ric,uniform")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for what, p in (("policy", args.policy), ("suite", args.suite), ("orchestrator", args.orchestrator),
                    ("data", args.data)):
        if not Path(p).exists():
            sys.exit(f"error: {what} {p} not found; run scripts/experiments/orchestrator_hh.py and "
                     "scripts/experiments/wic_hh.py first, or pass --{what}")

    import torch

    from pro_lib import wic
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.suite import RewardSuite

    torch.set_num_threads(args.threads)
    pol = wic.WICPolicy.from_pretrained(args.policy)
    suite = RewardSuite.load(args.suite)
    orch = PreferenceOrchestrator.from_pretrained(args.orchestrator)
    pool = wic.load_prompts([args.data])
    prompts = [wic.truncate_prompt(pol.tokenizer, p, 192) for p in wic.round_prompts(pool, 1, args.prompts, 0)]
    rows = []
    for src in args.sources.split(","):
        opts = wic.SampleOptions(preferences=src, samples_per_prompt=args.samples, max_new_tokens=args.new_tokens,
                                 rejection="quantile", quantile=0.7, thresholds="offline", quantile_rule="weighted")
        t0 = time.time()
        recs, m = wic.run_sampling_round(pol, suite, prompts, opts, round_index=1, seed=0, orchestrator=orch)
        rows.append((src, m, time.time() - t0, prompt_bootstrap_ci(recs)))
    print(f"\npolicy={args.policy}  prompts={len(prompts)}  samples/prompt={args.samples}  new tokens={args.new_tokens}")
    print(f"{'preferences':<13} {'samples':>7} {'kept':>5} {'acceptance':>10} {'w.reward':>9} "
          + f" {'95% CI (prompts)':>17} "
          + " ".join(f"{'mean ' + n:>14}" for n in suite.names) + f" {'kept/min':>9} {'seconds':>8}")
    for src, m, secs, (lo, hi) in rows:
        print(f"{src:<13} {m['samples']:>7} {m['kept']:>5} {m['acceptance_rate']:>10.3f} {m['mean_weighted_reward']:>+9.3f} "
              + f" {f'[{lo:.3f}, {hi:.3f}]':>17} "
              + " ".join(f"{m['mean_reward_' + n]:>+14.3f}" for n in suite.names)
              + f" {m['kept'] / secs * 60:>9.1f} {secs:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
