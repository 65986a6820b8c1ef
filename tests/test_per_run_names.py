"""Per-run names (issue 24, item 3): the MLflow experiment and a registered-name prefix are pipeline
parameters, so a trial run (``registered_prefix=test-``, ``promote=false``) leaves the production names'
``challenger`` and ``champion`` where they were. Against a real ``mlflow server``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components import runtime
from pipelines.runner import PIPELINE_DIR
from pro_lib import registry, tracking
from pro_lib.errors import ConfigError

REGISTRY_COMPONENTS = {"comp-register-model", "comp-register-endpoint", "comp-promote-model"}


class Metrics:
    def __init__(self, path: Path, numbers: dict):
        self.path, self.metadata = str(path), dict(numbers)


def _reward_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "pro_reward.json").write_text('{"objective": "helpful"}')
    return path


def test_a_prefixed_trial_run_leaves_the_production_aliases_alone(tmp_path, mlflow_env):
    model = _reward_folder(tmp_path / "rm")
    try:   # the session's server may already hold versions of this name from other tests
        before = [v["version"] for v in registry.list_versions("pro-reward-helpful")]
    except Exception:
        before = []
    # production: v1 promoted (champion), v2 registered (challenger)
    v1 = runtime.register_stage("pro-reward-{objective}", str(model), Metrics(tmp_path / "m1", {"accuracy": 0.7}),
                                objective="helpful")
    runtime.promote_stage("pro-reward-{objective}", v1, objective="helpful")
    v2 = runtime.register_stage("pro-reward-helpful", str(model), Metrics(tmp_path / "m1", {"accuracy": 0.6}))
    # a trial run: registered_prefix=test-, experiment=pro-trials, promote=false (no promote stage runs)
    tv = runtime.register_stage("pro-reward-{objective}", str(model), Metrics(tmp_path / "m2", {"accuracy": 0.9}),
                                objective="helpful", name_prefix="test-", experiment="pro-trials")
    assert registry.resolve_version("pro-reward-helpful", alias=registry.CHALLENGER) == v2
    assert registry.resolve_version("pro-reward-helpful", alias="champion") == v1
    assert sorted(v["version"] for v in registry.list_versions("pro-reward-helpful")) == sorted(before + [v1, v2])
    assert registry.resolve_version("test-pro-reward-helpful", alias=registry.CHALLENGER) == tv
    # the trial's register run went to the trial experiment
    c = tracking.client()
    exp = c.get_experiment_by_name("pro-trials")
    (run,) = c.search_runs([exp.experiment_id], "tags.`pro.stage` = 'register_model'")
    assert run.data.tags["pro.registered_name"] == "test-pro-reward-helpful"
    with pytest.raises(ConfigError, match="registered_prefix 'a b'"):
        runtime.registered_name("pro-orchestrator", prefix="a b")


@pytest.mark.parametrize("name", ["orchestrator", "pro_wic", "pro_morlhf"])
def test_every_task_gets_the_runs_experiment_and_registry_tasks_the_prefix(name):
    spec = next(yaml.safe_load_all((PIPELINE_DIR / f"{name}.yaml").read_text()))
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["experiment"]["defaultValue"] == "" and root["registered_prefix"]["defaultValue"] == ""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = [t for d in dags for t in d["tasks"].values()
             if "dag" not in spec["components"][t["componentRef"]["name"]]]  # leaf tasks, not sub-DAGs
    assert tasks
    for t in tasks:
        params = t["inputs"]["parameters"]
        assert params["experiment"]["componentInputParameter"].endswith("experiment"), t["taskInfo"]
        if t["componentRef"]["name"] in REGISTRY_COMPONENTS:
            assert params["name_prefix"]["componentInputParameter"].endswith("registered_prefix"), t["taskInfo"]
