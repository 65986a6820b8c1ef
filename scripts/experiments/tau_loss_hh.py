#!/usr/bin/env python
"""What the target temperature tau and the loss direction do, on the shared HH data.

tau in {0.1, 0.3, 1.0} x loss in {KL(f||w*) (paper, reverse), KL(w*||f) (forward)}:
- share of corner tags: w* rows whose largest weight prints as 1.00 with PRO-WIC's 2 decimals (>= 0.995);
- an orchestrator per cell, evaluated on the held-out prompts against that tau's targets: MSE, KL(f||w*),
  argmax agreement (argmax of w* does not depend on tau, so this column compares across tau), each
  with a 95% bootstrap interval over prompts, and the ratio MSE / MSE(best fixed) with its interval
  (best fixed = the mean training target at that tau).

Cheap by design: the reward-model scores are cached (training z from <hh>/targets/targets.jsonl, the
held-out z scored once and saved), and each cell trains only the orchestrator's linear head on frozen
MiniLM mean-pooled embeddings computed once (--trunk frozen). The full fine-tuned orchestrator of
orchestrator_hh.py (tau 0.1, reverse KL) is printed beside it as the anchor of the full model.

    flock /tmp/pro-heavy.lock nice -n 10 .venv/bin/python scripts/experiments/tau_loss_hh.py   # ~5 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hh_outputs import require_hh_outputs  # noqa: E402

TAUS = (0.1, 0.3, 1.0)
LOSSES = ("reverse_kl", "forward_kl")


def embed(prompts, backbone: str, names, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled encoder states (the orchestrator's pooling) of each prompt, frozen trunk."""
    import torch
    from tqdm.auto import tqdm

    from pro_lib.orchestrator import PreferenceOrchestrator

    model = PreferenceOrchestrator.from_backbone(backbone, names, max_length=max_length).eval()
    out = np.empty((len(prompts), model.encoder.config.hidden_size), dtype=np.float32)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    with torch.inference_mode():
        for s in tqdm(range(0, len(prompts), batch_size), desc="embedding prompts"):
            idx = order[s:s + batch_size]
            enc = model.tokenize([prompts[i] for i in idx])
            hidden = model.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy()
    return out


def train_head(x: np.ndarray, w: np.ndarray, loss: str, *, steps: int, lr: float, seed: int) -> np.ndarray:
    """A linear softmax head on frozen features trained with the orchestrator's loss; returns its weights fn."""
    import torch

    from pro_lib.orchestrator import kl_loss

    torch.manual_seed(seed)
    xt, wt = torch.as_tensor(x), torch.as_tensor(w, dtype=torch.float32)
    mu, sd = xt.mean(0), xt.std(0).clamp(min=1e-6)
    head = torch.nn.Linear(x.shape[1], w.shape[1])
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    direction = "reverse" if loss == "reverse_kl" else "forward"
    for _ in range(steps):
        opt.zero_grad()
        kl_loss(torch.log_softmax(head((xt - mu) / sd), -1), wt, direction).backward()
        opt.step()
    return lambda feats: torch.softmax(head((torch.as_tensor(feats) - mu) / sd), -1).detach().numpy()


