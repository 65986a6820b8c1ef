#!/usr/bin/env python
"""Generation throughput: the weights-in-context policy vs plain generate on the same prompts.

The conditioning adds K tags and K numbers to each prompt (about 2K-3K tokens); it should cost no
more than those extra prompt tokens. Both arms use the same model, prompts, batch size and greedy
decoding with exactly ``--new-tokens`` new tokens (min = max), measured side by side, interleaved,
after a warm-up. Printed as a table.

    flock /tmp/pro-heavy.lock .venv/bin/python bench/bench_generation.py                  # SmolLM2, HH prompts
    .venv/bin/python bench/bench_generation.py --policy runs/wic_hh/pro_wic_offline --prompts 32
    .venv/bin/python bench/bench_generation.py --tiny                                     # seconds, tiny random Llama
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def hh_prompts(n: int) -> list[str]:
    from pro_lib.data import load_pairs

    for spec in (REPO / "runs" / "hh" / "data" / "eval.jsonl",
                 REPO.parent / "shared" / "data" / "hh-rlhf" / "helpful-base_test.jsonl.gz"):
        if spec.exists():
            prompts = list(dict.fromkeys(p.prompt for p in load_pairs(f"hh:{spec}" if spec.suffix == ".gz" else str(spec),
                                                                       limit=4 * n)))
            return prompts[:n]
    return [f"\n\nHuman: Give me a tip about topic number {i}.\n\nAssistant:" for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="smollm2", help="a WIC policy folder, or a causal LM ('smollm2', hub name)")
    ap.add_argument("--objectives", default="helpful,harmless", help="objectives when --policy is a plain LM")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke run)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from pro_lib import testing, wic
    from pro_lib.policy import truncate_prompt

    torch.set_num_threads(args.threads)
    names = args.objectives.split(",")
    if args.tiny:
        path = testing.build_tiny_policy(Path(tempfile.mkdtemp()) / "tiny", names)
        pol = wic.WICPolicy.from_pretrained(path)
        prompts = [f"can you help me {i % 10} ?" for i in range(args.prompts)]
    else:
        try:
            pol = wic.WICPolicy.from_pretrained(args.policy)
        except Exception:  # a plain causal LM: add the tags (untrained conditioning still costs the same)
            pol = wic.WICPolicy.from_pretrained(args.policy, objectives=names)
        prompts = hh_prompts(args.prompts)
    prompts = [truncate_prompt(pol.tokenizer, p, args.max_prompt_tokens) for p in prompts]
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(pol.K), size=len(prompts))
    arms = {"plain generate": [pol.render_plain(p) for p in prompts],
            "weights in context": pol.condition(prompts, weights)}
    tok_counts = {a: float(np.mean([len(pol.tokenizer(t, add_special_tokens=not pol.use_chat_template)["input_ids"])
                                    for t in texts])) for a, texts in arms.items()}
    kw = dict(batch_size=args.batch_size, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
              do_sample=False)
    pol.generate_texts(arms["plain generate"][: args.batch_size], **kw)  # warm-up
    times = {a: [] for a in arms}
    for _ in range(args.repeats):
        for arm, texts in arms.items():  # interleaved: both arms see the same machine load
            t0 = time.perf_counter()
            pol.generate_texts(texts, **kw)
            times[arm].append(time.perf_counter() - t0)
    base = statistics.median(times["plain generate"])
    print(f"\npolicy={args.policy if not args.tiny else 'tiny random Llama'}  prompts={len(prompts)}  "
          f"batch={args.batch_size}  new tokens={args.new_tokens}  threads={args.threads}  repeats={args.repeats}")
    print(f"{'arm':<20} {'prompt tokens':>13} {'median s':>9} {'new tok/s':>10} {'time ratio':>10} "
          f"{'prompt+new token ratio':>23}")
    total_base = tok_counts["plain generate"] + args.new_tokens
    for arm in arms:
        med = statistics.median(times[arm])
        print(f"{arm:<20} {tok_counts[arm]:>13.1f} {med:>9.2f} {len(prompts) * args.new_tokens / med:>10.1f} "
              f"{med / base:>10.3f} {(tok_counts[arm] + args.new_tokens) / total_base:>23.3f}")
    print("\n'time ratio' should stay near or below 'prompt+new token ratio' (the cost of the extra tokens).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
