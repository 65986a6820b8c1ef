"""PRO-WIC offline stage (paper Eq. 10).

``train_wic_offline``: score each preferred response with the reward suite, w* = softmax(z / tau)
(Eq. 7), SFT on the responses only (trl SFTTrainer, completion-only loss). ``conditioning: rewards``
is RiC offline (``RiCOfflineConfig``): the tags hold the response's own (min-max scaled) rewards.
The config is in :mod:`pro_lib.wic.offline_config`; the SFT in :mod:`pro_lib.wic.sft`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib import distributed
from pro_lib.checkpoints import (already_finished, check_output_folder, digest_model, digest_value, exclusive_output,
                                  fingerprint, prepare_resume)
from pro_lib.config import to_dict
from pro_lib.errors import ConfigError
from pro_lib.io import write_json, write_jsonl
from pro_lib.targets import check_objectives
from pro_lib.policy import truncate_prompt
from pro_lib.wic.common import finish_policy, load_suite, saved_metrics, score, scratch_dir
from pro_lib.wic.offline_config import OFFLINE_RESPONSES, RiCOfflineConfig, WICOfflineConfig
from pro_lib.wic.policy import WICPolicy
from pro_lib.wic.sft import sft_train

__all__ = ["RiCOfflineConfig", "WICOfflineConfig", "build_offline_examples", "scale_rewards", "train_wic_offline",
           "training_tag_max"]


def _reward_range(z: np.ndarray, names: Sequence[str]) -> dict[str, list[float]]:
    """Per-objective [lo, hi] for RiC's min-max scaling (5th / 95th percentiles: robust to outliers)."""
    lo, hi = np.percentile(z, 5, axis=0), np.percentile(z, 95, axis=0)
    return {n: [float(a), float(max(b, a + 1e-6))] for n, a, b in zip(names, lo, hi)}


