#!/usr/bin/env python
"""The smallest HH budget at which PRO-WIC follows its weights (issue 14, item 5).

For each budget of configs/wic_hh_budget.yaml, cheapest first: PRO-WIC offline SFT of the bundled
SmolLM2-135M on the HH split of scripts/experiments/orchestrator_hh.py (its reward suite gives the tags),
then the weight response at the corners on one fixed held-out sample (random, stratified by source):
the mean score on an objective with all the weight on it minus with the weight on the other, with a
95% bootstrap interval over prompts. A budget "works" when both intervals are above 0. Each finished
budget is skipped when re-run (``--force`` redoes all; ``--only a,b`` runs some). Writes
<out>/summary.md (one row per budget, including those that did not work) and <out>/<budget>/.

    flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/wic_hh_budget.py   # ~10-25 min a budget, 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def fmt(v: float, ci) -> str:
    lo, hi = ci
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "wic_hh_budget.yaml"),
                    help="base settings, budgets and evaluation (sections)")
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "wic_hh_budget"), help="output folder")
    ap.add_argument("--only", default=None, help="comma-separated budget names to run (default: all, in order)")
    ap.add_argument("--force", action="store_true", help="redo the budgets that run")
    args = ap.parse_args()

    from pro_lib.wic import evaluation as wic_eval, offline as wic_offline
    from pro_lib.config import build_config, load_yaml_config
    from pro_lib.data import format_source_mix
    from pro_lib.errors import ConfigError
    from pro_lib.io import read_json, write_json

    hh, out = Path(args.hh), Path(args.out)
    for what, path in {"reward suite": hh / "suite" / "suite.yaml", "train data": hh / "data" / "train.jsonl",
                       "eval data": hh / "data" / "eval.jsonl"}.items():
        if not path.exists():  # the orchestrator is not needed: offline SFT and corner weights only
            sys.exit(f"error: {what} not found at {path}; run scripts/experiments/orchestrator_hh.py first "
                     "(or pass --hh <its output folder>)")
    cfg = load_yaml_config(args.config)
    budgets = cfg.get("budgets") or {}
    names = list(budgets) if not args.only else [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in names if b not in budgets]
    if unknown:
        raise ConfigError(f"{args.config}: no budget named {unknown}; budgets: {list(budgets)}")
    suite, train, held_out = str(hh / "suite"), str(hh / "data" / "train.jsonl"), str(hh / "data" / "eval.jsonl")

    for name in names:
        d = out / name
        if args.force and d.exists():
            shutil.rmtree(d)
        if (d / "result.json").is_file():
            print(f"[skip] {name}: {d / 'result.json'} exists", flush=True)
            continue
        settings = {**(cfg.get("base") or {}), **(budgets[name] or {})}
        off = build_config(wic_offline.WICOfflineConfig, {**settings, "suite": suite, "data": [train],
                                                          "method": "pro-wic", "output_dir": str(d / "policy")},
                           where=f"{args.config}: budgets.{name}")
        print(f"[run] {name}: {settings}", flush=True)
        t0 = time.time()
        m = wic_offline.train_wic_offline(off)
        sft_s = time.time() - t0
        ev = build_config(wic_eval.WICEvalConfig, {**(cfg.get("eval") or {}), "suite": suite, "data": [held_out],
                                                   "policy": off.output_dir, "output_dir": str(d / "eval")},
                          where=f"{args.config}: eval")
        t0 = time.time()
        wic_eval.evaluate_wic(ev)
        evj = read_json(d / "eval" / "eval.json")
        boot = evj["bootstrap"]
        label = next(iter(boot["weight_response"]))
        write_json(d / "result.json", {
            "budget": name, "settings": settings, "sft_steps": m.get("sft_steps"), "sft_seconds": sft_s,
            "eval_seconds": time.time() - t0, "objectives": evj["objectives"],
            "weight_response": boot["weight_response"][label], "weight_response_ci": boot["weight_response_ci"][label],
            "source_mix": evj.get("source_mix"), "n_examples": m.get("n_examples"),
            "sft_loss_first": m.get("sft_loss_first"), "sft_loss_last": m.get("sft_loss_last")})
        print(f"[done] {name}: weight response {boot['weight_response'][label]}", flush=True)

    # summary: every budget with a result, in the config's order -------------------------------------
    rows, objectives, mix = [], None, None
    for name in budgets:
        f = out / name / "result.json"
        if not f.is_file():
            continue
        r = read_json(f)
        objectives, mix = r["objectives"], r.get("source_mix")
        cis = r["weight_response_ci"]
        works = all(c[0] is not None and c[0] > 0 for c in cis)
        s = r["settings"]
        rows.append(f"| {name} | {s.get('max_examples')} x {s.get('epochs'):g} ({r['sft_steps']} steps) | "
                    f"{s.get('responses', 'chosen')} | {s.get('tau')} | {s.get('lora_r', 0) or 'full'} | "
                    f"{s.get('learning_rate'):g} | {s.get('max_length')} | {r['sft_seconds'] / 60:.1f} | "
                    + " | ".join(fmt(v, c) for v, c in zip(r["weight_response"], cis))
                    + f" | {'**yes**' if works else 'no'} |")
    if not rows:
        print("no budget has finished yet")
        return 0
    lines = ["# PRO-WIC on HH: the budget search (SmolLM2-135M, CPU)", "",
             f"Settings: {Path(args.config).name}; reward suite {suite}. Weight response at the corners on "
             f"held-out prompts ({format_source_mix(mix or {})}), greedy; 95% bootstrap interval over prompts.", "",
             "| budget | pairs x epochs | responses | tau | LoRA r | lr | max tokens | SFT min | "
             + " | ".join(f"weight response {n}" for n in objectives) + " | follows every weight? |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(objectives) + "---|", *rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
