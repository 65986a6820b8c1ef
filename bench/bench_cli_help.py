#!/usr/bin/env python
"""Start-up cost of `pro ... --help` next to importing torch, measured side by side in one run.

`pro --help` and the subcommands' --help build the parser from the config dataclasses only; the
stage functions (torch, transformers, trl, mlflow) load when a command runs. Each row is the
median wall time of fresh interpreters, alternating between the commands so that machine load
hits them alike; the last column says whether torch was imported (python -X importtime).

    .venv/bin/python bench/bench_cli_help.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "pro --help": ["-m", "pro_lib.cli", "--help"],
    "pro orchestrator train --help": ["-m", "pro_lib.cli", "orchestrator", "train", "--help"],
    "pro wic offline --help": ["-m", "pro_lib.cli", "wic", "offline", "--help"],
    "pro pipeline compile --help": ["-m", "pro_lib.cli", "pipeline", "compile", "--help"],
    "python -c 'import torch' (reference)": ["-c", "import torch"],
}


def run(args: list[str]) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - t0
    torch = re.search(r"^import time:.*\|\s+torch\s*$", proc.stderr, re.M) is not None
    return wall, torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="fresh interpreters per command")
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    torch: dict[str, bool] = {}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            wall, torch[name] = run(argv)
            times[name].append(wall)
    ref = statistics.median(times["python -c 'import torch' (reference)"])
    print(f"{'command':<40} {'median s':>9} {'/ import torch':>15} {'torch imported':>15}")
    for name in COMMANDS:
        med = statistics.median(times[name])
        print(f"{name:<40} {med:>9.2f} {med / ref:>15.2f} {str(torch[name]):>15}")
    print(f"({args.repeat} runs each, interleaved; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
