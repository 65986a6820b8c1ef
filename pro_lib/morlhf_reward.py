"""The weighted multi-objective reward of PRO-MORLHF / MORLHF (after paper Eq. 9): ``sum_k w_k(x) * z_k(x, y)``
(the paper weighs raw rewards; PRO weighs z-scored ones: docs/deviations.md, row 31).

trl passes every dataset column to Python reward functions, so the prompt dataset carries one K-vector
of weights per prompt (``weights`` column, :func:`build_prompt_dataset`) and :class:`WeightedReward`
scores each completion with all K reward models of a :class:`~pro_lib.suite.RewardSuite` and returns
the weighted sum. :func:`resolve_weights` turns ``--weights`` (orchestrator / uniform / a fixed vector)
into that column. The trainer itself is :mod:`pro_lib.morlhf`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pro_lib.errors import ConfigError, DataError

log = logging.getLogger(__name__)

WEIGHTS_COLUMN = "weights"
_SUM_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# The weighted multi-objective reward
# ---------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A prompt/completion as plain text (trl passes lists of chat messages for chat datasets)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # conversational: [{"role": ..., "content": ...}, ...]
        parts = []
        for msg in value:
            content = msg.get("content", "") if isinstance(msg, dict) else msg
            if isinstance(content, list):  # content blocks
                content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
            parts.append(str(content))
        return "\n".join(parts)
    return str(value)


def weight_matrix(rows: Sequence[Any], names: Sequence[str], *, column: str = WEIGHTS_COLUMN) -> np.ndarray:
    """Validate a dataset's weight column: one K-vector per row, non-negative, summing to 1.

    Errors name the row and say how to fix it; rows are not silently renormalised, because a
    column that does not sum to 1 usually means the objectives are in the wrong order or missing.
    """
    k = len(names)
    out = np.empty((len(rows), k), dtype=np.float64)
    for i, row in enumerate(rows):
        if row is None:
            raise DataError(f"'{column}' column: row {i} has no weights; every prompt needs a "
                            f"{k}-vector ordered as {list(names)}")
        if isinstance(row, dict):
            missing = [n for n in names if n not in row]
            if missing or len(row) != k:
                raise DataError(f"'{column}' column: row {i} has objectives {sorted(row)} but the reward "
                                f"suite has {list(names)}")
            row = [row[n] for n in names]
        vec = np.asarray(row, dtype=np.float64).reshape(-1)
        if vec.shape[0] != k:
            raise DataError(f"K mismatch: '{column}' column row {i} has {vec.shape[0]} weights but the reward "
                            f"suite has {k} objectives {list(names)}; recompute the weights with an "
                            "orchestrator trained on this suite, or pass --weights with one value per objective")
        if not np.isfinite(vec).all() or (vec < 0).any():
            raise DataError(f"'{column}' column: row {i} = {vec.tolist()} must be finite and non-negative")
        if abs(vec.sum() - 1.0) > _SUM_TOLERANCE:
            raise DataError(f"'{column}' column: row {i} = {vec.tolist()} sums to {vec.sum():.4f}, not 1; "
                            "weights live on the simplex (use pro_lib.targets.validate_weights to normalise)")
        out[i] = vec
    return out


class WeightedReward:
    """trl reward function: ``sum_k weights[k] * normalised r_k(prompt, completion)``.

    Pass an instance in ``reward_funcs`` of trl's ``GRPOTrainer``/``RLOOTrainer``; the dataset must
    carry a ``weights`` column (see :func:`build_prompt_dataset`). ``suite`` is a
    :class:`~pro_lib.suite.RewardSuite` with normalisation statistics (or any object with ``names``
    and ``score(prompts, responses, normalize=True, progress=False) -> (N, K)``).

    ``history`` keeps the last ``keep_history`` batches' (weights, scores) for inspection.
    """

    def __init__(self, suite, *, weights_column: str = WEIGHTS_COLUMN, batch_size: int = 32,
                 name: str = "weighted", keep_history: int = 0):
        self.suite = suite
        self.names = list(suite.names)
        self.K = len(self.names)
        if getattr(suite, "stats", "n/a") is None:
            raise ConfigError("the reward suite has no normalisation statistics, so objectives on different "
                              "scales cannot be weighed; use the suite saved by `pro rewards score`")
        self.weights_column = weights_column
        self.batch_size = batch_size
        self.__name__ = name  # trl names the reward in its logs after __name__
        self.keep_history = keep_history
        self.history: list[dict] = []

    def __call__(self, prompts: list, completions: list, log_metric: Callable | None = None,
                 **columns: Any) -> list[float]:
        if self.weights_column not in columns:
            have = sorted(k for k in columns if k not in ("trainer_state", "log_extra", "completion_ids",
                                                          "environments"))
            raise DataError(f"the training data has no '{self.weights_column}' column (columns: {have}); "
                            "build it with pro_lib.morlhf.build_prompt_dataset, or add one K-vector per prompt "
                            f"ordered as {self.names}")
        w = weight_matrix(columns[self.weights_column], self.names, column=self.weights_column)
        if len(w) != len(completions):
            raise DataError(f"{len(w)} weight rows for {len(completions)} completions")
        z = np.asarray(self.suite.score([_text(p) for p in prompts], [_text(c) for c in completions],
                                        batch_size=self.batch_size, normalize=True, progress=False),
                       dtype=np.float64)
        if z.shape != (len(completions), self.K):
            raise DataError(f"the reward suite returned scores of shape {z.shape}, expected "
                            f"({len(completions)}, {self.K})")
        rewards = (w * z).sum(axis=1)
        if log_metric is not None:
            for k, name in enumerate(self.names):
                log_metric(f"objectives/{name}", float(z[:, k].mean()))
                log_metric(f"weights/{name}", float(w[:, k].mean()))
            log_metric("weighted_reward", float(rewards.mean()))
        if self.keep_history:
            self.history.append({"weights": w, "scores": z, "rewards": rewards})
            del self.history[:-self.keep_history]
        return rewards.tolist()


def build_prompt_dataset(prompts: Sequence[str], weights: np.ndarray, names: Sequence[str]):
    """A ``datasets.Dataset`` with ``prompt`` and ``weights`` columns (weights validated)."""
    from datasets import Dataset

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = np.tile(w, (len(prompts), 1))
    if len(w) != len(prompts):
        raise DataError(f"{len(prompts)} prompts but {len(w)} weight rows")
    w = weight_matrix(list(w), names)
    return Dataset.from_dict({"prompt": list(prompts), WEIGHTS_COLUMN: w.astype(np.float32).tolist()})


SHUFFLED = "orchestrator-shuffled"
ORCHESTRATOR_WEIGHTS = ("orchestrator", SHUFFLED)  # --weights specs whose weights come from an orchestrator


def weights_method(spec: str) -> str:
    """The method name a ``--weights`` spec trains: pro-morlhf, its shuffled control, or morlhf."""
    spec = str(spec).strip()
    return {"orchestrator": "pro-morlhf", SHUFFLED: "pro-morlhf-shuffled"}.get(spec, "morlhf")


def resolve_weights(spec: str, prompts: Sequence[str], names: Sequence[str], *,
                    orchestrator=None, batch_size: int = 64, seed: int = 0) -> tuple[np.ndarray, str]:
    """Per-prompt weights for ``--weights``: ``orchestrator``, ``orchestrator-shuffled``, ``uniform``,
    or a fixed vector.

    ``orchestrator-shuffled`` is the control for PRO-MORLHF's claim: the orchestrator's weights permuted
    across the prompts (fixed ``seed``), so the same distribution of weights carries no information about
    its prompt. Returns ``(weights (N, K), method)``, method as :func:`weights_method`.
    ``orchestrator`` is a PreferenceOrchestrator or a folder / models:/ reference.
    """
    from pro_lib.targets import parse_weights, uniform_weights, validate_weights

    names = list(names)
    spec = str(spec).strip()
    if spec in ("orchestrator", SHUFFLED):
        if orchestrator is None:
            raise ConfigError(f"--weights {spec} needs --orchestrator <folder or models:/pro-orchestrator@champion>")
        if isinstance(orchestrator, (str, Path)):
            from pro_lib.orchestrator import PreferenceOrchestrator

            orchestrator = PreferenceOrchestrator.from_pretrained(orchestrator)
        orchestrator.check_objectives(names)
        w = orchestrator.predict(list(prompts), batch_size=batch_size)
        w = validate_weights(w, names=names, what="the orchestrator's weights", dtype=np.float64)
        if spec == SHUFFLED:
            w = w[np.random.default_rng(seed).permutation(len(w))]
        return w, weights_method(spec)
    if spec == "uniform":
        vec = uniform_weights(len(names))
    else:
        vec = parse_weights(spec, names)
    return np.tile(np.asarray(vec, dtype=np.float64), (len(prompts), 1)), "morlhf"