def metrics_with_ci(pred: np.ndarray, target: np.ndarray, fixed: np.ndarray, idx: np.ndarray) -> dict:
    """MSE, KL(pred||target), argmax agreement and MSE ratio vs the fixed vector, each with a 95% CI."""
    from pro_lib.evaluation import squared_errors

    p = np.clip(pred.astype(np.float64), 1e-8, 1)
    t = np.clip(target.astype(np.float64), 1e-8, 1)
    per = {"mse": squared_errors(pred, target), "kl": (p * (np.log(p) - np.log(t))).sum(1),
           "argmax": (pred.argmax(1) == target.argmax(1)).astype(float)}
    fixed_err = squared_errors(np.broadcast_to(fixed, target.shape), target)
    out = {}
    for k, v in per.items():
        b = v[idx].mean(axis=1)
        out[k] = [float(v.mean()), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))]
    ratio = per["mse"][idx].mean(axis=1) / fixed_err[idx].mean(axis=1)
    out["mse_ratio_vs_best_fixed"] = [float(per["mse"].mean() / fixed_err.mean()), float(np.percentile(ratio, 2.5)),
                                      float(np.percentile(ratio, 97.5))]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hh", default=str(REPO / "runs" / "hh"), help="output folder of orchestrator_hh.py")
    ap.add_argument("--out", default=str(REPO / "runs" / "tau_loss"), help="output folder (caches + report)")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=500, help="full-batch AdamW steps of each head")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from pro_lib.data import format_source_mix, load_pairs, source_mix
    from pro_lib.io import atomic_write_text, read_json, write_json
    from pro_lib.suite import RewardSuite
    from pro_lib.targets import target_weights

    torch.set_num_threads(args.threads)
    hh, out = Path(args.hh), Path(args.out)
    require_hh_outputs(hh)
    out.mkdir(parents=True, exist_ok=True)
    suite = RewardSuite.load(hh / "suite")
    rows = [json.loads(line) for line in (hh / "targets" / "targets.jsonl").read_text().splitlines() if line.strip()]
    train_prompts, z_train = [r["prompt"] for r in rows], np.array([r["z"] for r in rows], dtype=np.float64)
    held = load_pairs(str(hh / "data" / "eval.jsonl"))
    eval_prompts = [p.prompt for p in held]
    zfile = out / "heldout_z.npy"
    if zfile.is_file():
        z_eval = np.load(zfile)
    else:
        z_eval = suite.score(eval_prompts, [p.chosen for p in held], normalize=True)
        np.save(zfile, z_eval)
    efile = out / f"embeddings_{Path(args.backbone).name}_{args.max_length}.npz"
    if efile.is_file():
        e = np.load(efile)
        x_train, x_eval = e["train"], e["eval"]
    else:
        x_train = embed(train_prompts, args.backbone, suite.names, args.max_length)
        x_eval = embed(eval_prompts, args.backbone, suite.names, args.max_length)
        np.savez(efile, train=x_train, eval=x_eval)

    idx = np.random.default_rng(0).integers(0, len(eval_prompts), (args.n_boot, len(eval_prompts)))
    cells, corners = [], {}
    for tau in TAUS:
        w_train, w_eval = target_weights(z_train, tau), target_weights(z_eval, tau)
        corners[tau] = {"train": float((w_train.max(1) >= 0.995).mean()), "heldout": float((w_eval.max(1) >= 0.995).mean())}
        fixed = w_train.mean(axis=0)
        base = metrics_with_ci(np.broadcast_to(fixed, w_eval.shape), w_eval, fixed, idx)
        for loss in LOSSES:
            predict = train_head(x_train, w_train, loss, steps=args.steps, lr=args.lr, seed=0)
            pred = predict(x_eval)
            cells.append({"tau": tau, "loss": loss, **metrics_with_ci(pred, w_eval, fixed, idx),
                          "mean_prediction": pred.mean(0).tolist(), "mean_max_weight": float(pred.max(1).mean()),
                          "best_fixed": base, "best_fixed_vector": fixed.tolist()})
            print(f"tau {tau} {loss}: mse {cells[-1]['mse'][0]:.3f} ratio {cells[-1]['mse_ratio_vs_best_fixed'][0]:.3f} "
                  f"argmax {cells[-1]['argmax'][0]:.3f}", flush=True)
    anchor = None
    if (hh / "orchestrator_eval" / "eval.json").is_file():
        anchor = read_json(hh / "orchestrator_eval" / "eval.json")

    def ci(v, f=".3f"):
        return f"{v[0]:{f}} [{v[1]:{f}}, {v[2]:{f}}]"

    mix = source_mix(p.source for p in held)
    lines = [f"## tau x loss (frozen {Path(args.backbone).name} trunk + trained linear head; cached reward scores)", "",
             f"Held-out prompts: {len(eval_prompts)} ({format_source_mix(mix)}); training targets: {len(train_prompts)}. "
             "95% intervals: bootstrap over held-out prompts. KL is KL(f || w*). Best fixed = mean training w* at "
             "that tau. Argmax agreement compares across tau (argmax w* = argmax z).", "",
             "| tau | corner tags (train / held-out) | loss | MSE | KL | argmax agreement | MSE / best fixed | "
             "mean largest weight | best fixed: MSE | best fixed: argmax |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        cc = corners[c["tau"]]
        lines.append(f"| {c['tau']} | {cc['train']:.3f} / {cc['heldout']:.3f} | "
                     f"{'KL(f‖w*)' if c['loss'] == 'reverse_kl' else 'KL(w*‖f)'} | {ci(c['mse'])} | {ci(c['kl'])} | "
                     f"{ci(c['argmax'])} | {ci(c['mse_ratio_vs_best_fixed'])} | {c['mean_max_weight']:.3f} | "
                     f"{ci(c['best_fixed']['mse'])} | {ci(c['best_fixed']['argmax'])} |")
    if anchor:
        o = anchor["methods"]["orchestrator"]
        lines += ["", f"Anchor, the full fine-tuned orchestrator (tau 0.1, KL(f‖w*), orchestrator_hh.py): MSE "
                      f"{o['mse']:.3f}, KL {o['kl']:.3f}, argmax agreement {o['argmax_agreement']:.3f}, MSE / best "
                      f"fixed {anchor['mse_ratio_vs_best_fixed']:.3f} [{anchor['mse_ratio_ci_low']:.3f}, "
                      f"{anchor['mse_ratio_ci_high']:.3f}]."]
    text = "\n".join(lines) + "\n"
    write_json(out / "tau_loss.json", {"cells": cells, "corners": {str(k): v for k, v in corners.items()},
                                       "source_mix": mix, "args": vars(args)})
    atomic_write_text(out / "tau_loss.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
