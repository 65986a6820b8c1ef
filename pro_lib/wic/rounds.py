"""PRO-WIC online rounds (paper Eq. 11): weights per prompt (the orchestrator's, or random for RiC
online), N samples per prompt, score, rejection sampling, SFT on the kept samples.

``wic_online`` runs E rounds in one call (the CLI); ``sample_online_round`` and ``train_wic_online``
are one round's two halves (the KFP components ``wic_online_sample`` / ``wic_online_sft``). Their configs
are in :mod:`pro_lib.wic.rounds_config`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib import distributed
from pro_lib.artifacts import WICPolicyManifest
from pro_lib.checkpoints import (already_finished, check_output_folder, digest_data, digest_model, digest_value,
                                  exclusive_output, find_checkpoint, fingerprint, prepare_resume)
from pro_lib.data import load_prompt_pool
from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl
from pro_lib.targets import check_objectives
from pro_lib.policy import resolve_device, truncate_prompt
from pro_lib.wic.common import finish_policy, load_suite, prompt_mix, saved_metrics, score, scratch_dir
from pro_lib.wic.offline import scale_rewards
from pro_lib.wic.policy import WICPolicy
from pro_lib.wic.rounds_config import (PREFERENCE_SOURCES, RiCOnlineConfig, SamplingOptions, WICOnlineConfig,
                                       WICOnlineLoopConfig, WICSampleConfig)
from pro_lib.wic.sft import SFTOptions, sft_train

__all__ = ["RiCOnlineConfig", "WICOnlineConfig", "WICOnlineLoopConfig", "WICSampleConfig", "kept_examples",
           "offline_replay", "rejection_mask", "round_prompts", "run_sampling_round", "sample_online_round",
           "sample_preferences", "sample_round", "sft_round", "train_wic_online", "wic_online", "wic_online_round"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# rounds
# ---------------------------------------------------------------------------------------------
def sample_preferences(source: str, prompts: Sequence[str], names: Sequence[str], rng: np.random.Generator, *,
                       orchestrator=None, policy: WICPolicy | None = None, alpha: float = 1.0) -> np.ndarray:
    """(O, K) weight vectors for a round's prompts from ``source``."""
    k = len(names)
    if source.startswith("orchestrator"):
        if orchestrator is None and (policy is None or policy.orchestrator is None):
            raise ConfigError(f"preferences={source} needs --orchestrator <folder or models:/ ref>")
        if policy is not None:
            w = policy.orchestrator_weights(prompts, orchestrator)
        else:
            orchestrator.check_objectives(names, what="the policy")
            w = np.asarray(orchestrator.predict(list(prompts)), dtype=np.float32)
        if source == "orchestrator-shuffled":  # control: the same weights, no prompt information
            return w[rng.permutation(len(w))]
        if source == "orchestrator-mean":  # control: one constant vector, the orchestrator's mean
            return np.tile(w.mean(axis=0, keepdims=True), (len(w), 1)).astype(np.float32)
        return w
    if source == "dirichlet":
        return rng.dirichlet(np.full(k, alpha), size=len(prompts)).astype(np.float32)
    if source == "ric":
        from pro_lib.pareto import weight_grid

        grid = weight_grid(k, 0.1)
        return grid[rng.integers(0, len(grid), size=len(prompts))]
    if source == "uniform":
        return np.full((len(prompts), k), 1.0 / k, dtype=np.float32)
    raise ConfigError(f"unknown preference source {source!r}; choose one of {PREFERENCE_SOURCES}")


def rejection_mask(z: np.ndarray, weights: np.ndarray, groups: np.ndarray, opts: SamplingOptions,
                   thresholds: np.ndarray | None = None) -> np.ndarray:
    """Which samples to keep. ``z``: (M, K) normalised scores, ``weights``: (M, K), ``groups``: prompt ids.

    ``thresholds``: fixed per-objective bars (K,) for the quantile rule (else this batch's quantiles);
    the weighted rule then compares w.z with w.thresholds.
    """
    m = len(z)
    if opts.rejection == "none":
        return np.ones(m, dtype=bool)
    if opts.rejection == "topk":
        weighted = (z * weights).sum(axis=1)
        keep = np.zeros(m, dtype=bool)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            keep[idx[np.argsort(-weighted[idx], kind="stable")[:opts.top_k]]] = True
        return keep
    if not 0.0 <= opts.quantile < 1.0:
        raise ConfigError(f"quantile must be in [0, 1), got {opts.quantile}")
    if opts.quantile_rule == "weighted":
        weighted = (z * weights).sum(axis=1)
        if thresholds is not None:
            return weighted >= (weights * np.asarray(thresholds)[None]).sum(axis=1)
        return weighted >= np.quantile(weighted, opts.quantile)
    bar = np.asarray(thresholds)[None] if thresholds is not None else np.quantile(z, opts.quantile, axis=0)
    above = z >= bar
    return above.all(axis=1) if opts.quantile_rule == "all" else above.any(axis=1)


