"""A partial stage config merges with the pipeline's defaults inside the component, whichever way the run
was submitted (issue 24, item 1): ``--params-file``, ``--set``, or a dict as ``kfp.Client(arguments=...)``
and the KFP UI send it (verbatim). Before the fix, only ``--set`` merged; the other ways fell back to the
config dataclass's defaults for every key not sent (offline SFT lr 3e-4 -> 2e-5, replay_offline 40 -> 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components import runtime
from pipelines import load_pipeline
from pipelines.params import stage_configs
from pipelines.runner import PIPELINE_DIR

PREFIX = "pipelinechannel--"


def _tasks(spec: dict):
    """Every task of a compiled pipeline (root and sub-DAGs: exit handler, ParallelFor)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        yield from dag["tasks"].values()


def _component_inputs(spec: dict, component: str, arguments: dict) -> tuple[dict, dict | None]:
    """What KFP hands the component's ``config`` and ``defaults`` inputs for a run with ``arguments``:
    the submitted value of the pipeline parameter (verbatim) or its default, and the compiled constant."""
    (task,) = [t for t in _tasks(spec) if t["componentRef"]["name"] == f"comp-{component}"]
    params = task["inputs"]["parameters"]
    param = params["config"]["componentInputParameter"].removeprefix(PREFIX)
    default = spec["root"]["inputDefinitions"]["parameters"][param]["defaultValue"]
    config = arguments[param] if param in arguments else default
    defaults = params.get("defaults", {}).get("runtimeValue", {}).get("constant")
    return config, defaults


def _submitted(monkeypatch, argv: list[str]) -> tuple[dict, dict]:
    """`pro pipeline submit ...` with a stand-in kfp.Client: the compiled package and the arguments it got."""
    import kfp

    from pro_lib.cli import main

    got = {}

    class FakeClient:
        def __init__(self, **kw):
            pass

        def create_run_from_pipeline_package(self, path, **kw):
            got["spec"] = next(yaml.safe_load_all(Path(path).read_text()))
            got["arguments"] = kw["arguments"]

            class R:
                run_id = "run-1"
            return R()

    monkeypatch.setattr(kfp, "Client", FakeClient)
    assert main(["pipeline", "submit", "pro_wic", "--host", "http://kfp.example:8080", *argv]) == 0
    return got["spec"], got["arguments"]


WIC_OVERRIDES = {"wic_offline_sft": {"data": ["d/train.jsonl"], "targets": "t", "output_dir": "o"},
                 "wic_online_sft": {"policy": "p", "samples": ["s"], "offline_policy": "op", "output_dir": "o"}}


def test_a_partial_stage_config_merges_with_the_pipeline_defaults_each_way(tmp_path, monkeypatch):
    from pipelines.pro_wic import DEFAULT_WIC_OFFLINE, DEFAULT_WIC_ONLINE
    from pro_lib.wic.offline import WICOfflineConfig
    from pro_lib.wic.rounds import WICOnlineConfig

    # the pipeline's defaults differ from the dataclass's: a fallback to the dataclass would show
    assert DEFAULT_WIC_OFFLINE["learning_rate"] != WICOfflineConfig.learning_rate
    assert DEFAULT_WIC_ONLINE["replay_offline"] != WICOnlineConfig.replay_offline

    params_file = tmp_path / "params.yaml"
    params_file.write_text("wic_offline_config: {epochs: 2}\nwic_online_config: {learning_rate: 1.0e-5}\n")
    ways = {
        "--params-file": _submitted(monkeypatch, ["--params-file", str(params_file)]),
        "--set": _submitted(monkeypatch, ["--set", "wic_offline_config.epochs=2",
                                          "--set", "wic_online_config.learning_rate=1.0e-5"]),
        # kfp.Client(arguments=...) or the KFP UI with the committed YAML: the partial dicts, verbatim
        "kfp.Client": (next(yaml.safe_load_all((PIPELINE_DIR / "pro_wic.yaml").read_text())),
                       {"wic_offline_config": {"epochs": 2}, "wic_online_config": {"learning_rate": 1e-5}}),
    }
    assert ways["--params-file"][1]["wic_offline_config"] == {"epochs": 2}  # verbatim: the merge is not here
    for way, (spec, arguments) in ways.items():
        config, defaults = _component_inputs(spec, "wic-offline-sft", arguments)
        cfg = runtime.build_stage_config("wic_offline_sft", config, WIC_OVERRIDES["wic_offline_sft"], defaults)
        assert cfg.epochs == 2, way
        assert (cfg.learning_rate, cfg.max_examples, cfg.system_prompt, cfg.padding_free) == \
            (3e-4, 320, "", True), way
        config, defaults = _component_inputs(spec, "wic-online-sft", arguments)
        cfg = runtime.build_stage_config("wic_online_sft", config, WIC_OVERRIDES["wic_online_sft"], defaults)
        assert cfg.learning_rate == 1e-5 and cfg.replay_offline == 40 and cfg.padding_free is True, way


