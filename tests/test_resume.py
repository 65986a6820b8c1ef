"""Safe resumes (pro_lib.checkpoints) on tiny models.

For every resumable stage: a run SIGKILLed mid-run (a forked child kills itself right after an
optimizer step that no checkpoint holds yet), then a re-run with a changed setting is refused with
the field named, then the same command resumes and ends with the weights of an uninterrupted run,
bit for bit. Plus the reward-model and stale-resume regressions of issue 11 (items 1 and 2).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from pro_lib import testing
from pro_lib.checkpoints import (differences, digest_data, find_checkpoint, move_aside, prepare_resume,
                                  resume_mode)
from pro_lib.cli import main
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import write_jsonl
from pro_lib.suite import Objective, RewardSuite

NAMES = ["polite", "long"]


# -- helpers ------------------------------------------------------------------------------------

def run_killed(argv: list[str], after_steps: int) -> None:
    """`pro <argv>` in a forked child that SIGKILLs itself right after its ``after_steps``-th optimizer step."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    pid = os.fork()
    if pid == 0:  # the child: nothing after main() runs, SIGKILL cannot be caught
        try:
            steps = [0]

            def hook(opt, args, kwargs):
                steps[0] += 1
                if steps[0] == after_steps:
                    os.kill(os.getpid(), signal.SIGKILL)

            register_optimizer_step_post_hook(hook)
            main(argv)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the run was not killed mid-run (wait status {status}): it ended before step {after_steps}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {differ[:5]}"


def resumed_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "resuming from" in r.getMessage()]


def kill_refuse_resume(capsys, caplog, argv: list[str], ref_out: Path, out: Path, *, kill_at: int,
                       changed: list[str], named: str, ckpt_dir: Path) -> None:
    """The shared scenario: reference run; killed run; changed rerun refused; same rerun resumes."""
    assert main(argv + ["--output-dir", str(ref_out)]) == 0
    run_killed(argv + ["--output-dir", str(out)], kill_at)
    ckpt = find_checkpoint(ckpt_dir)
    assert ckpt is not None, f"no checkpoint in {ckpt_dir} after the kill"
    capsys.readouterr()
    assert main(argv + ["--output-dir", str(out)] + changed) == 2
    err = capsys.readouterr().err
    assert named in err and "--resume never" in err, err
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pro_lib.checkpoints"):
        assert main(argv + ["--output-dir", str(out)]) == 0
    assert any(str(ckpt) in m for m in resumed_from(caplog)), "the re-run did not resume from the checkpoint"


# -- fixtures -------------------------------------------------------------------------------------

def _pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"can you help me {i} ?", "chosen": "yes please thanks i can help",
                         "rejected": "no", "source": "polite"})
        else:
            rows.append({"prompt": f"tell me about harm {i} ?", "chosen": "that is not safe sorry",
                         "rejected": "yes harm harm harm harm", "source": "other"})
    return rows


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", _pairs(24))


@pytest.fixture
def suite_dir(tmp_path) -> Path:
    suite = RewardSuite([Objective(name="polite", function="scorers:polite_reward"),
                         Objective(name="long", function="scorers:length_reward")],
                        stats={"polite": (0.5, 1.0), "long": (3.0, 2.0)})
    return suite.save(tmp_path / "suite")


@pytest.fixture
def tiny_policy(tmp_path) -> Path:
    return testing.build_tiny_policy(tmp_path / "tiny_policy", NAMES)


# -- the module ---------------------------------------------------------------------------------

def test_fingerprint_helpers(tmp_path):
    assert differences({"lr": 1.0, "seed": 0}, {"lr": 2.0, "seed": 0, "new": 1}) == ["lr: 1.0 -> 2.0",
                                                                                    "new: (absent) -> 1"]
    assert resume_mode(True) == "auto" and resume_mode("never") == "never"
    with pytest.raises(ConfigError, match="'auto' or 'never'"):
        resume_mode("sometimes")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    (tmp_path / "empty").mkdir()
    moved = move_aside([tmp_path / "out", tmp_path / "out" / "f", tmp_path / "empty", tmp_path / "none"])
    assert len(moved) == 1 and (moved[0] / "f").read_text() == "x" and moved[0].name.startswith("out.prev-")
    assert (tmp_path / "empty").is_dir()  # nothing saved there: left alone


def test_prepare_resume_checks_data_content(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    before = digest_data([str(data)])
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "c"}\n')  # same path, other content
    after = digest_data([str(data)])
    assert before != after and before.startswith("sha256:")
    ckpt = tmp_path / "run.checkpoints"
    assert prepare_resume(ckpt, {"seed": 0, "data_content": before}) is None  # fresh: fingerprint recorded
    (ckpt / "checkpoint-2").mkdir()
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert prepare_resume(ckpt, {"seed": 0, "data_content": before}) == ckpt / "checkpoint-2"
    with pytest.raises(CheckpointError, match=f"data_content: '{before}' -> '{after}'"):
        prepare_resume(ckpt, {"seed": 0, "data_content": after})
    assert prepare_resume(ckpt, {"seed": 0, "data_content": after}, "never") is None
    assert json.loads((ckpt / "fingerprint.json").read_text())["data_content"] == after
    (kept,) = tmp_path.glob("run.checkpoints.prev-*")
    assert (kept / "checkpoint-2" / "trainer_state.json").is_file()


