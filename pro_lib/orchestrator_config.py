"""The orchestrator's training config, beside (not inside) the torch module, so that ``pro`` can
build its flags (``pro orchestrator train --help``) without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import RESUME_HELP, field

POOLINGS = ("mean", "cls")


@dataclass
class OrchestratorTrainConfig:
    """Train the Preference Orchestrator on (prompt, w*) targets."""

    targets: str = field("runs/targets", help="targets folder or targets.jsonl from `pro rewards score`")
    backbone: str = field("minilm", help="encoder: 'minilm' (bundled), a folder, hub name (paper: "
                                         "xlm-roberta-base) or models:/ ref")
    output_dir: str = field("runs/orchestrator", help="where the trained orchestrator is saved")
    loss: str = field("reverse_kl", help="reverse_kl = KL(f||w*) (paper), forward_kl = KL(w*||f)",
                      choices=["reverse_kl", "forward_kl"])
    pooling: str = field("mean", help="pooling of the encoder's token states", choices=list(POOLINGS))
    max_length: int = field(256, help="max prompt tokens (long prompts keep their end)")
    epochs: float = field(3.0, help="training epochs")
    batch_size: int = field(32, help="batch size (paper: 32)")
    learning_rate: float = field(1e-5, help="AdamW learning rate for the encoder (paper: 1e-5)")
    head_learning_rate: float = field(1e-3, help="AdamW learning rate for the fresh linear head")
    weight_decay: float = field(0.01, help="AdamW weight decay")
    warmup_ratio: float = field(0.05, help="linear warm-up share of the steps")
    seed: int = field(0, help="random seed")
    save_steps: int = field(100, help="checkpoint every N optimiser steps (resumable)")
    resume: str = field("auto", help=RESUME_HELP)
    progress: bool = field(True, help="show a progress bar")
