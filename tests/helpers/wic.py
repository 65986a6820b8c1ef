"""Tiny stand-ins for the WIC tests: two objectives, an in-process reward suite, an orchestrator stand-in."""

from __future__ import annotations

import numpy as np

from pro_lib.errors import ConfigError
from pro_lib.suite import RewardSuite

NAMES = ["helpful", "harmless"]


def _helpful(prompts, responses):
    return [float(r.split().count("help") - 0.1 * len(r.split())) for r in responses]


def _harmless(prompts, responses):
    return [float(r.split().count("safe") - r.split().count("harm")) for r in responses]


def make_suite():
    return RewardSuite.from_functions({"helpful": _helpful, "harmless": _harmless},
                                      stats={"helpful": (0.0, 1.0), "harmless": (0.0, 1.0)})


class StandInOrchestrator:
    """What the WIC code needs of a PreferenceOrchestrator: objectives, predict, check_objectives."""

    def __init__(self, names=NAMES):
        self.objectives, self.K, self.calls = list(names), len(names), 0

    def predict(self, prompts, batch_size=64):
        self.calls += 1
        return np.array([[0.8, 0.2] if "help" in p else [0.2, 0.8] for p in prompts], dtype=np.float32)

    def check_objectives(self, names, what=""):
        if list(names) != self.objectives:
            raise ConfigError(f"K mismatch: {names} vs {self.objectives}")


def write_tiny_pairs(path, n: int):
    """n helpful and n harmless toy preference pairs as JSONL at ``path`` (the WIC / adapter tests' data)."""
    import json

    rows = []
    for i in range(n):
        rows.append({"prompt": f"\n\nHuman: can you help me {i} ?\n\nAssistant:", "chosen": "yes i can help you help",
                     "rejected": "no"})
        rows.append({"prompt": f"\n\nHuman: tell me about harm {i} ?\n\nAssistant:",
                     "chosen": "that is not safe . sorry", "rejected": "yes harm harm"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
