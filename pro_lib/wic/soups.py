"""Rewarded Soups (Rame et al., 2023), the paper's third test-time baseline.

One expert policy per objective, each fine-tuned from the same base; at test time a preference
vector w picks the policy whose parameters are the w-weighted average of the experts',
theta(w) = sum_k w_k theta_k (linear interpolation of weights; no prompt tags).

    pro soups train --policy smollm2 --data runs/data/train.jsonl --suite runs/hh/suite --output-dir runs/soups
    pro soups eval  --policies "Rewarded Soups=runs/soups,PRO-WIC=runs/wic_online/policy" ...

LoRA experts (``--lora-r``) are saved as adapters of the one base and interpolated as adapters: the
LoRA matrices and tag rows are averaged, theta(w) = sum_k w_k theta_k over the adapters' tensors (the
paper's setting: its experts are LoRA fine-tunes of one LLaMA), so a weight of 1 on one expert is
exactly that expert.

Experts: the paper's Rewarded Soups trains each expert with single-objective RL; PRO trains each by
SFT on that objective's best responses (of each preference pair, the response, chosen or rejected,
that the objective's reward model scores higher), the same offline data and SFT settings as PRO-WIC
and RiC offline. ``pro soups eval`` is ``pro wic eval``: a soups folder goes beside WIC policies on
the same weight grid, Pareto plot, hypervolume table and bootstrap.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pro_lib import adapters
from pro_lib.artifacts import SoupsManifest, WICPolicyManifest
from pro_lib.checkpoints import (check_output_folder, digest_data, digest_model, exclusive_output, find_checkpoint,
                                  fingerprint, prepare_resume)
from pro_lib.config import to_dict
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import write_json
from pro_lib.wic.common import finish_policy, load_suite, score, scratch_dir
from pro_lib.wic.policy import WICPolicy
from pro_lib.wic.sft import sft_train
from pro_lib.wic.soups_config import SoupsTrainConfig


def expert_examples(cfg: SoupsTrainConfig, suite, tokenizer) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(records, z_chosen, z_rejected): the sampled pairs with both responses scored (normalised)."""
    from pro_lib.data import load_pairs, stratified_sample
    from pro_lib.policy import truncate_prompt

    pairs = [p for spec in cfg.data for p in load_pairs(spec)]
    if cfg.max_examples is not None and cfg.max_examples < len(pairs):
        keep = stratified_sample(range(len(pairs)), cfg.max_examples, sources=[p.source for p in pairs], seed=cfg.seed)
        pairs = [pairs[i] for i in sorted(keep)]
    _, zc = score(suite, [p.prompt for p in pairs], [p.chosen for p in pairs])
    _, zr = score(suite, [p.prompt for p in pairs], [p.rejected for p in pairs])
    recs = [{"prompt": truncate_prompt(tokenizer, p.prompt, cfg.max_prompt_tokens), "chosen": p.chosen.strip(),
             "rejected": p.rejected.strip(), "source": p.source} for p in pairs]
    return recs, zc, zr


def _soups_resume_check(cfg: SoupsTrainConfig, out: Path, suite, *, given_suite) -> None:
    """Finished experts (and a killed expert's checkpoints) are reused only when made with the same
    settings and inputs; the fingerprint lives in ``<output_dir>/fingerprint.json`` (it outlives the
    experts' scratch folders)."""
    inputs = {"data_content": digest_data(cfg.data), "policy_content": digest_model(cfg.policy),
              "suite_content": digest_model(cfg.suite, given=given_suite), "objectives": suite.names}
    state = [out / n for n in suite.names if WICPolicyManifest.exists(out / n)]
    state += [c for n in suite.names if (c := find_checkpoint(scratch_dir(out / n, create=False) / "checkpoints"))]
    prepare_resume(out, fingerprint(cfg, inputs), cfg.resume, found=state[0] if state else None,
                   what="Rewarded Soups training", finished=out)


