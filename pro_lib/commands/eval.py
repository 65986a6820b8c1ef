"""`pro eval`: evaluations beside the reward models' (an LLM judge behind any OpenAI-compatible endpoint).

    pro eval judge --policy runs/wic_online/policy --reference smollm2 \\
        --base-url https://api.openai.com/v1 --model gpt-4o   # key: $PRO_JUDGE_API_KEY or --api-key-file
    pro eval judge --policy answers.jsonl --reference reference.jsonl --prompts prompts.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --modes pairwise,single
    pro eval genai --endpoint models:/pro-endpoint@champion --data runs/data/eval.jsonl --max-prompts 32
"""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    # config module only at parse time: pro_lib.judge imports numpy and pro_lib.config, never torch/openai
    from pro_lib import genai_eval, judge
    from pro_lib.config import add_dataclass_arguments

    p = subparsers.add_parser("eval", help="LLM-as-judge evaluation (any OpenAI-compatible endpoint)",
                              description="Evaluations beside the reward models'.")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    j = s.add_parser("judge", help="win rate (both orders, length-controlled), 1-10 grades and per-objective "
                                   "verdicts from an LLM judge, with 95%% intervals over prompts",
                     description=(judge.JudgeConfig.__doc__ or "").strip(),
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                     epilog=f"The API key: ${judge.ENV_API_KEY}, --api-key-file / ${judge.ENV_API_KEY_FILE}, or the "
                            f"mounted Secret {judge.SECRET_KEY_FILE}. --api-key works too but shows in the process "
                            "list and shell history. See docs/evaluation.md.")
    add_dataclass_arguments(j, judge.JudgeConfig)
    j.add_argument("--api-key", default=None, help="the judge's API key (prefer the environment or a file); "
                                                   "never logged")
    j.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    j.set_defaults(func=run_judge)
    g = s.add_parser("genai", help="pro-endpoint on held-out prompts through mlflow.genai.evaluate: a trace per "
                                   "prompt with the reward models' assessments, browsable per row in the MLflow UI",
                     description=(genai_eval.GenAIEvalConfig.__doc__ or "").strip(),
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                     epilog="Scorers: one per reward model of the suite (z-scores under its stats) and pro_reward "
                            "(sum_k w_k z_k under the endpoint's weights); code scorers only, no LLM judge. "
                            "See docs/evaluation.md.")
    add_dataclass_arguments(g, genai_eval.GenAIEvalConfig)
    g.set_defaults(func=run_genai)


def run_judge(args) -> None:
    from pro_lib import judge, tracking
    from pro_lib.config import config_from_args, to_dict

    cfg = config_from_args(judge.JudgeConfig, args)
    if args.no_mlflow:
        judge.judge_eval(cfg, api_key=args.api_key)
    else:
        with tracking.stage_run("eval_judge", to_dict(cfg)):
            judge.judge_eval(cfg, api_key=args.api_key)
    out = os.path.join(cfg.output_dir, judge.REPORT_FILE)
    print(open(out, encoding="utf-8").read().rstrip())
    print(f"\nwritten: {cfg.output_dir}/ ({judge.REPORT_FILE}, eval.json, {judge.JUDGEMENTS_FILE})")


def run_genai(args) -> None:
    from pro_lib import genai_eval, tracking
    from pro_lib.config import config_from_args, to_dict

    cfg = config_from_args(genai_eval.GenAIEvalConfig, args)
    with tracking.stage_run("eval_genai", to_dict(cfg), run_name=cfg.run_name) as run:
        out = genai_eval.evaluate_endpoint(cfg)
    print("\n".join(f"{k:>24}: {v:.4f}" for k, v in sorted(out["metrics"].items())))
    print(f"\n{out['rows']} held-out prompts; MLflow run {run.info.run_id} ({tracking.run_url(run.info.run_id)}): "
          "per-row traces and assessments in its Traces tab")
