#!/usr/bin/env python
"""Reproduce the core result on the shared HH-RLHF data with the bundled MiniLM trunk.

1. split helpful-base + harmless-base pairs by prompt (train / held-out eval);
2. train a helpfulness RM on helpful-base and a harmlessness RM on harmless-base (trl RewardTrainer);
3. score the preferred responses, z-normalise, build w* = softmax(z / 0.1);
4. train the Preference Orchestrator (MiniLM + mean pooling + linear, KL(f || w*));
5. evaluate on the held-out pairs against uniform and best-fixed weights.

Prints one table and writes it to <out>/report.md (and JSON beside it). Each step is skipped when
its output exists, so an interrupted run continues where it stopped (``--force`` redoes all).

    python scripts/experiments/orchestrator_hh.py            # about 40-60 min on 2 CPU cores
    python scripts/experiments/orchestrator_hh.py --quick    # a 5-minute smoke version
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "hh-rlhf"),
                    help="folder with helpful-base_test.jsonl.gz and harmless-base_test.jsonl.gz")
    ap.add_argument("--out", default=str(REPO / "runs" / "hh"), help="output folder")
    ap.add_argument("--encoder", default="minilm", help="RM and orchestrator trunk")
    ap.add_argument("--rm-epochs", type=float, default=1.0)
    ap.add_argument("--rm-max-length", type=int, default=128)
    ap.add_argument("--orch-epochs", type=float, default=2.0)
    ap.add_argument("--orch-max-length", type=int, default=128)
    ap.add_argument("--orch-losses", default="reverse_kl,forward_kl",
                    help="orchestrator losses to train and compare: reverse_kl = KL(f||w*) (paper, saved "
                         "as <out>/orchestrator), forward_kl = KL(w*||f) (<out>/orchestrator_forward_kl)")
    ap.add_argument("--eval-fraction", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true", help="tiny budget smoke run (numbers not meaningful)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args()

    from pro_lib.config import build_config
    from pro_lib.data import DataConfig, prepare_data
    from pro_lib.evaluation import OrchestratorEvalConfig, evaluate_orchestrator, format_table
    from pro_lib.orchestrator import OrchestratorTrainConfig, train_orchestrator
    from pro_lib.rewards import RewardTrainConfig, reward_eval_table, train_reward_model
    from pro_lib.suite import ScoreConfig, score_and_target

    data_dir, out = Path(args.data_dir), Path(args.out)
    files = {"helpful": data_dir / "helpful-base_test.jsonl.gz", "harmless": data_dir / "harmless-base_test.jsonl.gz"}
    for f in files.values():
        if not f.is_file():
            sys.exit(f"error: {f} not found; pass --data-dir pointing at the HH-RLHF files")
    if args.force and out.exists():
        shutil.rmtree(out)
    limit = 120 if args.quick else None
    t0 = time.time()

    def step(name, marker: Path, fn):
        if marker.exists():
            print(f"[skip] {name}: {marker} exists")
            return json.loads(marker.read_text()) if marker.suffix == ".json" else None
        print(f"[run ] {name}")
        return fn()

    step("prepare data", out / "data" / "data_report.json", lambda: prepare_data(build_config(DataConfig, {
        "sources": [f"hh:{files['helpful']}", f"hh:{files['harmless']}"], "output_dir": str(out / "data"),
        "eval_fraction": args.eval_fraction, "limit_per_source": limit})))

    rm_rows = []
    for objective, subset in (("helpful", "helpful-base"), ("harmless", "harmless-base")):
        rm_dir = out / "rewards" / objective
        m = step(f"reward model {objective}", rm_dir / "eval_metrics.json", lambda: train_reward_model(
            build_config(RewardTrainConfig, {
                "objective": objective, "data": [str(out / "data" / "train.jsonl")],
                "eval_data": [str(out / "data" / "eval.jsonl")], "source": subset,
                "base_model": args.encoder, "output_dir": str(rm_dir), "max_length": args.rm_max_length,
                "epochs": 0.3 if args.quick else args.rm_epochs, "learning_rate": 5e-5, "batch_size": 16})))
        rm_rows.append(m)

    step("score + targets", out / "targets" / "target_report.json", lambda: score_and_target(build_config(
        ScoreConfig, {"data": str(out / "data" / "train.jsonl"), "output_dir": str(out / "targets"),
                      "objectives": [f"{o}={out / 'rewards' / o}" for o in ("helpful", "harmless")],
                      "max_length": args.rm_max_length})))
    # The suite is published at <out>/suite for later stages (WIC, MORLHF).
    if not (out / "suite").exists():
        shutil.copytree(out / "targets" / "suite", out / "suite")

    results = {}
    for loss in [x.strip() for x in args.orch_losses.split(",") if x.strip()]:
        suffix = "" if loss == "reverse_kl" else f"_{loss}"
        odir, edir = out / f"orchestrator{suffix}", out / f"orchestrator_eval{suffix}"
        step(f"orchestrator ({loss})", odir / "train_metrics.json", lambda: train_orchestrator(build_config(
            OrchestratorTrainConfig, {"targets": str(out / "targets"), "backbone": args.encoder, "loss": loss,
                                      "output_dir": str(odir), "max_length": args.orch_max_length,
                                      "epochs": 0.3 if args.quick else args.orch_epochs,
                                      "learning_rate": 5e-5, "batch_size": 32})))
        step(f"evaluate ({loss})", edir / "eval.json", lambda: evaluate_orchestrator(build_config(
            OrchestratorEvalConfig, {"orchestrator": str(odir), "data": str(out / "data" / "eval.jsonl"),
                                     "train_targets": str(out / "targets"), "output_dir": str(edir)})))
        results[loss] = json.loads((edir / "eval.json").read_text())
    result = next(iter(results.values()))

    report = ["# PRO core on HH-RLHF (shared test split, MiniLM trunk)", "",
              "## Reward models: held-out pairwise accuracy (95% Wilson interval)", "```",
              reward_eval_table(rm_rows), "```", "",
              "## Preference Orchestrator vs fixed weights on held-out prompts"]
    from pro_lib.data import format_source_mix

    for loss, res in results.items():
        report += ["", f"orchestrator trained with {loss}" + (" (paper)" if loss == "reverse_kl" else ""),
                   f"held-out prompts by source: {format_source_mix(res.get('source_mix') or {})}",
                   "```", format_table(res), "```"]
        for src, sub in (res.get("by_source") or {}).items():
            report += [f"{src} only:", "```", format_table(sub), "```"]
        if "mse_ratio_ci_high" in res:
            lo, hi = res["mse_ratio_ci_low"], res["mse_ratio_ci_high"]
            verdict = ("lower squared error than the best fixed vector (interval below 1)" if hi < 1 else
                       "higher squared error than the best fixed vector (interval above 1)" if lo > 1 else
                       "no significant difference from the best fixed vector (interval contains 1)")
            report.append(f"verdict ({loss}): {verdict}")
    report += ["",
              f"best fixed vector (mean w* on train): {dict(zip(result['objectives'], map(lambda v: round(v, 3), result['best_fixed_vector'])))}",
              f"wall time of this invocation: {time.time() - t0:.0f} s" + (" (--quick: not meaningful)" if args.quick else "")]
    text = "\n".join(report)
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
