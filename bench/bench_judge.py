#!/usr/bin/env python
"""LLM judge throughput against a local OpenAI-compatible server: judgements per second at concurrency 1
vs 4, and the time of a rerun answered from the on-disk cache.

The judge is ``transformers serve`` with the bundled SmolLM2-135M on 127.0.0.1 (CPU), started once.
Every arm sends the same ``--judgements`` pairwise judgements (distinct prompt/answer pairs, both orders),
verdict only (``explain=False``) with ``--max-tokens`` reply tokens, through ``pro_lib.judge.JudgeClient``:

- ``concurrency 1`` and ``concurrency 4``: an empty cache each (every judgement is a request);
- ``cached rerun``: the concurrency-4 arm again on its filled cache (no request reaches the server).

The uncached arms alternate over ``--repeats`` after a warm-up request; the table shows medians and the
ratio to concurrency 1 (> 1 = faster). With ``--continuous-batching`` the server batches concurrent
requests (transformers' paged-attention scheduler); without it, it answers them one by one.

    flock /tmp/pro-cpu.lock .venv/bin/python bench/bench_judge.py
    flock /tmp/pro-cpu.lock .venv/bin/python bench/bench_judge.py --continuous-batching
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
sys.path.insert(0, str(REPO / "tests"))

QUESTIONS = ["What is the capital of France?", "Tell me a joke about cats.", "How do I boil an egg?",
             "Name a prime number.", "Why is the sky blue?", "Give me a synonym for happy.",
             "What is 7 times 8?", "Recommend a book.", "How do plants make food?", "What does a CPU do?",
             "Say something kind.", "How far is the Moon?"]


def conversations(n: int):
    from pro_lib import judge

    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        a, b = f"Answer {i}: a short reply to '{q}'.", f"Reply {i}: I am not sure."
        first = i % 2 == 0
        out.append(judge.pairwise_messages(q, a if first else b, b if first else a,
                                           judge.DEFAULT_RUBRICS["general"], explain=False))
    return out


def run_arm(url: str, model: str, convs, *, concurrency: int, cache: Path, max_tokens: int) -> tuple[float, dict]:
    from pro_lib import judge

    client = judge.JudgeClient(judge.JudgeEndpoint.resolve(url, model, env={}), cache_dir=cache,
                               concurrency=concurrency, max_tokens=max_tokens, retries=0)
    t0 = time.perf_counter()
    replies = client.map(convs)
    dt = time.perf_counter() - t0
    assert len(replies) == len(convs)
    return dt, dict(client.stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judgements", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--continuous-batching", action="store_true")
    args = ap.parse_args()

    import torch

    from judge_server import transformers_serve
    from pro_lib import judge
    from pro_lib.policy import bundled_smollm2_path

    folder = bundled_smollm2_path()
    convs = conversations(args.judgements)
    extra = ["--continuous-batching"] if args.continuous_batching else []
    with tempfile.TemporaryDirectory() as tmp, transformers_serve(folder, log_path=Path(tmp) / "serve.log",
                                                                  extra_args=extra) as (url, model):
        tmp = Path(tmp)
        run_arm(url, model, convs[:1], concurrency=1, cache=tmp / "warm", max_tokens=args.max_tokens)  # warm-up
        times: dict[int, list[float]] = {1: [], 4: []}
        last_cache = None
        for r in range(args.repeats):
            for c in ((1, 4) if r % 2 == 0 else (4, 1)):
                cache = tmp / f"cache-{c}-{r}"
                dt, stats = run_arm(url, model, convs, concurrency=c, cache=cache, max_tokens=args.max_tokens)
                assert stats["requests"] == len(convs) and stats["cache_hits"] == 0
                times[c].append(dt)
                if c == 4:
                    last_cache = cache
        dt_cached, stats = run_arm(url, model, convs, concurrency=4, cache=last_cache, max_tokens=args.max_tokens)
        assert stats["requests"] == 0 and stats["cache_hits"] == len(convs)
        malformed = sum(judge.parse_verdict(judge.JudgeClient(judge.JudgeEndpoint.resolve(url, model, env={}),
                                                              cache_dir=last_cache, max_tokens=args.max_tokens)
                                            .complete(c)[0]) is None for c in convs)
    n = len(convs)
    t1, t4 = statistics.median(times[1]), statistics.median(times[4])
    print(f"\nJudge: transformers serve, SmolLM2-135M, CPU ({torch.get_num_threads()} torch threads here), "
          f"{'continuous batching' if args.continuous_batching else 'no continuous batching'}; {n} pairwise "
          f"judgements, verdict only, max {args.max_tokens} reply tokens; medians of {args.repeats} runs; "
          f"malformed verdicts {malformed}/{n}\n")
    print("| arm | seconds | judgements/s | ratio to concurrency 1 |")
    print("|---|---|---|---|")
    print(f"| concurrency 1 | {t1:.2f} | {n / t1:.2f} | 1.00 |")
    print(f"| concurrency 4 | {t4:.2f} | {n / t4:.2f} | {t1 / t4:.2f} |")
    print(f"| cached rerun (concurrency 4) | {dt_cached:.3f} | {n / dt_cached:.0f} | {t1 / dt_cached:.0f} |")


if __name__ == "__main__":
    main()
