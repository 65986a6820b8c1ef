"""Weight grids, Pareto fronts, hypervolume (checked against brute force) and the front plot."""

from __future__ import annotations

import numpy as np
import pytest

from pro_lib.errors import ConfigError
from pro_lib.pareto import (bootstrap_fronts, hypervolume, pareto_front, pareto_mask, plot_fronts, weight_grid,
                            weight_response, write_front_csv)


def test_weight_grid_k2_k3():
    g2 = weight_grid(2, 0.1)
    assert g2.shape == (11, 2)
    assert np.allclose(g2.sum(axis=1), 1) and (g2 >= 0).all()
    assert np.allclose(sorted(g2[:, 0]), np.linspace(0, 1, 11))
    g3 = weight_grid(3, 0.1)
    assert g3.shape == (66, 3) and np.allclose(g3.sum(axis=1), 1)
    assert len({tuple(np.round(r, 3)) for r in g3}) == 66
    with pytest.raises(ConfigError, match="must divide 1"):
        weight_grid(2, 0.3)


def test_pareto_mask_and_front():
    pts = np.array([[0, 1], [1, 0], [0.5, 0.5], [0.4, 0.4], [0.5, 0.5]])
    mask = pareto_mask(pts)
    assert mask.tolist() == [True, True, True, False, True]  # duplicates do not dominate each other
    front = pareto_front(pts)
    assert front[0, 0] == 0 and front[-1, 0] == 1


def _hv_brute(pts, ref, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    hi = pts.max(axis=0)
    u = rng.uniform(ref, hi, size=(n, len(ref)))
    dom = np.zeros(n, dtype=bool)
    for p in pts:
        dom |= np.all(u <= p, axis=1)
    return dom.mean() * np.prod(hi - np.asarray(ref))


def test_hypervolume_2d_exact():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.5, 1.5]])
    # staircase: 1*3 + 1*2 + 1*1 = 6 above reference (0, 0)
    assert hypervolume(pts, [0, 0]) == pytest.approx(6.0)
    assert hypervolume(pts, [5, 5]) == 0.0  # nothing better than the reference
    assert hypervolume(pts[:1], [0, 0]) == pytest.approx(3.0)


def test_hypervolume_3d_matches_monte_carlo():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, size=(12, 3))
    ref = [0.0, 0.0, 0.0]
    assert hypervolume(pts, ref) == pytest.approx(_hv_brute(pts, ref), rel=0.02)


def test_hypervolume_k_mismatch():
    with pytest.raises(ConfigError, match="same number of objectives"):
        hypervolume(np.ones((3, 2)), [0, 0, 0])


def test_plot_and_csv(tmp_path):
    pts = {"a": np.array([[0.0, 1.0], [0.5, 0.6], [1.0, 0.0]]), "b": np.array([[0.1, 0.2], [0.3, 0.1]])}
    png = plot_fronts(pts, ["helpful", "harmless"], tmp_path / "f.png", reference=[-1, -1],
                      labels={"a": ["0", "0.5", "1"]}, extra_points={"a": np.array([0.4, 0.4])})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = write_front_csv(tmp_path / "f.csv", [{"method": "a", "x": 1.0}, {"method": "b", "x": 2.0}])
    assert csv.read_text().splitlines() == ["method,x", "a,1.0", "b,2.0"]


def test_weight_response_by_hand():
    grid = weight_grid(2, 0.5)  # (0, 1), (0.5, 0.5), (1, 0)
    z = np.zeros((3, 2, 2))
    z[2] = [[2.0, 0.0], [4.0, 1.0]]   # all weight on objective 0: mean (3, 0.5)
    z[0] = [[1.0, 3.0], [1.0, 5.0]]   # all weight on objective 1: mean (1, 4)
    # objective 0: 3 - 1 = 2; objective 1: 4 - 0.5 = 3.5
    assert np.allclose(weight_response(z, grid), [2.0, 3.5])
    g3 = weight_grid(3, 0.5)
    z3 = np.zeros((len(g3), 1, 3))
    for i, w in enumerate(g3):
        z3[i, 0] = w * 6  # score on k = 6 w_k: corners give 6 on their own objective, 0 elsewhere
    assert np.allclose(weight_response(z3, g3), [6.0, 6.0, 6.0])


def test_bootstrap_fronts_intervals_and_pairing():
    rng = np.random.default_rng(0)
    grid = weight_grid(2, 0.5)
    n = 40
    follows = np.stack([np.stack([w * 2 + rng.normal(0, 0.1, 2) for _ in range(n)]) for w in grid])
    flat = np.stack([np.stack([rng.normal(0, 0.1, 2) for _ in range(n)]) for _ in grid])
    shifted = follows - 0.5  # the same per-prompt noise, worse by 0.5 everywhere
    boot = bootstrap_fronts({"follows": follows, "flat": flat, "shifted": shifted}, grid, [-3.0, -3.0], n_boot=200)
    assert boot["paired"] and boot["best"] == "follows"
    for lab in ("follows", "flat", "shifted"):
        lo, hi = boot["hypervolume_ci"][lab]
        assert lo <= boot["hypervolume"][lab] <= hi
    # paired: "shifted" shares the per-prompt noise of "follows", so their difference is far tighter
    # than either hypervolume's own interval
    d_lo, d_hi = boot["diff_to_best_ci"]["shifted"]
    width = min(hi - lo for lo, hi in (boot["hypervolume_ci"]["follows"], boot["hypervolume_ci"]["shifted"]))
    assert d_hi < 0 and d_hi - d_lo < 0.25 * width
    assert boot["diff_to_best_ci"]["follows"] == [0.0, 0.0]
    # "follows" moves 2 units toward the objective it is given; "flat" does not move
    assert all(lo > 1.5 for lo, _ in boot["weight_response_ci"]["follows"])
    assert all(lo < 0 < hi for lo, hi in boot["weight_response_ci"]["flat"])
