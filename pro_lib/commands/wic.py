"""`pro wic`, `pro ric`, `pro soups` and `pro generate`: weights-in-context policies (PRO-WIC), the RiC and
Rewarded Soups baselines.

    pro wic offline --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite
    pro wic online  --policy runs/wic_offline --orchestrator runs/orchestrator --rounds 2
    pro ric offline --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite
    pro ric online  --policy runs/ric_offline --preferences ric --rounds 2
    pro soups train --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite --output-dir runs/soups
    pro wic eval    --policies PRO-WIC=runs/wic_online/policy,RiC=runs/ric_online/policy,Soups=runs/soups
    pro generate "How do I bake bread?" --policy runs/wic_online/policy --weights helpful=0.7,harmless=0.3
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pro_lib.registry import ORCHESTRATOR_MODEL, model_ref, policy_model_name

DEFAULT_POLICY = model_ref(policy_model_name("pro-wic"))
DEFAULT_ORCHESTRATOR = model_ref(ORCHESTRATOR_MODEL)


def _show_policy(cfg, m):
    from pro_lib.commands import print_metrics

    print_metrics(m)
    print(f"policy saved to {cfg.output_dir}")


def _show_online(cfg, m):
    from pro_lib.io import read_jsonl

    rounds = Path(cfg.output_dir) / "rounds.jsonl"
    rows = read_jsonl(rounds) if rounds.is_file() else []
    print(f"{'round':>5} {'samples':>8} {'kept':>6} {'accept':>7} {'w.reward':>9} {'seconds':>8}")
    for r in rows:
        print(f"{r['round']:>5} {r['samples']:>8} {r['kept']:>6} {r['acceptance_rate']:>7.3f} "
              f"{r['mean_weighted_reward']:>9.3f} {r.get('round_seconds', 0):>8.0f}")
    print(f"final policy: {Path(cfg.output_dir) / 'policy'}")


def _show_eval(cfg, m):
    from pro_lib.artifacts import EVAL_FILE

    out = Path(cfg.output_dir)
    print((out / "eval_table.md").read_text().rstrip())
    print(f"fronts: {out / 'pareto.png'}, {out / 'pareto.csv'}; numbers: {out / EVAL_FILE}")


def register(subparsers) -> None:
    from pro_lib import wic
    from pro_lib.wic import evaluation, offline, rounds
    from pro_lib.commands import add_stage

    p = subparsers.add_parser("wic", help="PRO-WIC: weights in context (offline SFT, online rounds, Pareto eval)",
                              description=(wic.__doc__ or "").split("\n\n")[0])
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_stage(s, "offline", offline.WICOfflineConfig, offline.train_wic_offline,
              "offline stage: SFT on preferred responses with w* in the prompt (Eq. 10)", after=_show_policy)
    add_stage(s, "online", rounds.WICOnlineLoopConfig, rounds.wic_online,
              "online stage: E rounds of orchestrator weights -> samples -> rejection -> SFT (Eq. 11)",
              after=_show_online)
    add_stage(s, "sample", rounds.WICSampleConfig, rounds.sample_online_round,
              "one online round's sampling half (weights, samples, scores, rejection)")
    add_stage(s, "sft", rounds.WICOnlineConfig, rounds.train_wic_online,
              "one online round's SFT half (fine-tune on kept samples)", after=_show_policy)
    add_stage(s, "eval", evaluation.WICEvalConfig, evaluation.evaluate_wic,
              "weight-grid sweep on held-out prompts: Pareto fronts (CSV, PNG), equal-weight table, hypervolume",
              after=_show_eval)

    p = subparsers.add_parser("ric", help="RiC baselines: rewards-in-context offline SFT, online with random preferences",
                              description="Rewards-in-Context (RiC) baselines on the same machinery as PRO-WIC.")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_stage(s, "offline", offline.RiCOfflineConfig, offline.train_wic_offline,
              "RiC offline: SFT with the responses' own rewards in the prompt", after=_show_policy)
    add_stage(s, "online", rounds.RiCOnlineConfig, rounds.wic_online,
              "RiC online: E rounds with random preferences (RiC grid or Dirichlet)", after=_show_online)

    from pro_lib.wic import soups

    p = subparsers.add_parser("soups", help="Rewarded Soups baseline: one expert per objective, interpolated at test time",
                              description=(soups.__doc__ or "").split("\n\n")[0])
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_stage(s, "train", soups.SoupsTrainConfig, soups.train_soups,
              "train one expert per objective (SFT on the responses that objective scores higher)")
    add_stage(s, "eval", evaluation.WICEvalConfig, evaluation.evaluate_wic,
              "weight-grid sweep of soups (and WIC policies) on held-out prompts: the same fronts and hypervolume "
              "as `pro wic eval`", after=_show_eval)

    g = subparsers.add_parser(
        "generate", help="generate with a WIC policy under given (or the orchestrator's) weights",
        description="Generate a response with a weights-in-context policy. Without --weights the Preference "
                    "Orchestrator chooses the weights for each prompt.",
        epilog='example: pro generate "Is it safe to mix bleach and vinegar?" --weights helpful=0.3,harmless=0.7')
    g.add_argument("prompts", nargs="+", help="prompt text(s)")
    g.add_argument("--policy", default=os.environ.get("PRO_POLICY", DEFAULT_POLICY),
                   help="WIC policy folder or models:/ ref, a full model or a LoRA adapter (env PRO_POLICY)")
    g.add_argument("--base", default=None,
                   help="a LoRA adapter policy: the base to load it on instead of the one it records (a folder, "
                        "'smollm2' or models:/ ref with the same content; checked)")
    g.add_argument("--weights", default=None,
                   help="helpful=0.7,harmless=0.3 or 0.7,0.3 (renormalised); default: the orchestrator's")
    g.add_argument("--orchestrator", default=None,
                   help="orchestrator folder or models:/ ref (default: the one recorded in the policy, "
                        f"else env PRO_ORCHESTRATOR, else {DEFAULT_ORCHESTRATOR})")
    from pro_lib.config import RANGES, number_type

    g.add_argument("--max-new-tokens", type=number_type(int, RANGES["max_new_tokens"]), default=128,
                   help="max new tokens")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=number_type(float, RANGES["temperature"]), default=0.8, help="sampling temperature (with --sample)")
    g.add_argument("--json", action="store_true", help="print JSON (prompt, weights, response)")

    def generate(args):
        import numpy as np

        policy = wic.WICPolicy.from_pretrained(args.policy, base=args.base)
        if args.weights is not None:
            w = np.repeat(wic.parse_user_weights(args.weights, policy.objectives)[None], len(args.prompts), axis=0)
        else:
            orch = (args.orchestrator or policy.orchestrator or os.environ.get("PRO_ORCHESTRATOR")
                    or DEFAULT_ORCHESTRATOR)
            w = policy.orchestrator_weights(args.prompts, orch)
        kw = {"max_new_tokens": args.max_new_tokens, "do_sample": args.sample}
        if args.sample:
            kw["temperature"] = args.temperature
        outs = policy.generate(args.prompts, weights=w, **kw)
        if args.json:
            print(json.dumps([{"prompt": p, "weights": dict(zip(policy.objectives, map(float, row))), "response": r}
                              for p, row, r in zip(args.prompts, w, outs)], indent=2))
            return
        for p, row, r in zip(args.prompts, w, outs):
            print("weights: " + ", ".join(f"{n}={v:.2f}" for n, v in zip(policy.objectives, row)), file=sys.stderr)
            print(r)

    g.set_defaults(func=generate)
