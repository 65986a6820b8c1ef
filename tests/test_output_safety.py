"""Nothing lost, nothing silently wrong (issue 23, items 1 and 3), on tiny models.

Item 1: for every training stage, a FINISHED run re-run with one setting changed is refused, naming
the field, and leaves the finished output byte for byte as it was (also when the stage's separate
checkpoint folder is gone: the fingerprint lives in the output folder itself); ``--resume never``
then trains anew and keeps the finished run as ``<output>.prev-<UTC time>``.
Item 3: one run per output folder: a second run into a folder another process is training into is
refused (naming that process) while the first finishes intact; a lock left by a killed run is stale,
named and taken over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from pro_lib import testing
from pro_lib.cli import main
from pro_lib.io import write_jsonl
from pro_lib.suite import Objective, RewardSuite

NAMES = ["polite", "long"]


# -- helpers ------------------------------------------------------------------------------------------

def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pairs(n: int) -> list[dict]:
    return [{"prompt": f"can you help me {i} ?", "chosen": "yes please thanks i can help", "rejected": "no",
             "source": "polite"} if i % 2 else
            {"prompt": f"tell me about harm {i} ?", "chosen": "that is not safe sorry",
             "rejected": "yes harm harm harm harm", "source": "other"} for i in range(n)]


@pytest.fixture
def inputs(tmp_path, tiny_encoder_dir) -> dict[str, Path]:
    """Data, a function suite, a tiny WIC policy, kept samples and targets (the stages' inputs)."""
    from pro_lib.config import build_config
    from pro_lib.suite import ScoreConfig, score_and_target

    d = {"pairs": write_jsonl(tmp_path / "in" / "pairs.jsonl", pairs(24)),
         "pairs60": write_jsonl(tmp_path / "in" / "pairs60.jsonl", pairs(60)),
         "encoder": tiny_encoder_dir,
         "policy": testing.build_tiny_policy(tmp_path / "in" / "tiny_policy", NAMES)}
    suite = RewardSuite([Objective(name="polite", function="scorers:polite_reward"),
                         Objective(name="long", function="scorers:length_reward")],
                        stats={"polite": (0.5, 1.0), "long": (3.0, 2.0)})
    d["suite"] = suite.save(tmp_path / "in" / "suite")
    kept = [{"prompt": f"can you help me {i} ?", "response": "yes i can help" if i % 2 else "that is not safe",
             "weights": [0.7, 0.3] if i % 2 else [0.2, 0.8], "z": [0.0, 0.0], "kept": True} for i in range(8)]
    write_jsonl(tmp_path / "in" / "samples" / "kept.jsonl", kept)
    d["samples"] = tmp_path / "in" / "samples"
    score_and_target(build_config(ScoreConfig, {
        "data": str(d["pairs"]), "output_dir": str(tmp_path / "in" / "targets"),
        "objectives": ["polite=fn:scorers:polite_reward", "long=fn:scorers:length_reward"]}))
    d["targets"] = tmp_path / "in" / "targets"
    return d


SFT = ["--max-steps", "2", "--batch-size", "4", "--learning-rate", "1e-3", "--max-length", "64"]
ONLINE = ["--rounds", "1", "--prompts-per-round", "4", "--samples-per-prompt", "2", "--rejection", "none",
          "--max-new-tokens", "4", "--max-steps", "1", "--batch-size", "2", "--max-length", "64"]


def stage_argv(stage: str, d: dict[str, Path], tmp_path: Path) -> list[str]:
    if stage == "rewards train":
        return ["rewards", "train", "--objective", "polite", "--data", str(d["pairs60"]), "--base-model",
                str(d["encoder"]), "--max-length", "32", "--epochs", "1", "--batch-size", "16", "--progress", "false"]
    if stage == "orchestrator train":
        return ["orchestrator", "train", "--targets", str(d["targets"]), "--backbone", str(d["encoder"]),
                "--batch-size", "8", "--max-length", "32", "--epochs", "1", "--progress", "false"]
    if stage in ("wic offline", "ric offline", "soups train"):
        return stage.split() + ["--policy", str(d["policy"]), "--data", str(d["pairs"]), "--suite", str(d["suite"])] + SFT
    if stage == "wic sft":
        return ["wic", "sft", "--policy", str(d["policy"]), "--samples", str(d["samples"])] + SFT
    if stage == "wic online":
        return ["wic", "online", "--policy", str(d["policy"]), "--data", str(d["pairs"]), "--suite", str(d["suite"]),
                "--preferences", "uniform"] + ONLINE
    if stage == "ric online":
        ric = tmp_path / "in" / "ric_offline"
        if not ric.is_dir():
            assert main(stage_argv("ric offline", d, tmp_path) + ["--output-dir", str(ric)]) == 0
        return ["ric", "online", "--policy", str(ric), "--data", str(d["pairs"]), "--suite", str(d["suite"]),
                "--replay-offline", "0"] + ONLINE
    if stage == "morlhf train":
        return ["morlhf", "train", "--policy", str(d["policy"]), "--suite", str(d["suite"]), "--data", str(d["pairs"]),
                "--weights", "0.5,0.5", "--max-steps", "2", "--save-steps", "2", "--num-generations", "2",
                "--batch-size", "4", "--max-completion-length", "4", "--learning-rate", "1e-3", "--max-prompts", "8",
                "--split", "all"]
    raise AssertionError(stage)


# stage, the changed setting, the difference the refusal names, checkpoint folders beside the output
STAGES = [
    ("rewards train", ["--learning-rate", "2e-3"], "learning_rate: 3e-05 -> 0.002", [".checkpoints"]),
    ("orchestrator train", ["--loss", "forward_kl"], "loss: 'reverse_kl' -> 'forward_kl'", [".checkpoints"]),
    ("wic offline", ["--tau", "0.5"], "tau: 0.1 -> 0.5", []),
    ("ric offline", ["--learning-rate", "2e-3"], "learning_rate: 0.001 -> 0.002", []),
    ("wic sft", ["--seed", "3"], "seed: 0 -> 3", []),
    ("wic online", ["--temperature", "0.5"], "temperature: 0.9 -> 0.5", []),
    ("ric online", ["--quantile", "0.5"], "quantile: 0.7 -> 0.5", []),
    ("soups train", ["--learning-rate", "2e-3"], "learning_rate: 0.001 -> 0.002", []),
    ("morlhf train", ["--beta", "0.1"], "beta: 0.05 -> 0.1", []),
]


# -- item 1: a finished run is never overwritten by a changed re-run ---------------------------------------

@pytest.mark.parametrize("stage,changed,named,beside", STAGES, ids=[s[0].replace(" ", "-") for s in STAGES])
def test_changed_rerun_of_a_finished_run_is_refused_and_never_keeps_it(stage, changed, named, beside, tmp_path,
                                                                       inputs, capsys):
    argv = stage_argv(stage, inputs, tmp_path)
    out = tmp_path / "out"
    assert main(argv + ["--output-dir", str(out)]) == 0
    for suffix in beside:  # the checkpoints may be gone (disk space): the finished folder alone must tell
        shutil.rmtree(out.with_name(out.name + suffix))
    before = tree_digest(out)
    capsys.readouterr()
    assert main(argv + ["--output-dir", str(out)] + changed) == 2
    err = capsys.readouterr().err
    assert named in err and "--resume never" in err, err
    assert tree_digest(out) == before, "the refused re-run changed the finished output"
    # --resume never trains anew and keeps the finished run, untouched, as <output>.prev-<time>
    assert main(argv + ["--output-dir", str(out), "--resume", "never"] + changed) == 0
    (prev,) = [p for p in tmp_path.iterdir() if p.name.startswith("out.prev-")]
    assert tree_digest(prev) == before
    assert json.loads((prev / "fingerprint.json").read_text())["format"] == "pro-fingerprint/1"
    fp = json.loads((out / "fingerprint.json").read_text())
    assert named.split(":")[0] in fp and str(fp[named.split(":")[0]]) in named.split(" -> ")[1]


def test_same_rerun_of_a_finished_offline_run_keeps_it(tmp_path, inputs, caplog):
    argv = stage_argv("wic offline", inputs, tmp_path) + ["--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    before = tree_digest(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="pro_lib.checkpoints"):
        assert main(argv + ["--save-steps", "7"]) == 0  # where-to-save settings do not change the result
    assert tree_digest(tmp_path / "out") == before
    assert any("nothing to redo" in r.getMessage() for r in caplog.records)


def test_output_folder_of_other_files_is_refused(tmp_path, inputs, capsys):
    """An --output-dir that holds files no PRO run made (or another stage's output) is not replaced."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main(stage_argv("wic offline", inputs, tmp_path) + ["--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--resume never" in err
    assert (out / "notes.txt").read_text() == "my notes" and not (out / "wic.json").exists()


# -- item 3: one run per output folder -------------------------------------------------------------------

def _fork_main(argv: list[str], *, pause_at: int | None = None, kill_at: int | None = None,
               ready: Path | None = None, go: Path | None = None) -> int:
    """`pro <argv>` in a forked child; at optimizer step ``pause_at`` it touches ``ready`` and waits for
    ``go``; at ``kill_at`` it SIGKILLs itself. Returns the child's pid."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        steps = [0]

        def hook(opt, args, kwargs):
            steps[0] += 1
            if steps[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if steps[0] == pause_at:
                ready.touch()
                deadline = time.time() + 120
                while not go.exists() and time.time() < deadline:
                    time.sleep(0.05)

        register_optimizer_step_post_hook(hook)
        code = main(argv)
    finally:
        os._exit(code)


@pytest.mark.parametrize("stage", ["wic offline", "rewards train"])
def test_second_concurrent_run_is_refused_while_the_first_finishes_intact(stage, tmp_path, inputs, capsys):
    argv = stage_argv(stage, inputs, tmp_path)
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert main(argv + ["--output-dir", str(ref)]) == 0
    ready, go = tmp_path / "ready", tmp_path / "go"
    pid = _fork_main(argv + ["--output-dir", str(out)], pause_at=1, ready=ready, go=go)
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert time.time() < deadline, "the first run never reached its first step"
            time.sleep(0.05)
        capsys.readouterr()
        # the second run, with other settings, while the first trains: refused before it writes anything
        assert main(argv + ["--output-dir", str(out), "--seed", "5"]) == 2
        err = capsys.readouterr().err
        assert "another run is writing to" in err and f"pid {pid}" in err, err
    finally:
        go.touch()
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the first run failed (wait status {status})"
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["seed"] == 0  # the first run's settings, not the second's
    # the first run's model is complete and exactly what an undisturbed run trains
    assert tree_digest(out)["model.safetensors"] == tree_digest(ref)["model.safetensors"]
    assert set(tree_digest(out)) == set(tree_digest(ref))


def test_stale_lock_of_a_killed_run_is_named_and_taken_over(tmp_path, inputs, caplog):
    argv = stage_argv("wic offline", inputs, tmp_path) + ["--output-dir", str(tmp_path / "out"), "--save-steps", "1"]
    pid = _fork_main(argv, kill_at=2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    lock = tmp_path / ".out.lock"
    assert json.loads(lock.read_text())["pid"] == pid  # what the killed run left
    with caplog.at_level(logging.WARNING, logger="pro_lib.checkpoints"):
        assert main(argv) == 0
    stale = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert stale and f"pid {pid}" in stale[0], caplog.text
    assert lock.read_text() == ""  # released cleanly this time


def test_every_training_stage_takes_the_output_lock():
    from pro_lib import morlhf, orchestrator, rewards
    from pro_lib.wic import soups, offline as wic_offline, rounds as wic_rounds

    for fn in (rewards.train_reward_model, orchestrator.train_orchestrator, wic_offline.train_wic_offline,
               wic_rounds.train_wic_online, wic_rounds.wic_online, soups.train_soups, morlhf.train_morlhf):
        assert hasattr(fn, "__wrapped__"), f"{fn.__module__}.{fn.__name__} runs without the output lock"
