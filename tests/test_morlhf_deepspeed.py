"""The shipped DeepSpeed ZeRO-2 accelerate config drives real training steps (one CPU process, gloo).

DeepSpeed compiles its communication op on first use (about 1-2 minutes on 2 cores, cached in
~/.cache/torch_extensions afterwards) and warns that it runs on CPU, hence ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                       reason="deepspeed is not installed (pip install 'pro-align[train]')"),
]

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    sys.path.insert(0, {tests!r})
    from helpers.morlhf import make_policy, make_suite
    from transformers import TrainerCallback
    from pro_lib.morlhf import MorlhfTrainConfig, train_morlhf

    torch.set_num_threads(1)
    seen = {{}}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            seen["deepspeed"] = bool(args.deepspeed_plugin) and args.deepspeed_plugin.zero_stage
            seen["world_size"] = args.world_size
            if len(sys.argv) > 2 and state.global_step == int(sys.argv[2]):
                os._exit(9)  # killed: the step is done, its checkpoint is not

    cfg = MorlhfTrainConfig(policy="tiny", suite="in-process", data=[{data!r}], output_dir={out!r},
                            weights="0.6,0.4", max_steps=int(sys.argv[1]), save_steps=2, num_generations=4,
                            batch_size=8, max_completion_length=6, learning_rate=1e-2, beta=0.05,
                            max_prompts=16)
    m = train_morlhf(cfg, suite=make_suite(), policy=make_policy(), callbacks=[Probe()])
    print("RESULT " + json.dumps({{**m, **seen}}))
''')


def _launch(script: Path, steps: int, stage: int = 2, kill_at: int | None = None) -> dict | None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "pro_lib" / "configs" / "accelerate" / f"zero{stage}.yaml"), "--num_processes", "1",
           "--mixed_precision", "no", str(script), str(steps)] + ([str(kill_at)] if kill_at else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    if kill_at:
        assert proc.returncode != 0, "the run was not killed"
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"accelerate launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_zero2_config_trains_and_resumes_on_cpu(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Human: question {i}? Assistant:", "chosen": " yes",
                                        "rejected": " no"}) + "\n" for i in range(40)))
    out = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), data=str(data), out=str(out)))

    _launch(script, 3, kill_at=3)  # killed after step 3; checkpoint-2 holds steps 1-2
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert (ckpt / "global_step2").is_dir(), "not a DeepSpeed checkpoint: ZeRO was not active"
    assert not (out / "policy").exists()

    # The same command resumes from the DeepSpeed checkpoint and finishes the run.
    second = _launch(script, 3)
    assert second["deepspeed"] == 2 and second["world_size"] == 1
    assert second["resumed_from_step"] == 2 and second["steps"] == 3
    assert (out / "policy" / "config.json").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "reward" in r] == [1, 2, 3]


def test_zero3_config_trains_and_saves_a_full_policy_on_cpu(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Human: question {i}? Assistant:", "chosen": " yes",
                                        "rejected": " no"}) + "\n" for i in range(40)))
    out = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), data=str(data), out=str(out)))
    m = _launch(script, 2, stage=3)
    assert m["deepspeed"] == 3 and m["steps"] == 2
    assert (out / "checkpoints" / "checkpoint-2" / "global_step2").is_dir()
    # The saved policy is whole (gathered from the ZeRO-3 shards), not an empty placeholder.
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(out / "policy")
    assert policy.model.embed_tokens.weight.shape[0] > 100
    assert float(policy.model.embed_tokens.weight.abs().sum()) > 0


def test_pro_morlhf_launch_cpu_runs_zero2_end_to_end(tmp_path):
    """`pro morlhf launch --cpu --zero 2 -- <train flags>`: the launcher entry with saved artifacts."""
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.morlhf import STATS, make_policy

    from pro_lib.suite import Objective, RewardSuite

    model, tok = make_policy()
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    RewardSuite([Objective(name="length", function="helpers.morlhf:length_score"),
                 Objective(name="a", function="helpers.morlhf:a_score")], stats=STATS).save(tmp_path / "suite")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Human: question {i}? Assistant:", "chosen": " yes",
                                        "rejected": " no"}) + "\n" for i in range(40)))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({
        "policy": str(tmp_path / "policy"), "suite": str(tmp_path / "suite"), "data": [str(data)],
        "weights": "uniform", "max_steps": 2, "save_steps": 2, "num_generations": 2, "batch_size": 4,
        "max_completion_length": 4, "learning_rate": 1e-3, "max_prompts": 8, "output_dir": str(tmp_path / "run")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.run([sys.executable, "-m", "pro_lib.cli", "morlhf", "launch", "--cpu", "--zero", "2", "--",
                           "--config", str(tmp_path / "cfg.yaml")], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "launch --config_file" in proc.stdout and "zero2.yaml" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "global_step2").is_dir()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
