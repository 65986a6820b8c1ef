"""The Preference Orchestrator (paper Eq. 8): prompt -> weight vector on the K-simplex.

``f(x) = softmax(W · pool(encoder(x)) + b)``, trained with ``KL(f(x) || w*)`` (the paper's
direction; ``KL(w* || f(x))``, i.e. cross-entropy to soft targets, is available as ``--loss
forward_kl``). Saved as a self-describing folder::

    orchestrator/
      pro_orchestrator.json   objectives, tau, backbone, pooling, max_length, normalisation stats
      model.safetensors       encoder + head weights
      encoder_config.json     the encoder's transformers config (+ tokenizer files)

Training checkpoints (model, optimiser, scheduler, RNG, step) go to ``<output_dir>.checkpoints``
every ``save_steps`` steps; a re-run with the same settings and inputs resumes from the newest one
(``--resume``, :mod:`pro_lib.checkpoints`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from pro_lib import tracking
from pro_lib.artifacts import OrchestratorManifest
from pro_lib.checkpoints import (LAST_PT, check_output_folder, digest_model, digest_path, exclusive_output, fingerprint,
                                  prepare_resume, record_fingerprint)
from pro_lib.config import to_dict
from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.io import atomic_dir, utf8_problem, write_json
from pro_lib.policy import resolve_device
from pro_lib.orchestrator_config import POOLINGS, OrchestratorTrainConfig  # noqa: F401 (public here too)
from pro_lib.targets import resolve_tau

log = logging.getLogger(__name__)

WEIGHTS_NAME, ENCODER_CONFIG = OrchestratorManifest.WEIGHTS, OrchestratorManifest.ENCODER_CONFIG


class PreferenceOrchestrator(nn.Module):
    """Encoder + pooling + linear head + softmax over the K objectives."""

    def __init__(self, encoder: nn.Module, tokenizer, objectives: Sequence[str], *, pooling: str = "mean",
                 max_length: int = 256, tau: float = 0.1, backbone: str = "", norm_stats: dict | None = None):
        super().__init__()
        objectives = list(objectives)
        if len(objectives) < 2:
            raise ConfigError(f"an orchestrator needs at least 2 objectives, got {objectives}")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.objectives = objectives
        self.pooling = pooling
        self.max_length = max_length
        self.tau = tau
        self.backbone = backbone
        self.norm_stats = norm_stats
        self.head = nn.Linear(encoder.config.hidden_size, len(objectives))
        nn.init.zeros_(self.head.weight)  # start at uniform weights
        nn.init.zeros_(self.head.bias)

    @property
    def K(self) -> int:  # noqa: N802
        return len(self.objectives)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: str, objectives: Sequence[str], **kwargs) -> "PreferenceOrchestrator":
        from transformers import AutoModel, AutoTokenizer

        from pro_lib.models import resolve_model

        path = resolve_model(backbone)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            encoder = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load orchestrator backbone {backbone}: {exc}") from None
        return cls(encoder, tokenizer, objectives, backbone=backbone, **kwargs)

    @classmethod
    def from_pretrained(cls, ref: str | Path, *, device: str | None = None) -> "PreferenceOrchestrator":
        """Load a saved orchestrator folder, ``models:/pro-orchestrator@champion`` or ``s3://``."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from pro_lib.refs import localize

        folder = Path(localize(ref))
        meta = OrchestratorManifest.load(folder)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{folder}: {WEIGHTS_NAME} is missing; the orchestrator was not saved "
                                  "completely - retrain it")
        try:
            enc_cfg = AutoConfig.from_pretrained(folder / ENCODER_CONFIG) if (folder / ENCODER_CONFIG).is_file() \
                else AutoConfig.from_pretrained(folder)
            encoder = AutoModel.from_config(enc_cfg)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{folder}: cannot rebuild the encoder/tokenizer: {exc}") from None
        model = cls(encoder, tokenizer, meta.objectives, pooling=meta.pooling, max_length=meta.max_length,
                    tau=meta.tau, backbone=meta.backbone, norm_stats=meta.norm_stats)
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{weights} is corrupt ({exc}); retrain or restore it") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{weights} does not match the orchestrator config: missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]}")
        model.eval()
        if device:
            model.to(device)
        return model

    def save_pretrained(self, path: str | Path) -> Path:
        """Save atomically: a crash never leaves a half-written orchestrator folder."""
        from safetensors.torch import save_file

        with atomic_dir(path) as tmp:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME))
            (tmp / ENCODER_CONFIG).write_text(self.encoder.config.to_json_string())
            self.tokenizer.save_pretrained(tmp)
            self.describe().save(tmp)
        return Path(path)

    def describe(self) -> OrchestratorManifest:
        return OrchestratorManifest(objectives=self.objectives, pooling=self.pooling, max_length=self.max_length,
                                    tau=float(self.tau), backbone=self.backbone,
                                    encoder_type=self.encoder.config.model_type, norm_stats=self.norm_stats)

    # -- forward ------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> dict:
        # Keep the end of long prompts: in a dialogue the last turn says most about what is asked.
        from pro_lib.io import tail_chars

        prompts = [tail_chars(p, self.max_length) for p in prompts]  # a 30 MB prompt: cut before tokenising
        old = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"
        try:
            enc = self.tokenizer(list(prompts), truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="pt")
        finally:
            self.tokenizer.truncation_side = old
        self._warn_unknown_only(prompts, enc)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _warn_unknown_only(self, prompts: Sequence[str], enc) -> None:
        """A prompt the tokenizer turns into unknown tokens only (emoji, an unsupported script) gives the
        orchestrator nothing to read: its weights are then the same for every such prompt. Say so."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return
        special = set(self.tokenizer.all_special_ids) - {unk}
        for prompt, ids, mask in zip(prompts, enc["input_ids"].tolist(), enc["attention_mask"].tolist()):
            text_ids = [i for i, m in zip(ids, mask) if m and i not in special]
            if text_ids and all(i == unk for i in text_ids):
                shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
                log.warning("the prompt %r is only unknown tokens (%s) to the orchestrator's tokenizer: its "
                            "weights for it do not depend on what it says", shown, self.tokenizer.unk_token)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Log-weights (N, K): ``log_softmax`` of the head's logits."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.log_softmax(self.head(pooled).float(), dim=-1)

    @torch.inference_mode()
    def predict(self, prompts: Sequence[str], batch_size: int = 64, *, progress: bool = False) -> np.ndarray:
        """Weights for each prompt: an (N, K) float32 array whose rows sum to 1.

        Prompts are sorted by length so each batch pads little; the output keeps the input order.
        """
        from tqdm.auto import tqdm

        prompts = list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise DataError(f"prompt {i} is empty; the orchestrator needs some text to weigh")
            if why := utf8_problem(p):
                raise DataError(f"prompt {i} is not valid UTF-8 ({why}); pass UTF-8 text")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        out = np.empty((len(prompts), self.K), dtype=np.float32)
        for start in tqdm(range(0, len(prompts), batch_size), desc="orchestrator", disable=not progress):
            idx = order[start:start + batch_size]
            enc = self.tokenize([prompts[i] for i in idx])
            logw = self(enc["input_ids"].to(device), enc["attention_mask"].to(device))
            out[idx] = logw.exp().cpu().numpy()
        self.train(was_training)
        return out

    def check_objectives(self, names: Sequence[str], *, what: str = "the reward suite") -> None:
        """Raise a clear error when the orchestrator and e.g. the reward suite disagree on objectives."""
        from pro_lib.targets import check_objectives

        check_objectives(self.objectives, names, got_what="the orchestrator", expected_what=what,
                         fix="retrain the orchestrator on targets from this suite or load the matching one")


def kl_loss(log_pred: torch.Tensor, target: torch.Tensor, direction: str = "reverse") -> torch.Tensor:
    """Mean KL between predicted weights and targets.

    ``reverse`` (paper): KL(f(x) || w*) = sum f log(f / w*). ``forward``: KL(w* || f(x)).
    Targets are clamped away from 0 so the reverse KL stays finite for near one-hot targets.
    """
    log_t = torch.log(target.clamp(min=1e-8))
    if direction == "reverse":
        return (log_pred.exp() * (log_pred - log_t)).sum(-1).mean()
    if direction == "forward":
        return (target * (log_t - log_pred)).sum(-1).mean()
    raise ConfigError(f"loss direction must be 'reverse' or 'forward', got {direction!r}")


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoints") / LAST_PT


@exclusive_output("orchestrator training")
def train_orchestrator(cfg: OrchestratorTrainConfig) -> dict:
    """Train on ``cfg.targets`` and save to ``cfg.output_dir``. Returns training metrics."""
    from tqdm.auto import tqdm

    from pro_lib.suite import RewardSuite, load_targets

    check_output_folder(cfg.output_dir, what="orchestrator training")
    prompts, targets, _ = load_targets(cfg.targets)
    if len(prompts) < 2:
        raise DataError(f"{cfg.targets}: need at least 2 targets to train on")
    tdir = Path(cfg.targets)
    suite_dir = (tdir if tdir.is_dir() else tdir.parent) / "suite"
    if not suite_dir.is_dir():
        raise DataError(f"{suite_dir} is missing: the targets folder must hold the suite that made them "
                        "(as `pro rewards score` writes)")
    suite = RewardSuite.load(suite_dir)
    if targets.shape[1] != suite.K:
        raise DataError(f"targets have {targets.shape[1]} objectives but the suite in {suite_dir} has {suite.K}")
    tau = resolve_tau(None, tdir)
    out = Path(cfg.output_dir)
    ckpt = _checkpoint_path(out)
    fp = fingerprint(cfg, {"targets_content": digest_path(tdir / "targets.jsonl" if tdir.is_dir() else tdir),
                           "suite_content": digest_path(suite_dir), "backbone_content": digest_model(cfg.backbone)})
    resume_from = prepare_resume(ckpt.parent, fp, cfg.resume, outputs=[out], what="orchestrator training",
                                 finished=out)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = PreferenceOrchestrator.from_backbone(cfg.backbone, suite.names, pooling=cfg.pooling,
                                                 max_length=cfg.max_length, tau=tau,
                                                 norm_stats=suite.stats)
    device = resolve_device()
    model.to(device).train()
    opt = torch.optim.AdamW([
        {"params": model.encoder.parameters(), "lr": cfg.learning_rate},
        {"params": model.head.parameters(), "lr": cfg.head_learning_rate},
    ], weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(prompts) / cfg.batch_size)
    total = max(1, int(round(steps_per_epoch * cfg.epochs)))
    warmup = int(total * cfg.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    direction = "reverse" if cfg.loss == "reverse_kl" else "forward"

    step, losses = 0, []
    if resume_from is not None:
        try:
            state = torch.load(resume_from, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, losses = state["step"], state["losses"]
            torch.set_rng_state(state["torch_rng"])
        except Exception as exc:
            raise CheckpointError(f"checkpoint {resume_from} is corrupt ({exc}); pass --resume never to start "
                                  "over (the old run is kept)") from None
        log.info("resumed orchestrator training from %s at step %d/%d", ckpt, step, total)

    t0 = time.time()
    target_t = torch.as_tensor(targets, dtype=torch.float32)
    bar = tqdm(total=total, initial=step, desc="orchestrator", disable=not cfg.progress)
    while step < total:
        # One permutation per epoch, seeded by the epoch, so a resumed run sees the same batches.
        epoch, pos = divmod(step, steps_per_epoch)
        perm = np.random.default_rng(cfg.seed + epoch).permutation(len(prompts))
        idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        enc = model.tokenize([prompts[i] for i in idx])
        log_pred = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        loss = kl_loss(log_pred, target_t[idx].to(device), direction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        tracking.log_step({"train/loss": losses[-1], "train/learning_rate": sched.get_last_lr()[0]}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if step % cfg.save_steps == 0 or step == total:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "step": step, "losses": losses,
                        "torch_rng": torch.get_rng_state(), "config": to_dict(cfg)}, tmp)
            tmp.replace(ckpt)
    bar.close()
    model.eval()
    model.save_pretrained(out)
    record_fingerprint(out, fp)  # the finished model keeps it: a changed re-run is refused, not retrained over it
    write_json(out / "train_metrics.json", {"steps": step, "final_loss": float(np.mean(losses[-20:])),
                                            "losses": losses, "config": to_dict(cfg)})
    return {"train_steps": step, "train_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "train_seconds": time.time() - t0, "n_train": len(prompts)}