def scale_rewards(z: np.ndarray, reward_range: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    lo = np.array([reward_range[n][0] for n in names])
    hi = np.array([reward_range[n][1] for n in names])
    return np.clip((np.atleast_2d(z) - lo) / (hi - lo), 0.0, 1.0)


def training_tag_max(values: np.ndarray, explicit: float | None, decimals: int) -> float:
    """The largest tag value inference writes for a PRO-WIC policy: ``explicit``, else the 95th percentile
    of the training rows' largest weight (rounded as the tags are); 1.0 when the tags reach the corners."""
    if explicit is not None:
        if not 0.0 < float(explicit) <= 1.0:
            raise ConfigError(f"tag_max must be in (0, 1], got {explicit}")
        return float(explicit)
    return min(1.0, round(float(np.percentile(np.asarray(values).max(axis=1), 95)), int(decimals)))


# ---------------------------------------------------------------------------------------------
# offline stage
# ---------------------------------------------------------------------------------------------
def build_offline_examples(cfg: WICOfflineConfig, suite, tokenizer) -> tuple[list[dict], dict]:
    """Pairs -> scored chosen responses -> (prompt, response, w*, z) records."""
    from pro_lib.data import load_pairs, source_mix, stratified_sample
    from pro_lib.targets import resolve_tau, target_weights

    pairs = []
    for spec in cfg.data:
        pairs.extend(load_pairs(spec))
    if cfg.max_examples is not None and cfg.max_examples < len(pairs):
        keep = stratified_sample(range(len(pairs)), cfg.max_examples, sources=[p.source for p in pairs],
                                 seed=cfg.seed)
        pairs = [pairs[i] for i in sorted(keep)]
    if cfg.responses not in OFFLINE_RESPONSES:
        raise ConfigError(f"--responses must be one of {OFFLINE_RESPONSES}, got {cfg.responses!r}")
    prompts = [truncate_prompt(tokenizer, p.prompt, cfg.max_prompt_tokens) for p in pairs]
    items = [(pr, p, p.chosen, "chosen") for pr, p in zip(prompts, pairs)]
    if cfg.responses == "both":  # RiC: rejected responses too, each with its own reward tags
        items += [(pr, p, p.rejected, "rejected") for pr, p in zip(prompts, pairs)]
    raw, z = score(suite, [p.prompt for _, p, _, _ in items], [r for _, _, r, _ in items])
    tau = resolve_tau(cfg.tau, cfg.targets)  # the tau of the targets the orchestrator learned from
    w = target_weights(z, tau)
    recs = [{"prompt": pr, "response": r.strip(), "raw": raw[i], "z": z[i], "weights": w[i],
             "source": p.source, "side": side} for i, (pr, p, r, side) in enumerate(items)]
    info = {"n_pairs": len(pairs), "n_examples": len(recs), "responses": cfg.responses, "tau": tau,
            "source_mix": source_mix(p.source for p in pairs), "mean_target": w.mean(axis=0).tolist(),
            "argmax_share": (np.bincount(w.argmax(axis=1), minlength=suite.K) / len(recs)).tolist()}
    return recs, info


@exclusive_output("WIC offline SFT")
def train_wic_offline(cfg: WICOfflineConfig, *, suite=None, policy: WICPolicy | None = None) -> dict:
    """Offline stage (Eq. 10). Writes ``<output_dir>`` = the WIC policy (+ metrics.json, examples.jsonl).

    ``suite`` / ``policy`` may be passed in-process (tests, notebooks) instead of by path.
    """
    from pro_lib.policy import load_policy

    t0 = time.time()
    out = Path(cfg.output_dir)
    check_output_folder(out, what="WIC offline SFT")
    if suite is None:
        suite = load_suite(cfg.suite or (str(Path(cfg.targets) / "suite") if cfg.targets else None),
                            what="wic offline")
    policy_digest = digest_model(cfg.policy, given=policy)
    if policy is None:
        model, tok = load_policy(cfg.policy)
        policy = WICPolicy(model, tok, suite.names, decimals=cfg.decimals, conditioning=cfg.conditioning,
                           orchestrator=cfg.orchestrator, method=cfg.method, system_prompt=cfg.system_prompt,
                           base_ref=cfg.policy)
    else:
        check_objectives(policy.objectives, suite.names, got_what="the policy", expected_what="the reward suite")
    policy.conditioning, policy.method, policy.ric_mapping = cfg.conditioning, cfg.method, cfg.ric_mapping
    policy.orchestrator = cfg.orchestrator or policy.orchestrator
    if cfg.system_prompt is not None:
        policy.system_prompt = cfg.system_prompt
    recs, info = build_offline_examples(cfg, suite, policy.tokenizer)
    z = np.stack([r["z"] for r in recs])
    # the offline data's score distribution: fixed rejection bars for the online stage
    policy.score_percentiles = {n: np.percentile(z[:, k], np.arange(101)).tolist() for k, n in enumerate(suite.names)}
    if cfg.conditioning == "rewards":
        policy.reward_range = _reward_range(z, suite.names)
        values = scale_rewards(z, policy.reward_range, suite.names)
    else:
        values = np.stack([r["weights"] for r in recs])
        policy.tag_max = training_tag_max(values, cfg.tag_max, cfg.decimals)
    examples = [{"prompt": policy.render(r["prompt"], v), "completion": r["response"]} for r, v in zip(recs, values)]
    # the tau the tags were made with (cfg.tau None means the targets' tau), so a changed tau is named
    fp = fingerprint(dataclasses.replace(cfg, tau=info.get("tau", cfg.tau)),
                     {"examples_content": digest_value(examples), "policy_content": policy_digest})
    scratch = scratch_dir(out, create=False)
    if already_finished(out, fp, cfg.resume, what="WIC offline SFT", ckpt_dir=scratch / "checkpoints"):
        return saved_metrics(out)
    distributed.main_first(lambda: prepare_resume(scratch / "checkpoints", fp, cfg.resume, outputs=[out, scratch],
                                                  what="WIC offline SFT", finished=out))
    scratch.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        write_jsonl(scratch / "examples.jsonl", ({"prompt": e["prompt"], "completion": e["completion"],
                                                  "weights": r["weights"], "z": r["z"], "side": r["side"]}
                                                 for e, r in zip(examples, recs)))
    m = sft_train(policy, examples, cfg, scratch / "checkpoints", desc="WIC offline SFT")
    metrics = {"stage": "wic_offline", "method": cfg.method, "conditioning": cfg.conditioning,
               "objectives": suite.names, **info, **m, "wall_seconds": time.time() - t0}
    if distributed.is_main():
        write_json(scratch / "metrics.json", metrics)
        write_json(scratch / "config.json.stage", to_dict(cfg))
    finish_policy(policy, out, scratch, fp)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
