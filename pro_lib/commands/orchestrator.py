"""`pro orchestrator`: train and evaluate the Preference Orchestrator.

    pro orchestrator train --targets runs/targets --output-dir runs/orchestrator
    pro orchestrator eval --orchestrator runs/orchestrator --data runs/data/eval.jsonl --output-dir runs/orchestrator_eval
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    # config modules only: the parser must build without torch (the functions load when run)
    from pro_lib import evaluation
    from pro_lib.commands import add_stage
    from pro_lib.orchestrator_config import OrchestratorTrainConfig

    p = subparsers.add_parser("orchestrator", help="train and evaluate the Preference Orchestrator")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_stage(s, "train", OrchestratorTrainConfig, "pro_lib.orchestrator:train_orchestrator",
              "train the orchestrator on w* targets (KL loss, AdamW, resumable)")

    def show_eval(cfg, m):
        from pro_lib.artifacts import EVAL_FILE

        print(open(os.path.join(cfg.output_dir, "eval_table.txt")).read().rstrip())
        print(f"written: {os.path.join(cfg.output_dir, EVAL_FILE)}")

    add_stage(s, "eval", evaluation.OrchestratorEvalConfig, evaluation.evaluate_orchestrator,
              "held-out KL / MSE / argmax agreement vs uniform and best fixed weights", after=show_eval)
