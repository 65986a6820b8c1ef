"""A tiny pro-endpoint folder (orchestrator, reward-model suite, WIC policy), built from configs in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from helpers.ui import build_orchestrator, build_policy, build_reward_model

NAMES = ["helpful", "harmless", "humor"]
STATS = {"helpful": [0.1, 2.0], "harmless": [-0.2, 0.5], "humor": [0.0, 1.0]}


def build_tiny_endpoint(root: Path, names=NAMES) -> dict[str, Path]:
    """``root/{orchestrator,rm_<objective>,suite,policy,endpoint}``; the suite has normalisation stats."""
    from pro_lib import serving

    root = Path(root)
    build_orchestrator(root / "orchestrator", names)
    objs = []
    for i, n in enumerate(names):
        rm = build_reward_model(root / f"rm_{n}", seed=i)
        (rm / "pro_reward.json").write_text(json.dumps({"objective": n, "input_format": "concat", "max_length": 64}))
        objs.append({"name": n, "model": str(rm), "input_format": "concat", "max_length": 64})
    (root / "suite").mkdir()
    (root / "suite" / "suite.yaml").write_text(yaml.safe_dump({"objectives": objs,
                                                               "stats": {n: STATS[n] for n in names}}))
    build_policy(root / "policy", names)
    serving.build_endpoint(root / "endpoint", orchestrator=root / "orchestrator", policy=root / "policy",
                           suite=root / "suite")
    return {n: root / n for n in ("orchestrator", "suite", "policy", "endpoint")}
