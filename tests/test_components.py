"""Component runtime: stage config from the component's config dict + artifact paths, MLflow child run,
KFP Metrics/Markdown artifacts; helpers for objectives and the reward suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components import runtime
from pro_lib import tracking
from pro_lib.errors import ConfigError


class FakeArtifact:
    """Duck type of a KFP artifact as the executor hands it to a component body."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.metadata: dict = {}

    def log_metric(self, key, value):
        self.metadata[key] = value


def _pairs(path: Path, n=12):
    rows = []
    for src in ("helpful", "humor"):
        for i in range(n):
            rows.append({"prompt": f"{src} prompt {i}", "chosen": f"good {src} {i}", "rejected": f"bad {i}",
                         "source": src})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_component_maps_onto_a_stage_or_registry():
    from components import all_components

    comps = all_components()
    assert len(comps) == 16
    for name in comps:  # the stage table places every component (register, promote, endpoint, finish-run: config-less)
        assert name.replace("-", "_") in runtime.STAGES, name


def test_run_stage_builds_config_tracks_and_writes_kfp_artifacts(tmp_path):
    src = _pairs(tmp_path / "prefs.jsonl")
    data, metrics, report = (FakeArtifact(tmp_path / n) for n in ("data", "metrics", "report"))
    from components.reports import data_report

    with tracking.pipeline_run("unit") as parent:
        result = runtime.run_stage("prepare_data", {"sources": [str(src)], "eval_fraction": 0.25,
                                                    "source_column": "source", "limit_per_source": "null"},
                                   overrides={"output_dir": data.path}, metrics=metrics, report=report,
                                   report_fn=data_report)
    assert (Path(data.path) / "train.jsonl").is_file() and (Path(data.path) / "eval.jsonl").is_file()
    assert result["n_train"] + result["n_eval"] == 24
    assert metrics.metadata["n_train"] == result["n_train"]
    assert json.loads(Path(metrics.path).read_text())["n_eval"] == result["n_eval"]
    assert runtime.read_kfp_metrics(metrics) == metrics.metadata
    assert "train pairs" in Path(report.path).read_text()

    c = tracking.client()
    child = c.search_runs([c.get_run(parent).info.experiment_id], "tags.`pro.stage` = 'prepare_data'")[0]
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.params["eval_fraction"] == "0.25" and child.data.params["limit_per_source"] == "null"
    assert child.data.metrics["n_train"] == result["n_train"]
    logged = {a.path for a in c.list_artifacts(child.info.run_id, "prepare_data")}
    assert "prepare_data/data_report.json" in logged and "prepare_data/report" in logged


def test_bad_config_key_names_the_stage_and_key(tmp_path):
    with pytest.raises(ConfigError, match="component 'prepare_data' config: unknown key 'epochz'"):
        runtime.build_stage_config("prepare_data", {"epochz": 1}, {"output_dir": str(tmp_path)})


def test_objective_specs_and_suite_order(tmp_path):
    assert runtime.parse_objective_spec("helpful") == ("helpful", "helpful")
    assert runtime.parse_objective_spec("helpful=hh-rlhf/helpful-base") == ("helpful", "hh-rlhf/helpful-base")
    assert runtime.parse_objective_spec("helpful=") == ("helpful", None)
    with pytest.raises(ConfigError):
        runtime.parse_objective_spec("=x")
    dirs = []
    for name in ("humor", "helpful"):
        d = tmp_path / name
        d.mkdir()
        (d / "pro_reward.json").write_text(json.dumps({"objective": name}))
        dirs.append(str(d))
    assert runtime.reward_suite_specs(["helpful", "humor=jokes"], dirs) == \
        [f"helpful={tmp_path / 'helpful'}", f"humor={tmp_path / 'humor'}"]
    with pytest.raises(ConfigError, match="no trained reward model for objective 'harmless'"):
        runtime.reward_suite_specs(["harmless"], dirs)
    assert runtime.registered_name("pro-reward-{objective}", "humor=jokes") == "pro-reward-humor"


def test_register_and_promote_stages(tmp_path):
    from pro_lib import registry

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pro_reward.json").write_text('{"objective": "helpful"}')  # what makes it a reward model folder
    metrics = FakeArtifact(tmp_path / "metrics")
    metrics.metadata = {"accuracy": 0.8, "n_eval": 20}
    v = runtime.register_stage("pro-reward-{objective}", str(model), metrics, objective="helpful")
    assert "no champion yet" in runtime.promote_stage("pro-reward-{objective}", v, objective="helpful")
    metrics.metadata = {"accuracy": 0.6}
    v2 = runtime.register_stage("pro-reward-helpful", str(model), metrics)
    msg = runtime.promote_stage("pro-reward-helpful", v2)
    assert msg.startswith("refused") and registry.resolve_version("pro-reward-helpful", alias="champion") == v


def test_component_overrides_are_fields_of_the_stage_configs():
    """Every key a component body maps an artifact onto is a field of its stage's config dataclass."""
    import ast
    import dataclasses

    checked = set()
    for path in sorted((Path(runtime.__file__).parent).glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            extra_keys = {t.slice.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                          for t in n.targets if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                          and t.value.id == "overrides" and isinstance(t.slice, ast.Constant)}
            for call in [n for n in ast.walk(fn) if isinstance(n, ast.Call)
                         and getattr(n.func, "id", None) == "run_stage"]:
                stage = call.args[0].value
                kw = {k.arg: k.value for k in call.keywords}
                ov = kw["overrides"]
                if isinstance(ov, ast.Name):  # overrides = {...}; run_stage(..., overrides=overrides)
                    ov = next(n.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                              and getattr(n.targets[0], "id", None) == ov.id)
                keys = {k.value for k in ov.keys} | extra_keys
                cls, _ = runtime.STAGES[stage].load()
                fields = {f.name for f in dataclasses.fields(cls)}
                assert keys <= fields, f"{path.name}:{fn.name} maps {keys - fields} onto {cls.__name__}"
                checked.add(stage)
    assert checked == {n for n, s in runtime.STAGES.items() if s.config}   # every config stage has a component
