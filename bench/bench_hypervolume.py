#!/usr/bin/env python
"""Hypervolume: moocore (what pro_lib.pareto.hypervolume uses) vs the hand-written recursion PRO used
before (kept here only for this comparison), side by side on the same fronts.

For each number of objectives K, random non-dominated-ish point sets of the size a weight grid
gives (K=2: 11 points, K=3: 66, K=4: 286 at step 0.1; plus larger sets), both implementations are
timed on the same points (best of --repeats), the values are checked equal, and the ratio is
printed, with what a 1,000-resample bootstrap (pareto.bootstrap_fronts) would cost with each.

    .venv/bin/python bench/bench_hypervolume.py            # a few minutes: the old code is slow at K=4
    .venv/bin/python bench/bench_hypervolume.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pareto_mask(pts: np.ndarray) -> np.ndarray:
    keep = np.ones(len(pts), dtype=bool)
    for i in range(len(pts)):
        if (np.all(pts >= pts[i], axis=1) & np.any(pts > pts[i], axis=1)).any():
            keep[i] = False
    return keep


def hv_recursive(pts: np.ndarray, ref: np.ndarray) -> float:
    """The recursion pro_lib.pareto used before moocore (slicing along the last objective)."""
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(pts[:, 0].max() - ref[0])
    if pts.shape[1] == 2:
        front = pts[_pareto_mask(pts)]
        front = front[np.argsort(-front[:, 0])]
        hv, prev_y = 0.0, ref[1]
        for x, y in front:
            if y > prev_y:
                hv += (x - ref[0]) * (y - prev_y)
                prev_y = y
        return float(hv)
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    hv, prev = 0.0, ref[-1]
    for i in range(len(pts)):
        height = pts[i, -1] - prev
        if height > 0:
            hv += height * hv_recursive(pts[i:, :-1], ref[:-1])
            prev = pts[i, -1]
    return float(hv)


def old_hypervolume(points, reference) -> float:
    pts, ref = np.asarray(points, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return hv_recursive(pts[np.all(pts > ref, axis=1)], ref)


def front_points(k: int, n: int, seed: int) -> np.ndarray:
    """n points near a concave front (the shape of a policy's Pareto front) plus noise."""
    rng = np.random.default_rng(seed)
    d = np.abs(rng.normal(size=(n, k)))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * rng.uniform(0.8, 1.0, size=(n, 1)) - 0.2


def best_time(fn, repeats: int, budget: float) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if sum(times) > budget:
            break
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller sets (skips K=4 with 286 points)")
    ap.add_argument("--budget", type=float, default=300.0, help="max seconds spent timing one old-code case")
    args = ap.parse_args()

    from pro_lib.pareto import hypervolume

    cases = [(2, 11), (2, 101), (3, 66), (3, 200), (4, 35), (4, 84)]
    if not args.quick:
        cases += [(4, 286)]
    print(f"{'K':>2} {'points':>6} {'old recursion s':>16} {'moocore s':>10} {'ratio old/new':>14} "
          f"{'|diff|':>9} {'1000-boot old':>14} {'1000-boot new':>14}")
    for k, n in cases:
        pts = front_points(k, n, seed=k * 1000 + n)
        ref = np.full(k, -1.0)
        new_v, old_v = hypervolume(pts, ref), old_hypervolume(pts, ref)
        t_new = best_time(lambda: hypervolume(pts, ref), max(args.repeats, 5), args.budget)
        t_old = best_time(lambda: old_hypervolume(pts, ref), args.repeats, args.budget)
        print(f"{k:>2} {n:>6} {t_old:>16.4f} {t_new:>10.6f} {t_old / t_new:>14.0f} {abs(new_v - old_v):>9.1e} "
              f"{t_old * 1000:>13.0f}s {t_new * 1000:>13.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
