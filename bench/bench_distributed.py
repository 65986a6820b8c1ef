"""Data parallelism on a CPU: 2 processes x 1 thread against 1 process x 2 threads, same global batch.

Both arms go through the same launcher (``pro_lib.launcher``, torchrun, gloo) and the unchanged stage
functions: SFT (``wic_offline.train_wic_offline`` on a small random Llama) and reward-model training
(``rewards.train_reward_model`` on a small random BERT). The time is that of ``trainer.train()`` on
rank 0 (a timing callback; start-up and model loading are left out), as training samples per second.
One run, printed as a table; run it under the CPU lock:

    flock /tmp/pro-cpu.lock .venv/bin/python bench/bench_distributed.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

_TIMES: dict[str, float] = {}


def _timing_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            _TIMES["start"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            _TIMES["end"] = time.perf_counter()
            _TIMES["steps"] = state.global_step

    return Timer()


def _timed(fn, cfg) -> dict:
    from pro_lib import tracking

    tracking.trainer_callback = _timing_callback  # the stages add tracking.trainer_callback() to their trainers
    metrics = fn(cfg)
    return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "train_seconds": _TIMES["end"] - _TIMES["start"], "steps": _TIMES["steps"]}


def timed_reward_model(cfg):
    from pro_lib.rewards import train_reward_model

    return _timed(train_reward_model, cfg)


def timed_wic_offline(cfg):
    from pro_lib.wic.offline import train_wic_offline

    return _timed(train_wic_offline, cfg)


# the worker imports these names from this module (StageSpec.config_class)
from pro_lib.rewards import RewardTrainConfig  # noqa: E402
from pro_lib.wic.offline import WICOfflineConfig  # noqa: E402


def _models(root: Path) -> tuple[Path, Path]:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pro_lib.models import bundled_minilm_path
    from pro_lib.testing import build_tiny_policy

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(bundled_minilm_path()))
    enc = root / "encoder"
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=1024, max_position_embeddings=128)).save_pretrained(enc)
    tok.save_pretrained(enc)
    policy = build_tiny_policy(root / "policy", ["helpful", "humor"], hidden_size=256, num_layers=4)
    return enc, policy


def _pairs(root: Path, n: int) -> Path:
    from pro_lib.io import write_jsonl

    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"tell me a joke about cat number {i}", "chosen": "ha ha funny " * (2 + i % 5),
                         "rejected": "no", "source": "humor"})
        else:
            rows.append({"prompt": f"explain step {i} of baking bread please", "chosen": "mix knead bake " * (2 + i % 4),
                         "rejected": "dunno", "source": "helpful"})
    write_jsonl(root / "pairs.jsonl", rows)
    return root / "pairs.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=192)
    ap.add_argument("--sft-steps", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    from pro_lib.distributed import StageSpec
    from pro_lib.launcher import LaunchPlan, run_stage_distributed
    from pro_lib.suite import ScoreConfig, score_and_target

    root = Path(tempfile.mkdtemp(prefix="pro-bench-dist-"))
    os.environ["PRO_HOME"] = str(root / ".pro")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    enc, policy = _models(root)
    pairs = _pairs(root, args.pairs)
    sys.path.insert(0, str(REPO / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), os.environ["PYTHONPATH"]])
    targets = root / "targets"
    score_and_target(ScoreConfig(data=str(pairs), output_dir=str(targets), tau=0.5,
                                 objectives=["helpful=fn:scorers:polite_reward", "humor=fn:scorers:length_reward"]))
    tasks = {
        "reward model (BERT 4x256)": ("timed_reward_model", "RewardTrainConfig", lambda out: {
            "objective": "helpful", "data": [str(pairs)], "base_model": str(enc), "output_dir": str(out),
            "batch_size": 16, "epochs": 1.0, "max_length": 64, "save_steps": 10_000, "progress": False},
            lambda m: m["n_train"]),
        "SFT (Llama 4x256)": ("timed_wic_offline", "WICOfflineConfig", lambda out: {
            "policy": str(policy), "data": [str(pairs)], "targets": str(targets), "output_dir": str(out),
            "max_steps": args.sft_steps, "batch_size": 8, "max_length": 64, "save_steps": 10_000},
            lambda m: m["steps"] * 8),
    }
    arms = [("1 process x 2 threads", LaunchPlan(nproc_per_node=1), "2"),
            ("2 processes x 1 thread", LaunchPlan(nproc_per_node=2), "1")]
    rows = []
    for task, (fn, cls, make, samples_of) in tasks.items():
        rates = []
        for arm, plan, threads in arms:
            out = root / f"{fn}-{threads}"
            spec = StageSpec(stage=task, module="bench.bench_distributed", function=fn, config_class=cls,
                             config=make(out))
            m = run_stage_distributed(spec, plan, work_dir=root / f"work-{fn}-{threads}",
                                      env={"OMP_NUM_THREADS": threads}, stream=open(os.devnull, "w"))
            samples = samples_of(m) if fn == "timed_wic_offline" else m["steps"] * 16
            rates.append((arm, m["steps"], m["train_seconds"], samples / m["train_seconds"]))
        for arm, steps, secs, rate in rates:
            rows.append((task, arm, steps, secs, rate, rate / rates[0][3]))
    print(f"\n{'task':<28} {'arm':<24} {'steps':>5} {'train s':>8} {'samples/s':>10} {'vs 1x2':>7}")
    for task, arm, steps, secs, rate, ratio in rows:
        print(f"{task:<28} {arm:<24} {steps:>5} {secs:>8.2f} {rate:>10.1f} {ratio:>6.2f}x")
    import platform

    print(f"\nCPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch gloo backend; "
          f"global batch the same in both arms (16 pairs / 8 SFT examples per step)")


if __name__ == "__main__":
    main()
