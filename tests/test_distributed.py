"""Data-parallel training (pro_lib.distributed): every trainable stage on 2 processes ends where it
ends on 1 process with the same global batch, and a killed rank fails the job naming the rank and the
stage, after which a re-run resumes from the last checkpoint.

The 2-process runs go through the real launcher (torchrun, gloo on CPU): in one "pod"
(``--nproc-per-node 2``) and as two "nodes" (``--nnodes 2 --nproc-per-node 1``, c10d rendezvous on
127.0.0.1), the way a TrainJob's nodes start. Models are tiny and dropout-free, so the only
difference between the runs is the order of float sums (and per-rank padding).

Tolerances (stated here, checked below): every logged loss within 2e-3 absolute of the 1-process
run's, and every final weight within 2e-3 absolute (the models move ~1e-2 from their initial weights,
so a wrong global batch or an un-averaged gradient breaks both).
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pro_lib import distributed
from pro_lib.distributed import DistributedError, StageSpec
from pro_lib.launcher import LaunchPlan, free_port, run_stage_distributed, torchrun_command
from pro_lib.io import write_jsonl

REPO = Path(__file__).resolve().parents[1]
LOSS_TOL = 2e-3
WEIGHT_TOL = 2e-3
NAMES = ["helpful", "humor"]


@pytest.fixture
def worker_env(monkeypatch):
    """Workers import the repo (and tests/ for the scoring functions) on one thread each."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PRO_DIST_TIMEOUT", "60")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def dense_encoder_dir(tmp_path_factory) -> Path:
    """A 1-layer, 32-wide BERT without dropout (so 1 and 2 processes compute the same thing)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pro_lib.models import bundled_minilm_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(bundled_minilm_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    path = tmp_path_factory.mktemp("dense_encoder")
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _pairs(n=32):
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"tell me a joke about cat number {i}", "chosen": "ha ha ha funny " * (1 + i % 3),
                         "rejected": "no", "source": "humor"})
        else:
            rows.append({"prompt": f"explain step {i} of baking bread please", "chosen": "mix knead bake thanks",
                         "rejected": "dunno", "source": "helpful"})
    return rows


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    return tmp_path / "pairs.jsonl"


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path, base: dict | None = None) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    assert worst < WEIGHT_TOL, f"final weights differ by {worst:.2e} (tolerance {WEIGHT_TOL})"
    if base is not None:  # it trained: a no-op would pass the comparison trivially
        moved = max(float(np.abs(wa[k] - base[k]).max()) for k in base if k in wa)
        assert moved > 10 * worst and moved > 1e-3, f"the weights moved only {moved:.2e}"


def _losses_from_state(ckpt_root: Path) -> list[float]:
    last = max(ckpt_root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    return [row["loss"] for row in state["log_history"] if "loss" in row]


def _spec(stage: str, module: str, function: str, cls: str, config: dict) -> StageSpec:
    return StageSpec(stage=stage, module=module, function=function, config_class=cls, config=config)


# -------------------------------------------------------------------------------------- the command
def test_one_torchrun_command_for_pods_local_nodes_and_trainjobs():
    pod = torchrun_command(LaunchPlan(nproc_per_node=8), ["pro_lib.launcher", "worker", "--spec", "s.json"])
    assert pod[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in pod
    assert pod[pod.index("--nproc-per-node") + 1] == "8" and pod[-4:] == ["pro_lib.launcher", "worker",
                                                                          "--spec", "s.json"]
    local = torchrun_command(LaunchPlan(nnodes=2, master_port=1234), ["m"])
    assert "--standalone" not in local and local[local.index("--rdzv-endpoint") + 1] == "127.0.0.1:1234"
    assert local[local.index("--rdzv-backend") + 1] == "c10d" and "--node-rank" not in local
    # a TrainJob node: the PET_* variables Kubeflow Trainer's torch plugin sets
    env = {"PET_NNODES": "4", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "job-node-0-0.job",
           "PET_MASTER_PORT": "29400"}
    plan = LaunchPlan.from_env(env)
    assert (plan.nnodes, plan.nproc_per_node, plan.node_rank, plan.world_size) == (4, 8, 3, 32)
    node = torchrun_command(plan, ["m"])
    assert node[node.index("--node-rank") + 1] == "3"
    assert node[node.index("--rdzv-endpoint") + 1] == "job-node-0-0.job:29400"
    assert node[node.index("--max-restarts") + 1] == "0"  # a failed rank fails the job; a re-run resumes


def test_global_batch_splits_over_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.per_device_batch(16) == 4
    with pytest.raises(Exception, match=r"--batch-size 10 does not split over 4.*multiple of 4"):
        distributed.per_device_batch(10)
    monkeypatch.setenv("RANK", "1")
    assert distributed.shard(list(range(10))) == [1, 5, 9]


# ----------------------------------------------------------------- 2 processes == 1 process, per stage
def _reward_config(pairs_file, encoder, out):
    return {"objective": "helpful", "data": [str(pairs_file)], "eval_data": [str(pairs_file)],
            "base_model": str(encoder), "output_dir": str(out), "batch_size": 8, "epochs": 1.0,
            "learning_rate": 1e-3, "max_length": 32, "save_steps": 2, "progress": False}


def _run_reward(cfg, plan, tmp_path):
    if plan is None:
        from pro_lib.config import build_config
        from pro_lib.rewards import RewardTrainConfig, train_reward_model

        return train_reward_model(build_config(RewardTrainConfig, cfg))
    return run_stage_distributed(_spec("train_reward_model", "pro_lib.rewards", "train_reward_model",
                                       "RewardTrainConfig", cfg), plan, work_dir=tmp_path / "work-rm")


def _run_orchestrator(targets, encoder, out, plan, tmp_path):
    cfg = {"targets": str(targets), "backbone": str(encoder), "output_dir": str(out), "batch_size": 8,
           "max_length": 32, "learning_rate": 1e-3, "head_learning_rate": 1e-2, "epochs": 2.0, "progress": False,
           "save_steps": 100}
    if plan is None:
        from pro_lib.config import build_config
        from pro_lib.orchestrator import OrchestratorTrainConfig, train_orchestrator

        return train_orchestrator(build_config(OrchestratorTrainConfig, cfg))
    return run_stage_distributed(_spec("train_orchestrator", "pro_lib.orchestrator", "train_orchestrator",
                                       "OrchestratorTrainConfig", cfg), plan, work_dir=tmp_path / "work-orch")


def _targets(pairs_file, tmp_path) -> Path:
    from pro_lib.suite import ScoreConfig, score_and_target

    out = tmp_path / "targets"
    score_and_target(ScoreConfig(data=str(pairs_file), output_dir=str(out), tau=0.5,
                                 objectives=["helpful=fn:scorers:polite_reward", "humor=fn:scorers:length_reward"]))
    return out


def _run_sft(policy, pairs_file, targets, out, plan, tmp_path):
    cfg = {"policy": str(policy), "data": [str(pairs_file)], "targets": str(targets), "output_dir": str(out),
           "max_steps": 4, "batch_size": 8, "learning_rate": 1e-3, "max_length": 48, "save_steps": 2}
    if plan is None:
        from pro_lib.config import build_config
        from pro_lib.wic.offline import WICOfflineConfig, train_wic_offline

        return train_wic_offline(build_config(WICOfflineConfig, cfg))
    return run_stage_distributed(_spec("wic_offline_sft", "pro_lib.wic.offline", "train_wic_offline",
                                       "WICOfflineConfig", cfg), plan, work_dir=tmp_path / "work-sft")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage,shape", [("reward_model", "2 nodes x 1"), ("orchestrator", "1 node x 2"),
                                         ("wic_offline_sft", "1 node x 2")])
def test_two_processes_end_where_one_process_ends(stage, shape, tmp_path, pairs_file, dense_encoder_dir,
                                                  worker_env):
    """Same config (same global batch) on 1 and 2 data-parallel processes: the same loss curve and
    final weights within LOSS_TOL / WEIGHT_TOL; rank 0 alone wrote the outputs."""
    plan = (LaunchPlan(nnodes=2, nproc_per_node=1, master_port=free_port()) if shape == "2 nodes x 1"
            else LaunchPlan(nproc_per_node=2))
    if stage == "reward_model":
        one = _run_reward(_reward_config(pairs_file, dense_encoder_dir, tmp_path / "rm1"), None, tmp_path)
        two = _run_reward(_reward_config(pairs_file, dense_encoder_dir, tmp_path / "rm2"), plan, tmp_path)
        l1, l2 = _losses_from_state(tmp_path / "rm1.checkpoints"), _losses_from_state(tmp_path / "rm2.checkpoints")
        assert len(l1) == len(l2) == 4  # 32 pairs / global batch 8: four steps on 1 and on 2 processes
        np.testing.assert_allclose(l2, l1, atol=LOSS_TOL)
        assert two["n_train"] == one["n_train"] and abs(two["accuracy"] - one["accuracy"]) <= 1 / 32
        _assert_same_weights(tmp_path / "rm1", tmp_path / "rm2")
    elif stage == "orchestrator":
        targets = _targets(pairs_file, tmp_path)
        _run_orchestrator(targets, dense_encoder_dir, tmp_path / "o1", None, tmp_path)
        two = _run_orchestrator(targets, dense_encoder_dir, tmp_path / "o2", plan, tmp_path)
        l1 = json.loads((tmp_path / "o1" / "train_metrics.json").read_text())["losses"]
        l2 = json.loads((tmp_path / "o2" / "train_metrics.json").read_text())["losses"]
        assert len(l1) == len(l2) == two["train_steps"] == 8
        np.testing.assert_allclose(l2, l1, atol=LOSS_TOL)
        assert l1[-1] < l1[0]
        _assert_same_weights(tmp_path / "o1", tmp_path / "o2")
    else:
        from pro_lib.testing import build_tiny_policy

        targets = _targets(pairs_file, tmp_path)
        base = build_tiny_policy(tmp_path / "base", NAMES, hidden_size=32)
        one = _run_sft(base, pairs_file, targets, tmp_path / "p1", None, tmp_path)
        two = _run_sft(base, pairs_file, targets, tmp_path / "p2", plan, tmp_path)
        assert one["sft_steps"] == two["sft_steps"] == 4
        for key in ("sft_loss_first", "sft_loss_last"):
            assert abs(one[key] - two[key]) < LOSS_TOL, (key, one[key], two[key])
        _assert_same_weights(tmp_path / "p1", tmp_path / "p2", base=_weights(base))
        assert not (tmp_path / ".p2.work").exists()  # rank 0 finished the policy and removed its scratch
    assert not list(tmp_path.glob("**/rank-*.error.json"))


# ------------------------------------------------------------------------ a killed rank, then resume
@pytest.mark.timeout(600)
def test_killed_rank_fails_the_job_naming_it_and_a_rerun_resumes(tmp_path, pairs_file, dense_encoder_dir,
                                                                 worker_env):
    cfg = {**_reward_config(pairs_file, dense_encoder_dir, tmp_path / "rm"), "epochs": 40.0, "batch_size": 8,
           "save_steps": 2}
    spec = _spec("train_reward_model", "pro_lib.rewards", "train_reward_model", "RewardTrainConfig", cfg)
    status = tmp_path / "work" / "status"
    killed = {}

    def kill_rank_1_after_a_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            ckpts = list((tmp_path / "rm.checkpoints").glob("checkpoint-*"))
            pid_file = status / "rank-1.pid"
            if any((c / "trainer_state.json").is_file() for c in ckpts) and pid_file.is_file():
                os.kill(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
                killed["at"] = time.time()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank_1_after_a_checkpoint, daemon=True)
    killer.start()
    plan = LaunchPlan(nnodes=2, nproc_per_node=1, master_port=free_port())
    with pytest.raises(DistributedError) as err:
        run_stage_distributed(spec, plan, work_dir=tmp_path / "work", grace=10)
    failed_at = time.time()
    assert "at" in killed, "the run ended before a checkpoint was written"
    msg = str(err.value)
    assert "stage 'train_reward_model'" in msg and "rank 1 of 2" in msg and "killed" in msg
    assert "resume" in msg
    assert failed_at - killed["at"] < 60, f"the job took {failed_at - killed['at']:.0f} s to fail after the kill"
    steps_done = max(int(c.name.split("-")[1]) for c in (tmp_path / "rm.checkpoints").glob("checkpoint-*")
                     if (c / "trainer_state.json").is_file())
    assert steps_done < 160  # it was stopped before the end (32 pairs / 8 x 40 epochs)

    # the re-run (same command) resumes from the last checkpoint and finishes
    out = io.StringIO()
    plan = LaunchPlan(nnodes=2, nproc_per_node=1, master_port=free_port())
    metrics = run_stage_distributed(spec, plan, work_dir=tmp_path / "work2", stream=out)
    log_text = out.getvalue()
    assert "resuming from" in log_text and f"checkpoint-{steps_done}" in log_text, log_text[-3000:]
    assert metrics["n_train"] == 32 and (tmp_path / "rm" / "model.safetensors").is_file()
    state = json.loads(max((tmp_path / "rm.checkpoints").glob("checkpoint-*"),
                           key=lambda p: int(p.name.split("-")[1])).joinpath("trainer_state.json").read_text())
    assert state["global_step"] == 160


# ------------------------------------------------------------------- the component's dispatch
def test_components_route_trainable_stages_to_the_launcher_or_a_trainjob(monkeypatch, tmp_path):
    """call_stage: one process -> the function itself; num_nodes=2 locally -> 2 torchrun nodes through
    the launcher; num_nodes=2 on a cluster -> a TrainJob; a stage that does not train never fans out."""
    from components import runtime, trainjob
    from pro_lib import launcher
    from pro_lib.config import build_config
    from pro_lib.rewards import RewardTrainConfig

    cfg = build_config(RewardTrainConfig, {"objective": "helpful", "output_dir": str(tmp_path / "rm")})
    calls = []
    real = runtime.STAGES["train_reward_model"]

    class Recorded(type(real)):
        def load(self):
            return RewardTrainConfig, lambda c: calls.append(("in-process", c)) or {"n": 1}

    monkeypatch.setitem(runtime.STAGES, "train_reward_model", Recorded(real.module, real.function, real.config,
                                                                      gpu=True, trainable=True))
    monkeypatch.setattr(launcher, "run_stage_distributed",
                        lambda spec, plan, **kw: calls.append(("launcher", spec, plan)) or {"n": 2})
    monkeypatch.setattr(trainjob, "run_trainjob",
                        lambda stage, spec, **kw: calls.append(("trainjob", spec, kw)) or {"n": 3})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("PRO_NPROC_PER_NODE", raising=False)
    assert runtime.call_stage("train_reward_model", cfg, num_nodes=1) == {"n": 1}
    assert runtime.call_stage("train_reward_model", cfg, num_nodes=2, run_id="r1") == {"n": 2}
    _, spec, plan = calls[-1]
    assert (plan.nnodes, plan.nproc_per_node) == (2, 1) and spec.mlflow_run_id == "r1"
    assert (spec.module, spec.function, spec.config_class) == ("pro_lib.rewards", "train_reward_model",
                                                               "RewardTrainConfig")
    assert spec.config["output_dir"] == str(tmp_path / "rm") and spec.config["objective"] == "helpful"
    monkeypatch.setenv("PRO_NPROC_PER_NODE", "2")  # a CPU pod asked for two processes
    runtime.call_stage("train_reward_model", cfg, num_nodes=1)
    assert (calls[-1][2].nnodes, calls[-1][2].nproc_per_node) == (1, 2)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert runtime.call_stage("train_reward_model", cfg, num_nodes=3) == {"n": 3}
    assert calls[-1][0] == "trainjob" and calls[-1][2]["num_nodes"] == 3
    assert not runtime.STAGES["score_targets"].trainable
    with pytest.raises(Exception, match="num_nodes must be >= 1"):
        runtime.call_stage("train_reward_model", cfg, num_nodes=0)
