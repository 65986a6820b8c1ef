#!/usr/bin/env python
"""CPU speed of the PRO-WIC SmolLM2 stages: SFT tokens/s and generation tokens/s, each option side by side.

SFT arms run the real `pro_lib.wic.sft.sft_train` (trl SFTTrainer) on the same WIC examples (demo prompts with
weights in context, their preferred responses), the same number of steps, a fresh model each; tokens/s
counts the real (non-pad) tokens of the examples over the training time. Ratios are against today's
default path (fp32, full fine-tune, padded batches). Generation arms decode the same prompts greedily with
exactly --new-tokens new tokens. The last table: loading the bundled SmolLM2 by converting its GGUF vs from
the cached safetensors folder.

    flock /tmp/pro-heavy.lock nice -n 10 .venv/bin/python bench/bench_cpu_training.py
    .venv/bin/python bench/bench_cpu_training.py --tiny       # seconds, tiny random Llama (smoke run)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SFT_ARMS = {  # label -> SFTOptions changes; "system": the policy's system_prompt; "compact": False = trl's
    # own CPU path (the LM head on every position), True = pro_lib.policy.compact_lm_head_on_cpu
    "fp32, full, padded, full LM head (before)": {"compact": False},
    "padded + compact LM head": {},
    "padding-free": {"padding_free": True, "compact": False},
    "padding-free + empty system turn": {"padding_free": True, "system": "", "compact": False},
    "padding-free + empty system turn + compact LM head (the main job)": {"padding_free": True, "system": ""},
    "bf16 autocast": {"bf16": True, "compact": False},
    "LoRA r=16": {"lora_r": 16, "learning_rate": 2e-4, "compact": False},
    "top 8 of 30 layers trained": {"trainable_layers": 8, "compact": False},
    "bf16 + padding-free": {"bf16": True, "padding_free": True, "compact": False},
    "bf16 + padding-free + LoRA r=16": {"bf16": True, "padding_free": True, "lora_r": 16, "learning_rate": 2e-4,
                                        "compact": False},
}


def demo_examples(policy, n: int, seed: int = 0) -> list[dict]:
    import numpy as np

    from pro_lib.data import load_pairs

    pairs = load_pairs("demo")[:n]
    w = np.random.default_rng(seed).dirichlet(np.ones(policy.K), size=len(pairs))
    return [{"prompt": policy.render(p.prompt, wi), "completion": p.chosen} for p, wi in zip(pairs, w)]


def load(ref: str, names: list[str]):
    from pro_lib import wic

    return wic.WICPolicy.from_pretrained(ref, objectives=names)


def table(head: list[str], rows: list[list]) -> str:
    out = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
    return out + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=48, help="SFT examples per arm (one epoch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-convert", action="store_true", help="skip the GGUF-conversion table")
    ap.add_argument("--arms", default=None, help="comma-separated SFT arm numbers to run (1 = today's path, "
                    "always run): " + "; ".join(f"{i + 1}: {k}" for i, k in enumerate(SFT_ARMS)))
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2 (smoke run)")
    args = ap.parse_args()

    import torch

    from pro_lib import policy as policy_mod
    from pro_lib import testing
    from pro_lib.wic import sft

    torch.set_num_threads(args.threads)
    native = policy_mod.cpu_has_native_bf16()
    policy_mod.cpu_has_native_bf16 = lambda: True  # measure bf16 autocast here even where it is emulated
    names = ["helpful", "harmless", "humor"]
    work = Path(tempfile.mkdtemp(prefix="pro-bench-cpu-"))
    ref = str(testing.build_tiny_policy(work / "tiny", names, hidden_size=64, num_layers=2)) if args.tiny else "smollm2"
    print(f"model: {'tiny random Llama' if args.tiny else 'SmolLM2-135M-Instruct'}; torch threads {args.threads}; "
          f"native bf16 (avx512_bf16 / amx_bf16): {native}", flush=True)

    # --- SFT ---------------------------------------------------------------------------------------------
    def count_tokens(tok, examples) -> int:
        return sum(len(tok(e["prompt"] + e["completion"], add_special_tokens=False)["input_ids"]) + 1
                   for e in examples)

    rows, base_seconds = [], None
    chosen = {1} | {int(a) for a in args.arms.split(",")} if args.arms else set(range(1, len(SFT_ARMS) + 1))
    for i, (label, change) in enumerate(SFT_ARMS.items(), start=1):
        if i not in chosen:
            continue
        change = dict(change)
        system, compact = change.pop("system", None), change.pop("compact", True)
        pol = load(ref, names)
        pol.system_prompt = system
        examples = demo_examples(pol, args.examples)  # the same pairs and weights in every arm
        real_tokens = count_tokens(pol.tokenizer, examples)
        opts = dataclasses.replace(
            sft.SFTOptions(batch_size=args.batch_size, save_steps=10_000, max_length=384), **change)
        m = sft.sft_train(pol, examples, opts, work / f"sft-{len(rows)}", desc=label, compact_lm_head=compact)
        base_seconds = base_seconds or m["sft_seconds"]
        tps = real_tokens / m["sft_seconds"]
        rows.append([label, m["sft_steps"], real_tokens, f"{m['sft_seconds']:.1f}", f"{tps:.0f}",
                     f"{base_seconds / m['sft_seconds']:.2f}", f"{m['sft_loss_first']:.3f} -> {m['sft_loss_last']:.3f}"])
        print(f"  {label}: {m['sft_seconds']:.1f} s, {tps:.0f} tokens/s", flush=True)
        del pol
    print(f"\nSFT: the same {args.examples} demo pairs with weights in context in every arm, batch {args.batch_size}, "
          "one epoch, a fresh model per arm; speed-up = the first arm's seconds / this arm's (the system-turn arms "
          "have fewer real tokens per example)\n")
    print(table(["arm", "steps", "real tokens", "seconds", "tokens/s", "speed-up", "loss first -> last"], rows))

    # --- generation ------------------------------------------------------------------------------------
    pol = load(ref, names)
    prompts = [e["prompt"] for e in demo_examples(pol, args.gen_prompts, seed=1)]
    kw = dict(batch_size=8, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    gen_rows, base_gen = [], None
    for label, dtype in (("fp32 (today)", torch.float32), ("bf16 weights", torch.bfloat16)):
        pol.model.to(dtype)
        pol.generate_texts(prompts[:8], **kw)  # warm-up
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            pol.generate_texts(prompts, **kw)
            times.append(time.perf_counter() - t0)
        tps = len(prompts) * args.new_tokens / statistics.median(times)
        base_gen = base_gen or tps
        gen_rows.append([label, f"{statistics.median(times):.2f}", f"{tps:.1f}", f"{tps / base_gen:.2f}"])
        print(f"  generate {label}: {tps:.1f} new tokens/s", flush=True)
    print(f"\nGeneration: {len(prompts)} prompts, batch 8, exactly {args.new_tokens} new tokens, greedy, "
          "median of 2\n")
    print(table(["arm", "median s", "new tokens/s", "speed-up"], gen_rows))

    # --- load: convert the GGUF vs the cached folder ---------------------------------------------------
    if not args.tiny and not args.skip_convert:
        t0 = time.perf_counter()
        policy_mod.convert_smollm2(work / "converted")
        t_convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        policy_mod.load_policy("smollm2")
        t_cached = time.perf_counter() - t0
        print("\nLoading the bundled SmolLM2\n")
        print(table(["path", "seconds", "ratio"], [["convert the GGUF", f"{t_convert:.1f}", "1.00"],
                                                   ["cached safetensors", f"{t_cached:.1f}",
                                                    f"{t_convert / t_cached:.1f}x faster"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
