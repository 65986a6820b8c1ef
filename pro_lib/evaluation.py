"""Evaluation of the Preference Orchestrator on held-out pairs (the quantities of Theorem 5.1).

For each held-out pair the preferred response is scored by the reward suite with the *training*
normalisation statistics, giving the target ``w*(x)``. Compared against it:

- the orchestrator ``f(x)``;
- fixed uniform weights ``1/K``;
- the best fixed vector: the mean of ``w*`` over the *training* targets (the constant that
  minimises the expected squared error on the training distribution).

Reported: mean ``KL(w || w*)`` (the training loss direction), mean squared error
``E ||w*(x) - w||^2``, argmax agreement, and the orchestrator / best-fixed error ratio with a
bootstrap 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pro_lib.artifacts import EVAL_FILE
from pro_lib.config import field
from pro_lib.io import write_json


def mean_kl(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean KL(pred || target) over rows; both (N, K) on the simplex."""
    p = np.clip(np.asarray(pred, dtype=np.float64), 1e-8, 1.0)
    t = np.clip(np.asarray(target, dtype=np.float64), 1e-8, 1.0)
    return float((p * (np.log(p) - np.log(t))).sum(axis=1).mean())


def squared_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row ||w*(x) - w||^2."""
    pred = np.broadcast_to(np.asarray(pred, dtype=np.float64), np.shape(target))
    return ((np.asarray(target, dtype=np.float64) - pred) ** 2).sum(axis=1)


def ratio_interval(num: np.ndarray, den: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of ``mean(num) / mean(den)`` over rows
    (``scipy.stats.bootstrap``); NaN when it cannot be computed (fewer than two rows, zero errors)."""
    from scipy.stats import bootstrap

    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(num) < 2 or n_boot < 1:
        return float("nan"), float("nan")

    def stat(a, b, axis=-1):
        d = b.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, a.mean(axis=axis) / np.where(d > 0, d, 1.0), np.nan)

    with np.errstate(invalid="ignore"):
        res = bootstrap((num, den), stat, paired=True, vectorized=True, n_resamples=n_boot,
                        confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def compare_weights(target: np.ndarray, candidates: dict[str, np.ndarray], *, seed: int = 0,
                    n_boot: int = 1000) -> dict:
    """Metrics of each candidate weighting (N, K) or (K,) against the targets."""
    target = np.asarray(target, dtype=np.float64)
    rows = {}
    errs = {}
    for name, w in candidates.items():
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), target.shape)
        errs[name] = squared_errors(w, target)
        rows[name] = {"mse": float(errs[name].mean()), "kl": mean_kl(w, target),
                      "argmax_agreement": float((w.argmax(1) == target.argmax(1)).mean())}
    result = {"methods": rows, "n": int(target.shape[0])}
    if "orchestrator" in errs and "best_fixed" in errs:
        ratio = rows["orchestrator"]["mse"] / max(rows["best_fixed"]["mse"], 1e-12)
        lo, hi = ratio_interval(errs["orchestrator"], errs["best_fixed"], n_boot=n_boot, seed=seed)
        result.update({"mse_ratio_vs_best_fixed": float(ratio), "mse_ratio_ci_low": float(lo),
                       "mse_ratio_ci_high": float(hi)})
    return result


def format_table(result: dict) -> str:
    lines = [f"{'weights':<14} {'MSE':>8} {'KL':>8} {'argmax agree':>13}"]
    for name, r in result["methods"].items():
        lines.append(f"{name:<14} {r['mse']:>8.4f} {r['kl']:>8.4f} {r['argmax_agreement']:>13.3f}")
    if "mse_ratio_vs_best_fixed" in result:
        lines.append(f"orchestrator / best fixed MSE = {result['mse_ratio_vs_best_fixed']:.3f} "
                     f"(95% bootstrap CI {result['mse_ratio_ci_low']:.3f}-{result['mse_ratio_ci_high']:.3f}, "
                     f"n={result['n']})")
    return "\n".join(lines)


@dataclass
class OrchestratorEvalConfig:
    """Evaluate an orchestrator against held-out targets, uniform and best-fixed weights."""

    orchestrator: str = field("runs/orchestrator", help="orchestrator folder or models:/ ref")
    data: str = field("runs/data/eval.jsonl", help="held-out preference pairs")
    train_targets: str = field("runs/targets", help="training targets folder (suite + best fixed vector)")
    output_dir: str = field("runs/orchestrator_eval", help="where eval.json and eval_table.txt go")
    batch_size: int = field(32, help="scoring batch size")
    progress: bool = field(True, help="show progress bars")


def evaluate_orchestrator(cfg: OrchestratorEvalConfig) -> dict:
    """Score held-out pairs, build their targets with the training stats, compare weightings."""
    from pro_lib.data import load_pairs, source_mix
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.suite import RewardSuite, load_targets
    from pro_lib.targets import target_weights, uniform_weights

    tdir = Path(cfg.train_targets)
    tdir = tdir if tdir.is_dir() else tdir.parent
    suite = RewardSuite.load(tdir / "suite")
    _, train_w, _ = load_targets(tdir)
    orch = PreferenceOrchestrator.from_pretrained(cfg.orchestrator)
    orch.check_objectives(suite.names)
    pairs = load_pairs(cfg.data)
    prompts = [p.prompt for p in pairs]
    z = suite.score(prompts, [p.chosen for p in pairs], batch_size=cfg.batch_size, normalize=True,
                    progress=cfg.progress)
    target = target_weights(z, orch.tau)
    pred = orch.predict(prompts, batch_size=cfg.batch_size, progress=cfg.progress)
    best_fixed = train_w.mean(axis=0)
    result = compare_weights(target, {"orchestrator": pred, "uniform": uniform_weights(suite.K),
                                      "best_fixed": best_fixed})
    sources = np.array([p.source or "unlabelled" for p in pairs])
    result["source_mix"] = source_mix(p.source for p in pairs)
    result["by_source"] = {s: compare_weights(target[sources == s], {
        "orchestrator": pred[sources == s], "uniform": uniform_weights(suite.K), "best_fixed": best_fixed})
        for s in result["source_mix"]}
    result["objectives"] = suite.names
    result["best_fixed_vector"] = best_fixed.tolist()
    result["mean_prediction"] = pred.mean(axis=0).tolist()
    result["mean_target"] = target.mean(axis=0).tolist()
    out = Path(cfg.output_dir)
    write_json(out / EVAL_FILE, result)
    from pro_lib.io import atomic_write_text

    atomic_write_text(out / "eval_table.txt", format_table(result) + "\n")
    metrics = {f"{m}_{k}": v for m, r in result["methods"].items() for k, v in r.items()}
    metrics.update({k: result[k] for k in ("mse_ratio_vs_best_fixed", "mse_ratio_ci_low",
                                           "mse_ratio_ci_high", "n")})
    return metrics
