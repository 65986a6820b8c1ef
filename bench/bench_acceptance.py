#!/usr/bin/env python
"""Online-stage acceptance with controls: does the orchestrator's *prompt-awareness* make more samples
clear the rejection bar, or only the concentration of its weights?

One sampling round per preference source on the same policy, prompts and seed (no SFT):
- orchestrator: f(x) per prompt (PRO-WIC);
- orchestrator-shuffled: the same weights permuted across the prompts (same distribution, no prompt
  information): THE control for "prompt-aware";
- orchestrator-mean: the orchestrator's mean vector, one constant for every prompt;
- dirichlet: Dirichlet(1); ric: uniform over RiC's 0.1 grid; uniform: (1/K, ...).

Every sample is kept or rejected under two rules, on the same samples:
- weighted: w.z >= w.bar, bar = the offline data's per-objective --quantile (a fixed bar; PRO's rule);
- ric: any objective at or above the --quantile of the round's own samples (RiC's released code).

Printed: acceptance with a 95% bootstrap interval over prompts, the difference to the shuffled control
(paired by prompt, 95% interval), the mean weighted reward of all and of the kept samples, the mean
score per objective and how concentrated the weights are (mean largest weight). Prompts: a random
sample of the held-out split stratified by source (its mix is printed). Written to --out as JSON + MD.

--next-round goes past acceptance: for each source, a copy of the policy is fine-tuned on the samples
the weighted rule kept (one online round's SFT), then evaluated greedily on *other* held-out prompts
(the next block of the same stratified order) at the corner weights and under the orchestrator's
weights: the weighted reward under f(x) and the weight response, with paired-bootstrap intervals, each
round's policy against the shuffled control's and against the policy without the round (no SFT).

    # needs runs/hh + a PRO-WIC offline policy (scripts/experiments/wic_hh.py's first step)
    flock /tmp/pro-heavy.lock nice -n 10 .venv/bin/python bench/bench_acceptance.py --next-round
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCES = "orchestrator,orchestrator-shuffled,orchestrator-mean,dirichlet,ric,uniform"


def by_prompt(recs, keep) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-prompt (kept, total) counts in first-seen prompt order."""
    order: dict[str, int] = {}
    for r in recs:
        order.setdefault(r["prompt"], len(order))
    kept, total = np.zeros(len(order)), np.zeros(len(order))
    for r, k in zip(recs, keep):
        i = order[r["prompt"]]
        kept[i] += bool(k)
        total[i] += 1
    return kept, total, list(order)


