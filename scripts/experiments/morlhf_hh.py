#!/usr/bin/env python
"""PRO-MORLHF vs MORLHF on the shared HH-RLHF data with the bundled SmolLM2-135M-Instruct (CPU).

Needs the outputs of scripts/experiments/orchestrator_hh.py: the prepared split (runs/hh/data),
the HH reward suite (runs/hh/suite: helpful + harmless reward models with normalisation stats) and
the Preference Orchestrator (runs/hh/orchestrator).

1. PRO-MORLHF: RLOO on sum_k f(x)_k r_k(x, y) - beta KL, weights from the orchestrator per prompt;
2. MORLHF: the same with fixed uniform weights;
2b. the control for PRO-MORLHF's claim: the orchestrator's weights shuffled across the training prompts
   (``--weights orchestrator-shuffled``: the same weights, no information about their prompt);
3. held-out evaluation (greedy completions of unseen prompts, a random sample stratified by source; the
   training prompts are one too): mean normalised reward per objective
   and the weighted reward under the orchestrator's and uniform weights, for both policies and the
   untrained reference; training reward curves of both runs on one plot (paper Figure 3).

Settings: configs/morlhf_hh.yaml (a tiny CPU budget; results are a smoke-scale comparison, not the
paper's numbers). Each training run resumes from its last checkpoint when re-run; finished steps
are skipped (``--force`` redoes everything).

    flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/morlhf_hh.py     # ~10-15 min, 2 cores

Repeat seeds (``--seeds 0,1,2``): each seed trains every run into <out>/seed-<s>/ and evaluates on the same
held-out prompts; <out>/seeds_summary.md then pairs the runs prompt by prompt within each seed and pools
the seeds with a two-stage bootstrap (seeds, then prompts), so the interval includes run-to-run drift.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hh_outputs import require_hh_outputs  # noqa: E402


# run name -> its --weights
METHODS = {"pro-morlhf": "orchestrator", "morlhf": "uniform", "pro-morlhf-shuffled": "orchestrator-shuffled"}
# the comparisons of the repeat-seed summary (a, b): a - b on the same prompts within a seed
SEED_PAIRS = (("pro-morlhf", "pro-morlhf-shuffled"), ("pro-morlhf", "morlhf"), ("pro-morlhf", "reference"),
              ("pro-morlhf-shuffled", "reference"), ("morlhf", "reference"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "morlhf_hh.yaml"), help="shared training settings")
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "morlhf_hh"), help="output folder")
    ap.add_argument("--steps", type=int, default=None, help="override max_steps of the config")
    ap.add_argument("--seed", type=int, default=None,
                    help="override the training seed (repeat runs: use another --out, or --seeds)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated training seeds, e.g. 0,1,2: one set of runs per seed in <out>/seed-<s>, "
                         "then <out>/seeds_summary.md across them")
    ap.add_argument("--eval-prompts", type=int, default=48, help="held-out prompts to evaluate on (a random sample "
                                                                   "stratified by source)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated runs to train and evaluate (default: all three)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when two jobs share 2 cores)")
    ap.add_argument("--n-boot", type=int, default=4000, help="bootstrap draws of the repeat-seed summary")
    ap.add_argument("--drop-checkpoints", action="store_true",
                    help="delete a run's resume checkpoints once it has finished (about 3 GB each with SmolLM2)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(f"--methods: unknown {unknown or 'empty'}; choose from {', '.join(METHODS)}")
    if args.seeds is not None and args.seed is not None:
        ap.error("--seed and --seeds: give one (--seeds runs each seed into <out>/seed-<s>)")
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds is not None else None
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers such as 0,1,2, got {args.seeds!r}")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        ap.error(f"--seeds: expected distinct integers such as 0,1,2, got {args.seeds!r}")

    import torch

    torch.set_num_threads(args.threads)
    hh, out = Path(args.hh), Path(args.out)
    require_hh_outputs(hh)
    if args.force and out.exists():
        shutil.rmtree(out)
    if seeds is None:
        run_seed(args, methods, hh, out, args.seed)
        return 0
    for s in seeds:
        print(f"=== seed {s} ===", flush=True)
        run_seed(args, methods, hh, out / f"seed-{s}", s)
    seeds_summary(out, seeds, n_boot=args.n_boot)
    return 0


def run_seed(args, methods: list[str], hh: Path, out: Path, seed: int | None) -> None:
    """Train the runs of one seed (finished ones are skipped), evaluate them, write <out>/summary.md."""
    from pro_lib.config import build_config, load_yaml_config
    from pro_lib.morlhf import MorlhfTrainConfig, train_morlhf

    base = load_yaml_config(args.config)
    base.update({"suite": str(hh / "suite"), "orchestrator": str(hh / "orchestrator"),
                 "data": [str(hh / "data" / "train.jsonl")]})
    if args.steps:
        base["max_steps"] = args.steps
    if seed is not None:  # a repeat run: training seed (prompt sample, sampling, the shuffle)
        base["seed"] = seed
    t0 = time.time()
    timings = {}
    runs = {}
    for method in methods:
        weights = METHODS[method]
        cfg = build_config(MorlhfTrainConfig, {**base, "weights": weights, "output_dir": str(out / method)},
                           where=args.config)
        runs[method] = cfg.output_dir
        metrics_file = out / method / "metrics.json"
        if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("steps") == cfg.max_steps:
            print(f"[skip] {method}: {metrics_file} exists")
            continue
        print(f"[run ] {method} ({weights} weights, {cfg.max_steps} steps, seed {cfg.seed})", flush=True)
        t = time.time()
        m = train_morlhf(cfg)
        timings[method] = round(time.time() - t, 1)
        print(json.dumps(m, indent=2))
        if args.drop_checkpoints:  # the finished policy is in <run>/policy; a resume is no longer needed
            shutil.rmtree(out / method / "checkpoints", ignore_errors=True)

    done = out / "eval" / "eval.json"
    evaluated = sorted(json.loads(done.read_text())["runs"].values()) if done.is_file() else None
    if not timings and evaluated == sorted(runs.values()):
        print(f"[skip] held-out evaluation: {done} exists and no run was trained now", flush=True)
    else:
        print("[run ] held-out evaluation", flush=True)
        evaluate(args, base, hh, out, runs, timings)
    write_summary(args, base, out, runs, timings, t0)


def evaluate(args, base: dict, hh: Path, out: Path, runs: dict, timings: dict) -> None:
    from pro_lib.config import build_config
    from pro_lib.morlhf_eval import MorlhfEvalConfig, evaluate_morlhf

    t = time.time()
    ecfg = build_config(MorlhfEvalConfig, {  # the evaluation sample does not depend on the training seed
        "runs": list(runs.values()), "output_dir": str(out / "eval"),
        "data": [str(hh / "data" / "eval.jsonl")], "split": "all", "max_prompts": args.eval_prompts,
        "max_new_tokens": base.get("max_completion_length", 32)})
    evaluate_morlhf(ecfg)
    timings["eval"] = round(time.time() - t, 1)


def write_summary(args, base: dict, out: Path, runs: dict, timings: dict, t0: float) -> None:
    from pro_lib.data import format_source_mix

    table = (out / "eval" / "eval_table.md").read_text().rstrip()
    summary = [
        "# PRO-MORLHF vs MORLHF on HH-RLHF (SmolLM2-135M-Instruct, CPU)", "",
        f"command: `flock /tmp/pro-heavy.lock .venv/bin/python scripts/experiments/morlhf_hh.py`; "
        f"settings: {Path(args.config).name}; training seed {base.get('seed', 'of the config')}", "",
        "Held-out mean normalised reward (± s.e.m.) of greedy completions, and paired differences with 95% "
        "bootstrap intervals over prompts:", "", table, "",
        "Training curves: eval/curves.png", "",
        "Final training reward (mean of the last quarter of steps):", "",
    ]
    for method, folder in runs.items():
        m = json.loads((Path(folder) / "metrics.json").read_text())
        parts = [f"{k.removeprefix('final_')}={v:+.3f}" for k, v in m.items()
                 if k.startswith("final_") and isinstance(v, float)]
        summary.append(f"- {method}: {m['steps']} steps on {m.get('prompts')} training prompts "
                       f"({format_source_mix(m.get('source_mix') or {})}); first weighted reward "
                       f"{m.get('first_weighted_reward', 0):+.3f}; " + ", ".join(parts))
    summary += ["", f"wall time: {json.dumps(timings)} s (total {time.time() - t0:.0f} s)"]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))


def read_eval(eval_dir: Path) -> tuple[dict, dict, list[str], dict[str, str]]:
    """One seed's evaluation, keyed by run name (folder name, or 'reference'):
    - per-prompt values {run: {column: array}} from samples.jsonl, in prompt order (what pooling needs);
    - the evaluation's own paired differences {(a, b): {column: [mean, lo, hi]}} from eval.json, so a seed's
      row is the same numbers as that seed's eval_table.md;
    - the prompts, and the columns {display name: key in eval.json} (objectives, then each weighting)."""
    report = json.loads((eval_dir / "eval.json").read_text())
    name_of = {label: Path(folder).name for label, folder in report["runs"].items()}
    name_of["reference"] = "reference"
    cols = {**{n: n for n in report["objectives"]},
            **{f"weighted ({w})": f"weighted_{w}" for w in report["weightings"]}}
    rows: dict[str, list[dict]] = {}
    for line in (eval_dir / "samples.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault(name_of.get(r["policy"], r["policy"]), []).append(r)
    prompts = [r["prompt"] for r in next(iter(rows.values()))]
    values = {}
    for name, recs in rows.items():
        if [r["prompt"] for r in recs] != prompts:
            raise SystemExit(f"error: {eval_dir}: {name} was evaluated on other prompts than the first run")
        values[name] = {c: np.array([r["scores"][k] if k in r["scores"] else r["weighted"][k.removeprefix("weighted_")]
                                     for r in recs]) for c, k in cols.items()}
    diffs = {(name_of.get(d["a"], d["a"]), name_of.get(d["b"], d["b"])): {c: d["diff"][k] for c, k in cols.items()}
             for d in report["differences"]}
    return values, diffs, prompts, cols


def seed_difference(diffs: dict, a: str, b: str, where: Path) -> dict[str, list[float]]:
    """a - b from an evaluation's paired differences (it stores each pair once, in one order)."""
    if (a, b) in diffs:
        return diffs[(a, b)]
    if (b, a) in diffs:
        return {c: [-m, -hi, -lo] for c, (m, lo, hi) in diffs[(b, a)].items()}
    raise SystemExit(f"error: {where}: no paired difference {a} - {b}; re-run the evaluation")


