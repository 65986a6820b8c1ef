"""Target weights (after paper Eq. 6-7) and weight-vector parsing.

``w*(x) = softmax(z(x, y+) / tau)`` where ``z`` are the per-objective z-scored rewards of the
preferred response. The paper's Eq. 7 applies the softmax to the raw rewards; PRO z-scores each
objective first, so tau is in standard deviations of each objective's score (docs/deviations.md,
row 30). A small ``tau`` (0.1) makes the target close to one-hot on the objective the preferred
response stands out on.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib.artifacts import TargetsReport
from pro_lib.errors import ConfigError, ObjectiveMismatchError


DEFAULT_TAU = 0.1  # the paper's temperature

# The one rule for objective names: they name folders (runs/rewards/<name>, an endpoint's suite/<name>),
# registered models (pro-reward-<name>) and columns, so no path separators, no leading dot or dash.
OBJECTIVE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_objective_name(name: object, *, where: str = "objective") -> str:
    """``name`` when it is a valid objective name (letters, digits, '_', '.', '-'; starting with a letter or
    digit; at most 64 characters), else a :class:`ConfigError` naming ``where`` and the value."""
    if not isinstance(name, str) or not OBJECTIVE_NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: bad objective name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit (it names folders and registered models, so no "
                          "'/', spaces or leading dots)")
    return name


def recorded_tau(targets: str | Path) -> float | None:
    """The tau the targets in ``targets`` (a folder, or its targets.jsonl) were built with; None when
    the folder has no report (:class:`pro_lib.artifacts.TargetsReport`)."""
    report = TargetsReport.load_optional(targets)
    return None if report is None or report.tau is None else float(report.tau)


def resolve_tau(tau: float | None, targets: str | Path | None) -> float:
    """The tau a stage builds w* with: the targets' own (so the orchestrator and the PRO-WIC tags
    agree), an explicit ``tau`` only when it is the same or there are no recorded targets."""
    recorded = recorded_tau(targets) if targets else None
    if tau is None:
        return DEFAULT_TAU if recorded is None else recorded
    if recorded is not None and not math.isclose(float(tau), recorded):
        raise ConfigError(f"tau={tau} differs from tau={recorded} the targets in {targets} were built with "
                          f"({TargetsReport.FILE}); drop tau to follow the targets, or rebuild them with "
                          f"`pro rewards score --tau {tau}`")
    return float(tau)


def target_weights(z: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
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


def _example(names: Sequence[str]) -> str:
    return ",".join(f"{n}={1 / len(names):.2f}" for n in names) if names else "helpful=0.5,harmless=0.5"


def validate_weights(w: np.ndarray, k: int | None = None, *, what: str = "weights",
                     names: Sequence[str] | None = None, dtype=np.float32) -> np.ndarray:
    """The one weight normaliser: check finiteness, non-negativity and K; rows divided by their sum.

    ``names`` (the objectives, in order) fix K and name the offending entry in errors.
    """
    w = np.asarray(w, dtype=np.float64)
    names = list(names) if names is not None else None
    k = len(names) if names is not None else k
    squeeze = w.ndim == 1
    w = np.atleast_2d(w)
    label = (lambda j: f"'{names[j]}'") if names else (lambda j: f"#{j + 1}")
    hint = f" (e.g. {_example(names)})" if names else ""
    if w.size == 0 or w.ndim != 2:
        raise ConfigError(f"{what}: a weight vector needs at least one entry{hint}")
    if k is not None and w.shape[1] != k:
        raise ConfigError(f"{what} have {w.shape[1]} entries but there are {k} objectives"
                          + (f" ({', '.join(names)}); give one per objective in that order" if names else "") + hint)
    bad = np.argwhere(~np.isfinite(w))
    if bad.size:
        raise ConfigError(f"{what}: weight for {label(int(bad[0][1]))} is not a finite number (NaN or infinity){hint}")
    neg = np.argwhere(w < 0)
    if neg.size:
        i, j = neg[0]
        raise ConfigError(f"{what}: weight for {label(int(j))} is negative ({w[i, j]:g}); "
                          f"weights must be non-negative{hint}")
    sums = w.sum(axis=1, keepdims=True)
    if (sums <= 1e-12).any():
        raise ConfigError(f"{what} sum to 0, so they cannot be normalised; "
                          f"give at least one objective a positive weight{hint}")
    w = (w / sums).astype(dtype)
    return w[0] if squeeze else w


def parse_weights(spec: str | Sequence[float] | Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """The one weight parser: ``"helpful=0.7,harmless=0.3"`` (or ``;``-separated), ``"0.7,0.3"``,
    a list, an array or a mapping -> a (K,) vector on the simplex ordered as ``names``.

    Missing names in a named spec get weight 0; unknown or repeated names are an error. The result is
    renormalised to sum to 1 (:func:`validate_weights`). Errors say what to write instead.
    """
    names = list(names)
    if spec is None:
        raise ConfigError(f"no weights given; write e.g. {_example(names)}")
    if isinstance(spec, np.ndarray):
        spec = spec.reshape(-1).tolist()
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.replace(";", ",").split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"no weights given; write e.g. {_example(names)}")
        if all("=" in p for p in parts):
            items = [tuple(s.strip() for s in p.split("=", 1)) for p in parts]
        elif any("=" in p for p in parts):
            raise ConfigError(f"weights {spec!r} mix of named (name=value) and positional entries; use one style, "
                              f"e.g. {_example(names)}")
        else:
            values = []
            for j, p in enumerate(parts):
                try:
                    values.append(float(p))
                except ValueError:
                    who = f"'{names[j]}'" if j < len(names) else f"#{j + 1}"
                    raise ConfigError(f"weights {spec!r}: weight for {who} is not a number: {p!r} "
                                      f"(e.g. {_example(names)})") from None
            return validate_weights(np.array(values), what=f"weights {spec!r}", names=names)
    else:
        return validate_weights(np.array(list(spec), dtype=float), what="weights", names=names)
    vec = np.zeros(len(names))
    seen: set[str] = set()
    for key, value in items:
        key = str(key).strip()
        if key not in names:
            raise ConfigError(f"unknown objective '{key}' in weights; the objectives are {names} "
                              f"(e.g. {_example(names)})")
        if key in seen:
            raise ConfigError(f"weights {spec!r} name '{key}' twice; give each objective at most once")
        seen.add(key)
        try:
            vec[names.index(key)] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"weight for '{key}' is not a number: {value!r} (e.g. {_example(names)})") from None
    return validate_weights(vec, what="weights", names=names)


def check_objectives(got: Sequence[str], expected: Sequence[str], *, got_what: str,
                     expected_what: str, fix: str = "use artifacts built on the same reward suite") -> None:
    """The one objective-order check: ``got`` must list the same objectives as ``expected``, in the
    same order (a weight vector's k-th entry belongs to the k-th objective).

    Raises :class:`~pro_lib.errors.ObjectiveMismatchError` (a ConfigError) naming both sides.
    """
    got, expected = list(got), list(expected)
    if got == expected:
        return
    kind = "K mismatch" if len(got) != len(expected) else (
        "K mismatch (same objectives, another order)" if sorted(got) == sorted(expected)
        else "K mismatch (same K, other objectives)")
    raise ObjectiveMismatchError(f"{kind}: {got_what} has {len(got)} objectives {got} but {expected_what} "
                                 f"has {len(expected)}: {expected}; {fix}")


def uniform_weights(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k, dtype=np.float32)
