"""Target weights (paper Eq. 6-7) and weight-vector parsing.

``w*(x) = softmax(z(x, y+) / tau)`` where ``z`` are the per-objective z-scored rewards of the
preferred response. A small ``tau`` (0.1) makes the target close to one-hot on the objective the
preferred response stands out on.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pro_lib.errors import ConfigError


def target_weights(z: np.ndarray, tau: float = 0.1) -> np.ndarray:
    """Row-wise ``softmax(z / tau)``: (N, K) normalised scores -> (N, K) rows on the simplex."""
    if tau <= 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ConfigError(f"expected an (N, K) score matrix, got shape {z.shape}")
    if not np.isfinite(z).all():
        bad = np.argwhere(~np.isfinite(z))[0]
        raise ConfigError(f"score matrix has a non-finite value at row {bad[0]}, objective {bad[1]}; "
                          "check the reward models' outputs")
    logits = z / tau
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def validate_weights(w: np.ndarray, k: int | None = None, *, what: str = "weights") -> np.ndarray:
    """Check non-negativity, finiteness and K; renormalise rows to sum to 1."""
    w = np.asarray(w, dtype=np.float64)
    squeeze = w.ndim == 1
    w = np.atleast_2d(w)
    if k is not None and w.shape[1] != k:
        raise ConfigError(f"{what} have {w.shape[1]} entries but there are {k} objectives")
    if not np.isfinite(w).all():
        raise ConfigError(f"{what} contain NaN or infinity")
    if (w < 0).any():
        raise ConfigError(f"{what} must be non-negative, got {w[(w < 0).any(axis=1)][0].tolist()}")
    sums = w.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ConfigError(f"{what} sum to 0 and cannot be normalised; give at least one positive weight")
    w = (w / sums).astype(np.float32)
    return w[0] if squeeze else w


def parse_weights(spec: str | Sequence[float] | Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """Parse ``"helpful=0.7,harmless=0.3"``, ``"0.7,0.3"``, a list or a mapping into a (K,) vector.

    Missing names in a named spec get weight 0; unknown or repeated names are an error. The result
    is renormalised to sum to 1.
    """
    names = list(names)
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise ConfigError("empty weight specification; write e.g. "
                              + ",".join(f"{n}=0.5" for n in names[:2]))
        if all("=" in p for p in parts):
            items = [tuple(p.split("=", 1)) for p in parts]
        elif any("=" in p for p in parts):
            raise ConfigError(f"weights {spec!r} mix named and positional entries; use one style")
        else:
            items = None
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise ConfigError(f"weights {spec!r}: every entry must be a number") from None
            return validate_weights(np.array(values), len(names), what=f"weights {spec!r}")
    else:
        return validate_weights(np.array(list(spec), dtype=float), len(names), what="weights")
    vec = np.zeros(len(names))
    seen: set[str] = set()
    for key, value in items:
        key = str(key).strip()
        if key not in names:
            raise ConfigError(f"unknown objective '{key}' in weights; the objectives are {names}")
        if key in seen:
            raise ConfigError(f"weights {spec!r} name '{key}' twice; give each objective at most once")
        seen.add(key)
        try:
            vec[names.index(key)] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weight for '{key}' is not a number: {value!r}") from None
    return validate_weights(vec, len(names), what="weights")


def uniform_weights(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k, dtype=np.float32)
