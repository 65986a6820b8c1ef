"""The outputs of orchestrator_hh.py that the later HH experiments (wic_hh.py, morlhf_hh.py) build on."""

from __future__ import annotations

import sys
from pathlib import Path


def require_hh_outputs(hh: Path) -> dict[str, Path]:
    """Paths of the HH split, reward suite and orchestrator in ``hh``; exits with a how-to-fix if one is missing."""
    need = {"suite": hh / "suite", "orchestrator": hh / "orchestrator",
            "train data": hh / "data" / "train.jsonl", "eval data": hh / "data" / "eval.jsonl"}
    checks = {**need, "suite": hh / "suite" / "suite.yaml"}
    for what, path in checks.items():
        if not path.exists():
            sys.exit(f"error: {what} not found at {path}; run scripts/experiments/orchestrator_hh.py first "
                     f"(or pass --hh <its output folder>)")
    return need