def next_round(args, kept_recs: dict, pool, sources, suite, orch, out: Path) -> dict:
    """SFT a fresh copy of the policy on each source's kept samples; evaluate on other held-out prompts."""
    import math

    from pro_lib import wic
    from pro_lib.wic import evaluation as wic_eval, rounds as wic_rounds, sft
    from pro_lib.policy import truncate_prompt
    from pro_lib.data import format_source_mix, source_mix
    from pro_lib.pareto import bootstrap_fronts, weight_grid

    names = suite.names
    held = wic_rounds.round_prompts(pool, 2, args.eval_prompts, args.seed, sources=sources)  # not the sampling block
    mix = source_mix(dict(zip(pool, sources))[p] for p in held)
    grid = weight_grid(len(names), 1.0)  # the corners: what the weight response needs
    opts = sft.SFTOptions(epochs=1.0, learning_rate=args.sft_lr, batch_size=8, max_length=256,
                                  max_prompt_tokens=args.max_prompt_tokens, seed=args.seed, save_steps=10_000)
    z_grid, weighted, info = {}, {}, {}
    baseline = "no SFT (the policy as it was)"
    for src, recs in {baseline: None, **kept_recs}.items():
        pol = wic.WICPolicy.from_pretrained(args.policy)
        examples = wic_rounds.kept_examples(pol, recs) if recs is not None else []
        if not examples and baseline in weighted:  # nothing kept: this source's next policy is the unchanged one
            z_grid[src], weighted[src], info[src] = z_grid[baseline], weighted[baseline], {"sft_examples": 0}
            continue
        if examples:
            work = out / "next_round" / src
            shutil.rmtree(work, ignore_errors=True)  # a fresh round each run (no resuming another run's SFT)
            sft.sft_train(pol, examples, opts, work, desc=f"SFT on {src}'s kept samples")
        prompts = [truncate_prompt(pol.tokenizer, p, args.max_prompt_tokens) for p in held]
        res = wic_eval.evaluate_policy_grid(pol, suite, prompts, grid, max_new_tokens=args.new_tokens, batch_size=16,
                                            orchestrator=orch)
        n = len(prompts)
        z_grid[src] = np.asarray(res["z"][: len(grid) * n]).reshape(len(grid), n, len(names))
        ow = np.asarray(res["orchestrator_weights"], dtype=np.float64)
        weighted[src] = (np.asarray(res["z"][len(grid) * n:]) * ow).sum(axis=1)
        info[src] = {"sft_examples": len(examples)}
    boot = bootstrap_fronts(z_grid, grid, [-2.0] * len(names), n_boot=args.n_boot, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(held), (args.n_boot, len(held)))
    control = "orchestrator-shuffled"
    lines = [f"After one SFT round on each source's kept samples (weighted rule): {len(held)} other held-out prompts "
             f"({format_source_mix(mix)}), greedy; weighted reward under the orchestrator's weights and the weight "
             "response, 95% paired-bootstrap intervals over prompts.", "",
             "| preferences | SFT examples | weighted reward under f(x) [95% CI] | minus shuffled [95% CI] | "
             "minus no SFT [95% CI] | " + " | ".join(f"weight response {n} [95% CI]" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * len(names)]

    def paired(a: str, b: str) -> list[float]:
        d = weighted[a] - weighted[b]
        db = d[idx].mean(axis=1)
        return [float(d.mean()), float(np.percentile(db, 2.5)), float(np.percentile(db, 97.5))]

    for src in weighted:
        wr = weighted[src]
        b = wr[idx].mean(axis=1)
        row = info[src]
        row.update({"weighted_reward": float(wr.mean()), "weighted_reward_ci": [float(np.percentile(b, 2.5)),
                                                                                float(np.percentile(b, 97.5))],
                    "weight_response": boot["weight_response"][src],
                    "weight_response_ci": boot["weight_response_ci"][src]})
        dtxt = "(control)" if src == control else "n/a"
        if src not in (control, baseline) and control in weighted:
            row["diff_vs_shuffled"] = paired(src, control)
            dtxt = "{:+.3f} [{:+.3f}, {:+.3f}]".format(*row["diff_vs_shuffled"])
        btxt = "(reference)"
        if src != baseline:
            row["diff_vs_no_sft"] = paired(src, baseline)
            btxt = "{:+.3f} [{:+.3f}, {:+.3f}]".format(*row["diff_vs_no_sft"])
        resp = " | ".join("n/a" if v is None or c[0] is None or math.isnan(v)
                          else f"{v:+.3f} [{c[0]:+.3f}, {c[1]:+.3f}]"
                          for v, c in zip(row["weight_response"], row["weight_response_ci"]))
        lo, hi = row["weighted_reward_ci"]
        lines.append(f"| {src} | {row['sft_examples']} | {row['weighted_reward']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                     f"{dtxt} | {btxt} | {resp} |")
    return {"source_mix": mix, "per_source": info, "table": "\n".join(lines) + "\n"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=str(REPO / "runs" / "wic_hh" / "pro_wic_offline"), help="WIC policy")
    ap.add_argument("--suite", default=str(REPO / "runs" / "hh" / "suite"))
    ap.add_argument("--orchestrator", default=str(REPO / "runs" / "hh" / "orchestrator"))
    ap.add_argument("--data", default=str(REPO / "runs" / "hh" / "data" / "eval.jsonl"), help="prompt source")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--max-prompt-tokens", type=int, default=128)
    ap.add_argument("--quantile", type=float, default=0.7, help="quantile of both rules (RiC: 0.7)")
    ap.add_argument("--sources", default=SOURCES)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "runs" / "acceptance"), help="folder for acceptance.{json,md}")
    ap.add_argument("--next-round", action="store_true", help="also SFT a copy of the policy on each source's kept "
                                                               "samples and evaluate it on other held-out prompts")
    ap.add_argument("--eval-prompts", type=int, default=16, help="held-out prompts of the --next-round evaluation")
    ap.add_argument("--sft-lr", type=float, default=5e-5, help="--next-round SFT learning rate (wic_hh.yaml's)")
    args = ap.parse_args()
    for what, p in (("policy", args.policy), ("suite", args.suite), ("orchestrator", args.orchestrator),
                    ("data", args.data)):
        if not Path(p).exists():
            sys.exit(f"error: {what} {p} not found; run scripts/experiments/orchestrator_hh.py and the PRO-WIC "
                     f"offline step of scripts/experiments/wic_hh.py first, or pass --{what}")

    import torch

    from pro_lib import wic
    from pro_lib.wic import rounds as wic_rounds
    from pro_lib.policy import truncate_prompt
    from pro_lib.data import format_source_mix, load_prompt_pool, source_mix
    from pro_lib.io import atomic_write_text, write_json
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.suite import RewardSuite

    torch.set_num_threads(args.threads)
    pol = wic.WICPolicy.from_pretrained(args.policy)
    suite = RewardSuite.load(args.suite)
    orch = PreferenceOrchestrator.from_pretrained(args.orchestrator)
    pool, sources = load_prompt_pool([args.data])
    chosen = wic_rounds.round_prompts(pool, 1, args.prompts, args.seed, sources=sources)
    mix = source_mix(dict(zip(pool, sources))[p] for p in chosen)
    prompts = [truncate_prompt(pol.tokenizer, p, args.max_prompt_tokens) for p in chosen]
    bars = np.array([np.interp(args.quantile * 100, np.arange(101), pol.score_percentiles[n]) for n in suite.names])
    rules = {
        "weighted": wic_rounds.WICSampleConfig(rejection="quantile", quantile=args.quantile, quantile_rule="weighted"),
        "ric": wic_rounds.WICSampleConfig(rejection="quantile", quantile=args.quantile, quantile_rule="any"),
    }
    rng = np.random.default_rng(args.seed)
    idx = None
    rows, per_prompt, kept_recs = [], {}, {}
    for src in args.sources.split(","):
        opts = wic_rounds.WICSampleConfig(preferences=src, samples_per_prompt=args.samples,
                                        max_new_tokens=args.new_tokens, rejection="none")
        t0 = time.time()
        recs, m = wic_rounds.run_sampling_round(pol, suite, prompts, opts, round_index=1, seed=args.seed,
                                                orchestrator=orch)
        z = np.stack([r["z"] for r in recs])
        w = np.stack([r["weights"] for r in recs])
        groups = np.repeat(np.arange(len(prompts)), args.samples)
        weighted = (z * w).sum(axis=1)
        row = {"source": src, "samples": len(recs), "seconds": time.time() - t0,
               "mean_weighted_reward": float(weighted.mean()), "mean_max_weight": float(w.max(axis=1).mean()),
               **{f"mean_{n}": float(z[:, k].mean()) for k, n in enumerate(suite.names)}}
        for rule, ropts in rules.items():
            keep = wic_rounds.rejection_mask(z, w, groups, ropts, bars if rule == "weighted" else None)
            if rule == "weighted":
                kept_recs[src] = [r for r, k in zip(recs, keep) if k]
            kept, total, _ = by_prompt(recs, keep)
            per_prompt[(src, rule)] = (kept, total)
            if idx is None:
                idx = rng.integers(0, len(kept), (args.n_boot, len(kept)))
            boot = kept[idx].sum(axis=1) / total[idx].sum(axis=1)
            row[rule] = {"kept": int(keep.sum()), "acceptance": float(keep.mean()),
                         "ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                         "mean_weighted_reward_kept": float(weighted[keep].mean()) if keep.any() else None}
        rows.append(row)
        print(f"{src}: weighted {row['weighted']['acceptance']:.3f}, ric {row['ric']['acceptance']:.3f} "
              f"({row['seconds']:.0f}s)", flush=True)
    control = "orchestrator-shuffled"
    for row in rows:
        for rule in rules:
            if (control, rule) not in per_prompt or row["source"] == control:
                continue
            ka, ta = per_prompt[(row["source"], rule)]
            kb, tb = per_prompt[(control, rule)]
            d = kb[idx].sum(axis=1) / tb[idx].sum(axis=1)
            diff = ka[idx].sum(axis=1) / ta[idx].sum(axis=1) - d
            row[rule]["diff_vs_shuffled"] = float(ka.sum() / ta.sum() - kb.sum() / tb.sum())
            row[rule]["diff_vs_shuffled_ci"] = [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]

    def cell(r, rule):
        a = r[rule]
        d = a.get("diff_vs_shuffled")
        dtxt = "(control)" if r["source"] == control else ("n/a" if d is None else
                                                          f"{d:+.3f} [{a['diff_vs_shuffled_ci'][0]:+.3f}, "
                                                          f"{a['diff_vs_shuffled_ci'][1]:+.3f}]")
        return f"{a['kept']} | {a['acceptance']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] | {dtxt}"

    head = (f"policy {args.policy}; {len(prompts)} held-out prompts ({format_source_mix(mix)}) x {args.samples} "
            f"samples, {args.new_tokens} new tokens, seed {args.seed}; quantile {args.quantile}; fixed bars "
            f"(weighted rule) {dict(zip(suite.names, np.round(bars, 3).tolist()))}; 95% intervals: bootstrap over "
            f"prompts ({args.n_boot} resamples), differences paired by prompt.\n\n")
    table = ("| preferences | mean max weight | mean weighted reward | "
             + " | ".join(f"mean {n}" for n in suite.names)
             + " | kept (weighted rule) | acceptance [95% CI] | minus shuffled [95% CI] "
             "| kept (RiC rule) | acceptance [95% CI] | minus shuffled [95% CI] |\n"
             + "|---|---|---|" + "---|" * len(suite.names) + "---|---|---|---|---|---|\n")
    for r in rows:
        table += (f"| {r['source']} | {r['mean_max_weight']:.3f} | {r['mean_weighted_reward']:+.3f} | "
                  + " | ".join(f"{r[f'mean_{n}']:+.3f}" for n in suite.names)
                  + f" | {cell(r, 'weighted')} | {cell(r, 'ric')} |\n")
    out = Path(args.out)
    nxt = next_round(args, kept_recs, pool, sources, suite, orch, out) if args.next_round else None
    if nxt:
        table += "\n" + nxt["table"]
    write_json(out / "acceptance.json", {"args": vars(args), "source_mix": mix, "bars": bars.tolist(), "rows": rows,
                                         "next_round": nxt})
    atomic_write_text(out / "acceptance.md", head + table)
    print("\n" + head + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
