#!/usr/bin/env python
"""Core throughput benchmarks, measured side by side in one run and printed as a table.

1. Orchestrator inference (``PreferenceOrchestrator.predict``: tokenise, encode, pool, head,
   softmax) against a bare forward pass of the same backbone (tokenise + encoder forward) on the
   same length-sorted batches. Goal: within 10% of the bare forward.
2. Reward-suite scoring throughput with and without length sorting (same model, same inputs).

Prompts come from the shared HH-RLHF data when present, else the shipped demo set.

    python bench/bench_core.py                 # bundled MiniLM, 512 prompts
    python bench/bench_core.py --n 256 --repeats 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _prompts(n: int) -> tuple[list[str], list[str], str]:
    from pro_lib.data import load_pairs

    hh = REPO.parent / "shared" / "data" / "hh-rlhf" / "helpful-base_test.jsonl.gz"
    spec, label = (f"hh:{hh}", "HH-RLHF helpful-base") if hh.is_file() else ("demo", "demo set")
    pairs = load_pairs(spec)
    pairs = (pairs * (n // len(pairs) + 1))[:n]
    return [p.prompt for p in pairs], [p.chosen for p in pairs], label


def _best_of(fns, repeats: int) -> list[float]:
    """Best-of-N wall time of each function, runs interleaved so load changes hit all alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [min(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--n", type=int, default=512, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForSequenceClassification

    from pro_lib.models import resolve_model
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.suite import Objective, RewardSuite

    prompts, responses, label = _prompts(args.n)
    orch = PreferenceOrchestrator.from_backbone(args.backbone, ["a", "b"], max_length=args.max_length).eval()
    encoder, tok = orch.encoder, orch.tokenizer
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    batches = [[prompts[i] for i in order[s:s + args.batch_size]] for s in range(0, len(prompts), args.batch_size)]

    @torch.inference_mode()
    def bare():
        for b in batches:
            tok.truncation_side = "left"
            enc = tok(b, truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
            encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    def predict():
        orch.predict(prompts, batch_size=args.batch_size)

    bare(), predict()  # warm-up
    t_bare, t_pred = _best_of([bare, predict], args.repeats)

    # Reward suite scoring with and without length sorting (untrained 1-logit head: speed only).
    rm_dir = REPO / ".pro" / "bench" / "rm"
    if not (rm_dir / "config.json").is_file():
        rm = AutoModelForSequenceClassification.from_pretrained(resolve_model(args.backbone), num_labels=1)
        rm.save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
    suite = RewardSuite([Objective(name="rm", model=str(rm_dir), max_length=2 * args.max_length)])
    suite.score(prompts[:8], responses[:8], progress=False)  # load + warm-up
    kw = dict(batch_size=args.batch_size // 2, progress=False)
    t_sorted, t_unsorted = _best_of([lambda: suite.score(prompts, responses, sort_by_length=True, **kw),
                                     lambda: suite.score(prompts, responses, sort_by_length=False, **kw)],
                                    args.repeats)

    n = len(prompts)
    print(f"\nPRO core benchmark: {n} prompts from the {label}, backbone {args.backbone}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}\n")
    rows = [
        ("orchestrator", "bare encoder forward", n / t_bare, "1.00"),
        ("orchestrator", "PreferenceOrchestrator.predict", n / t_pred, f"{t_bare / t_pred:.2f}"),
        ("reward suite", "score, input order", n / t_unsorted, "1.00"),
        ("reward suite", "score, length-sorted", n / t_sorted, f"{t_unsorted / t_sorted:.2f}"),
    ]
    print(f"{'what':<14} {'variant':<32} {'items/s':>9} {'speed vs first':>15}")
    for what, variant, rate, rel in rows:
        print(f"{what:<14} {variant:<32} {rate:>9.1f} {rel:>15}")
    overhead = t_pred / t_bare - 1
    print(f"\norchestrator overhead over the bare forward: {overhead * 100:+.1f}% (goal: within 10%)")


if __name__ == "__main__":
    main()