def seeds_summary(out: Path, seeds: list[int], *, n_boot: int = 4000, seed: int = 0) -> None:
    """Per seed: a - b on the same prompts, as that seed's evaluation computed it (95% bootstrap over prompts);
    pooled over seeds: the mean of the seeds' mean differences, its interval from resampling seeds and then
    prompts within each drawn seed."""
    from pro_lib.io import atomic_write_text, write_json

    values, diffs, prompts, cols = {}, {}, None, None
    for s in seeds:
        values[s], diffs[s], p, cols = read_eval(out / f"seed-{s}" / "eval")
        if prompts is not None and p != prompts:
            raise SystemExit(f"error: seed {s} was evaluated on other held-out prompts than seed {seeds[0]}")
        prompts = p
    rng = np.random.default_rng(seed)
    n = len(prompts)
    fmt = "{:+.3f} [{:+.3f}, {:+.3f}]{}".format
    star = lambda lo, hi: "*" if lo > 0 or hi < 0 else ""  # noqa: E731
    result: dict = {"seeds": seeds, "n_prompts": n, "pairs": {}}
    lines = [f"# PRO-MORLHF vs its controls over {len(seeds)} training seeds ({', '.join(map(str, seeds))})", "",
             f"Same settings, {n} held-out prompts (the same sample for every seed; see seed-*/eval/eval_table.md "
             "for the mix). Per seed: mean paired difference a - b with a 95% bootstrap interval over prompts "
             "(the seed's eval_table.md). Pooled: the mean over seeds, 95% interval from a two-stage bootstrap "
             "(draw seeds, then prompts within each drawn seed), so it includes run-to-run drift; with 3 seeds it "
             "is a rough interval. * = excludes 0.", ""]
    for a, b in SEED_PAIRS:
        if not all(a in values[s] and b in values[s] for s in seeds):
            continue
        lines += [f"## {a} - {b}", "", "| seed | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        rec: dict = {c: {} for c in cols}
        for s in seeds:
            d = seed_difference(diffs[s], a, b, out / f"seed-{s}" / "eval")
            for c in cols:
                rec[c][str(s)] = [float(v) for v in d[c]]
            lines.append(f"| {s} | " + " | ".join(fmt(*d[c], star(*d[c][1:])) for c in cols) + " |")
        si = rng.integers(0, len(seeds), (n_boot, len(seeds)))
        pi = rng.integers(0, n, (n_boot, len(seeds), n))
        cells = []
        for c in cols:
            d = np.stack([values[s][a][c] - values[s][b][c] for s in seeds])  # seeds x prompts
            lo, hi = np.percentile(d[si[:, :, None], pi].mean(axis=(1, 2)), [2.5, 97.5])
            rec[c]["pooled"] = [float(d.mean()), float(lo), float(hi)]
            cells.append(fmt(d.mean(), lo, hi, star(lo, hi)))
        lines += ["| pooled | " + " | ".join(cells) + " |", ""]
        result["pairs"][f"{a} - {b}"] = rec
    write_json(out / "seeds.json", result)
    atomic_write_text(out / "seeds_summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
