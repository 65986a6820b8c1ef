"""The bundled SmolLM2-135M-Instruct trains with PRO-MORLHF on real HH-RLHF prompts (slow: real model)."""

from __future__ import annotations

import json
import pytest
import torch

from pro_lib.morlhf import MorlhfTrainConfig, train_morlhf
from pro_lib.suite import RewardSuite

from helpers import shared_file

pytestmark = pytest.mark.slow


def test_smollm2_one_rl_step_on_hh_prompts(tmp_path):
    HH = shared_file("hh-rlhf/helpful-base_test.jsonl.gz")
    torch.set_num_threads(2)
    suite = RewardSuite.from_functions(
        {"brevity": lambda p, r: [-float(len(x)) for x in r], "politeness": lambda p, r: [float("please" in x.lower()
                                                                                              or "sure" in x.lower()) for x in r]},
        stats={"brevity": (-60.0, 30.0), "politeness": (0.2, 0.4)})
    cfg = MorlhfTrainConfig(policy="smollm2", suite="in-process", data=[f"hh:{HH}"], split="all", max_prompts=4,
                            max_prompt_tokens=64, weights="0.5,0.5", output_dir=str(tmp_path / "run"), max_steps=1,
                            save_steps=1, num_generations=2, batch_size=4, max_completion_length=8,
                            learning_rate=1e-5)
    m = train_morlhf(cfg, suite=suite)
    assert m["steps"] == 1 and "final_brevity" in m
    saved = json.loads((tmp_path / "run" / "policy" / "config.json").read_text())
    assert "quantization_config" not in saved  # the GGUF marker does not leak into trained policies
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
