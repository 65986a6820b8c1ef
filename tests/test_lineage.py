"""Lineage, MLflow 3 style (issue 24, item 2), against a real `mlflow server`: a registered version belongs
to the run that trained it (with its loss curve), through an MLflow 3 LoggedModel carrying the gate
metrics as metrics; registered models and versions are described and tagged with their family; child runs
have distinct names; a cached rerun (same training run) does not register the same weights again."""

from __future__ import annotations

import json
from pathlib import Path

from components import runtime
from pro_lib import registry, tracking


class Metrics:
    def __init__(self, path: Path, numbers: dict):
        self.path, self.metadata = str(path), dict(numbers)


def _trained_reward_model(folder: Path, objective: str) -> str:
    """What the train_reward_model stage leaves behind: a stage run (loss curve, output tag) and its folder."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "pro_reward.json").write_text(json.dumps({"objective": objective}))
    with tracking.stage_run("train_reward_model", {"epochs": 1}, run_name=f"train_reward_model[{objective}]",
                            tags={runtime.OUTPUT_TAG: runtime.output_key(folder), "pro.objective": objective}) as run:
        for step, loss in enumerate([0.69, 0.5, 0.4], start=1):
            tracking.log_step({"train/loss": loss}, step)
        tracking.log_metrics({"accuracy": 0.8})
    return run.info.run_id


def test_a_version_belongs_to_its_training_run_through_a_logged_model(tmp_path, mlflow_env):
    with tracking.pipeline_run("unit") as parent:
        train_run = _trained_reward_model(tmp_path / "rm", "helpful")
        v = runtime.register_stage("pro-reward-{objective}", str(tmp_path / "rm"),
                                   Metrics(tmp_path / "m", {"accuracy": 0.8, "n_eval": 20}), objective="helpful")
        again = runtime.register_stage("pro-reward-{objective}", str(tmp_path / "rm"),
                                       Metrics(tmp_path / "m", {"accuracy": 0.8, "n_eval": 20}), objective="helpful")
    c = tracking.client()
    mv = c.get_model_version("pro-reward-helpful", v)
    # the version's run is the training run, with its loss curve
    assert mv.run_id == train_run
    assert [m.value for m in c.get_metric_history(train_run, "train/loss")] == [0.69, 0.5, 0.4]
    # an MLflow 3 LoggedModel of that run, with the gate metric as a metric; the version comes from it
    # (over REST, mlflow 3.17's ModelVersion.from_proto drops model_id: the source names the model)
    assert mv.source.startswith("models:/m-")
    model_id = mv.source.removeprefix("models:/")
    lm = c.get_logged_model(model_id)
    assert lm.source_run_id == train_run
    assert {m.key: m.value for m in lm.metrics}["accuracy"] == 0.8
    exp_id = c.get_run(train_run).info.experiment_id
    assert [m.model_id for m in c.search_logged_models([exp_id]) if m.source_run_id == train_run] == [model_id]
    # described, with the right family
    rm = c.get_registered_model("pro-reward-helpful")
    assert rm.tags["pro.family"] == "pro-reward" and "reward model" in rm.description
    assert train_run in mv.description and "accuracy = 0.8" in mv.description
    # a cached rerun (the same training run): no second version of the same weights
    assert again == v and [x["version"] for x in registry.list_versions("pro-reward-helpful")] == [v]
    # it loads from the registry as before
    folder = registry.download_model("models:/pro-reward-helpful@challenger")
    assert json.loads((folder / "pro_reward.json").read_text())["objective"] == "helpful"
    # child runs: distinct names
    names = {r.info.run_name for r in c.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent}'")}
    assert {"train_reward_model[helpful]", "register_model[pro-reward-helpful]"} <= names


def test_family_tags():
    assert registry.family_of("pro-orchestrator") == "pro-orchestrator"
    assert registry.family_of("pro-endpoint") == "pro-endpoint"
    assert registry.family_of("pro-reward-helpful") == "pro-reward"
    assert registry.family_of("pro-policy-pro-wic") == "pro-policy"
    assert registry.family_of("test-pro-reward-humor") == "test-pro-reward"


def test_evaluation_stages_log_their_data_with_context_evaluation(tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    with tracking.stage_run("wic_evaluate") as run:
        runtime.log_stage_datasets({"data": [str(data)]}, stage="wic_evaluate")
    got = tracking.client().get_run(run.info.run_id).inputs.dataset_inputs
    assert [t.value for i in got for t in i.tags if t.key == "mlflow.data.context"] == ["evaluation"]
