"""PRO-WIC evaluation: weight-grid sweep on held-out prompts, Pareto fronts (CSV, PNG), the
equal-weight table with an "orchestrator weights" row, hypervolume against a stated reference.

A Rewarded Soups folder (``pro soups train``) is evaluated beside WIC policies (``pro soups eval``).
The config is in :mod:`pro_lib.wic.evaluation_config`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib.artifacts import EVAL_FILE
from pro_lib.data import load_prompt_pool
from pro_lib.errors import ConfigError, ProError
from pro_lib.io import atomic_dir, write_json, write_jsonl
from pro_lib.wic.soups import SoupPolicy, is_soup
from pro_lib.targets import check_objectives
from pro_lib.policy import resolve_device, truncate_prompt
from pro_lib.wic.common import load_suite, prompt_mix, score
from pro_lib.wic.evaluation_config import WICEvalConfig
from pro_lib.wic.policy import RIC_MAPPINGS, WICPolicy

log = logging.getLogger(__name__)


def _eval_policies(cfg: WICEvalConfig) -> list[tuple[str, str]]:
    items = []
    if cfg.policy:
        items.append((None, cfg.policy))
    for spec in cfg.policies:
        label, _, path = spec.partition("=")
        if not path:
            label, path = None, spec
        items.append((label, path))
    if not items:
        raise ConfigError("nothing to evaluate: give --policy <folder> or --policies label=folder,...")
    return items


def evaluate_policy_grid(policy: WICPolicy, suite, prompts: Sequence[str], grid: np.ndarray, *,
                         max_new_tokens: int, batch_size: int, orchestrator=None) -> dict:
    """Mean normalised score per objective for each grid weight (greedy), plus the orchestrator row."""
    n, k = len(prompts), suite.K
    all_texts, all_w = [], []
    for w in grid:
        all_texts += policy.condition(prompts, w)
        all_w.append(np.repeat(w[None], n, axis=0))
    orch_w = None
    if orchestrator is not None or policy.orchestrator is not None:
        try:
            orch_w = policy.orchestrator_weights(prompts, orchestrator)
        except (ProError, OSError) as exc:
            log.warning("no orchestrator row: %s", exc)
    if orch_w is not None:
        all_texts += policy.condition(prompts, orch_w)
    responses = policy.generate_texts(all_texts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      do_sample=False, progress=True, desc="eval generate")
    rep_prompts = list(prompts) * (len(grid) + (orch_w is not None))
    _, z = score(suite, rep_prompts, responses)
    points = np.stack([z[i * n:(i + 1) * n].mean(axis=0) for i in range(len(grid))])
    sems = np.stack([z[i * n:(i + 1) * n].std(axis=0, ddof=1) / math.sqrt(max(n - 1, 1)) if n > 1 else np.zeros(k)
                     for i in range(len(grid))])
    res = {"points": points, "sem": sems, "responses": responses, "z": z}
    if orch_w is not None:
        oz = z[len(grid) * n:]
        res["orchestrator_point"] = oz.mean(axis=0)
        res["orchestrator_sem"] = oz.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(k)
        res["orchestrator_weights"] = orch_w
        res["orchestrator_weighted"] = float((oz * orch_w).sum(axis=1).mean())
    return res


def equal_weight_table(rows: Sequence[Mapping], names: Sequence[str]) -> str:
    """Markdown: one row per (method, weights) with mean ± s.e.m. normalised reward per objective."""
    head = "| method | weights | " + " | ".join(names) + " | mean |\n|---|---|" + "---|" * (len(names) + 1) + "\n"
    body = ""
    for r in rows:
        cells = " | ".join(f"{m:+.3f} ± {s:.3f}" for m, s in zip(r["mean"], r["sem"]))
        body += f"| {r['method']} | {r['weights']} | {cells} | {float(np.mean(r['mean'])):+.3f} |\n"
    return head + body


def _bootstrap_table(boot: Mapping, names: Sequence[str]) -> str:
    """Markdown: hypervolume CIs, differences to the best front, and the weight response per objective."""
    if not boot:
        return ""
    pct = f"{boot['level']:.0%}"
    kind = "paired bootstrap" if boot["paired"] else "bootstrap"
    head = (f"\n{pct} intervals from a {kind} over prompts ({boot['n_boot']} resamples). Weight response: "
            "mean score on an objective with all the weight on it, minus its mean with the weight on the "
            "others (> 0: the policy follows its weights).\n\n"
            f"| method | hypervolume {pct} CI | difference to {boot['best']} | "
            + " | ".join(f"weight response {n}" for n in names) + " |\n|---|---|---|" + "---|" * len(names) + "\n")

    def fmt(v, c):
        return "n/a" if v is None or c[0] is None else f"{v:+.3f} [{c[0]:+.3f}, {c[1]:+.3f}]"

    body = ""
    for lab, hv in boot["hypervolume"].items():
        lo, hi = boot["hypervolume_ci"][lab]
        diff = ("(best)" if lab == boot["best"] else fmt(boot["diff_to_best"][lab], boot["diff_to_best_ci"][lab]))
        resp = " | ".join(fmt(v, c) for v, c in zip(boot["weight_response"][lab], boot["weight_response_ci"][lab]))
        body += f"| {lab} | {hv:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | {resp} |\n"
    return head + body


def evaluate_wic(cfg: WICEvalConfig, *, suite=None, policies: Mapping[str, WICPolicy] | None = None,
                 orchestrator=None) -> dict:
    """Weight-grid evaluation of one or more WIC policies on held-out prompts.

    Writes eval.json, pareto.csv, pareto.png, eval_table.md, samples.jsonl into output_dir.
    Metrics: hypervolume (of the first policy), hypervolume_<label>, and the equal-weight means.
    """
    from pro_lib.data import format_source_mix, stratified_sample
    from pro_lib.pareto import (bootstrap_fronts, hypervolume, pareto_mask, plot_fronts, weight_grid,
                                weight_response, write_front_csv)

    t0 = time.time()
    suite = suite or load_suite(cfg.suite, what="wic eval")
    k = suite.K
    ref = list(cfg.reference) or [-2.0] * k
    if len(ref) != k:
        raise ConfigError(f"--reference has {len(ref)} values for {k} objectives {suite.names}")
    grid = weight_grid(k, cfg.grid_step)
    if not any(np.allclose(g, 1.0 / k) for g in grid):
        grid = np.vstack([grid, np.full(k, 1.0 / k, dtype=np.float32)])
    equal_idx = int(np.argmin(np.abs(grid - 1.0 / k).sum(axis=1)))
    all_prompts, all_sources = load_prompt_pool(cfg.data)
    pool = stratified_sample(all_prompts, cfg.max_prompts, sources=all_sources, seed=cfg.seed)
    mix = prompt_mix(pool, all_prompts, all_sources)
    loaded: dict[str, WICPolicy] = dict(policies or {})
    if not loaded:
        for label, path in _eval_policies(cfg):
            if is_soup(path):  # Rewarded Soups: experts interpolated per grid weight
                pol = SoupPolicy.load(path, device=resolve_device(cfg.device))
            else:
                pol = WICPolicy.from_pretrained(path, device=resolve_device(cfg.device))
            loaded[label or pol.method or Path(path).name] = pol
    if cfg.ric_mapping:
        if cfg.ric_mapping not in RIC_MAPPINGS:
            raise ConfigError(f"--ric-mapping must be one of {RIC_MAPPINGS}, got {cfg.ric_mapping!r}")
        for pol in loaded.values():
            if pol.conditioning == "rewards":
                pol.ric_mapping = cfg.ric_mapping
    if orchestrator is None and cfg.orchestrator:
        from pro_lib.orchestrator import PreferenceOrchestrator

        orchestrator = PreferenceOrchestrator.from_pretrained(cfg.orchestrator)
    results, csv_rows, table_rows, samples = {}, [], [], []
    metrics: dict[str, float] = {}
    for i, (label, pol) in enumerate(loaded.items()):
        check_objectives(pol.objectives, suite.names, got_what=f"policy {label}", expected_what="the reward suite")
        prompts = [truncate_prompt(pol.tokenizer, p, cfg.max_prompt_tokens) for p in pool]
        grid_eval = getattr(pol, "evaluate_grid", None)  # a SoupPolicy evaluates itself
        res = (grid_eval(suite, prompts, grid, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size,
                         orchestrator=orchestrator) if grid_eval is not None else
               evaluate_policy_grid(pol, suite, prompts, grid, max_new_tokens=cfg.max_new_tokens,
                                    batch_size=cfg.gen_batch_size, orchestrator=orchestrator))
        hv = hypervolume(res["points"], ref)
        results[label] = res
        for w, p, s in zip(grid, res["points"], res["sem"]):
            csv_rows.append({"method": label, **{f"w_{n}": round(float(x), 4) for n, x in zip(suite.names, w)},
                             **{f"mean_{n}": float(x) for n, x in zip(suite.names, p)},
                             **{f"sem_{n}": float(x) for n, x in zip(suite.names, s)}})
        table_rows.append({"method": label, "weights": "equal", "mean": res["points"][equal_idx],
                           "sem": res["sem"][equal_idx]})
        if "orchestrator_point" in res:
            table_rows.append({"method": label, "weights": "orchestrator weights", "mean": res["orchestrator_point"],
                               "sem": res["orchestrator_sem"]})
        n = len(prompts)
        for g, w in enumerate(grid):
            for j in range(n):
                samples.append({"method": label, "prompt": prompts[j], "weights": w, "grid_point": g,
                                "response": res["responses"][g * n + j], "z": res["z"][g * n + j]})
        if "orchestrator_weights" in res:
            for j in range(n):
                samples.append({"method": label, "prompt": prompts[j], "weights": res["orchestrator_weights"][j],
                                "grid_point": None, "response": res["responses"][len(grid) * n + j],
                                "z": res["z"][len(grid) * n + j]})
        res["grid_z"] = np.asarray(res["z"][: len(grid) * n]).reshape(len(grid), n, k)
        res["weight_response"] = weight_response(res["grid_z"], grid)
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", label)
        if i == 0:
            metrics["hypervolume"] = hv
        metrics[f"hypervolume_{slug}"] = hv
        for kk, name in enumerate(suite.names):
            metrics[f"{slug}_equal_{name}"] = float(res["points"][equal_idx, kk])
        if "orchestrator_weighted" in res:
            metrics[f"{slug}_orchestrator_weighted_reward"] = res["orchestrator_weighted"]
        for kk, name in enumerate(suite.names):
            if np.isfinite(res["weight_response"][kk]):
                metrics[f"{slug}_weight_response_{name}"] = float(res["weight_response"][kk])
    boot = (bootstrap_fronts({lab: r["grid_z"] for lab, r in results.items()}, grid, ref, n_boot=cfg.bootstrap)
            if cfg.bootstrap > 0 else {})
    table = ("Mean normalised reward (z-score under the suite's stats) on "
             f"{len(pool)} held-out prompts (stratified random sample, seed {cfg.seed}: {format_source_mix(mix)}), "
             f"greedy decoding, max {cfg.max_new_tokens} new tokens.\n\n"
             + equal_weight_table(table_rows, suite.names)
             + f"\nHypervolume of each front (reference point {ref}, normalised reward units, grid step {cfg.grid_step}):\n\n"
             + "| method | hypervolume | grid points on the front |\n|---|---|---|\n"
             + "".join(f"| {lab} | {hypervolume(r['points'], ref):.4f} | "
                       f"{int(pareto_mask(r['points']).sum())}/{len(grid)} |\n"
                       for lab, r in results.items())
             + _bootstrap_table(boot, suite.names))
    out = Path(cfg.output_dir)
    with atomic_dir(out) as tmp:
        write_front_csv(tmp / "pareto.csv", csv_rows)
        (tmp / "eval_table.md").write_text(table)
        write_jsonl(tmp / "samples.jsonl", samples)
        write_json(tmp / EVAL_FILE, {
            "objectives": suite.names, "grid": grid, "reference": ref, "n_prompts": len(pool), "source_mix": mix,
            "max_new_tokens": cfg.max_new_tokens, "metrics": metrics, "bootstrap": boot,
            "methods": {lab: {"points": r["points"], "sem": r["sem"], "hypervolume": hypervolume(r["points"], ref),
                              "orchestrator_point": r.get("orchestrator_point"),
                              "weight_response": [float(x) if np.isfinite(x) else None
                                                  for x in r["weight_response"]],
                              "orchestrator_mean_weights": (r["orchestrator_weights"].mean(axis=0)
                                                            if "orchestrator_weights" in r else None)}
                        for lab, r in results.items()}})
        if k >= 2:
            plot_fronts({lab: r["points"] for lab, r in results.items()}, suite.names, tmp / "pareto.png",
                        reference=ref,
                        labels={lab: [f"{w[0]:.1f}" for w in grid] for lab in results},
                        extra_points={lab: r["orchestrator_point"] for lab, r in results.items()
                                      if "orchestrator_point" in r},
                        errors={lab: r["sem"] for lab, r in results.items()},
                        title=f"Pareto fronts ({len(pool)} held-out prompts; labels: weight on {suite.names[0]})")
    metrics["eval_seconds"] = time.time() - t0
    return metrics
