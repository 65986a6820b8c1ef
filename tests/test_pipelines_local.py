"""The orchestrator pipeline end to end with KFP's local runner (SubprocessRunner, no Docker) on tiny
models: every stage runs as a subprocess, logs to one MLflow parent run, and the registry ends with
champions that load through models:/name@champion."""

from __future__ import annotations

import io
import json
import random
import re

import numpy as np
import pandas as pd

from pipelines.report import print_summary
from pipelines.runner import run_local
from pipelines.progress import StageReport
from pro_lib import registry, tracking

from helpers.pipelines import MAX_LINES, check_report


def _demo_like_pairs(path, n_per_objective=70):
    rng = random.Random(0)
    styles = {
        "helpful": ("How do I {t}?", "Step 1: gather what you need. Step 2: {t} carefully. Step 3: check it.",
                    "No idea."),
        "humor": ("Tell me a joke about {t}.", "Why did the {t} cross the road? To get a punchline!",
                  "{t} is a noun."),
    }
    topics = ["bake bread", "fix a bike", "learn python", "plant tomatoes", "cats", "dogs", "taxes", "rain"]
    rows = []
    for src, (prompt, good, bad) in styles.items():
        for i in range(n_per_objective):
            t = f"{rng.choice(topics)} {i}"
            rows.append({"prompt": prompt.format(t=t), "chosen": good.format(t=t), "rejected": bad.format(t=t),
                         "source": src})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_orchestrator_pipeline_local_run(tmp_path, tiny_encoder_dir, tiny_reward_dir, capsys):
    data = _demo_like_pairs(tmp_path / "prefs.jsonl")
    args = {
        "objectives": ["helpful", "humor"],
        "data_config": {"sources": [str(data)], "source_column": "source", "eval_fraction": 0.2},
        "reward_config": {"base_model": str(tiny_reward_dir), "epochs": 1, "batch_size": 16, "max_length": 64,
                          "progress": False},
        "score_config": {"max_length": 64},
        "orchestrator_config": {"backbone": str(tiny_encoder_dir), "epochs": 1, "batch_size": 16,
                                "max_length": 64, "learning_rate": 1e-3, "progress": False},
        "eval_config": {"progress": False},
    }
    shown = io.StringIO()   # as `pro pipeline run --local` shows it (tests/test_pipeline_progress.py)
    with StageReport(tmp_path / "run.log", out=shown, spinner=False):
        summary = run_local("orchestrator", args, pipeline_root=tmp_path / "kfp")
    check_report(shown.getvalue(), tmp_path / "run.log",
                 ["prepare-data", "train-reward-model [helpful]", "train-reward-model [humor]", "score-targets",
                  "train-orchestrator", "evaluate-orchestrator"])
    assert re.search(r"= train-reward-model \[humor\] +done .*accuracy \d\.\d{3}", shown.getvalue())
    assert re.search(r"= evaluate-orchestrator +done .*MSE ratio vs best fixed \d\.\d{3}", shown.getvalue())
    capsys.readouterr()
    print_summary({**summary, "log": str(tmp_path / "run.log")})   # what follows the stage lines
    table = capsys.readouterr().out
    assert f"full log:        {tmp_path / 'run.log'}" in table and "pro-orchestrator" in table
    assert len(shown.getvalue().splitlines()) + len(table.splitlines()) < MAX_LINES, shown.getvalue() + table

    # registry: a champion per registered model, loadable by alias
    assert registry.list_models() == ["pro-orchestrator", "pro-reward-helpful", "pro-reward-humor"]
    for name in registry.list_models():
        (v,) = registry.list_versions(name)
        assert v["aliases"] == ["champion"] and v["gate_value"] is not None, v
    from pro_lib.orchestrator import PreferenceOrchestrator

    orch = PreferenceOrchestrator.from_pretrained("models:/pro-orchestrator@champion")
    assert orch.objectives == ["helpful", "humor"]
    w = orch.predict(["Tell me a joke about cats.", "How do I fix a bike?"])
    assert w.shape == (2, 2) and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
    rm = registry.download_model("models:/pro-reward-humor@champion")
    assert json.loads((rm / "pro_reward.json").read_text())["objective"] == "humor"

    # MLflow: one parent run, a child run per stage, with params and metrics
    c = tracking.client()
    parent = c.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = c.search_runs([parent.info.experiment_id],
                             f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")
    stages = sorted(r.data.tags["pro.stage"] for r in children)
    assert stages == sorted(["prepare_data", "train_reward_model", "train_reward_model", "score_targets",
                             "train_orchestrator", "evaluate_orchestrator"] + ["register_model"] * 3
                            + ["promote"] * 3)
    ev = next(r for r in children if r.data.tags["pro.stage"] == "evaluate_orchestrator")
    assert "orchestrator_kl" in ev.data.metrics and ev.data.params["batch_size"] == "32"
    logged = {a.path for a in c.list_artifacts(ev.info.run_id, "evaluate_orchestrator")}
    assert {"evaluate_orchestrator/eval.json", "evaluate_orchestrator/orchestrator_eval.png"} <= logged
    # the exit handler ended the parent run and recorded every pipeline parameter, defaults included
    assert parent.data.tags["pro.final_state"] == "SUCCEEDED"
    assert parent.data.params["gpu_count"] == "1" and parent.data.params["promote"] == "true"
    assert parent.data.params["objectives"] == '["helpful", "humor"]'
    # per-step loss curves, not only final numbers; each stage's datasets with mlflow.data
    train = next(r for r in children if r.data.tags["pro.stage"] == "train_orchestrator")
    curve = c.get_metric_history(train.info.run_id, "train/loss")
    assert len(curve) == train.data.metrics["train_steps"] and [m.step for m in curve][:2] == [1, 2]
    rm_run = next(r for r in children if r.data.tags["pro.stage"] == "train_reward_model")
    assert len(c.get_metric_history(rm_run.info.run_id, "train/loss")) >= 1
    contexts = {(i.tags[0].value if i.tags else None) for i in rm_run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}
    prep = next(r for r in children if r.data.tags["pro.stage"] == "prepare_data")
    names = {i.dataset.name for i in prep.inputs.dataset_inputs}
    assert {"data/train.jsonl", "data/eval.jsonl"} <= names, names
    # KFP artifacts the UI shows: markdown report and HTML plot of the evaluation
    html = list((tmp_path / "kfp").rglob("evaluate-orchestrator/plot"))
    assert html and "data:image/png;base64" in html[0].read_text()


import pytest  # noqa: E402


def test_failed_stage_leaves_the_parent_run_failed(tmp_path, monkeypatch):
    """As on a cluster (no `pro pipeline run` around it): the stages find the parent run by the KFP run
    name; the first stage fails on a missing data file; the exit handler still ends the parent FAILED
    and records the parameters."""
    from kfp import local

    from pipelines.orchestrator import orchestrator_pipeline

    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.setenv(tracking.KFP_RUN_ENV, "pro-orchestrator-failing-x1")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=False)
    orchestrator_pipeline(data_config={"sources": [str(tmp_path / "missing.jsonl")]})
    c = tracking.client()
    exp = c.get_experiment_by_name(tracking.experiment_name())
    (parent,) = c.search_runs([exp.experiment_id], "tags.`pro.kfp_run` = 'pro-orchestrator-failing-x1'")
    assert parent.info.status == "FAILED" and parent.data.tags["pro.final_state"] == "FAILED"
    assert parent.data.params["data_config.sources"] == json.dumps([str(tmp_path / "missing.jsonl")])
    assert parent.data.params["gpu_count"] == "1"