# -- item 1: a second reward model is not a copy of the first --------------------------------------

def test_second_objective_gets_its_own_folder_and_training(tmp_path, monkeypatch, tiny_encoder_dir, capsys):
    data = write_jsonl(tmp_path / "rm.jsonl", _pairs(60))
    monkeypatch.chdir(tmp_path)
    common = ["--data", str(data), "--base-model", str(tiny_encoder_dir), "--max-length", "32", "--epochs", "1",
              "--batch-size", "8", "--learning-rate", "1e-3", "--progress", "false"]
    assert main(["rewards", "train", "--objective", "polite", "--source", "polite"] + common) == 0
    assert main(["rewards", "train", "--objective", "other", "--source", "other"] + common) == 0
    polite, other = tmp_path / "runs" / "rewards" / "polite", tmp_path / "runs" / "rewards" / "other"
    assert json.loads((other / "pro_reward.json").read_text())["objective"] == "other"
    assert json.loads((polite / "pro_reward.json").read_text())["objective"] == "polite"
    state = json.loads((find_checkpoint(tmp_path / "runs" / "rewards" / "other.checkpoints")
                        / "trainer_state.json").read_text())
    assert state["global_step"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(weights(polite).values(), weights(other).values()))
    # the same folder for another objective: refused, naming the field
    capsys.readouterr()
    assert main(["rewards", "train", "--objective", "third", "--source", "other", "--output-dir", str(polite)]
                + common) == 2
    err = capsys.readouterr().err
    assert "objective: 'polite' -> 'third'" in err and "--resume never" in err
    # --resume never starts over and keeps the earlier model
    assert main(["rewards", "train", "--objective", "third", "--source", "other", "--output-dir", str(polite),
                 "--resume", "never"] + common) == 0
    assert json.loads((polite / "pro_reward.json").read_text())["objective"] == "third"
    kept = [p for p in (tmp_path / "runs" / "rewards").iterdir() if p.name.startswith("polite.prev-")]
    assert kept and json.loads((kept[0] / "pro_reward.json").read_text())["objective"] == "polite"


# -- item 2 + kill-and-resume per stage -------------------------------------------------------------

def test_reward_model_kill_and_resume(tmp_path, tiny_encoder_dir, capsys, caplog):
    data = write_jsonl(tmp_path / "rm.jsonl", _pairs(60))
    argv = ["rewards", "train", "--objective", "polite", "--data", str(data), "--base-model", str(tiny_encoder_dir),
            "--max-length", "32", "--epochs", "2", "--batch-size", "8", "--learning-rate", "1e-3",
            "--eval-fraction", "0.25", "--save-steps", "3", "--progress", "false"]
    out = tmp_path / "rm"
    kill_refuse_resume(capsys, caplog, argv, tmp_path / "ref", out, kill_at=5, changed=["--learning-rate", "2e-3"],
                       named="learning_rate: 0.001 -> 0.002", ckpt_dir=tmp_path / "rm.checkpoints")
    assert_same_weights(out, tmp_path / "ref")


