"""Pure weight-vector logic behind the explorer's widgets (no Streamlit, no torch).

A weight vector has K non-negative entries summing to 1 (the probability simplex), ordered as the
objectives' names. The explorer lets a user drag one slider; :func:`rebalance` keeps the vector on
the simplex by moving the *unlocked* others in proportion to their current values.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from pro_lib.errors import ConfigError
from pro_lib.targets import parse_weights, validate_weights

EPS = 1e-9


# the library's weight errors (a ConfigError: a ValueError whose message says how to fix it)
WeightError = ConfigError


def normalize(weights: Sequence[float], names: Sequence[str] | None = None) -> np.ndarray:
    """Return ``weights / sum(weights)`` (float64) with the library's one normaliser
    (:func:`pro_lib.targets.validate_weights`): clear errors for negative, NaN or all-zero input."""
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1:
        raise WeightError("a weight vector is one row of numbers")
    return validate_weights(w, w.size, names=names, dtype=np.float64)


def rebalance(weights: Sequence[float], index: int, value: float,
              locked: Sequence[bool] | None = None) -> np.ndarray:
    """Set ``weights[index] = value`` and move the other *unlocked* weights so the sum stays 1.

    - Locked weights never change. The moved weight is clamped to ``[0, 1 - sum(locked others)]``.
    - The free remainder is shared by the unlocked others in proportion to their current values
      (equally when they are all zero), so their ratios are kept.
    - When every other weight is locked, nothing can absorb the change: the moved weight takes the
      only value that keeps the sum 1.
    Input ``weights`` need not be exactly normalised (it is normalised first).
    """
    w = normalize(weights)
    k = w.size
    if not 0 <= index < k:
        raise IndexError(f"objective index {index} out of range for {k} objectives")
    lock = np.zeros(k, dtype=bool) if locked is None else np.asarray(list(locked), dtype=bool)
    if lock.size != k:
        raise WeightError(f"got {lock.size} lock flags for {k} objectives")
    lock = lock.copy()
    lock[index] = False  # the weight being moved is never locked against itself
    others = np.array([j for j in range(k) if j != index], dtype=int)
    free_others = np.array([j for j in others if not lock[j]], dtype=int)
    locked_sum = float(w[lock].sum())
    budget = max(0.0, 1.0 - locked_sum)
    if not np.isfinite(value):
        raise WeightError("the new weight is not a finite number")
    out = w.copy()
    if free_others.size == 0:
        out[index] = budget
        return _clean(out)
    new = float(min(max(value, 0.0), budget))
    out[index] = new
    rest = budget - new
    current = w[free_others]
    if current.sum() > EPS:
        out[free_others] = rest * current / current.sum()
    else:
        out[free_others] = rest / free_others.size
    return _clean(out)


def _clean(w: np.ndarray) -> np.ndarray:
    w = np.clip(w, 0.0, None)
    return w / w.sum() if w.sum() > EPS else np.full_like(w, 1.0 / w.size)


def uniform(k: int) -> np.ndarray:
    if k < 1:
        raise WeightError("need at least one objective")
    return np.full(k, 1.0 / k)


def entropy(w: Sequence[float]) -> float:
    p = np.asarray(list(w), dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def confidence(w: Sequence[float]) -> float:
    """``1 - H(w) / log K``: 0 for uniform weights (no preference), 1 for a one-hot vector."""
    p = normalize(w)
    if p.size == 1:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - entropy(p) / math.log(p.size))))


def confidences(W: np.ndarray) -> np.ndarray:
    """Row-wise :func:`confidence` of an (N, K) matrix."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise WeightError(f"expected an (N, K) weight matrix, got shape {W.shape}")
    if W.shape[1] == 1:
        return np.ones(W.shape[0])
    P = W / W.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        H = -np.where(P > 0, P * np.log(P), 0.0).sum(axis=1)
    return np.clip(1.0 - H / math.log(W.shape[1]), 0.0, 1.0)


def dominant(w: Sequence[float], names: Sequence[str]) -> str:
    return str(names[int(np.argmax(np.asarray(list(w))))])


def weighted_score(scores: Sequence[float], w: Sequence[float]) -> float:
    """``sum_k w_k * s_k``: the scalar the orchestrator's weights ask a response to maximise."""
    s = np.asarray(list(scores), dtype=np.float64)
    return float(np.dot(normalize(w), s))


def format_weights(w: Sequence[float], names: Sequence[str], decimals: int = 2) -> str:
    return ", ".join(f"{n}={v:.{decimals}f}" for n, v in zip(names, w))


def parse_weight_text(text: str, names: Sequence[str]) -> np.ndarray:
    """The explorer's "type weights" box: ``"helpful=0.7, harmless=0.3"`` or ``"0.7, 0.3"`` (missing
    names get 0), parsed by the library's one parser (:func:`pro_lib.targets.parse_weights`)."""
    return parse_weights(str(text), names).astype(np.float64)


def ternary_coords(w: Sequence[float]) -> tuple[float, float]:
    """2-D Cartesian coordinates of a 3-weight vector in an equilateral triangle (for tests/plots)."""
    a, b, c = normalize(w)
    return float(0.5 * (2 * b + c)), float(math.sqrt(3) / 2 * c)
