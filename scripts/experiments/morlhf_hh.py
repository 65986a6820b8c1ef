#!/usr/bin/env python
"""PRO-MORLHF vs MORLHF on the shared HH-RLHF data with the bundled SmolLM2-135M-Instruct (CPU).

Needs the outputs of scripts/experiments/orchestrator_hh.py: the prepared split (runs/hh/data),
the HH reward suite (runs/hh/suite: helpful + harmless reward models with normalisation stats) and
the Preference Orchestrator (runs/hh/orchestrator).

1. PRO-MORLHF: RLOO on sum_k f(x)_k r_k(x, y) - beta KL, weights from the orchestrator per prompt;
2. MORLHF: the same with fixed uniform weights;
2b. the control for PRO-MORLHF's claim: the orchestrator's weights shuffled across the training prompts
   (``--weights orchestrator-shuffled``: the same weights, no information about their prompt);
3. held-out evaluation (greedy completions of unseen prompts, a random sample stratified by source; the
   training prompts are one too): mean normalised reward per objective
   and the weighted reward under the orchestrator's and uniform weights, for both policies and the
   untrained reference; training reward curves of both runs on one plot (paper Figure 3).

Settings: configs/morlhf_hh.yaml (a tiny CPU budget; results are a smoke-scale comparison, not the
paper's numbers). Each training run resumes from its last checkpoint when re-run; finished steps
are skipped (``--force`` redoes everything).

    flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/morlhf_hh.py     # ~10-15 min, 2 cores
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
    ap.add_argument("--config", default=str(REPO / "configs" / "morlhf_hh.yaml"), help="shared training settings")
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "morlhf_hh"), help="output folder")
    ap.add_argument("--steps", type=int, default=None, help="override max_steps of the config")
    ap.add_argument("--seed", type=int, default=None, help="override the training seed (repeat runs: use another --out)")
    ap.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts to evaluate on (a random sample "
                                                                   "stratified by source)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args()

    import torch

    from pro_lib.config import build_config, load_yaml_config
    from pro_lib.data import format_source_mix
    from pro_lib.morlhf import MorlhfTrainConfig, train_morlhf
    from pro_lib.morlhf_eval import MorlhfEvalConfig, evaluate_morlhf

    torch.set_num_threads(2)
    hh, out = Path(args.hh), Path(args.out)
    require_hh_outputs(hh)
    if args.force and out.exists():
        shutil.rmtree(out)
    base = load_yaml_config(args.config)
    base.update({"suite": str(hh / "suite"), "orchestrator": str(hh / "orchestrator"),
                 "data": [str(hh / "data" / "train.jsonl")]})
    if args.steps:
        base["max_steps"] = args.steps
    if args.seed is not None:  # a repeat run: training seed (prompt sample, sampling, the shuffle)
        base["seed"] = args.seed
    t0 = time.time()
    timings = {}
    runs = {}
    for method, weights in (("pro-morlhf", "orchestrator"), ("morlhf", "uniform"),
                            ("pro-morlhf-shuffled", "orchestrator-shuffled")):
        cfg = build_config(MorlhfTrainConfig, {**base, "weights": weights, "output_dir": str(out / method)},
                           where=args.config)
        runs[method] = cfg.output_dir
        metrics_file = out / method / "metrics.json"
        if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("steps") == cfg.max_steps:
            print(f"[skip] {method}: {metrics_file} exists")
            continue
        print(f"[run ] {method} ({weights} weights, {cfg.max_steps} steps)", flush=True)
        t = time.time()
        m = train_morlhf(cfg)
        timings[method] = round(time.time() - t, 1)
        print(json.dumps(m, indent=2))

    print("[run ] held-out evaluation", flush=True)
    t = time.time()
    ecfg = build_config(MorlhfEvalConfig, {
        "runs": list(runs.values()), "output_dir": str(out / "eval"),
        "data": [str(hh / "data" / "eval.jsonl")], "split": "all", "max_prompts": args.eval_prompts,
        "max_new_tokens": base.get("max_completion_length", 32)})
    evaluate_morlhf(ecfg)
    timings["eval"] = round(time.time() - t, 1)
    table = (out / "eval" / "eval_table.md").read_text().rstrip()
    summary = [
        "# PRO-MORLHF vs MORLHF on HH-RLHF (SmolLM2-135M-Instruct, CPU)", "",
        f"command: `flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/morlhf_hh.py`; "
        f"settings: {Path(args.config).name}", "",
        "Held-out mean normalised reward (± s.e.m.) of greedy completions, and paired differences with 95% "
        "bootstrap intervals over prompts:", "", table, "",
        "Training curves: eval/curves.png", "",
        "Final training reward (mean of the last quarter of steps):", "",
    ]
    for method, folder in runs.items():
        m = json.loads((Path(folder) / "metrics.json").read_text())
        parts = [f"{k.removeprefix('final_')}={v:+.3f}" for k, v in m.items()
                 if k.startswith("final_") and isinstance(v, float)]
        summary.append(f"- {method}: {m['steps']} steps on {m.get('prompts')} training prompts "
                       f"({format_source_mix(m.get('source_mix') or {})}); first weighted reward "
                       f"{m.get('first_weighted_reward', 0):+.3f}; " + ", ".join(parts))
    summary += ["", f"wall time: {json.dumps(timings)} s (total {time.time() - t0:.0f} s)"]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