def test_orchestrator_kill_and_resume_and_no_stale_metrics(tmp_path, tiny_encoder_dir, capsys, caplog):
    from pro_lib.config import build_config
    from pro_lib.suite import ScoreConfig, score_and_target

    rows = [{"prompt": f"tell me a joke about cat {i}", "chosen": "ha ha ha funny " * 3, "rejected": "no"} if i % 2
            else {"prompt": f"explain step {i} of baking", "chosen": "mix knead bake", "rejected": "dunno"}
            for i in range(48)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    score_and_target(build_config(ScoreConfig, {
        "data": str(tmp_path / "train.jsonl"), "output_dir": str(tmp_path / "targets"),
        "objectives": ["polite=fn:scorers:polite_reward", "long=fn:scorers:length_reward"]}))
    argv = ["orchestrator", "train", "--targets", str(tmp_path / "targets"), "--backbone", str(tiny_encoder_dir),
            "--batch-size", "8", "--max-length", "32", "--learning-rate", "1e-3", "--epochs", "2",
            "--save-steps", "4", "--progress", "false"]
    out = tmp_path / "orch"
    kill_refuse_resume(capsys, caplog, argv, tmp_path / "ref", out, kill_at=6, changed=["--loss", "forward_kl"],
                       named="loss: 'reverse_kl' -> 'forward_kl'", ckpt_dir=tmp_path / "orch.checkpoints")
    assert_same_weights(out, tmp_path / "ref")
    # a finished run re-run with other settings no longer "resumes" 0 steps and relabels train_metrics.json
    assert main(argv + ["--output-dir", str(out), "--learning-rate", "5e-4"]) == 2
    assert json.loads((out / "train_metrics.json").read_text())["config"]["learning_rate"] == 1e-3


def test_wic_offline_kill_and_resume(tmp_path, pairs_file, suite_dir, tiny_policy, capsys, caplog):
    argv = ["wic", "offline", "--policy", str(tiny_policy), "--data", str(pairs_file), "--suite", str(suite_dir),
            "--epochs", "2", "--batch-size", "4", "--learning-rate", "1e-3", "--max-length", "64", "--save-steps", "2"]
    out = tmp_path / "offline"
    kill_refuse_resume(capsys, caplog, argv, tmp_path / "ref", out, kill_at=5, changed=["--tau", "0.5"],
                       named="tau: 0.1 -> 0.5", ckpt_dir=tmp_path / ".offline.work" / "checkpoints")
    assert_same_weights(out, tmp_path / "ref")


def test_wic_online_sft_kill_and_resume(tmp_path, tiny_policy, capsys, caplog):
    kept = [{"prompt": f"can you help me {i} ?", "response": "yes i can help" if i % 2 else "that is not safe",
             "weights": [0.7, 0.3] if i % 2 else [0.2, 0.8], "z": [0.0, 0.0], "kept": True} for i in range(16)]
    write_jsonl(tmp_path / "samples" / "kept.jsonl", kept)
    argv = ["wic", "sft", "--policy", str(tiny_policy), "--samples", str(tmp_path / "samples"), "--epochs", "2",
            "--batch-size", "4", "--learning-rate", "1e-3", "--max-length", "64", "--save-steps", "2"]
    out = tmp_path / "online"
    kill_refuse_resume(capsys, caplog, argv, tmp_path / "ref", out, kill_at=3, changed=["--epochs", "3"],
                       named="epochs: 2.0 -> 3.0", ckpt_dir=tmp_path / ".online.work" / "checkpoints")
    assert_same_weights(out, tmp_path / "ref")


def test_wic_online_rounds_kill_and_resume(tmp_path, pairs_file, suite_dir, tiny_policy, capsys, caplog):
    argv = ["wic", "online", "--policy", str(tiny_policy), "--data", str(pairs_file), "--suite", str(suite_dir),
            "--rounds", "2", "--preferences", "uniform", "--prompts-per-round", "4", "--samples-per-prompt", "2",
            "--rejection", "none", "--max-new-tokens", "6", "--epochs", "1", "--batch-size", "2",
            "--learning-rate", "1e-3", "--max-length", "64", "--save-steps", "1"]
    ref = tmp_path / "ref"
    assert main(argv + ["--output-dir", str(ref)]) == 0
    steps = [json.loads((ref / f"round-{e}" / "metrics.json").read_text())["sft_steps"] for e in (1, 2)]
    assert steps[1] >= 2
    out = tmp_path / "online"
    run_killed(argv + ["--output-dir", str(out)], steps[0] + 2)  # killed in round 2, after round 1 finished
    assert (out / "round-1" / "policy" / "wic.json").is_file() and find_checkpoint(out / ".round-2.work")
    capsys.readouterr()
    assert main(argv + ["--output-dir", str(out), "--temperature", "0.5"]) == 2
    assert "temperature: 0.9 -> 0.5" in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pro_lib.checkpoints"):
        assert main(argv + ["--output-dir", str(out)]) == 0
    assert resumed_from(caplog), "the re-run did not resume"
    assert json.loads((out / "round-2" / "metrics.json").read_text())["sft_steps"] == steps[1]
    assert_same_weights(out / "policy", ref / "policy")


def test_morlhf_kill_and_resume(tmp_path, pairs_file, suite_dir, tiny_policy, capsys, caplog):
    argv = ["morlhf", "train", "--policy", str(tiny_policy), "--suite", str(suite_dir), "--data", str(pairs_file),
            "--weights", "0.5,0.5", "--max-steps", "4", "--save-steps", "2", "--num-generations", "2",
            "--batch-size", "4", "--max-completion-length", "4", "--learning-rate", "1e-3", "--max-prompts", "8",
            "--split", "all"]
    out = tmp_path / "morlhf"
    kill_refuse_resume(capsys, caplog, argv, tmp_path / "ref", out, kill_at=3, changed=["--beta", "0.1"],
                       named="beta: 0.05 -> 0.1", ckpt_dir=out / "checkpoints")
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 2
    assert_same_weights(out / "policy", tmp_path / "ref" / "policy")
    # re-running the finished run changes nothing (transformers would take one more step at max_steps)
    assert main(argv + ["--output-dir", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    assert_same_weights(out / "policy", tmp_path / "ref" / "policy")
