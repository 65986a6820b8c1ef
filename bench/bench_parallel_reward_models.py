#!/usr/bin/env python
"""Two reward models trained side by side, as KFP's local runner runs them: torch's default threads vs
`pro_lib.policy.share_cpu_threads` (cores // PRO_PARALLEL_TASKS threads per process).

The main job's ParallelFor trains the demo reward models two at a time. Each arm starts real
`pro rewards train` processes (bundled MiniLM, demo data, the main job's settings) and reports the wall
time of the pair and of each process, import time included; the first arm trains one alone for scale.

    flock /tmp/pro-heavy.lock .venv/bin/python bench/bench_parallel_reward_models.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUN = ("import sys; from pro_lib.policy import share_cpu_threads; share_cpu_threads(); "
       "from pro_lib.cli import main; sys.exit(main(sys.argv[1:]))")


def start(objective: str, out: Path, epochs: float, parallel: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PRO_PARALLEL_TASKS"}
    env["TOKENIZERS_PARALLELISM"] = "false"  # as `pro pipeline run --local` sets it
    if parallel:
        env["PRO_PARALLEL_TASKS"] = parallel
    cmd = [sys.executable, "-c", RUN, "rewards", "train", "--objective", objective, "--source", objective,
           "--data", "demo", "--epochs", str(epochs), "--batch-size", "16", "--max-length", "128",
           "--output-dir", str(out / objective), "--resume", "never"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_arm(objectives: list[str], epochs: float, parallel: str | None) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(prefix="pro-bench-rm-") as tmp:
        t0 = time.perf_counter()
        procs = [start(o, Path(tmp), epochs, parallel) for o in objectives]
        ends = []
        pending = dict(enumerate(procs))
        while pending:
            for i, p in list(pending.items()):
                if p.poll() is not None:
                    if p.returncode != 0:
                        sys.exit(f"error: `pro rewards train --objective {objectives[i]}` failed:\n{p.stderr.read()[-2000:]}")
                    ends.append((i, time.perf_counter() - t0))
                    del pending[i]
            time.sleep(0.2)
        per = [t for _, t in sorted(ends)]
        return max(per), per


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=2.0, help="reward-model epochs (the main job: 2)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; demo data, MiniLM trunk, {args.epochs:g} epochs per reward model\n")
    arms = [("one alone, torch default threads", ["helpful"], None),
            ("two side by side, torch default threads", ["helpful", "harmless"], None),
            ("two side by side, share_cpu_threads (PRO_PARALLEL_TASKS=2)", ["helpful", "harmless"], "2")]
    rows = []
    for label, objectives, parallel in arms:
        wall, per = run_arm(objectives, args.epochs, parallel)
        rows.append((label, wall, per))
        print(f"  {label}: {wall:.1f} s", flush=True)
    base = rows[1][1]
    print("\n| arm | wall s (all processes) | per process s | speed-up vs default threads |\n|---|---|---|---|")
    for label, wall, per in rows:
        ratio = f"{base / wall:.2f}x" if len(per) == 2 else "-"
        print(f"| {label} | {wall:.1f} | {' / '.join(f'{t:.1f}' for t in per)} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