@exclusive_output("Rewarded Soups training")
def train_soups(cfg: SoupsTrainConfig, *, suite=None) -> dict:
    """Train one expert per objective (resumable per expert); writes ``<output_dir>/soups.json``."""
    from pro_lib.policy import load_policy

    t0 = time.time()
    out = Path(cfg.output_dir)
    check_output_folder(out, what="Rewarded Soups training")
    given_suite = suite
    suite = suite or load_suite(cfg.suite, what="soups train")
    _soups_resume_check(cfg, out, suite, given_suite=given_suite)
    metrics: dict[str, Any] = {"objectives": suite.names}
    recs = zc = zr = None
    for k, name in enumerate(suite.names):
        folder = out / name
        if WICPolicyManifest.exists(folder):
            metrics[f"{name}_skipped"] = 1
            continue
        model, tok = load_policy(cfg.policy)
        expert = WICPolicy(model, tok, suite.names, method=f"soups-expert-{name}", orchestrator=cfg.orchestrator,
                           base_ref=cfg.policy)
        if recs is None:
            recs, zc, zr = expert_examples(cfg, suite, tok)
        take_rejected = zr[:, k] > zc[:, k]
        examples = [{"prompt": expert.render_plain(r["prompt"]),
                     "completion": r["rejected"] if rej else r["chosen"]} for r, rej in zip(recs, take_rejected)]
        scratch = scratch_dir(folder)
        m = sft_train(expert, examples, cfg, scratch / "checkpoints", desc=f"Rewarded Soups expert {name}")
        write_json(scratch / "metrics.json", {"stage": "soups_expert", "objective": name, **m,
                                             "rejected_share": float(take_rejected.mean())})
        finish_policy(expert, folder, scratch)
        metrics.update({f"{name}_sft_loss_last": m["sft_loss_last"], f"{name}_sft_steps": m["sft_steps"],
                        f"{name}_rejected_share": float(take_rejected.mean())})
    SoupsManifest(experts={n: n for n in suite.names}, objectives=suite.names, orchestrator=cfg.orchestrator,
                  config=to_dict(cfg)).save(out)
    metrics["wall_seconds"] = time.time() - t0
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_soup(path: str | Path) -> bool:
    return SoupsManifest.exists(path)


