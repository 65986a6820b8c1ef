"""Pure weight-vector logic behind the explorer's widgets (no Streamlit, no torch).

A weight vector has K non-negative entries summing to 1 (the probability simplex), ordered as the
objectives' names. The explorer lets a user drag one slider; :func:`rebalance` keeps the vector on
the simplex by moving the *unlocked* others in proportion to their current values.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

EPS = 1e-9


class WeightError(ValueError):
    """A weight vector that cannot be put on the simplex (message says why and how to fix it)."""


def normalize(weights: Sequence[float], names: Sequence[str] | None = None) -> np.ndarray:
    """Return ``weights / sum(weights)``; clear errors for negative, NaN or all-zero input."""
    w = np.asarray(list(weights), dtype=np.float64)
    label = (lambda i: f"'{names[i]}'") if names else (lambda i: f"#{i + 1}")
    if w.ndim != 1 or w.size == 0:
        raise WeightError("a weight vector needs at least one entry")
    if names is not None and len(names) != w.size:
        raise WeightError(f"got {w.size} weights for {len(names)} objectives ({', '.join(names)})")
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        raise WeightError(f"weight {label(int(bad[0]))} is not a finite number")
    neg = np.flatnonzero(w < 0)
    if neg.size:
        raise WeightError(f"weight {label(int(neg[0]))} is negative ({w[neg[0]]:g}); weights must be >= 0")
    total = w.sum()
    if total <= EPS:
        raise WeightError("the weights sum to 0, so they cannot be normalised; "
                          "give at least one objective a positive weight")
    return w / total


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
    """Parse ``"helpful=0.7, harmless=0.3"`` or ``"0.7, 0.3"`` (missing names get 0) and normalise.

    Used by the explorer's "type weights" box; errors say which entry is wrong.
    """
    names = list(names)
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise WeightError("no weights given; write e.g. "
                          + ", ".join(f"{n}={1 / len(names):.2f}" for n in names))
    named = ["=" in p for p in parts]
    if any(named) and not all(named):
        raise WeightError("mix of named (name=value) and positional entries; use one style")
    values = np.zeros(len(names))
    if all(named):
        for p in parts:
            key, val = (s.strip() for s in p.split("=", 1))
            if key not in names:
                raise WeightError(f"unknown objective '{key}'; the objectives are {', '.join(names)}")
            values[names.index(key)] = _number(val, key)
    else:
        if len(parts) != len(names):
            raise WeightError(f"got {len(parts)} numbers for {len(names)} objectives "
                              f"({', '.join(names)}); give one per objective in that order")
        values = np.array([_number(p, names[i]) for i, p in enumerate(parts)])
    return normalize(values, names)


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise WeightError(f"weight for '{name}' is not a number: {text!r}") from None


def ternary_coords(w: Sequence[float]) -> tuple[float, float]:
    """2-D Cartesian coordinates of a 3-weight vector in an equilateral triangle (for tests/plots)."""
    a, b, c = normalize(w)
    return float(0.5 * (2 * b + c)), float(math.sqrt(3) / 2 * c)
