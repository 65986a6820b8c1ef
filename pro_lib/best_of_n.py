"""Best-of-N under per-prompt weights: the policy samples N answers, the reward suite scores each on all
K objectives, the answer with the largest weighted score ``sum_k w_k(x) r_k(x, y)`` is kept.

The weights are the Preference Orchestrator's (or the user's), so the orchestrator decides *which*
objectives matter for this prompt and the suite decides *which answer* serves them best; no policy
training is involved. ``r_k`` are the suite's z-scores when it has normalisation stats (the units of
``score_<objective>`` everywhere in PRO, docs/deviations.md row 31), its raw scores otherwise.

Used by the ``pro-endpoint`` (``params={"best_of_n": N}``, :mod:`pro_lib.serving`), by ``pro generate
--best-of-n N --suite <folder>`` and by ``scripts/experiments/best_of_n_hh.py``, which also uses
:func:`evaluate_selection` here: the same selection under several weightings, judged by a second suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from pro_lib.config import RANGES, range_problem
from pro_lib.errors import DataError

DEFAULT_N = 1   # one answer: generation as without best-of-N


def check_n(value, *, name: str = "best_of_n") -> int:
    """``value`` as a valid N (an integer inside ``RANGES['best_of_n']``), else a DataError that says why."""
    if value is None:
        return DEFAULT_N
    if isinstance(value, bool) or not float(value).is_integer():
        raise DataError(f"{name} must be an integer, got {value!r}")
    n = int(value)
    why = range_problem(RANGES["best_of_n"], n)
    if why:
        raise DataError(f"{name} {why}")
    return n


def weighted_scores(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_k w_k r_k`` of every candidate: scores (P, N, K), weights (P, K) or (K,) -> (P, N)."""
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.ndim != 3:
        raise DataError(f"scores must be (prompts, candidates, objectives), got shape {s.shape}")
    w = np.broadcast_to(w, (s.shape[0], s.shape[2]))
    return np.einsum("pnk,pk->pn", s, w)