class SoupPolicy:
    """The experts of a ``pro soups train`` folder, interpolated in parameter space per preference vector."""

    conditioning = "soup"

    def __init__(self, experts: dict[str, WICPolicy], *, orchestrator: str | None = None, method="rewarded-soups",
                 adapter_states: Sequence[dict] | None = None):
        """``experts``: objective -> expert policy (full models). With ``adapter_states`` (one per
        objective, :func:`pro_lib.adapters.adapter_state`) the experts are LoRA adapters of one base: the
        soup interpolates the adapters' tensors (the Rewarded Soups paper's setting) inside the first
        expert's peft model, and ``experts`` may map every objective to that one policy."""
        self.objectives = list(experts)
        self.method, self.orchestrator = method, orchestrator
        first = experts[self.objectives[0]]
        self.policy = first  # its model receives the interpolated parameters
        self.tokenizer = first.tokenizer
        self.adapters = adapter_states is not None
        if self.adapters:
            if len(adapter_states) != len(self.objectives):
                raise ConfigError(f"{len(adapter_states)} adapters for {len(self.objectives)} objectives")
            self._states = [dict(s) for s in adapter_states]
        else:
            self._states = [{k: v.detach().clone() for k, v in e.model.state_dict().items()} for e in experts.values()]
        keys = set(self._states[0])
        if any(set(s) != keys for s in self._states[1:]):
            raise CheckpointError("the experts of a soup must share one architecture (train them from the same base)")

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> "SoupPolicy":
        path = Path(path)
        meta = SoupsManifest.load(path)
        folders = {name: path / sub for name, sub in meta.experts.items()}
        if all(adapters.is_adapter(f) for f in folders.values()):  # LoRA experts: one base, adapters mixed
            adapters.check_same_base(list(folders.values()))
            first = WICPolicy.from_pretrained(next(iter(folders.values())), device=device)
            return cls({name: first for name in folders}, orchestrator=meta.orchestrator, method=meta.method,
                       adapter_states=[adapters.adapter_state(f) for f in folders.values()])
        experts = {name: WICPolicy.from_pretrained(f, device=device) for name, f in folders.items()}
        return cls(experts, orchestrator=meta.orchestrator, method=meta.method)

    def set_weights(self, w: Sequence[float]) -> None:
        """Load theta(w) = sum_k w_k theta_k into the policy's model (LoRA experts: into its adapter)."""
        import torch

        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if len(w) != len(self.objectives) or np.any(w < 0) or not math.isclose(w.sum(), 1.0, abs_tol=1e-4):
            raise ConfigError(f"a soup needs one non-negative weight per objective {self.objectives}, summing to 1; "
                              f"got {w.tolist()}")
        mixed = {}
        for key, ref in self._states[0].items():
            if ref.is_floating_point():
                mixed[key] = sum(float(wk) * s[key].to(torch.float32) for wk, s in zip(w, self._states)).to(ref.dtype)
            else:
                mixed[key] = ref
        if self.adapters:
            adapters.set_adapter_state(self.policy.model, mixed)
        else:
            self.policy.model.load_state_dict(mixed)

    def generate(self, prompts: Sequence[str], weights: Sequence[float], **gen_kwargs) -> list[str]:
        self.set_weights(weights)
        return self.policy.generate_texts([self.policy.render_plain(p) for p in prompts], **gen_kwargs)

    def orchestrator_weights(self, prompts: Sequence[str], orchestrator: Any = None) -> np.ndarray:
        return self.policy.orchestrator_weights(prompts, orchestrator if orchestrator is not None else self.orchestrator)

    def evaluate_grid(self, suite, prompts: Sequence[str], grid: np.ndarray, *, max_new_tokens: int,
                      batch_size: int, orchestrator=None) -> dict:
        """As ``wic.evaluate_policy_grid``: greedy responses at each grid weight, scored; the orchestrator
        row uses each prompt's response at the grid point nearest to its orchestrator weights (a soup is
        one model per weight vector, so per-prompt weights are rounded to the grid)."""
        import logging

        from pro_lib.errors import ProError

        n, k = len(prompts), suite.K
        responses: list[str] = []
        for g, w in enumerate(grid):
            responses += self.generate(prompts, w, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                       do_sample=False, progress=True, desc=f"soup {g + 1}/{len(grid)}")
        _, z = score(suite, list(prompts) * len(grid), responses)
        zg = z.reshape(len(grid), n, k)
        res = {"points": zg.mean(axis=1), "responses": responses, "z": z,
               "sem": zg.std(axis=1, ddof=1) / math.sqrt(max(n - 1, 1)) if n > 1 else np.zeros((len(grid), k))}
        try:
            ow = self.orchestrator_weights(prompts, orchestrator) if (orchestrator or self.orchestrator) else None
        except (ProError, OSError) as exc:
            logging.getLogger(__name__).warning("no orchestrator row: %s", exc)
            ow = None
        if ow is not None:
            nearest = np.abs(ow[:, None, :] - np.asarray(grid)[None]).sum(axis=2).argmin(axis=1)
            oz = zg[nearest, np.arange(n)]
            res.update({"orchestrator_point": oz.mean(axis=0), "orchestrator_weights": ow,
                        "orchestrator_sem": oz.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(k),
                        "orchestrator_weighted": float((oz * ow).sum(axis=1).mean())})
            res["z"] = np.vstack([z, oz])
            res["responses"] = responses + [responses[g * n + j] for j, g in enumerate(nearest)]
        return res
