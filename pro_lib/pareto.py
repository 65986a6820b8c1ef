"""Weight grids, Pareto fronts, hypervolume and front plots (all objectives are maximised).

    grid = weight_grid(2, step=0.1)            # 11 vectors (0,1), (0.1,0.9), ..., (1,0)
    mask = pareto_mask(points)                  # non-dominated rows
    hv = hypervolume(points, reference=[-2, -2])
    plot_fronts({"PRO-WIC": pts_a, "RiC": pts_b}, names, "pareto.png", reference=[-2, -2])
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib.errors import ConfigError
from pro_lib.io import atomic_savefig, atomic_write_text


def weight_grid(k: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors on the K-simplex whose entries are multiples of ``step`` (rows sum to 1).

    K=2, step=0.1: 11 vectors from (0, 1) to (1, 0); K=3, step=0.1: 66 vectors.
    """
    if k < 1:
        raise ConfigError(f"need at least one objective, got K={k}")
    divisions = round(1.0 / step)
    if divisions < 1 or abs(divisions * step - 1.0) > 1e-6:
        raise ConfigError(f"grid step {step} must divide 1 (e.g. 0.1, 0.25, 0.5)")
    rows = [c for c in itertools.product(range(divisions + 1), repeat=k - 1) if sum(c) <= divisions]
    grid = np.array([[*c, divisions - sum(c)] for c in rows], dtype=np.float64) / divisions
    # K=2: order from "all on the last objective" to "all on the first"
    return grid[np.lexsort(grid.T[::-1])].astype(np.float32)


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (N, K), maximising every column."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ConfigError(f"points must be (N, K), got shape {pts.shape}")
    n = len(pts)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(pts >= pts[i], axis=1) & np.any(pts > pts[i], axis=1)
        if dominated.any():
            keep[i] = False
    return keep


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The non-dominated rows, sorted by the first objective."""
    pts = np.asarray(points, dtype=np.float64)
    front = pts[pareto_mask(pts)]
    return front[np.argsort(front[:, 0])]


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` (maximisation) and bounded below by ``reference``.

    Points not strictly better than the reference in every objective contribute nothing. Computed by
    ``moocore`` (exact; O(n log n) for 2-3 objectives, HV4D+ for 4); bench/bench_hypervolume.py
    compares it with the recursion PRO used before.
    """
    pts = np.asarray(points, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(ref):
        raise ConfigError(f"hypervolume: points {pts.shape} and reference point of length {len(ref)} "
                          "must have the same number of objectives")
    pts = pts[np.all(pts > ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(pts[:, 0].max() - ref[0])
    import moocore

    return float(moocore.hypervolume(pts, ref=ref, maximise=True))


def weight_response(z: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How far a weights-conditioned policy moves toward the objective it is asked for.

    ``z``: (G, n, K) per-prompt scores at each grid weight; per objective k: the mean score on k at
    the corner w = e_k minus its mean over the other corners (> 0: putting the weight on k raises k).
    NaN for an objective whose corner is not on the grid.
    """
    z, grid = np.asarray(z, dtype=np.float64), np.asarray(grid, dtype=np.float64)
    k = grid.shape[1]
    corners = [np.flatnonzero(np.isclose(grid[:, j], 1.0)) for j in range(k)]
    out = np.full(k, np.nan)
    if any(len(c) == 0 for c in corners):
        return out
    at = np.stack([z[c[0]].mean(axis=0) for c in corners])  # (K corners, K objectives)
    for j in range(k):
        others = [i for i in range(k) if i != j]
        out[j] = at[j, j] - at[others, j].mean()
    return out


def bootstrap_fronts(z: Mapping[str, np.ndarray], grid: np.ndarray, reference: Sequence[float], *,
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Bootstrap over prompts (``scipy.stats.bootstrap``, percentile intervals): confidence intervals
    of each method's hypervolume, of its difference to the best method's, and of its weight response
    (see :func:`weight_response`).

    ``z[label]``: (G, n, K) per-prompt scores at each grid weight. Methods evaluated on the same n
    prompts are resampled together (a paired bootstrap), so differences keep their pairing.
    """
    labels = list(z)
    arrs = {lab: np.asarray(z[lab], dtype=np.float64) for lab in labels}
    if not arrs:
        return {}
    ns = {a.shape[1] for a in arrs.values()}
    hv = {lab: hypervolume(a.mean(axis=1), reference) for lab, a in arrs.items()}
    best = max(hv, key=hv.get)
    paired_n = next(iter(ns)) if len(ns) == 1 else None
    ks = [arrs[lab].shape[2] for lab in labels]

    def stat(*idx):  # one shared resample of the prompts (paired), or one per method
        idx = idx * len(labels) if paired_n else idx
        s = {lab: arrs[lab][:, np.asarray(i, dtype=int)] for lab, i in zip(labels, idx)}
        hvs = np.array([hypervolume(s[lab].mean(axis=1), reference) for lab in labels])
        return np.concatenate([hvs, hvs - hvs[labels.index(best)], *(weight_response(s[lab], grid) for lab in labels)])

    data = (np.arange(paired_n),) if paired_n else tuple(np.arange(arrs[lab].shape[1]) for lab in labels)
    lo = hi = np.full(2 * len(labels) + sum(ks), np.nan)
    if n_boot > 0 and min(ns) > 1:
        from scipy.stats import bootstrap

        with np.errstate(invalid="ignore"):
            ci = bootstrap(data, stat, vectorized=False, n_resamples=n_boot, confidence_level=level,
                           method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        lo, hi = np.atleast_1d(ci.low), np.atleast_1d(ci.high)

    def finite(v):
        return [float(x) if np.isfinite(x) else None for x in v]

    pairs = [finite(p) for p in zip(lo, hi)]
    m = len(labels)
    starts = np.cumsum([2 * m] + ks[:-1])
    return {
        "n_boot": n_boot, "level": level, "paired": paired_n is not None, "best": best,
        "hypervolume": {lab: float(hv[lab]) for lab in labels},
        "hypervolume_ci": {lab: pairs[j] for j, lab in enumerate(labels)},
        "diff_to_best": {lab: float(hv[lab] - hv[best]) for lab in labels},
        "diff_to_best_ci": {lab: pairs[m + j] for j, lab in enumerate(labels)},
        "weight_response": {lab: finite(weight_response(arrs[lab], grid)) for lab in labels},
        "weight_response_ci": {lab: pairs[st:st + k] for lab, st, k in zip(labels, starts, ks)},
    }


def write_front_csv(path: str | Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """Rows (dicts with the same keys) as CSV, written atomically."""
    if not rows:
        return Path(atomic_write_text(path, ""))
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return atomic_write_text(path, buf.getvalue())


def plot_fronts(methods: Mapping[str, np.ndarray], names: Sequence[str], path: str | Path, *,
                reference: Sequence[float] | None = None, labels: Mapping[str, Sequence[str]] | None = None,
                extra_points: Mapping[str, np.ndarray] | None = None, errors: Mapping[str, np.ndarray] | None = None,
                title: str = "Pareto fronts") -> Path:
    """Scatter each method's points (first two objectives), connect its front, save a PNG atomically.

    ``labels[method]`` annotates points (e.g. the weight on the first objective); ``extra_points``
    are drawn as stars (e.g. each method's point under the orchestrator's weights); ``errors[method]``
    (standard errors, same shape as the points) are drawn as error bars. The hypervolume reference
    point is drawn when it lies near the points, else written in a corner (the view stays on the data).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(names) < 2:
        raise ConfigError("a Pareto plot needs at least two objectives")
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, (method, pts) in enumerate(methods.items()):
        pts = np.asarray(pts, dtype=np.float64)
        color = f"C{i}"
        ax.scatter(pts[:, 0], pts[:, 1], color=color, alpha=0.55, s=22)
        if errors and method in errors:
            err = np.asarray(errors[method], dtype=np.float64)
            ax.errorbar(pts[:, 0], pts[:, 1], xerr=err[:, 0], yerr=err[:, 1], fmt="none", ecolor=color,
                        alpha=0.3, elinewidth=0.8)
        front = pareto_front(pts[:, :2])
        ax.plot(front[:, 0], front[:, 1], color=color, marker="o", label=method)
        if labels and method in labels:
            for (x, y), text in zip(pts[:, :2], labels[method]):
                ax.annotate(text, (x, y), fontsize=6, color=color, xytext=(2, 2), textcoords="offset points")
        if extra_points and method in extra_points:
            ep = np.atleast_2d(extra_points[method])
            ax.scatter(ep[:, 0], ep[:, 1], color=color, marker="*", s=160, edgecolor="black",
                       label=f"{method} (orchestrator weights)")
    if reference is not None:
        allpts = np.vstack([np.asarray(p, dtype=np.float64)[:, :2] for p in methods.values()])
        lo, hi = allpts.min(axis=0), allpts.max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        if np.all(np.asarray(reference[:2]) >= lo - 1.5 * span):
            ax.scatter([reference[0]], [reference[1]], color="gray", marker="x", label="HV reference")
        else:
            ax.text(0.01, 0.01, f"HV reference point: ({reference[0]:g}, {reference[1]:g}), outside this view",
                    transform=ax.transAxes, fontsize=7, color="gray")
    ax.set_xlabel(f"{names[0]} (mean normalised reward)")
    ax.set_ylabel(f"{names[1]} (mean normalised reward)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_savefig(fig, path)
