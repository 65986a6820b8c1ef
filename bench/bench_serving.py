#!/usr/bin/env python
"""Served pro-endpoint vs in-process predict: latency and throughput on the same prompts.

The endpoint (orchestrator -> weights -> WIC policy answers, optionally reward-suite scores) is saved
as the pyfunc model PRO registers, then

- served: ``mlflow models serve -m <model> --env-manager local`` on a loopback port (one worker),
  queried over HTTP (``POST /invocations``, ``dataframe_records``) with requests of ``batch`` rows;
- in-process: ``pro_lib.serving.Endpoint.predict`` on the same requests in this process.

Both arms use the same model files, prompts, greedy decoding, ``--new-tokens`` and torch threads, and
run one after the other (never concurrently), interleaved over ``--repeats`` after a warm-up. The ratio
column is served / in-process (latency: > 1 = serving costs more). Printed as a table.

    flock /tmp/pro-heavy.lock nice -n 10 .venv/bin/python bench/bench_serving.py        # MiniLM + SmolLM2
    .venv/bin/python bench/bench_serving.py --tiny                                     # seconds, tiny models
    .venv/bin/python bench/bench_serving.py --model models:/pro-endpoint@champion      # a registered endpoint

``--busy-neighbour``: served latency under a CPU-bound neighbour, three served arms at once (alternated per
repeat, the neighbour busy throughout): torch threads from the CPU limit (``PRO_SERVING_THREADS`` =
``--cpu-limit``, what ``use_container_cpus`` sets from cgroup ``cpu.max``), torch's default (every core:
what serving did before), and the first arm with traces on (each request's trace exported to a local
MLflow store). The neighbour is ``--busy`` processes spinning on the CPU. The ratio is each arm's latency
over the CPU-limit arm's.

    flock /tmp/pro-cpu.lock .venv/bin/python bench/bench_serving.py --busy-neighbour
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


def build_endpoint(root: Path, tiny: bool) -> Path:
    """An endpoint folder: tiny random models, or the bundled MiniLM orchestrator + SmolLM2 policy."""
    from pro_lib import serving
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.policy import bundled_smollm2_path
    from pro_lib.testing import build_tiny_policy
    from pro_lib.wic import WICPolicy

    names = ["helpful", "harmless"]
    if tiny:
        from transformers import AutoTokenizer, BertConfig, BertModel

        from pro_lib.models import bundled_minilm_path

        tok = AutoTokenizer.from_pretrained(str(bundled_minilm_path()))
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(root / "enc")
        tok.save_pretrained(root / "enc")
        PreferenceOrchestrator.from_backbone(str(root / "enc"), names).save_pretrained(root / "orch")
        build_tiny_policy(root / "policy", names)
    else:
        PreferenceOrchestrator.from_backbone("minilm", names).save_pretrained(root / "orch")
        WICPolicy.from_pretrained(bundled_smollm2_path(), objectives=names).save_pretrained(root / "policy")
    return serving.build_endpoint(root / "endpoint", orchestrator=root / "orch", policy=root / "policy")


def prompts(n: int) -> list[str]:
    topics = ["bake bread", "fix a bike", "learn python", "plant tomatoes", "save money", "sleep better",
              "write a poem", "train a dog"]
    return [f"How do I {topics[i % len(topics)]}? Give me a short answer (request {i})." for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a registered endpoint (models:/pro-endpoint@champion); default: build one")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a smoke run in seconds)")
    ap.add_argument("--batches", default="1,16", help="rows per request")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per measurement (a multiple of each batch)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in both arms (1: the 2-core dev machine is shared)")
    ap.add_argument("--busy-neighbour", action="store_true", help="threads from the CPU limit vs torch's default, "
                                                                  "beside a busy process (see above)")
    ap.add_argument("--cpu-limit", type=int, default=1, help="--busy-neighbour: the CPU limit's threads")
    ap.add_argument("--busy", type=int, default=1, help="--busy-neighbour: spinning neighbour processes")
    args = ap.parse_args()
    if args.busy_neighbour:
        return busy_neighbour(args)

    import pandas as pd
    import torch

    from pro_lib import packaging, registry, serving
    from pro_lib.registry import download_model
    from platform_services import serve_model, stop_server

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="pro-bench-serving-"))
    if args.model:
        model_dir = download_model(args.model).parents[1]  # the MLflow model around the endpoint folder
        folder = registry.model_folder(model_dir)
    else:
        folder = build_endpoint(work, args.tiny)
        model_dir = work / "pyfunc"
        packaging.save_pyfunc(folder, model_dir)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc, url = serve_model(env, work, ref=str(model_dir))
    try:
        client = serving.EndpointClient(url)
        local = serving.Endpoint(folder)
        params = {"max_new_tokens": args.new_tokens, "score": False}
        texts = prompts(args.prompts)
        rows = []
        for batch in [int(b) for b in args.batches.split(",")]:
            requests = [texts[i:i + batch] for i in range(0, len(texts), batch)]

            def served():
                return [client.invoke(r, **params) for r in requests]

            def in_process():
                return [local.predict(pd.DataFrame({"prompt": r}), params) for r in requests]

            served(), in_process()  # warm-up
            times = {"served": [], "in-process": []}
            for _ in range(args.repeats):
                for name, fn in (("served", served), ("in-process", in_process)):
                    t0 = time.perf_counter()
                    out = fn()
                    times[name].append(time.perf_counter() - t0)
                    assert sum(len(o) for o in out) == len(texts)
            med = {k: statistics.median(v) for k, v in times.items()}
            lat = {k: v / len(requests) for k, v in med.items()}
            thr = {k: len(texts) / v for k, v in med.items()}
            rows.append((batch, lat["in-process"], lat["served"], lat["served"] / lat["in-process"],
                         thr["in-process"], thr["served"], thr["served"] / thr["in-process"]))
    finally:
        stop_server(proc)
    what = "tiny random models" if args.tiny else (args.model or "MiniLM orchestrator + SmolLM2-135M policy")
    print(f"\npro-endpoint ({what}); {args.prompts} prompts, {args.new_tokens} new tokens, greedy, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'batch':>5} {'latency in-proc s':>18} {'latency served s':>17} {'ratio':>6} "
          f"{'prompts/s in-proc':>18} {'prompts/s served':>17} {'ratio':>6}")
    for b, li, ls, lr, ti, ts, tr in rows:
        print(f"{b:>5} {li:>18.3f} {ls:>17.3f} {lr:>6.2f} {ti:>18.2f} {ts:>17.2f} {tr:>6.2f}")
    return 0


def _spin() -> None:
    while True:
        pass


def busy_neighbour(args) -> int:
    """Served latency with threads from the CPU limit vs torch's default, beside busy processes."""
    import multiprocessing
    import os

    from pro_lib import packaging, serving
    from pro_lib.registry import download_model
    from platform_services import serve_model, stop_server

    work = Path(tempfile.mkdtemp(prefix="pro-bench-busy-"))
    if args.model:
        model_dir = download_model(args.model).parents[1]
    else:
        model_dir = work / "pyfunc"
        packaging.save_pyfunc(build_endpoint(work, args.tiny), model_dir)
    cores = len(os.sched_getaffinity(0))
    quiet = {"PRO_TRACING": "0", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'unused.db'}"}
    arms = {f"threads = CPU limit ({args.cpu_limit})": {"PRO_SERVING_THREADS": str(args.cpu_limit), **quiet},
            f"torch default ({cores})": {"PRO_SERVING_THREADS": str(cores), **quiet},
            f"CPU limit ({args.cpu_limit}), traced": {"PRO_SERVING_THREADS": str(args.cpu_limit), "PRO_TRACING": "1",
                                                      "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'traces.db'}",
                                                      "MLFLOW_EXPERIMENT_NAME": "bench-traces"}}
    servers = {}
    try:
        for name, env in arms.items():
            servers[name] = serve_model(env, work, ref=str(model_dir))
        clients = {name: serving.EndpointClient(url) for name, (_, url) in servers.items()}
        texts = prompts(args.prompts)
        params = {"max_new_tokens": args.new_tokens, "score": True}
        for c in clients.values():  # warm-up (the traced arm also creates its store here)
            c.invoke(texts[:1], **params)
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        try:
            times = {name: [] for name in arms}
            for _ in range(args.repeats):
                for name, c in clients.items():
                    t0 = time.perf_counter()
                    for t in texts:  # one prompt per request: the interactive case
                        c.invoke([t], **params)
                    times[name].append((time.perf_counter() - t0) / len(texts))
        finally:
            for p in spinners:
                p.terminate()
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    what = "tiny random models" if args.tiny else (args.model or "MiniLM orchestrator + SmolLM2-135M policy")
    base = statistics.median(times[next(iter(arms))])
    print(f"\nserved pro-endpoint ({what}) beside {args.busy} busy process(es) on {cores} cores; one prompt per "
          f"request, {args.new_tokens} new tokens, greedy; median of {args.repeats} x {args.prompts} requests")
    print(f"{'arm':<32} {'latency s':>10} {'min s':>7} {'max s':>7} {'ratio':>6}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<32} {med:>10.3f} {min(ts):>7.3f} {max(ts):>7.3f} {med / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
