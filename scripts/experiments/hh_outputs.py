"""The outputs of orchestrator_hh.py that the later HH experiments (wic_hh.py, morlhf_hh.py) build on."""

from __future__ import annotations

import sys
from pathlib import Path


def require_hh_outputs(hh: Path) -> None:
    """Exit with a how-to-fix unless ``hh`` holds the HH split, the reward suite and the orchestrator."""
    need = {"suite": hh / "suite" / "suite.yaml", "orchestrator": hh / "orchestrator",
            "train data": hh / "data" / "train.jsonl", "eval data": hh / "data" / "eval.jsonl"}
    for what, path in need.items():
        if not path.exists():
            sys.exit(f"error: {what} not found at {path}; run scripts/experiments/orchestrator_hh.py first "
                     f"(or pass --hh <its output folder>)")