def round_prompts(prompts: Sequence[str], round_index: int, count: int, seed: int,
                  sources: Sequence[str | None] | None = None) -> list[str]:
    """This round's O prompts: consecutive blocks (one per round, wrapping around) of a seeded order of
    the pool stratified by ``sources`` (``pro_lib.data.stratified_order``), so each round holds every
    source in proportion."""
    from pro_lib.data import stratified_order

    if not prompts:
        raise DataError("no prompts to sample from")
    order = stratified_order(sources if sources is not None else [None] * len(prompts), seed)
    start = (round_index - 1) * count
    return [prompts[order[(start + i) % len(prompts)]] for i in range(min(count, len(prompts)))]


def run_sampling_round(policy: WICPolicy, suite, prompts: Sequence[str], opts: SamplingOptions, *,
                       round_index: int, seed: int, orchestrator=None) -> tuple[list[dict], dict]:
    """Sample, score and reject for one round; returns (all sample records, round metrics)."""
    t0 = time.time()
    rng = np.random.default_rng([seed, round_index])
    prompts = list(prompts)
    check_objectives(policy.objectives, suite.names, got_what="the policy", expected_what="the reward suite")
    w = sample_preferences(opts.preferences, prompts, suite.names, rng, orchestrator=orchestrator, policy=policy,
                           alpha=opts.dirichlet_alpha)
    texts = policy.condition(prompts, w)
    n = opts.samples_per_prompt
    t_gen = time.time()
    responses = policy.generate_texts(texts, batch_size=max(1, opts.gen_batch_size // n), num_return_sequences=n,
                                      max_new_tokens=opts.max_new_tokens, do_sample=True,
                                      temperature=opts.temperature, top_p=opts.top_p, seed=seed * 1000 + round_index,
                                      progress=True, desc=f"round {round_index}: sample")
    t_gen = time.time() - t_gen
    groups = np.repeat(np.arange(len(prompts)), n)
    sw = w[groups]
    sp = [prompts[g] for g in groups]
    t_score = time.time()
    raw, z = score(suite, sp, responses)
    t_score = time.time() - t_score
    thresholds = None
    if opts.rejection == "quantile" and opts.thresholds == "offline":
        if not policy.score_percentiles:
            raise ConfigError("thresholds=offline needs the offline data's score distribution, which this policy "
                              "does not record (trained outside `pro wic offline`?); use --thresholds round")
        thresholds = np.array([np.interp(opts.quantile * 100, np.arange(101), policy.score_percentiles[n])
                               for n in suite.names])
    keep = rejection_mask(z, sw, groups, opts, thresholds)
    recs = [{"prompt": sp[i], "response": responses[i], "weights": sw[i], "raw": raw[i], "z": z[i],
             "kept": bool(keep[i]), "round": round_index} for i in range(len(sp))]
    weighted = (z * sw).sum(axis=1)
    metrics = {"round": round_index, "prompts": len(prompts), "samples": len(sp), "kept": int(keep.sum()),
               "acceptance_rate": float(keep.mean()),
               "mean_weighted_reward": float(weighted.mean()),
               "mean_weighted_reward_kept": float(weighted[keep].mean()) if keep.any() else math.nan,
               "generate_seconds": t_gen, "score_seconds": t_score, "sample_round_seconds": time.time() - t0,
               "empty_responses": int(sum(1 for r in responses if not r.strip())),
               "thresholds": None if thresholds is None else thresholds.tolist()}
    for k, name in enumerate(suite.names):
        metrics[f"mean_reward_{name}"] = float(z[:, k].mean())
        metrics[f"mean_weight_{name}"] = float(w[:, k].mean())
    return recs, metrics


def round_orchestrator(cfg: SamplingOptions, policy: WICPolicy, orchestrator=None):
    """The orchestrator a round's weights come from with ``preferences=orchestrator*``: the one passed in,
    else ``cfg.orchestrator`` (loaded once), else the one recorded in the policy (None here: the policy
    loads its own)."""
    if orchestrator is not None or not cfg.preferences.startswith("orchestrator"):
        return orchestrator
    if not cfg.orchestrator and policy.orchestrator is None:
        raise ConfigError(f"preferences={cfg.preferences} needs --orchestrator <folder or models:/ ref> "
                          "(or use --preferences dirichlet|ric for RiC online)")
    if not cfg.orchestrator:
        return None
    from pro_lib.orchestrator import PreferenceOrchestrator

    return PreferenceOrchestrator.from_pretrained(cfg.orchestrator)


def sample_round(policy: WICPolicy, suite, opts: SamplingOptions, round_index: int, *, seed: int,
                 pool: Sequence[str], sources: Sequence[str | None] | None = None,
                 orchestrator=None) -> tuple[list[dict], dict]:
    """One online round's sampling half, the one implementation behind both the CLI loop (``wic_online``)
    and the KFP component (``sample_online_round``): this round's block of the prompt pool
    (``round_prompts``), each prompt cut to its last ``opts.max_prompt_tokens`` tokens, then sampled,
    scored and rejection-sampled (``run_sampling_round``). Returns (all sample records, round metrics)."""
    chosen = round_prompts(pool, round_index, opts.prompts_per_round, seed, sources=sources)
    prompts = [truncate_prompt(policy.tokenizer, p, opts.max_prompt_tokens) for p in chosen]
    recs, metrics = run_sampling_round(policy, suite, prompts, opts, round_index=round_index, seed=seed,
                                       orchestrator=orchestrator)
    metrics["source_mix"] = prompt_mix(chosen, pool, sources)
    return recs, metrics


def sft_round(policy: WICPolicy, examples: Sequence[Mapping[str, str]], opts: SFTOptions, work_dir: Path, *,
              round_index: int) -> dict:
    """One online round's SFT half, the one implementation behind both the CLI loop and the KFP component
    (``train_wic_online``): SFT on ``examples`` with seed ``opts.seed + round_index`` (each round shuffles
    differently). When every sample was rejected the policy stays as it is (the acceptance rate says so)."""
    if not examples:
        log.warning("round %d: every sample was rejected; no SFT this round", round_index)
        return {"sft_examples": 0, "sft_steps": 0}
    opts = dataclasses.replace(opts, seed=opts.seed + round_index)
    return sft_train(policy, examples, opts, work_dir, desc=f"round {round_index}: SFT")


def sample_online_round(cfg: WICSampleConfig, *, suite=None, policy: WICPolicy | None = None,
                        orchestrator=None) -> dict:
    """One round's sampling half. Writes samples.jsonl (all), kept.jsonl and metrics.json into output_dir."""
    suite = suite or load_suite(cfg.suite, what="wic sample")
    policy = policy or WICPolicy.from_pretrained(cfg.policy, device=resolve_device(None))
    orchestrator = round_orchestrator(cfg, policy, orchestrator)
    pool, sources = load_prompt_pool(cfg.data)
    recs, metrics = sample_round(policy, suite, cfg, cfg.round_index, seed=cfg.seed, pool=pool, sources=sources,
                                 orchestrator=orchestrator)
    with atomic_dir(cfg.output_dir) as tmp:
        write_jsonl(tmp / "samples.jsonl", recs)
        write_jsonl(tmp / "kept.jsonl", (r for r in recs if r["kept"]))
        write_json(tmp / "metrics.json", {**metrics, "objectives": suite.names, "preferences": cfg.preferences})
    return metrics


def kept_examples(policy: WICPolicy, recs: Sequence[Mapping]) -> list[dict]:
    """SFT examples from kept samples: conditioned on the weights they were sampled with (PRO-WIC) or,
    for a rewards-conditioned policy (RiC), relabelled with the rewards they achieved."""
    out = []
    for r in recs:
        if not r.get("kept", True) or not str(r["response"]).strip():
            continue
        if policy.conditioning == "rewards":
            if not policy.reward_range:
                raise CheckpointError("a rewards-conditioned policy has no reward_range in its wic.json; "
                                      "retrain it with `pro ric offline`")
            values = scale_rewards(np.asarray(r["z"]), policy.reward_range, policy.objectives)[0]
        else:  # the tags the sample was generated with
            values = policy.tag_values(np.asarray(r["weights"], dtype=np.float64))[0]
        out.append({"prompt": policy.render(r["prompt"], values), "completion": r["response"]})
    return out


def offline_replay(offline_policy: str | Path, n: int, *, quantile: float, seed: int) -> list[dict]:
    """The offline SFT examples (``<offline_policy>/examples.jsonl``, written by the offline stage) that clear
    ``quantile`` of the offline scores on any objective, at most ``n`` of them (seeded; -1: all; 0: none):
    what RiC's released code mixes into every online round's SFT set. The CLI loop and the KFP SFT half
    both call this."""
    if not n:
        return []
    path = Path(offline_policy) / "examples.jsonl"
    if not path.is_file():
        raise DataError(f"--replay-offline needs the offline stage's examples at {path}; start the online stage "
                        "from a policy written by `pro wic offline` / `pro ric offline` (or name it with "
                        "--offline-policy), or pass --replay-offline 0")
    rows = read_jsonl(path, required=("prompt", "completion", "z"), what="offline SFT example")
    z = np.array([r["z"] for r in rows], dtype=np.float64)
    keep = np.flatnonzero((z >= np.quantile(z, quantile, axis=0)[None]).any(axis=1))
    if n > 0 and len(keep) > n:
        keep = np.sort(np.random.default_rng(seed).choice(keep, n, replace=False))
    return [{"prompt": rows[i]["prompt"], "completion": rows[i]["completion"]} for i in keep]


def _read_kept(spec: str) -> list[dict]:
    p = Path(spec)
    if p.is_dir():
        p = p / "kept.jsonl"
    if not p.is_file():
        raise DataError(f"no kept samples at {spec}; run `pro wic sample` (a sampling round) first")
    return read_jsonl(p, required=("prompt", "response", "weights"), what="sample record")


@exclusive_output("WIC online SFT")
def train_wic_online(cfg: WICOnlineConfig, *, policy: WICPolicy | None = None) -> dict:
    """One round's SFT half: fine-tune the policy on the kept samples; writes the new policy to output_dir."""
    out = Path(cfg.output_dir)
    check_output_folder(out, what="WIC online SFT")
    policy_digest = digest_model(cfg.policy, given=policy)
    policy = policy or WICPolicy.from_pretrained(cfg.policy, trainable=True)  # a LoRA adapter trains on
    recs = [r for spec in cfg.samples for r in _read_kept(spec)]
    new = kept_examples(policy, recs)
    replay = offline_replay(cfg.offline_policy or cfg.policy, cfg.replay_offline, quantile=cfg.replay_quantile,
                            seed=cfg.seed)
    examples = new + replay
    round_index = max((int(r.get("round", 0)) for r in recs), default=0)  # recorded by the sampling half
    scratch = scratch_dir(out, create=False)
    fp = fingerprint(cfg, {"examples_content": digest_value(examples), "policy_content": policy_digest})
    if already_finished(out, fp, cfg.resume, what="WIC online SFT", ckpt_dir=scratch / "checkpoints"):
        return saved_metrics(out)
    distributed.main_first(lambda: prepare_resume(scratch / "checkpoints", fp, cfg.resume, outputs=[out, scratch],
                                                  what="WIC online SFT", finished=out))
    m = sft_round(policy, examples, cfg, scratch / "checkpoints", round_index=round_index)
    m.update({"sft_examples_new": len(new), "sft_examples_offline": len(replay)})
    if distributed.is_main():
        write_json(scratch / "metrics.json", {"stage": "wic_online_sft", **m})
    finish_policy(policy, out, scratch, fp)
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def wic_online_round(cfg: WICOnlineLoopConfig, round_index: int, *, policy: WICPolicy, suite, pool: Sequence[str],
                     orchestrator=None, sources: Sequence[str | None] | None = None,
                     replay: Sequence[Mapping[str, str]] | None = None) -> tuple[WICPolicy, dict]:
    """One full online round in memory: sample + score + reject, then SFT; saves round-<e>/.

    ``sources``: each pool prompt's source; the round's prompts are stratified by it. ``replay``: offline
    SFT examples mixed into this round's SFT set (``offline_replay``); with ``cfg.replay_rounds`` the
    kept samples of earlier rounds join it too (RiC's released code does both)."""
    t0 = time.time()
    rdir = Path(cfg.output_dir) / f"round-{round_index}"
    recs, metrics = sample_round(policy, suite, cfg, round_index, seed=cfg.seed, pool=pool, sources=sources,
                                 orchestrator=orchestrator)
    write_jsonl(rdir / "samples.jsonl", recs)
    examples = kept_examples(policy, recs)
    previous = []
    if cfg.replay_rounds:  # RiC: every earlier round's kept samples stay in the SFT set
        for e in range(1, round_index):
            previous += kept_examples(policy, _read_kept(str(Path(cfg.output_dir) / f"round-{e}" / "samples.jsonl")))
    replay = list(replay or [])
    metrics.update({"sft_examples_new": len(examples), "sft_examples_previous_rounds": len(previous),
                    "sft_examples_offline": len(replay)})
    examples = examples + previous + replay
    work = Path(cfg.output_dir) / f".round-{round_index}.work"
    work.mkdir(parents=True, exist_ok=True)
    m = sft_round(policy, examples, cfg, work, round_index=round_index)
    metrics.update({k: v for k, v in m.items() if k != "resumed_from"})
    metrics["round_seconds"] = time.time() - t0
    finish_policy(policy, rdir / "policy", Path(cfg.output_dir) / f".round-{round_index}.work")
    write_json(rdir / "metrics.json", metrics)
    return policy, metrics


def _online_resume_check(cfg: WICOnlineLoopConfig, out: Path, *, suite, policy, orchestrator) -> None:
    """Finished rounds (and a killed round's checkpoints) are reused only when made with the same settings
    and inputs; ``rounds`` may grow (round e does not depend on how many follow)."""
    inputs = {"data_content": digest_data(cfg.data), "policy_content": digest_model(cfg.policy, given=policy),
              "suite_content": digest_model(cfg.suite, given=suite)}
    if cfg.preferences == "orchestrator":
        inputs["orchestrator_content"] = digest_model(cfg.orchestrator, given=orchestrator)
    state = sorted(out.glob("round-*/metrics.json")) + [c for w in sorted(out.glob(".round-*.work"))
                                                        if (c := find_checkpoint(w))]
    prepare_resume(out, fingerprint(cfg, inputs, ignore={"rounds"}), cfg.resume, found=state[0] if state else None,
                   what="WIC online stage", finished=out)


@exclusive_output("WIC online stage")
def wic_online(cfg: WICOnlineLoopConfig, *, suite=None, policy: WICPolicy | None = None, orchestrator=None) -> dict:
    """Online stage (Eq. 11): E rounds. Finished rounds are skipped when re-run (resumable by round).

    Writes round-<e>/{samples.jsonl, policy/, metrics.json}, rounds.jsonl, policy/ (final), metrics.json.
    """
    out = Path(cfg.output_dir)
    _online_resume_check(cfg, out, suite=suite, policy=policy, orchestrator=orchestrator)
    out.mkdir(parents=True, exist_ok=True)
    suite = suite or load_suite(cfg.suite, what="wic online")
    pool, sources = load_prompt_pool(cfg.data)
    replay = offline_replay(cfg.policy, cfg.replay_offline, quantile=cfg.quantile, seed=cfg.seed)
    history = []
    start = 1
    for e in range(cfg.rounds, 0, -1):  # resume after the last finished round
        if (out / f"round-{e}" / "metrics.json").is_file() and WICPolicyManifest.exists(out / f"round-{e}" / "policy"):
            start = e + 1
            break
    for e in range(1, start):
        history.append(read_json(out / f"round-{e}" / "metrics.json"))
    if start > 1:
        log.info("resuming the online stage after round %d", start - 1)
        policy = WICPolicy.from_pretrained(out / f"round-{start - 1}" / "policy", device=resolve_device(cfg.device),
                                           trainable=True)
    elif policy is None:
        policy = WICPolicy.from_pretrained(cfg.policy, device=resolve_device(cfg.device), trainable=True)
    orchestrator = round_orchestrator(cfg, policy, orchestrator)
    for e in range(start, cfg.rounds + 1):
        policy, m = wic_online_round(cfg, e, policy=policy, suite=suite, pool=pool, orchestrator=orchestrator,
                                     sources=sources, replay=replay)
        log.info("round %d: acceptance %.3f, weighted reward %.3f, %.0fs", e, m["acceptance_rate"],
                 m["mean_weighted_reward"], m["round_seconds"])
        history.append(m)
    write_jsonl(out / "rounds.jsonl", history)
    if history:
        src = out / f"round-{cfg.rounds}" / "policy"
        with atomic_dir(out / "policy") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    metrics = {"rounds": len(history), "preferences": cfg.preferences,
               "acceptance_rate": float(np.mean([h["acceptance_rate"] for h in history])) if history else math.nan,
               "mean_weighted_reward": float(np.mean([h["mean_weighted_reward"] for h in history])) if history else math.nan,
               "wall_seconds": float(sum(h.get("round_seconds", 0.0) for h in history))}
    write_json(out / "metrics.json", {**metrics, "per_round": history})
    return metrics