def select(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Index of the candidate with the largest weighted score per prompt (the first one on a tie)."""
    return weighted_scores(scores, weights).argmax(axis=1)


@dataclass
class BestOfN:
    """What best-of-N chose for each of P prompts out of N candidates each."""

    responses: list[str]             # the chosen answer per prompt
    index: np.ndarray                # (P,) which candidate
    scores: np.ndarray               # (P, K) the chosen answer's per-objective scores
    weighted: np.ndarray             # (P, N) every candidate's weighted score
    candidates: list[list[str]]      # (P, N) every candidate

    @property
    def n(self) -> int:
        return self.weighted.shape[1]

    def columns(self) -> dict:
        """The endpoint's extra output columns: N, the answer's weighted score, every candidate's."""
        rows = np.arange(len(self.responses))
        return {"best_of_n": [self.n] * len(rows), "weighted_score": self.weighted[rows, self.index],
                "candidate_weighted_scores": [row.tolist() for row in self.weighted]}


def suite_scores(suite, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """(M, K) scores in the suite's units: z-scores when it has stats, raw otherwise."""
    return np.asarray(suite.score(list(prompts), list(responses), normalize=suite.stats is not None,
                                  progress=False), dtype=np.float64)


def best_of_n(generate: Callable[[int], Sequence[str]], score: Callable[[list[str], list[str]], np.ndarray],
              prompts: Sequence[str], weights: np.ndarray, n: int) -> BestOfN:
    """Best-of-``n`` for ``prompts`` under ``weights`` (P, K).

    ``generate(n)``: ``n`` sampled answers per prompt, prompt-major (P * n texts, as
    ``num_return_sequences=n`` gives them); ``score(prompts, responses)``: (M, K) scores
    (:func:`suite_scores`)."""
    prompts = list(prompts)
    n = check_n(n)
    texts = list(generate(n))
    if len(texts) != len(prompts) * n:
        raise DataError(f"best_of_n: expected {len(prompts) * n} candidates ({n} per prompt), got {len(texts)}")
    s = np.asarray(score([p for p in prompts for _ in range(n)], texts), dtype=np.float64)
    s = s.reshape(len(prompts), n, -1)
    w = np.asarray(weights, dtype=np.float64)
    weighted = weighted_scores(s, w)
    idx = weighted.argmax(axis=1)
    cands = [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
    return BestOfN(responses=[c[j] for c, j in zip(cands, idx)], index=idx, scores=s[np.arange(len(prompts)), idx],
                   weighted=weighted, candidates=cands)


def endpoint_best_of_n(generator, suite, prompts: Sequence[str], weights: np.ndarray, n: int, gen: Mapping,
                       *, score: bool = True) -> BestOfN:
    """The ``pro-endpoint``'s best-of-N (:class:`pro_lib.serving.Endpoint`): ``generator`` samples (N greedy
    answers would be one answer N times), the endpoint's ``suite`` picks."""
    if suite is None:
        raise DataError(f"best_of_n={n} needs a reward suite to pick the answer, and this endpoint has none; "
                        "build it with build_endpoint(..., suite=<folder>) or send best_of_n=1")
    if not score:
        raise DataError(f"best_of_n={n} scores every candidate with the suite; drop score=false")
    gen = {**gen, "do_sample": True}
    return best_of_n(lambda k: generator.generate(prompts, weights, num_return_sequences=k,
                                                  batch_size=max(1, 8 // k), **gen),
                     lambda p, r: suite_scores(suite, p, r), prompts, weights, n)


# -- the experiment: one set of samples, several weightings, a second suite as the judge -----------

def source_matched(z: np.ndarray, sources: Sequence[str], objective_of: Mapping[str, int]) -> np.ndarray:
    """Per prompt, the score on its source's own objective (``objective_of``: source -> column)."""
    z = np.asarray(z, dtype=np.float64)
    missing = sorted({s for s in sources if s not in objective_of})
    if missing:
        raise DataError(f"no objective for source(s) {missing}; known: {sorted(objective_of)}")
    return z[np.arange(len(sources)), [objective_of[s] for s in sources]]


def paired_interval(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over prompts with a percentile-bootstrap interval (prompts resampled, pairs kept)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(d.mean()), float(lo), float(hi)


def evaluate_selection(select_scores: np.ndarray, judge_scores: np.ndarray, weightings: Mapping[str, np.ndarray],
                       sources: Sequence[str], objective_of: Mapping[str, int], names: Sequence[str], *,
                       ns: Sequence[int] = (1, 4, 8), baselines: Sequence[str] = ("uniform", "shuffled"),
                       n_boot: int = 2000, seed: int = 0) -> dict:
    """Best-of-N of the same candidates under each weighting, judged by another suite.

    ``select_scores`` / ``judge_scores``: (P, N_max, K) scores of every candidate by the selecting and the
    judging suite; ``weightings``: name -> (P, K) or (K,); the first ``n`` candidates make best-of-``n``.
    Returns per N and weighting the judge's mean score per objective, per source and overall, the
    source-matched score, and paired bootstrap intervals of each weighting's source-matched score minus
    each of ``baselines`` (the same prompts and candidates; only the choice differs; a baseline is not
    compared again with an earlier one)."""
    sel = np.asarray(select_scores, dtype=np.float64)
    judge = np.asarray(judge_scores, dtype=np.float64)
    if sel.shape != judge.shape:
        raise DataError(f"select and judge scores differ in shape: {sel.shape} vs {judge.shape}")
    p, n_max, _ = sel.shape
    if len(sources) != p:
        raise DataError(f"{len(sources)} sources for {p} prompts")
    bad = [n for n in ns if not 1 <= n <= n_max]
    if bad:
        raise DataError(f"N {bad} outside 1..{n_max} (the candidates per prompt)")
    src = np.asarray(list(sources))
    out: dict = {"n_prompts": p, "candidates": n_max, "objectives": list(names),
                 "sources": {s: int((src == s).sum()) for s in sorted(set(sources))}, "by_n": {}}
    for n in ns:
        rows, matched = {}, {}
        for wname, w in weightings.items():
            idx = select(sel[:, :n], w)
            z = judge[np.arange(p), idx]                                     # (P, K) the chosen answers' judge scores
            matched[wname] = source_matched(z, sources, objective_of)
            row = {"source_matched": float(matched[wname].mean()),
                   "mean": {nm: float(z[:, k].mean()) for k, nm in enumerate(names)},
                   "by_source": {s: {nm: float(z[src == s, k].mean()) for k, nm in enumerate(names)}
                                 for s in sorted(set(sources))},
                   "choice": idx.tolist()}
            rows[wname] = row
        bases = [b for b in baselines if b in matched]
        diffs = {f"{a} - {b}": list(paired_interval(matched[a], matched[b], n_boot=n_boot, seed=seed))
                 for i, b in enumerate(bases) for a in matched if a not in bases[:i + 1]}  # no mirrored pairs
        out["by_n"][n] = {"weightings": rows, "differences": diffs}
    return out


def verdict(mean: float, lo: float, hi: float, *, what: str, than: str) -> str:
    """A sentence that follows the interval (excludes 0 on one side, or contains it)."""
    if lo > 0:
        return f"{what} scores higher than {than} (+{mean:.3f}, interval [{lo:+.3f}, {hi:+.3f}] above 0)"
    if hi < 0:
        return f"{what} scores lower than {than} ({mean:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] below 0)"
    return (f"no difference between {what} and {than} was measured ({mean:+.3f}, interval [{lo:+.3f}, "
            f"{hi:+.3f}] contains 0)")
