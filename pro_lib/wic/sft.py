"""``sft_train``: the SFT every WIC stage runs (trl SFTTrainer, loss on the completion only), resumable
from its work folder; its settings are :class:`~pro_lib.wic.sft_config.SFTOptions`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping, Sequence

from pro_lib import distributed, tracking
from pro_lib.checkpoints import find_checkpoint, train_or_restore
from pro_lib.errors import ConfigError, DataError
from pro_lib.io import write_jsonl
from pro_lib.policy import resolve_device
from pro_lib.wic.policy import WICPolicy, wic_tags
from pro_lib.wic.sft_config import SFTOptions

__all__ = ["SFTOptions", "sft_train"]


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
