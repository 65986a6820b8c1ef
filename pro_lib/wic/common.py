"""What the stages of the wic package share: the reward suite they load and score with, the
``max_prompt_tokens`` field, the prompt mix they report, and how a stage's scratch folder becomes its
finished policy folder (``scratch_dir`` -> ``finish_policy``; ``saved_metrics`` for a re-run with
nothing to redo)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from pro_lib import distributed
from pro_lib.artifacts import SuiteManifest
from pro_lib.checkpoints import record_fingerprint
from pro_lib.config import field
from pro_lib.errors import ConfigError
from pro_lib.io import atomic_dir

if TYPE_CHECKING:
    from pro_lib.wic.policy import WICPolicy


def load_suite(path: str | None, *, what: str):
    from pro_lib.suite import RewardSuite

    if not path:
        raise ConfigError(f"{what}: give --suite <folder> (a reward suite saved by `pro rewards score`)")
    return RewardSuite.load(SuiteManifest.folder(path))


def score(suite, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) scores; normalised = raw when the suite has no stats."""
    raw = np.asarray(suite.score(list(prompts), list(responses), progress=False), dtype=np.float64)
    z = suite.normalize(raw) if suite.stats is not None else raw
    return raw, np.asarray(z, dtype=np.float64)


def max_prompt_tokens_field():
    """The ``max_prompt_tokens`` config field (SFT, online sampling, evaluation): the one definition."""
    return field(256, help="prompts longer than this many tokens keep their last tokens")


def prompt_mix(chosen: Sequence[str], pool: Sequence[str], sources: Sequence[str | None] | None) -> dict[str, int]:
    """Per-source counts of the prompts a stage used (``pool``/``sources`` align)."""
    from pro_lib.data import source_mix

    by_prompt = dict(zip(pool, sources if sources is not None else [None] * len(pool)))
    return source_mix(by_prompt.get(p) for p in chosen)


def finish_policy(policy: WICPolicy, out: Path, scratch: Path, fp: Mapping | None = None) -> None:
    """Save the policy into ``out`` (atomically), keeping side files written in ``scratch``; ``fp``: the
    run's fingerprint, kept in the finished folder (a changed re-run is refused, not retrained over it).
    Data-parallel: rank 0 saves (every rank holds the same weights), the others wait for it. A LoRA policy is
    saved as its adapter (:mod:`pro_lib.adapters`)."""
    from pro_lib.adapters import save_model_files

    distributed.barrier()
    if not distributed.is_main():
        distributed.barrier()
        return
    if fp is not None:
        record_fingerprint(scratch, fp)
    with atomic_dir(out) as tmp:
        save_model_files(policy.model, tmp, base=policy.base_ref)
        policy.tokenizer.save_pretrained(tmp)
        policy.wic_config().save(tmp)
        for f in scratch.glob("*.json*"):
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    shutil.rmtree(scratch, ignore_errors=True)
    distributed.barrier()


def scratch_dir(out: Path, *, create: bool = True) -> Path:
    """Checkpoints and logs of a stage live beside its output until it finishes (resumable)."""
    d = out.with_name(f".{out.name}.work")
    if create:
        d.mkdir(parents=True, exist_ok=True)
    return d


def saved_metrics(out: Path) -> dict:
    """The numeric metrics a finished run saved (its metrics.json), for a re-run with nothing to redo."""
    import json

    try:
        saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in saved.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
