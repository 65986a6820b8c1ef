"""The SFT settings every training stage of the wic package shares, as trl's configs share
``TrainingArguments``: each trainer's config (``WICOfflineConfig``, ``WICOnlineConfig``,
``WICOnlineLoopConfig``, ``SoupsTrainConfig``) extends :class:`SFTOptions` with its own fields, and
:func:`pro_lib.wic.sft.sft_train` reads only these."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import RESUME_HELP, field
from pro_lib.wic.common import max_prompt_tokens_field


@dataclass
class SFTOptions:
    """SFT settings shared by every training stage (offline, online SFT, the online loop, the soups experts)."""

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
