#!/usr/bin/env python
"""PRO-WIC vs RiC offline vs RiC online vs Rewarded Soups on HH-RLHF at 10-50x the CPU budget, on one GPU.

The same steps and outputs as scripts/experiments/wic_hh.py (it runs that script with
configs/wic_hh_gpu.yaml: 2048 SFT pairs, 2 online rounds of 128 prompts x 4 samples, 128 held-out prompts
on a 0.1 weight grid, bf16), then Rewarded Soups through the CLI (`pro soups ...`, --soups-command)
when this installation has it, and otherwise says that it skipped it.
Sized for an H200-class GPU in under 8 minutes; the wall time of every part is printed and written to
<out>/gpu_run.json.

Needs the outputs of scripts/experiments/orchestrator_hh.py in --hh (split, reward suite, orchestrator).

    .venv/bin/python scripts/experiments/wic_hh_gpu.py                   # runs/wic_hh_gpu/summary.md
    .venv/bin/python scripts/experiments/wic_hh_gpu.py --allow-cpu       # the same on a CPU (hours)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUDGET_SECONDS = 8 * 60
# Rewarded Soups (`pro soups`, written by the evidence issue) at the same budget; {...} are filled in.
# --soups-command replaces it when that command's flags differ.
SOUPS_COMMAND = ("soups --policy smollm2 --suite {suite} --data {train} --eval-data {held_out} --max-examples 2048 "
                 "--max-prompts 128 --grid-step 0.1 --max-new-tokens 48 --output-dir {out}/soups")


def pro_has(command: str) -> bool:
    """Whether `pro <command>` exists in this installation."""
    pro = shutil.which("pro") or str(Path(sys.executable).with_name("pro"))
    try:
        return subprocess.run([pro, command, "--help"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "wic_hh_gpu.yaml"))
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "wic_hh_gpu"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch CPU threads")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (far slower than the budget)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    ap.add_argument("--soups-command", default=SOUPS_COMMAND,
                    help="the `pro ...` arguments that run Rewarded Soups ({out}, {hh}, {suite}, {train}, "
                         "{held_out} are filled in)")
    args = ap.parse_args()

    import shlex

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("error: no CUDA GPU visible; this script is sized for one GPU (pass --allow-cpu to run anyway, "
              "or use scripts/experiments/wic_hh.py for the CPU budget)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.time()
    cmd = [sys.executable, str(HERE / "wic_hh.py"), "--config", args.config, "--hh", args.hh, "--out", str(out),
           "--threads", str(args.threads)] + (["--force"] if args.force else [])
    print("[run]", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    timings["PRO-WIC, RiC offline, RiC online, evaluation"] = time.time() - t0
    if rc != 0:
        return rc

    soups = {"ran": False}
    if pro_has("soups"):
        hh = Path(args.hh)
        fill = {"out": str(out), "hh": str(hh), "suite": str(hh / "suite"),
                "train": str(hh / "data" / "train.jsonl"), "held_out": str(hh / "data" / "eval.jsonl")}
        argv = [a.format(**fill) for a in shlex.split(args.soups_command)]
        pro = shutil.which("pro") or str(Path(sys.executable).with_name("pro"))
        print("[run] pro", " ".join(argv), flush=True)
        t1 = time.time()
        rc = subprocess.call([pro] + argv)
        timings["Rewarded Soups"] = time.time() - t1
        soups = {"ran": True, "returncode": rc, "command": argv}
        if rc != 0:
            print(f"Rewarded Soups failed (exit {rc}); the other methods' results stand", file=sys.stderr)
    else:
        print("[skip] Rewarded Soups: this installation has no `pro soups` command yet (the evidence issue adds "
              "it); PRO-WIC and the RiC baselines ran without it", flush=True)
    total = time.time() - t0
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report = {"device": device, "seconds": timings, "total_seconds": total, "budget_seconds": BUDGET_SECONDS,
              "within_budget": total <= BUDGET_SECONDS, "soups": soups, "config": args.config}
    (out / "gpu_run.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{device}: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
          + f"; total {total / 60:.1f} min (budget {BUDGET_SECONDS // 60} min: "
          + ("within" if report["within_budget"] else "OVER") + f"). Results: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
