"""PRO-MORLHF and MORLHF: online RL against a weighted sum of K reward models (paper Eq. 9).

    max_pi  E_{x, y ~ pi(.|x)} [ sum_k w_k(x) * r_k(x, y) ]  -  beta * KL(pi || pi_ref)

- **PRO-MORLHF**: ``w(x) = f(x)``, the Preference Orchestrator's weights for each prompt.
- **MORLHF** (baseline): one fixed weight vector for every prompt (uniform by default).

The paper optimises Eq. 9 with PPO. trl 1.16 ships no PPO trainer any more, so PRO uses trl's
critic-free online trainers instead: **RLOO** (default; the KL penalty is subtracted from the
sequence reward, exactly the shape of Eq. 9) or **GRPO** (the KL term is added to the per-token
loss). Both sample ``num_generations`` completions per prompt and use their group as the baseline.

How the reward reaches trl: the training dataset has a ``prompt`` column and a ``weights`` column
(one K-vector per prompt, precomputed by the orchestrator or fixed). trl passes every dataset
column to Python reward functions, so :class:`WeightedReward` receives each completion's weights,
scores (prompt, completion) with all K reward models of a :class:`~pro_lib.suite.RewardSuite`
(each with its own tokenizer, normalised with the suite's saved statistics) and returns
``sum_k w_k * z_k``. Each objective's mean normalised reward is logged as ``objectives/<name>``
next to trl's ``reward`` (the weighted reward). The reward models never join the policy's
optimizer: they live in the suite, frozen (``requires_grad_(False)``, ``eval()``) and are called
under ``torch.inference_mode()``.

Stage function: :func:`train_morlhf` (``MorlhfTrainConfig``); it returns a metrics dict and writes
atomically into ``output_dir``. The held-out evaluation of trained runs (``evaluate_morlhf``,
``MorlhfEvalConfig``) is in :mod:`pro_lib.morlhf_eval`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pro_lib import tracking
from pro_lib.checkpoints import (RESUME_HELP, check_finished, check_fingerprint, check_output_folder, checkpoint_step,
                                  digest_data, digest_model, exclusive_output, fingerprint, is_complete, prepare_resume,
                                  record_fingerprint, train_or_restore)
from pro_lib.checkpoints import find_checkpoint as last_checkpoint
from pro_lib.config import field, to_dict
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_write_text, read_jsonl, write_json, write_jsonl
from pro_lib.data import load_split_prompts
from pro_lib.policy import load_policy, resolve_device
from pro_lib.morlhf_reward import (WEIGHTS_COLUMN, WeightedReward, build_prompt_dataset,
                                  SHUFFLED, resolve_weights, weight_matrix, weights_method)
from pro_lib.registry import ORCHESTRATOR_MODEL, model_ref

log = logging.getLogger(__name__)

ALGORITHMS = ("rloo", "grpo")


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

@dataclass
class MorlhfTrainConfig:
    """Train a policy with online RL on sum_k w_k(x) r_k(x, y) - beta KL (PRO-MORLHF / MORLHF).

    --weights orchestrator gives PRO-MORLHF (per-prompt weights from the Preference Orchestrator);
    --weights uniform or a fixed vector (0.7,0.3 or helpful=0.7,harmless=0.3) gives the MORLHF
    baseline. Re-running the same command resumes from the last checkpoint in output_dir (only
    when it was made with the same settings and inputs: see --resume).
    """

    policy: str = field("smollm2", help="policy to align: 'smollm2' (bundled), a folder, a hub name or models:/ ref")
    suite: str = field("runs/targets/suite", help="reward suite folder (suite.yaml with normalisation stats)")
    weights: str = field("orchestrator", help="'orchestrator' (PRO-MORLHF), 'orchestrator-shuffled' (its control: "
                                              "the orchestrator's weights permuted across prompts, --seed), "
                                              "'uniform' (MORLHF) or a fixed vector: 0.7,0.3 or helpful=0.7,harmless=0.3")
    orchestrator: str | None = field(model_ref(ORCHESTRATOR_MODEL),
                                     help="orchestrator folder or models:/ ref (used by --weights orchestrator)")
    data: list[str] = field(default_factory=lambda: ["demo"],
                            help="preference data whose prompts are trained on (load_pairs specs, comma-separated)")
    split: str = field("train", help="which side of the deterministic prompt split to use ('all': every prompt)",
                       choices=["train", "eval", "all"])
    eval_fraction: float = field(0.1, help="share of prompts held out for evaluation")
    split_seed: int = field(0, help="seed of the prompt split (use the same in `pro morlhf eval`)")
    max_prompts: int | None = field(None, help="use at most this many training prompts (a random sample stratified "
                                               "by source, seed --seed)")
    max_prompt_tokens: int = field(256, help="skip prompts longer than this many policy tokens")
    output_dir: str = field("runs/morlhf", help="output folder: checkpoints/, policy/, train_log.jsonl, metrics.json")
    algorithm: str = field("rloo", help="trl online trainer: rloo (KL in the reward, like Eq. 9) or grpo "
                                        "(KL in the loss)", choices=list(ALGORITHMS))
    beta: float = field(0.05, help="KL penalty coefficient to the reference policy")
    learning_rate: float = field(1e-6, help="AdamW learning rate")
    num_generations: int = field(4, help="completions sampled per prompt (the group baseline; >= 2)")
    batch_size: int = field(8, help="completions per device per optimizer step (a multiple of num_generations)")
    gradient_accumulation_steps: int = field(1, help="gradient accumulation steps")
    max_steps: int = field(100, help="optimizer steps", range=((1, True), None))
    max_completion_length: int = field(64, help="max new tokens per completion")
    temperature: float = field(1.0, help="sampling temperature")
    top_p: float = field(1.0, help="nucleus sampling")
    save_steps: int = field(10, help="save a resumable checkpoint every N steps")
    save_total_limit: int = field(2, help="keep this many checkpoints")
    logging_steps: int = field(1, help="log every N steps")
    seed: int = field(0, help="random seed")
    bf16: bool | None = field(None, help="bf16 mixed precision (default: on with a GPU, off on CPU)")
    gradient_checkpointing: bool = field(False, help="trade compute for memory (large policies)")
    deepspeed: str | None = field(None, help="DeepSpeed JSON config (or use `pro morlhf launch`, which "
                                             "sets DeepSpeed up through accelerate)")
    resume: str = field("auto", help=RESUME_HELP + "; or a checkpoints/checkpoint-N folder of a run with the "
                                     "same settings")
    reward_batch_size: int = field(32, help="reward-model scoring batch size")
    report_to: str = field("none", help="trainer loggers: none, mlflow, tensorboard, ...")

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ConfigError(f"--num-generations must be >= 2 (the group baseline needs siblings), got "
                              f"{self.num_generations}")
        if self.batch_size % self.num_generations:
            raise ConfigError(f"--batch-size ({self.batch_size}) must be a multiple of --num-generations "
                              f"({self.num_generations}); e.g. --batch-size {2 * self.num_generations}")
        if self.beta < 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if isinstance(self.data, str):
            self.data = [d for d in self.data.split(",") if d.strip()]
        if not self.data:
            raise ConfigError("give at least one --data source")
        spec = str(self.weights).strip()
        if spec not in ("orchestrator", SHUFFLED, "uniform"):  # a fixed vector: checked now, not after loading
            from pro_lib.targets import parse_weights

            parts = [p.strip() for p in spec.replace(";", ",").split(",") if p.strip()]
            named = [p.split("=", 1)[0].strip() for p in parts if "=" in p]
            names = named if len(named) == len(parts) else [f"#{i + 1}" for i in range(len(parts))]
            try:
                parse_weights(spec, names)
            except ConfigError as exc:
                raise ConfigError(f"--weights: {exc}; or use orchestrator, {SHUFFLED} or uniform") from None


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0




def _resume_point(cfg: MorlhfTrainConfig, ckpt_dir: Path, *, suite, orchestrator, policy, main: bool) -> Path | None:
    """The checkpoint this run continues from (None: from scratch), after checking its fingerprint."""
    inputs = {"data_content": digest_data(cfg.data), "policy_content": digest_model(cfg.policy, given=policy),
              "suite_content": digest_model(cfg.suite, given=suite)}
    if cfg.weights in ("orchestrator", SHUFFLED):
        inputs["orchestrator_content"] = digest_model(cfg.orchestrator, given=orchestrator)
    fp = fingerprint(cfg, inputs)
    if cfg.resume.strip().lower() in ("auto", "never", "true", "false"):
        if main:  # the main process decides (and may move an earlier run aside); the others follow
            found = prepare_resume(ckpt_dir, fp, cfg.resume, outputs=[ckpt_dir.parent], what="MORLHF training",
                                   finished=ckpt_dir.parent)
            record_fingerprint(ckpt_dir.parent, fp)  # kept in the output folder: outlives the checkpoints
        _barrier()
        return found if main else last_checkpoint(ckpt_dir)
    found = Path(cfg.resume)
    if not is_complete(found):
        raise CheckpointError(f"--resume {cfg.resume}: not a complete trainer checkpoint (no "
                              "trainer_state.json); pass a checkpoints/checkpoint-N folder, 'auto' or 'never'")
    check_fingerprint(found.parent, fp, found, what="MORLHF training")
    if main:
        check_finished(ckpt_dir.parent, fp, what="MORLHF training", ignore=[ckpt_dir])
        if found.parent.resolve() != ckpt_dir.resolve():
            record_fingerprint(ckpt_dir, fp)  # this run's own checkpoints continue the same fingerprint
        record_fingerprint(ckpt_dir.parent, fp)
    return found


def _trainer_classes(algorithm: str):
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    from trl import RLOOConfig, RLOOTrainer

    return RLOOConfig, RLOOTrainer


def _trainer_args(cfg: MorlhfTrainConfig, ckpt_dir: Path):
    import torch

    config_cls, _ = _trainer_classes(cfg.algorithm)
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    kwargs = dict(
        output_dir=str(ckpt_dir),
        learning_rate=cfg.learning_rate,
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_steps=cfg.max_steps,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        bf16=bool(bf16),
        use_cpu=not cuda,
        gradient_checkpointing=cfg.gradient_checkpointing,
        remove_unused_columns=False,  # the reward function needs the weights column
        report_to=[] if cfg.report_to in ("none", "") else [cfg.report_to],
        deepspeed=cfg.deepspeed,
        log_completions=False,
        disable_tqdm=False,
    )
    return config_cls(**kwargs)


def _log_rows(log_history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items()} for row in log_history if "step" in row]


# ---------------------------------------------------------------------------------------------
# Stage: train
# ---------------------------------------------------------------------------------------------

@exclusive_output("MORLHF training")
def train_morlhf(cfg: MorlhfTrainConfig, *, suite=None, orchestrator=None, policy=None,
                 callbacks: list | None = None) -> dict:
    """Run PRO-MORLHF / MORLHF; returns metrics. Resumable: re-run to continue from the last checkpoint.

    ``suite``, ``orchestrator`` and ``policy`` (a ``(model, tokenizer)`` pair) may be given as
    objects (tests, notebooks); otherwise they are loaded from the config's references.

    Writes into ``cfg.output_dir``: ``run.yaml`` (the config), ``prompts.jsonl`` (each training
    prompt with its weights), ``checkpoints/checkpoint-N`` (resumable), ``policy/`` (the final
    model + tokenizer, replaced atomically), ``train_log.jsonl`` and ``metrics.json``.
    """
    out = Path(cfg.output_dir)
    check_output_folder(out, what="MORLHF training")
    ckpt_dir = out / "checkpoints"
    main = _is_main_process()

    # -- models ---------------------------------------------------------------------------------
    given_suite = suite
    if suite is None:
        from pro_lib.suite import RewardSuite

        suite = RewardSuite.load(cfg.suite, device=resolve_device())
    if str(cfg.weights).strip() not in ("orchestrator", SHUFFLED, "uniform"):  # before anything is written
        from pro_lib.targets import parse_weights

        parse_weights(cfg.weights, suite.names)
    # The trainer arguments come first: under DeepSpeed ZeRO-3 they must exist before the policy is
    # loaded so that its weights are partitioned as they load.
    args = _trainer_args(cfg, ckpt_dir)
    # -- resume bookkeeping: only a checkpoint made with the same settings and inputs ------------
    resume_from = _resume_point(cfg, ckpt_dir, suite=given_suite, orchestrator=orchestrator, policy=policy,
                                main=main)
    model, tokenizer = policy if policy is not None else load_policy(cfg.policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    reward = WeightedReward(suite, batch_size=cfg.reward_batch_size)
    _ensure_reference_on_disk(model, tokenizer, out, needed=cfg.beta > 0, main=main)

    # -- prompts and their weights (kept fixed across resumes) --------------------------------
    prompts_file = out / "prompts.jsonl"
    if resume_from is not None and prompts_file.is_file():
        rows = read_jsonl(prompts_file, required=("prompt", WEIGHTS_COLUMN), what="prompt record")
        prompts = [r["prompt"] for r in rows]
        w = weight_matrix([r[WEIGHTS_COLUMN] for r in rows], reward.names)
        method = weights_method(cfg.weights)
        info = {"used_prompts": len(prompts), "reloaded": True}
    else:
        prompts, info = load_split_prompts(cfg.data, split=cfg.split, eval_fraction=cfg.eval_fraction,
                                           split_seed=cfg.split_seed, tokenizer=tokenizer,
                                           max_prompt_tokens=cfg.max_prompt_tokens, max_prompts=cfg.max_prompts,
                                           seed=cfg.seed)
        w, method = resolve_weights(cfg.weights, prompts, reward.names, seed=cfg.seed,
                                    orchestrator=orchestrator if orchestrator is not None else cfg.orchestrator)
    dataset = build_prompt_dataset(prompts, w, reward.names)
    if main:
        atomic_write_text(out / "run.yaml", yaml.safe_dump({**to_dict(cfg), "method": method,
                                                            "objectives": reward.names}, sort_keys=False))
        if not prompts_file.is_file() or resume_from is None:
            write_jsonl(prompts_file, ({"prompt": p, WEIGHTS_COLUMN: row} for p, row in zip(prompts, w)))
    log.info("%s on %d prompts, objectives %s, mean weights %s", method, len(prompts), reward.names,
             np.round(w.mean(axis=0), 3).tolist())

    # -- train ----------------------------------------------------------------------------------
    _, trainer_cls = _trainer_classes(cfg.algorithm)
    trainer = trainer_cls(model=model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[*(callbacks or []), tracking.trainer_callback()])
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    result = train_or_restore(trainer, resume_from)

    # -- save -------------------------------------------------------------------------------------
    tmp = out / ".policy.tmp"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank takes part (ZeRO-3 gathers the shards)
    trainer.accelerator.wait_for_everyone()
    rows = _log_rows(trainer.state.log_history)
    metrics: dict[str, Any] = {"method": method, "algorithm": cfg.algorithm, "steps": trainer.state.global_step,
                               "prompts": len(prompts), "train_loss": float(result.training_loss),
                               "resumed_from_step": checkpoint_step(resume_from)}
    if info.get("source_mix"):
        metrics["source_mix"] = info["source_mix"]
    steps = [r for r in rows if "reward" in r]
    if steps:
        tail = steps[-max(1, len(steps) // 4):]  # last quarter of the run
        metrics["final_weighted_reward"] = float(np.mean([r["reward"] for r in tail]))
        metrics["first_weighted_reward"] = float(steps[0]["reward"])
        for name in reward.names:
            key = f"objectives/{name}"
            vals = [r[key] for r in tail if key in r]
            if vals:
                metrics[f"final_{name}"] = float(np.mean(vals))
        if any("kl" in r for r in tail):
            metrics["final_kl"] = float(np.mean([r["kl"] for r in tail if "kl" in r]))
    if main:
        tokenizer.save_pretrained(str(tmp))
        final = out / "policy"
        old = out / ".policy.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        write_jsonl(out / "train_log.jsonl", rows)
        write_json(out / "metrics.json", metrics)
    return metrics


def _ensure_reference_on_disk(model, tokenizer, out: Path, *, needed: bool, main: bool) -> None:
    """trl rebuilds the KL reference policy from ``model.config._name_or_path``; a policy built in
    memory (tests, notebooks) has no such folder, so its initial weights are saved to
    ``<output_dir>/reference`` once (and reused on resume, so the reference stays the original)."""
    if not needed:
        return
    src = getattr(model.config, "_name_or_path", "") or ""
    if src and (Path(src) / "config.json").is_file():
        return
    ref = out / "reference"
    if not (ref / "config.json").is_file():
        if main:
            from pro_lib.io import atomic_dir

            with atomic_dir(ref) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        _barrier()
    model.config._name_or_path = str(ref.resolve())


def _barrier() -> None:
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        state.wait_for_everyone()

