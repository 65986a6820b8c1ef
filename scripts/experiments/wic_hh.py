#!/usr/bin/env python
"""PRO-WIC vs RiC offline vs RiC online vs Rewarded Soups on the shared HH-RLHF data (bundled SmolLM2-135M-Instruct).

Needs the outputs of scripts/experiments/orchestrator_hh.py: the split (runs/hh/data), the HH reward
suite (runs/hh/suite: helpful + harmless reward models with normalisation stats) and the Preference
Orchestrator (runs/hh/orchestrator).

1. offline SFT, the same pairs and SFT settings for every method:
   PRO-WIC offline (w* = softmax(z / 0.1) in the prompt), RiC offline (chosen and rejected responses with
   their own rewards in the prompt, as RiC's released code) and Rewarded Soups (one expert per objective,
   SFT on the responses that objective scores higher);
2. online rounds with the same budget (rounds x prompts x samples): PRO-WIC (orchestrator weights)
   from the PRO-WIC offline policy, RiC online (random preferences on RiC's weight grid) from the RiC
   offline policy (each RiC round also trains on the filtered offline data and earlier rounds' samples,
   as RiC's released code); acceptance rate, mean rewards and wall time per round are logged;
3. evaluation on held-out prompts (a random sample stratified by source): weight-grid sweep, Pareto fronts
   (CSV + PNG), the equal-weight table with an "orchestrator weights" row per method, hypervolume against a
   stated reference.

Settings: configs/wic_hh.yaml (a smoke-scale CPU budget). Each finished step is skipped when re-run
(``--force`` redoes everything). Results: <out>/summary.md, <out>/eval/{eval_table.md,pareto.png,...}.

    flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/wic_hh.py      # ~25 min, 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hh_outputs import require_hh_outputs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "wic_hh.yaml"), help="stage settings (sections)")
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "wic_hh"), help="output folder")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args()

    import torch

    from pro_lib.wic import evaluation as wic_eval, offline as wic_offline, rounds as wic_rounds
    from pro_lib.config import build_config, load_yaml_config
    from pro_lib.io import read_json
    from pro_lib.wic.soups import SoupsTrainConfig, train_soups

    torch.set_num_threads(args.threads)
    hh, out = Path(args.hh), Path(args.out)
    require_hh_outputs(hh)
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_yaml_config(args.config)
    suite_dir, orch = str(hh / "suite"), str(hh / "orchestrator")
    train, held_out = str(hh / "data" / "train.jsonl"), str(hh / "data" / "eval.jsonl")
    timings: dict[str, float] = {}

    def step(name, done: Path, fn):
        if done.exists():
            print(f"[skip] {name}: {done} exists", flush=True)
            return
        print(f"[run] {name}", flush=True)
        t0 = time.time()
        fn()
        timings[name] = time.time() - t0
        print(f"[done] {name} in {timings[name]:.0f}s", flush=True)

    common = {"suite": suite_dir, "data": [train]}
    off = build_config(wic_offline.WICOfflineConfig, {**cfg["offline"], **common, "orchestrator": orch,
                                                      "method": "pro-wic", "output_dir": str(out / "pro_wic_offline")},
                       where="offline")
    step("PRO-WIC offline", out / "pro_wic_offline" / "wic.json", lambda: wic_offline.train_wic_offline(off))
    ric_off = build_config(wic_offline.RiCOfflineConfig, {**cfg["ric_offline"], **common,
                                                          "output_dir": str(out / "ric_offline")}, where="ric_offline")
    step("RiC offline", out / "ric_offline" / "wic.json", lambda: wic_offline.train_wic_offline(ric_off))
    soups_cfg = build_config(SoupsTrainConfig, {**cfg["soups"], **common, "orchestrator": orch,
                                                "output_dir": str(out / "soups")}, where="soups")
    step("Rewarded Soups experts", out / "soups" / "soups.json", lambda: train_soups(soups_cfg))

    on = build_config(wic_rounds.WICOnlineLoopConfig, {**cfg["online"], **common, "orchestrator": orch,
                                                       "policy": off.output_dir,
                                                       "output_dir": str(out / "pro_wic_online")}, where="online")
    step("PRO-WIC online", out / "pro_wic_online" / "metrics.json", lambda: wic_rounds.wic_online(on))
    ric_on = build_config(wic_rounds.RiCOnlineConfig, {**cfg["ric_online"], **common, "policy": ric_off.output_dir,
                                                       "output_dir": str(out / "ric_online")}, where="ric_online")
    step("RiC online", out / "ric_online" / "metrics.json", lambda: wic_rounds.wic_online(ric_on))

    ev = build_config(wic_eval.WICEvalConfig, {
        **cfg["eval"], "suite": suite_dir, "data": [held_out], "orchestrator": orch, "output_dir": str(out / "eval"),
        "policies": [f"RiC offline={ric_off.output_dir}", f"RiC online={out / 'ric_online' / 'policy'}",
                     f"Rewarded Soups={soups_cfg.output_dir}", f"PRO-WIC offline={off.output_dir}",
                     f"PRO-WIC={out / 'pro_wic_online' / 'policy'}"]},
        where="eval")
    step("evaluation", out / "eval" / "eval.json", lambda: wic_eval.evaluate_wic(ev))

    # summary ------------------------------------------------------------------------------------
    evj = read_json(out / "eval" / "eval.json")
    from pro_lib.data import format_source_mix

    lines = ["# PRO-WIC vs RiC vs Rewarded Soups on HH-RLHF (SmolLM2-135M-Instruct, CPU smoke scale)", "",
             f"Settings: {Path(args.config).name}; reward suite {suite_dir}; orchestrator {orch}.", "",
             f"Held-out prompts by source: {format_source_mix(evj.get('source_mix') or {})}.", "",
             (out / "eval" / "eval_table.md").read_text().rstrip(), "",
             "## Online rounds (same budget per method)", "",
             "| method | round | prompts by source | samples | kept | acceptance | mean weighted reward | "
             + " | ".join(f"mean {n}" for n in evj["objectives"]) + " | SFT examples (new + earlier + offline) "
             "| round seconds |",
             "|---|---|---|---|---|---|---|" + "---|" * len(evj["objectives"]) + "---|---|"]
    for label, folder in (("PRO-WIC (orchestrator)", "pro_wic_online"), ("RiC online (random)", "ric_online")):
        m = read_json(out / folder / "metrics.json")
        for r in m["per_round"]:
            sft = (f"{r.get('sft_examples', 0)} ({r.get('sft_examples_new', 0)} + "
                   f"{r.get('sft_examples_previous_rounds', 0)} + {r.get('sft_examples_offline', 0)})")
            lines.append(f"| {label} | {r['round']} | {format_source_mix(r.get('source_mix') or {})} | "
                         f"{r['samples']} | {r['kept']} | {r['acceptance_rate']:.3f} | "
                         f"{r['mean_weighted_reward']:+.3f} | "
                         + " | ".join(f"{r[f'mean_reward_{n}']:+.3f}" for n in evj["objectives"])
                         + f" | {sft} | {r['round_seconds']:.0f} |")
    hv = {lab: v["hypervolume"] for lab, v in evj["methods"].items()}
    best = max(hv, key=hv.get)
    lines += ["", f"Highest hypervolume: **{best}** ({hv[best]:.4f}); all: "
              + ", ".join(f"{k} {v:.4f}" for k, v in hv.items())]
    boot = evj.get("bootstrap") or {}
    if boot:
        behind = [lab for lab, (lo, hi) in boot["diff_to_best_ci"].items() if lab != best and hi < 0]
        tied = [lab for lab in hv if lab != best and lab not in behind]
        verdict = (f"{best} has a significantly larger hypervolume than every other method" if not tied else
                   f"no significant winner: the difference between {best} and {', '.join(tied)} is inside the "
                   f"{boot['level']:.0%} interval")
        follows = [lab for lab, cis in boot["weight_response_ci"].items()
                   if all(c[0] is not None and c[0] > 0 for c in cis)]
        kind = "paired bootstrap" if boot["paired"] else "bootstrap"
        lines += ["", f"Verdict ({kind} over prompts): {verdict}. Methods whose mean scores move toward "
                  f"every objective they are given (weight-response interval above 0): "
                  f"{', '.join(follows) if follows else 'none'}."]
    lines += ["",
              f"Plot: {out / 'eval' / 'pareto.png'}; per-point numbers: {out / 'eval' / 'pareto.csv'}."]
    if timings:
        lines += ["", "Wall time of the steps run now: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"hypervolume": hv}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
