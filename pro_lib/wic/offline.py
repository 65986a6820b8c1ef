"""PRO-WIC offline stage (paper Eq. 10) and the SFT every WIC stage runs.

``train_wic_offline``: score each preferred response with the reward suite, w* = softmax(z / tau)
(Eq. 7), SFT on the responses only (trl SFTTrainer, completion-only loss). ``conditioning: rewards``
is RiC offline (``RiCOfflineConfig``): the tags hold the response's own (min-max scaled) rewards.
``sft_train`` (and ``SFTOptions``) is shared by the online rounds and the Rewarded Soups experts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pro_lib import distributed, tracking
from pro_lib.checkpoints import (RESUME_HELP, already_finished, check_output_folder, digest_model, digest_value,
                                  exclusive_output, find_checkpoint, fingerprint, prepare_resume, train_or_restore)
from pro_lib.config import field, to_dict
from pro_lib.errors import ConfigError, DataError
from pro_lib.io import write_json, write_jsonl
from pro_lib.targets import check_objectives
from pro_lib.policy import resolve_device, truncate_prompt
from pro_lib.wic.common import finish_policy, load_suite, max_prompt_tokens_field, saved_metrics, score, scratch_dir
from pro_lib.wic.policy import CONDITIONINGS, RIC_MAPPINGS, WICPolicy

OFFLINE_RESPONSES = ("chosen", "both")


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
@dataclass
class SFTOptions:
    """SFT settings shared by the offline and online stages."""

    epochs: float = field(1.0, help="SFT epochs over the examples")
    max_steps: int = field(-1, help="stop after this many optimizer steps, overriding --epochs (-1: off; the paper: "
                                    "10,000 offline, 5,000 per online round)")
    learning_rate: float = field(2e-5, help="AdamW learning rate (full fine-tune; use ~1e-4 with LoRA)")
    batch_size: int = field(8, help="SFT examples per optimizer step (split across data-parallel processes)")
    gradient_accumulation_steps: int = field(1, help="gradient accumulation steps")
    max_length: int = field(384, help="max tokens per SFT example (conditioned prompt + response)")
    max_prompt_tokens: int = max_prompt_tokens_field()
    lora_r: int = field(0, help="LoRA rank; 0 = full fine-tune (the default for small models)")
    lora_alpha: int = field(32, help="LoRA alpha (with --lora-r > 0)")
    trainable_layers: int = field(0, help="train only the top N decoder layers and the final norm; the "
                                          "embeddings and lower layers stay frozen (SmolLM2, N = 8 of 30, 2 "
                                          "CPU cores: 6.6 s per step vs 11 full, but the demo policy did not "
                                          "learn its weights in 80 steps); 0 = full fine-tune")
    seed: int = field(0, help="random seed")
    device: str | None = field(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    bf16: bool = field(False, help="bf16 mixed precision: on a GPU, or autocast on a CPU with native bf16 "
                                   "(avx512_bf16 / AMX; elsewhere it falls back to fp32 with a warning)")
    padding_free: bool = field(False, help="concatenate each batch into one sequence without padding "
                                           "(attention stays within each example)")
    save_steps: int = field(200, help="checkpoint every this many steps (re-running resumes)")
    resume: str = field("auto", help=RESUME_HELP)


@dataclass
class WICOfflineConfig(SFTOptions):
    """Offline stage (paper Eq. 10): SFT on preferred responses with their target weights in the prompt.

    conditioning=weights is PRO-WIC (tags hold w* = softmax(z / tau)); conditioning=rewards is RiC
    offline (tags hold the response's own min-max scaled rewards).
    """

    policy: str = field("smollm2", help="base policy: 'smollm2' (bundled), a folder, a hub name or models:/ ref")
    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="preference pairs (load_pairs specs); the chosen responses are the SFT targets")
    suite: str | None = field(None, help="reward suite folder (RewardSuite.load); default: <targets>/suite")
    targets: str | None = field(None, help="a `pro rewards score` output folder: its suite (and targets.jsonl "
                                           "when its prompts match the data) are reused")
    output_dir: str = field("runs/wic_offline", help="output folder: the WIC policy, metrics.json, train_log.jsonl")
    conditioning: str = field("weights", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    tau: float | None = field(None, help="softmax temperature of w*; default: the tau --targets were built with "
                                         "(target_report.json), else 0.1 (paper)")
    decimals: int = field(2, help="decimals of the weights in the prompt")
    system_prompt: str | None = field(None, help="the chat template's system turn, kept in the policy for every later "
                                                 "stage; default: the template's own (SmolLM2 adds a 21-token one); "
                                                 "'' an empty turn (the main job: about 16 fewer tokens per example)")
    max_examples: int | None = field(None, help="use at most this many pairs (a random sample stratified by source, "
                                                "seed --seed)")
    responses: str = field("chosen", help="SFT on the chosen responses (PRO-WIC, paper Eq. 10) or on chosen and "
                                          "rejected, each tagged with its own scores (both: RiC's released code)",
                           choices=list(OFFLINE_RESPONSES))
    orchestrator: str | None = field(None, help="orchestrator recorded in the policy for generate(weights=None)")
    method: str = field("pro-wic", help="label recorded in the policy (pro-wic, ric-offline, ...)")
    ric_mapping: str = field("linf", help="conditioning=rewards only: how a preference w becomes desired rewards "
                                          "at inference (linf: RiC paper; l2: RiC's released eval script; linear)",
                             choices=list(RIC_MAPPINGS))
    tag_max: float | None = field(None, help="conditioning=weights only: the tag value a corner of the simplex is "
                                             "written as at inference (weights shrink toward uniform to fit); default: "
                                             "the 95th percentile of the training tags' largest weight, so soft tags "
                                             "(tau 0.5) never meet an unseen 1.00; 1 keeps the weights as given (paper)")


@dataclass
class RiCOfflineConfig(WICOfflineConfig):
    """RiC offline: SFT on preferred responses with their own (min-max scaled) rewards in the prompt;
    at inference a preference w maps to desired rewards (RiC's mapping)."""

    conditioning: str = field("rewards", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    method: str = field("ric-offline", help="label recorded in the policy")
    output_dir: str = field("runs/ric_offline", help="output folder: the RiC policy, metrics.json")
    responses: str = field("both", help="both (RiC's released code: chosen and rejected, each tagged with its own "
                                        "rewards) or chosen (the same SFT set as PRO-WIC)",
                           choices=list(OFFLINE_RESPONSES))


# ---------------------------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------------------------
def sft_train(policy: WICPolicy, examples: Sequence[Mapping[str, str]], opts: SFTOptions, work_dir: Path,
              *, desc: str = "SFT", compact_lm_head: bool = True) -> dict:
    """SFT ``policy.model`` in place on {prompt, completion} examples (loss on the completion only).

    ``compact_lm_head``: on a CPU, project only the completion positions through the LM head (same loss,
    faster; :func:`pro_lib.policy.compact_lm_head_on_cpu`); False keeps trl's own CPU path (the benchmark's
    "before" arms).

    Checkpoints go to ``work_dir``; re-running with the same work_dir resumes from the last one (the
    stage has checked with :func:`pro_lib.checkpoints.prepare_resume` that it was made with the same settings).
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise DataError(f"{desc}: no training examples (every sample was rejected?); lower the "
                        "rejection quantile or sample more")
    from pro_lib import adapters
    from pro_lib.wic.policy import wic_tags

    device = resolve_device(opts.device)
    if adapters.is_peft(policy.model):  # a LoRA policy: continue its adapter, or merge it for a full fine-tune
        if opts.lora_r > 0:
            adapters.make_trainable(policy.model)
        else:
            policy.model = policy.model.merge_and_unload()
    elif opts.lora_r > 0:  # the adapter: LoRA on the linear layers, the <Wk> rows as trainable token rows
        if opts.trainable_layers:
            raise ConfigError("--trainable-layers and --lora-r both choose what trains: pass one of them")
        policy.model = adapters.wrap_for_training(policy.model, adapters.lora_config(
            opts.lora_r, opts.lora_alpha, token_ids=policy.tokenizer.convert_tokens_to_ids(wic_tags(policy.K))))
    policy.model.to(device)
    policy.model.train()
    work_dir.mkdir(parents=True, exist_ok=True)
    from pro_lib.policy import compact_lm_head_on_cpu, fit_completions, resolve_bf16, train_top_layers

    if adapters.is_peft(policy.model):  # peft froze the base: only the adapter trains
        if opts.trainable_layers:
            raise ConfigError("--trainable-layers and --lora-r both choose what trains: pass one of them")
    else:
        train_top_layers(policy.model, opts.trainable_layers)

    if opts.padding_free:  # trl enforces no max_length without packing: cut the completions here instead
        examples = fit_completions(policy.tokenizer, examples, opts.max_length)
    args = SFTConfig(
        output_dir=str(work_dir), num_train_epochs=opts.epochs, max_steps=opts.max_steps,
        per_device_train_batch_size=distributed.per_device_batch(opts.batch_size),
        gradient_accumulation_steps=opts.gradient_accumulation_steps, learning_rate=opts.learning_rate,
        max_length=None if opts.padding_free else opts.max_length, padding_free=opts.padding_free,
        completion_only_loss=True, logging_steps=1, save_strategy="steps",
        save_steps=opts.save_steps, save_total_limit=1, report_to=[], seed=opts.seed,
        bf16=resolve_bf16(opts.bf16, device), use_cpu=device == "cpu", lr_scheduler_type="constant",
        gradient_checkpointing=device != "cpu",  # trl's default (on) costs CPU time a 135M model does not need
        warmup_steps=0, dataset_num_proc=None, disable_tqdm=False, eos_token=policy.tokenizer.eos_token)
    ds = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    trainer = SFTTrainer(model=policy.model, args=args, train_dataset=ds, processing_class=policy.tokenizer,
                         callbacks=[tracking.trainer_callback()])
    last = find_checkpoint(work_dir)
    t0 = time.time()
    with compact_lm_head_on_cpu(compact_lm_head):
        result = train_or_restore(trainer, last)
    model = trainer.model  # a LoRA policy stays a peft model: it is saved as its adapter
    if not adapters.is_peft(model):
        model.requires_grad_(True)
    policy.model = model
    policy.model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]  # gathered across ranks
    if distributed.is_main():
        write_jsonl(work_dir / "train_log.jsonl", trainer.state.log_history)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"sft_examples": len(examples), "sft_steps": int(result.global_step),
            "sft_loss_first": float(losses[0]) if losses else math.nan,
            "sft_loss_last": float(losses[-1]) if losses else math.nan,
            "sft_seconds": time.time() - t0, "resumed_from": str(last) if last else None}


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
