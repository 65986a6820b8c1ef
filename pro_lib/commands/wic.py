"""`pro wic`, `pro ric`, `pro soups` and `pro generate`: weights-in-context policies (PRO-WIC), the RiC and
Rewarded Soups baselines.

    pro wic offline --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite
    pro wic online  --policy runs/wic_offline --orchestrator runs/orchestrator --rounds 2
    pro ric offline --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite
    pro ric online  --policy runs/ric_offline --preferences ric --rounds 2
    pro soups train --policy smollm2 --data runs/data/train.jsonl --suite runs/targets/suite --output-dir runs/soups
    pro wic eval    --policies PRO-WIC=runs/wic_online/policy,RiC=runs/ric_online/policy,Soups=runs/soups
    pro generate "How do I bake bread?" --policy runs/wic_online/policy --weights helpful=0.7,harmless=0.3
    pro generate "How do I bake bread?" --best-of-n 4 --suite runs/targets/suite   # the suite picks the answer
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
    g.add_argument("--best-of-n", type=number_type(int, RANGES["best_of_n"]), default=1, metavar="N",
                   help="sample N answers per prompt and print the one --suite scores highest under the weights "
                        "(sum_k w_k score_k); implies --sample; 1: one answer")
    g.add_argument("--suite", default=None,
                   help="reward suite folder (suite.yaml, e.g. runs/targets/suite) that scores the candidates of "
                        "--best-of-n")
    g.add_argument("--seed", type=number_type(int, RANGES["seed"]), default=None, help="sampling seed")
    g.add_argument("--json", action="store_true", help="print JSON (prompt, weights, response; with --best-of-n "
                                                       "also the scores and every candidate)")

    def generate(args):
        import numpy as np

        from pro_lib.errors import ConfigError
        from pro_lib.targets import check_objectives

        if args.best_of_n > 1 and not args.suite:
            raise ConfigError(f"--best-of-n {args.best_of_n} needs --suite <folder>: the reward suite that scores "
                              "the candidates (e.g. runs/targets/suite, written by `pro rewards score`)")
        policy = wic.WICPolicy.from_pretrained(args.policy, base=args.base)
        if args.weights is not None:
            w = np.repeat(wic.parse_user_weights(args.weights, policy.objectives)[None], len(args.prompts), axis=0)
        else:
            orch = (args.orchestrator or policy.orchestrator or os.environ.get("PRO_ORCHESTRATOR")
                    or DEFAULT_ORCHESTRATOR)
            w = policy.orchestrator_weights(args.prompts, orch)
        sample = args.sample or args.best_of_n > 1  # N greedy answers would be one answer N times
        kw = {"max_new_tokens": args.max_new_tokens, "do_sample": sample, "seed": args.seed}
        if sample:
            kw["temperature"] = args.temperature
        picked = None
        if args.best_of_n > 1:
            from pro_lib.best_of_n import best_of_n, suite_scores
            from pro_lib.suite import RewardSuite

            suite = RewardSuite.load(args.suite)
            check_objectives(suite.names, policy.objectives, got_what=f"the suite {args.suite}",
                             expected_what=f"the policy {args.policy}", fix="use the suite the policy was trained with")
            picked = best_of_n(lambda k: policy.generate(args.prompts, weights=w, num_return_sequences=k, **kw),
                               lambda p, r: suite_scores(suite, p, r), args.prompts, w, args.best_of_n)
            outs = picked.responses
        else:
            outs = policy.generate(args.prompts, weights=w, **kw)
        rows = [{"prompt": p, "weights": dict(zip(policy.objectives, map(float, row))), "response": r}
                for p, row, r in zip(args.prompts, w, outs)]
        if picked is not None:
            for i, rec in enumerate(rows):
                rec.update(best_of_n=args.best_of_n, scores=dict(zip(policy.objectives, map(float, picked.scores[i]))),
                           weighted_score=float(picked.weighted[i, picked.index[i]]),
                           candidates=[{"response": c, "weighted_score": float(v)}
                                       for c, v in zip(picked.candidates[i], picked.weighted[i])])
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        for rec in rows:
            print("weights: " + ", ".join(f"{n}={v:.2f}" for n, v in rec["weights"].items()), file=sys.stderr)
            if picked is not None:
                print(f"best of {args.best_of_n}: weighted score {rec['weighted_score']:+.3f} (candidates: "
                      + ", ".join(f"{c['weighted_score']:+.3f}" for c in rec["candidates"]) + "); scores: "
                      + ", ".join(f"{n}={v:+.3f}" for n, v in rec["scores"].items()), file=sys.stderr)
            print(rec["response"])

    g.set_defaults(func=generate)
