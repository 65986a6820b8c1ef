"""`pro weights`: the Preference Orchestrator's weight per objective for prompts.

    pro weights "How do I bake bread?" "Tell me a joke" [--orchestrator models:/pro-orchestrator@champion] [--json]
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    from pro_lib.registry import ORCHESTRATOR_MODEL, model_ref

    p = subparsers.add_parser("weights", help="print the orchestrator's weight per objective for prompts",
                              description="Print the Preference Orchestrator's weights for one or more prompts.")
    p.add_argument("prompts", nargs="+", help="prompt text(s)")
    p.add_argument("--orchestrator", default=os.environ.get("PRO_ORCHESTRATOR", model_ref(ORCHESTRATOR_MODEL)),
                   help="orchestrator folder or models:/ ref (env PRO_ORCHESTRATOR)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=weights)


def weights(args) -> None:
    from pro_lib import orchestrator
    from pro_lib.commands import print_metrics

    orch = orchestrator.PreferenceOrchestrator.from_pretrained(args.orchestrator)
    w = orch.predict(args.prompts)
    if args.json:
        print_metrics([dict(zip(orch.objectives, map(float, row))) for row in w])
        return
    width = max(len(n) for n in orch.objectives)
    for prompt, row in zip(args.prompts, w):
        print(prompt if len(prompt) <= 70 else prompt[:67] + "...")
        for name, value in zip(orch.objectives, row):
            print(f"  {name:<{width}}  {value:6.3f}  {'#' * int(round(value * 40))}")
