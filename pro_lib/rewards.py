"""Bradley-Terry reward models, one per objective, trained with trl's RewardTrainer.

Loss ``-log sigmoid(r(x, y+) - r(x, y-))`` on an encoder trunk with a 1-logit head. Inputs are
tokenised by :func:`pro_lib.suite.encode_for_reward`, the same function the reward suite scores
with. The held-out pairwise accuracy is reported with a 95% Wilson interval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pro_lib import tracking
from pro_lib.checkpoints import (RESUME_HELP, check_output_folder, digest_data, digest_model, exclusive_output,
                                  fingerprint, prepare_resume, record_fingerprint, train_or_restore)
from pro_lib.config import field, to_dict
from pro_lib.errors import ConfigError, DataError
from pro_lib.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's ``binomtest(...).proportion_ci``)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


@dataclass
class RewardTrainConfig:
    """Train one Bradley-Terry reward model for one objective."""

    objective: str = field(help="objective name (e.g. helpful); also the registry suffix")
    data: list[str] = field(default_factory=lambda: ["demo"],
                            help="preference data: files, 'demo', 'hh:<file>' or hub names")
    source: str | None = field(None, help="keep only pairs whose source/subset equals this "
                                          "(e.g. helpful-base, or a demo objective)")
    base_model: str = field("minilm", help="encoder trunk: 'minilm' (bundled), a folder, hub name "
                                           "or models:/ ref")
    output_dir: str | None = field(None, help="where the trained reward model is saved (default: "
                                              "runs/rewards/<objective>)")
    input_format: str = field("pair", help="how (prompt, response) reach the model",
                              choices=["pair", "concat", "response"])
    max_length: int = field(256, help="max tokens per input (prompt left-truncated)")
    epochs: float = field(1.0, help="training epochs")
    batch_size: int = field(16, help="pairs per batch")
    learning_rate: float = field(3e-5, help="AdamW learning rate")
    eval_data: list[str] = field(default_factory=list,
                                 help="held-out pairs for the accuracy (same --source filter); when "
                                      "empty, --eval-fraction of --data is held out")
    eval_fraction: float = field(0.1, help="fraction of prompts held out for accuracy (without --eval-data)")
    seed: int = field(0, help="random seed (split and init)")
    limit: int | None = field(None, help="use at most this many pairs (after filtering; a random sample stratified "
                                         "by source, seed --seed)")
    save_steps: int = field(50, help="checkpoint every N steps into <output_dir>.checkpoints (for resuming)")
    resume: str = field("auto", help=RESUME_HELP)
    progress: bool = field(True, help="show progress bars")

    def __post_init__(self) -> None:
        from pro_lib.targets import check_objective_name

        check_objective_name(self.objective, where="--objective")
        if self.output_dir is None:  # one folder per objective: a second objective never resumes the first
            self.output_dir = f"runs/rewards/{self.objective}"


def _load_objective_pairs(cfg: RewardTrainConfig, specs: list[str]):
    from pro_lib.data import load_pairs, stratified_sample

    pairs = []
    for spec in specs:
        pairs.extend(load_pairs(spec, source_column="source"))
    if cfg.source is not None:
        sources = sorted({str(p.source) for p in pairs})
        pairs = [p for p in pairs if p.source == cfg.source]
        if not pairs:
            raise DataError(f"no pairs with source '{cfg.source}' in {specs}; sources present: {sources}")
    if cfg.limit is not None and cfg.limit < len(pairs):
        keep = stratified_sample(range(len(pairs)), cfg.limit, sources=[p.source for p in pairs], seed=cfg.seed)
        pairs = [pairs[i] for i in sorted(keep)]
    if len(pairs) < 10:
        raise DataError(f"only {len(pairs)} pairs to train reward model '{cfg.objective}'; need at least 10")
    return pairs


def pairwise_accuracy(model_dir: str | Path, pairs, *, input_format: str, max_length: int,
                      batch_size: int = 32, progress: bool = True) -> dict:
    """Held-out pairwise accuracy r(x, y+) > r(x, y-) with its 95% Wilson interval."""
    from pro_lib.suite import Objective, RewardSuite

    suite = RewardSuite([Objective(name="r", model=str(model_dir), input_format=input_format,
                                   max_length=max_length)])
    prompts = [p.prompt for p in pairs]
    chosen = suite.score(prompts, [p.chosen for p in pairs], batch_size=batch_size, progress=progress)[:, 0]
    rejected = suite.score(prompts, [p.rejected for p in pairs], batch_size=batch_size, progress=progress)[:, 0]
    wins = int((chosen > rejected).sum())
    lo, hi = wilson_interval(wins, len(pairs))
    return {"accuracy": wins / len(pairs), "accuracy_ci_low": lo, "accuracy_ci_high": hi,
            "n_eval": len(pairs), "mean_margin": float((chosen - rejected).mean())}


@exclusive_output("reward model training")
def train_reward_model(cfg: RewardTrainConfig) -> dict:
    """Train, save to ``cfg.output_dir`` (atomically) and report held-out pairwise accuracy."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from pro_lib.data import split_pairs
    from pro_lib.models import LOAD_ERRORS, load_error, resolve_model
    from pro_lib.artifacts import RewardModelInfo
    from pro_lib.suite import encode_for_reward

    if not cfg.objective:
        raise ConfigError("--objective is required (the objective this reward model scores)")
    check_output_folder(cfg.output_dir, what=f"reward model '{cfg.objective}'")
    pairs = _load_objective_pairs(cfg, cfg.data)
    if cfg.eval_data:
        train, evals = pairs, _load_objective_pairs(cfg, cfg.eval_data)
    else:
        train, evals = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
    base = resolve_model(cfg.base_model)
    out = Path(cfg.output_dir)
    ckpt_dir = out.with_name(out.name + ".checkpoints")
    fp = fingerprint(cfg, {"data_content": digest_data(cfg.data), "eval_data_content": digest_data(cfg.eval_data),
                           "base_model_content": digest_model(base)})
    last = prepare_resume(ckpt_dir, fp, cfg.resume, outputs=[out], what=f"reward model '{cfg.objective}'",
                          finished=out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except LOAD_ERRORS as exc:
        raise load_error(cfg.base_model, exc, what="base model") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def encode(batch):
        return {
            "chosen_ids": encode_for_reward(tokenizer, batch["prompt"], batch["chosen"],
                                            input_format=cfg.input_format,
                                            max_length=cfg.max_length)["input_ids"],
            "rejected_ids": encode_for_reward(tokenizer, batch["prompt"], batch["rejected"],
                                              input_format=cfg.input_format,
                                              max_length=cfg.max_length)["input_ids"],
        }

    ds = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in train])
    ds = ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenising pairs")

    torch.manual_seed(cfg.seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    except LOAD_ERRORS as exc:
        raise load_error(cfg.base_model, exc, what="base model") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate, seed=cfg.seed,
        # a loss curve in MLflow even for short runs: every step up to 100 steps, then every 10
        max_length=None, logging_steps=max(1, min(10, int(math.ceil(len(ds) / cfg.batch_size) * cfg.epochs) // 10)),
        save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=2, report_to="none", disable_tqdm=not cfg.progress,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        # trl's RewardConfig turns bf16 and gradient checkpointing on by default: on a CPU without native
        # bf16 that autocast is emulated (several times slower than fp32), and a MiniLM-sized model
        # needs no activation checkpointing
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), gradient_checkpointing=False,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                            callbacks=[tracking.trainer_callback()])
    result = train_or_restore(trainer, last)

    with atomic_dir(out) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        RewardModelInfo(objective=cfg.objective, input_format=cfg.input_format, max_length=cfg.max_length,
                        config=to_dict(cfg)).save(tmp)
        record_fingerprint(tmp, fp)  # the finished model keeps it: a changed re-run is refused, not retrained over it
    metrics = pairwise_accuracy(out, evals, input_format=cfg.input_format, max_length=cfg.max_length,
                                progress=cfg.progress)
    metrics.update({"train_loss": float(result.training_loss), "n_train": len(train),
                    "objective": cfg.objective})
    write_json(out / "eval_metrics.json", metrics)
    log.info("reward model '%s': held-out accuracy %.3f [%.3f, %.3f] on %d pairs", cfg.objective,
             metrics["accuracy"], metrics["accuracy_ci_low"], metrics["accuracy_ci_high"], len(evals))
    return metrics


def reward_eval_table(rows: list[dict]) -> str:
    """A plain-text table of reward-model accuracies with their intervals."""
    lines = [f"{'objective':<12} {'accuracy':>8} {'95% CI':>17} {'n':>6}"]
    for r in rows:
        lines.append(f"{r['objective']:<12} {r['accuracy']:>8.3f} "
                     f"[{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}] {r['n_eval']:>6}")
    return "\n".join(lines)


__all__ = ["RewardTrainConfig", "train_reward_model", "pairwise_accuracy", "wilson_interval",
           "reward_eval_table"]