@pytest.mark.parametrize("name", ["orchestrator", "pro_wic", "pro_morlhf"])
def test_every_stage_task_carries_its_pipeline_parameters_default(name):
    """One source of truth: each config stage's compiled ``defaults`` input is the default of the pipeline
    parameter its ``config`` input comes from (pipelines/*.py), in the committed YAML."""
    spec = next(yaml.safe_load_all((PIPELINE_DIR / f"{name}.yaml").read_text()))
    root = spec["root"]["inputDefinitions"]["parameters"]
    checked = set()
    for task in _tasks(spec):
        params = task.get("inputs", {}).get("parameters", {})
        if "config" not in params:
            continue
        param = params["config"]["componentInputParameter"].removeprefix(PREFIX)
        assert params["defaults"]["runtimeValue"]["constant"] == root[param]["defaultValue"], (name, param)
        checked.add(param)
    assert checked == set(stage_configs(load_pipeline(name)))  # the stage configs the pipeline's file declares


def test_merge_keys_and_nulls():
    assert runtime.merge_stage_config({"learning_rate": 3e-4, "epochs": 1.0}, {"learning-rate": 1e-5}) == \
        {"learning_rate": 1e-5, "epochs": 1.0}
    assert runtime.merge_stage_config(None, {"epochs": 2}) == {"epochs": 2}
    cfg = runtime.build_stage_config("prepare_data", {"limit_per_source": "null"}, {"output_dir": "o"},
                                     {"limit_per_source": 5, "eval_fraction": 0.2})
    assert cfg.limit_per_source is None and cfg.eval_fraction == 0.2


def test_a_partial_dict_in_a_local_run_reaches_the_stage_merged_and_recorded(tmp_path, monkeypatch):
    """The pipeline itself, run as kfp.Client would send it (a partial ``data_config``), through KFP's local
    runner: the prepare_data stage's MLflow run records the merged config (the pipeline's eval_fraction
    0.2, not DataConfig's 0.1) as params and in prepare_data/stage_config.json. The reward stage fails on
    purpose (bad epochs) so that the run stops after prepare_data. The run's ``experiment`` parameter puts
    the parent and stage runs there (item 3)."""
    from kfp import local

    from pipelines.orchestrator import DEFAULT_DATA, orchestrator_pipeline
    from pro_lib import tracking
    from pro_lib.data import DataConfig

    assert DEFAULT_DATA["eval_fraction"] != DataConfig.eval_fraction
    rows = [{"prompt": f"How do I do {i}?", "chosen": f"Step 1: {i}.", "rejected": "No.", "source": "helpful"}
            for i in range(20)]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.setenv(tracking.KFP_RUN_ENV, "pro-orchestrator-merge-x1")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=False)
    orchestrator_pipeline(objectives=["helpful"], data_config={"sources": [str(data)], "source_column": "source"},
                          reward_config={"epochs": "not-a-number"}, experiment="pro-merge-trial")
    c = tracking.client()
    exp = c.get_experiment_by_name("pro-merge-trial")
    (parent,) = c.search_runs([exp.experiment_id], "tags.`pro.kfp_run` = 'pro-orchestrator-merge-x1'")
    (prep,) = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
                                                 "tags.`pro.stage` = 'prepare_data'")
    assert prep.info.status == "FINISHED"
    assert prep.data.params["eval_fraction"] == "0.2" and prep.data.params["seed"] == "0"
    assert prep.data.params["sources"] == json.dumps([str(data)])
    import mlflow

    recorded = mlflow.artifacts.load_dict(f"runs:/{prep.info.run_id}/prepare_data/{runtime.STAGE_CONFIG_FILE}")
    assert recorded["submitted"] == {"sources": [str(data)], "source_column": "source"}
    assert recorded["pipeline_defaults"]["eval_fraction"] == 0.2
    assert recorded["effective"]["eval_fraction"] == 0.2 and recorded["effective"]["source_column"] == "source"