def _policy_pipeline_args(tmp_path, tiny_encoder_dir, tiny_reward_dir):
    """A tiny random policy and the orchestrator-stage arguments the policy pipelines start with."""
    from pro_lib.testing import build_tiny_policy

    data = _demo_like_pairs(tmp_path / "prefs.jsonl", n_per_objective=60)
    policy = build_tiny_policy(tmp_path / "tiny_policy", ["helpful", "humor"])
    return policy, {
        "objectives": ["helpful", "humor"],
        "data_config": {"sources": [str(data)], "source_column": "source", "eval_fraction": 0.2},
        "reward_config": {"base_model": str(tiny_reward_dir), "epochs": 1, "max_length": 64, "progress": False},
        "score_config": {"max_length": 64},
        "orchestrator_config": {"backbone": str(tiny_encoder_dir), "epochs": 1, "max_length": 64,
                                "progress": False},
        "eval_config": {"progress": False},
    }


@pytest.mark.slow
def test_pro_wic_pipeline_local_run(tmp_path, tiny_encoder_dir, tiny_reward_dir):
    """pro_wic end to end on tiny models (one online round): offline SFT, sampling, online SFT, Pareto eval,
    policy registered and promoted. Slow: about 5 minutes of subprocess start-ups on 2 cores."""
    policy, args = _policy_pipeline_args(tmp_path, tiny_encoder_dir, tiny_reward_dir)
    args.update({
        "wic_offline_config": {"policy": str(policy), "epochs": 1, "batch_size": 8, "max_length": 64,
                               "max_examples": 32},
        "wic_sample_config": {"prompts_per_round": 6, "samples_per_prompt": 2, "max_new_tokens": 6,
                              "rejection": "none"},
        "wic_online_config": {"epochs": 1, "batch_size": 8, "max_length": 64},
        "wic_eval_config": {"max_prompts": 4, "grid_step": 0.5, "max_new_tokens": 6},
    })
    summary = run_local("pro_wic", args, pipeline_root=tmp_path / "kfp", online_rounds=1)
    (v,) = registry.list_versions("pro-policy-pro-wic")
    assert v["aliases"] == ["champion"] and v["gate_metric"] == "hypervolume" and v["gate_value"] is not None
    c = tracking.client()
    parent = c.get_run(summary["parent_run_id"])
    stages = {r.data.tags["pro.stage"] for r in c.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")}
    assert {"wic_offline_sft", "wic_online_sample", "wic_online_sft", "wic_evaluate"} <= stages
    # the pro-endpoint: orchestrator + the PRO-WIC policy + the reward suite, promoted, answering prompts
    (ep,) = registry.list_versions("pro-endpoint")
    assert ep["aliases"] == ["champion"] and ep["tags"]["pro.kind"] == "endpoint"
    from pro_lib.serving import Endpoint

    out = Endpoint(registry.download_model("models:/pro-endpoint@champion")).predict(
        pd.DataFrame({"prompt": ["Tell me a joke about cats."]}), {"max_new_tokens": 4})
    assert {"weight_helpful", "weight_humor", "response", "score_helpful", "score_humor"} <= set(out.columns)


@pytest.mark.slow
def test_pro_morlhf_pipeline_local_run(tmp_path, tiny_encoder_dir, tiny_reward_dir):
    """pro_morlhf end to end on tiny models: PRO-MORLHF and MORLHF (2 RL steps each), evaluation,
    both policies registered with their gate metric."""
    policy, args = _policy_pipeline_args(tmp_path, tiny_encoder_dir, tiny_reward_dir)
    args.update({
        "morlhf_config": {"policy": str(policy), "max_steps": 2, "batch_size": 4,
                          "num_generations": 2, "max_completion_length": 6, "max_prompts": 8, "save_steps": 100},
        "morlhf_eval_config": {"max_prompts": 4, "batch_size": 4, "max_new_tokens": 6},
    })
    run_local("pro_morlhf", args, pipeline_root=tmp_path / "kfp")
    for method in ("pro-morlhf", "morlhf"):
        (v,) = registry.list_versions(f"pro-policy-{method}")
        assert v["aliases"] == ["champion"] and v["gate_metric"] == f"{method}/weighted_orchestrator"
        assert (registry.download_model(f"models:/pro-policy-{method}@champion") / "config.json").is_file()
    (ep,) = registry.list_versions("pro-endpoint")  # orchestrator + the PRO-MORLHF policy + suite
    assert ep["aliases"] == ["champion"] and ep["gate_metric"] == "pro-morlhf/weighted_orchestrator"
    # both RL stages trained on the prompts of the prepared split's train side, none of its eval side
    (train,) = (tmp_path / "kfp").rglob("train.jsonl")
    split = {side: {json.loads(line)["prompt"] for line in (train.parent / f"{side}.jsonl").read_text().splitlines()}
             for side in ("train", "eval")}
    used = list((tmp_path / "kfp").rglob("prompts.jsonl"))
    assert len(used) == 2
    for f in used:
        prompts = {json.loads(line)["prompt"] for line in f.read_text().splitlines()}
        assert prompts and prompts <= split["train"] and not prompts & split["eval"]
