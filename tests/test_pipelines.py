"""Compiled pipeline specs: committed YAML up to date, GPU requests/selectors/tolerations, CPU stages off
the GPU pool, requests on every stage, secrets from Kubernetes Secrets, caching; the pipeline CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import PIPELINES
from pipelines.params import parse_sets, pipeline_defaults
from pipelines.report import print_weight_response, weight_response_of_run
from pipelines.runner import compile_pipeline, same_spec

REPO = Path(__file__).resolve().parents[1]


# The compiled specs must follow components.runtime.STAGES, the one table of stages (read here, not restated).
def _stage_sets():
    from components.runtime import STAGES

    kebab = {n.replace("_", "-"): s for n, s in STAGES.items()}
    return ({n for n, s in kebab.items() if s.gpu}, {n for n, s in kebab.items() if not s.gpu},
            {n for n, s in kebab.items() if not s.deterministic})


GPU_STAGES, CPU_STAGES, NEVER_CACHED = _stage_sets()


def test_the_stage_table_keeps_side_effects_on_cpu_and_uncached():
    """What the table must say whatever its rows: the registry's and the exit handler's side effects (stages
    without a config) run on CPU and every time; both kinds of stage exist."""
    from components.runtime import STAGES

    for name, s in STAGES.items():
        if s.config is None:
            assert not s.gpu and not s.deterministic, name
    assert GPU_STAGES and CPU_STAGES and not GPU_STAGES & CPU_STAGES


def _load(name):
    spec, platform = list(yaml.safe_load_all((REPO / "pipelines" / f"{name}.yaml").read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _stage(executor_name: str) -> str:
    base = executor_name.removeprefix("exec-")
    return base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1].isdigit() else base


def _tasks(dag, components, out=None):
    """Every leaf task (component ref -> task spec), walking ParallelFor sub-DAGs."""
    out = {} if out is None else out
    for name, task in dag["tasks"].items():
        comp = components[task["componentRef"]["name"]]
        if "dag" in comp:
            _tasks(comp["dag"], components, out)
        else:
            out[comp["executorLabel"]] = task
    return out


@pytest.mark.parametrize("name", list(PIPELINES))
def test_committed_yaml_is_up_to_date(name, tmp_path):
    fresh = compile_pipeline(name, tmp_path / f"{name}.yaml").read_text()
    committed = REPO / "pipelines" / f"{name}.yaml"
    assert committed.is_file(), f"run `pro pipeline compile {name}` and commit {committed}"
    assert same_spec(committed.read_text(), fresh), f"{committed} is stale: run `pro pipeline compile`"


@pytest.mark.parametrize("name", list(PIPELINES))
def test_gpu_and_cpu_scheduling(name):
    spec, k8s = _load(name)
    executors = spec["deploymentSpec"]["executors"]
    stages = {_stage(e) for e in executors}
    assert stages <= GPU_STAGES | CPU_STAGES, stages
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_count"]["defaultValue"] == 1
    assert params["gpu_node_selector"]["defaultValue"] == {"pro.ai/pool": "gpu"}
    for ex_name, ex in executors.items():
        c = ex["container"]
        res = c["resources"]
        assert res["resourceCpuRequest"] and res["resourceMemoryRequest"], ex_name   # requests on every stage
        assert c["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}"    # image = pipeline parameter
        plat = k8s[ex_name]
        secrets = {s["secretName"]: {k["envVar"] for k in s["keyToEnv"]} for s in plat["secretAsEnv"]}
        assert secrets["pro-s3-credentials"] == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        # the pipelines' MLflow user (k8s/ runs MLflow with basic auth)
        assert secrets["pro-mlflow-pipeline"] == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
        assert {k["envVar"] for k in plat["configMapAsEnv"][0]["keyToEnv"]} >= {"MLFLOW_TRACKING_URI"}
        assert plat["fieldPathAsEnv"] == [{"name": "PRO_KFP_RUN",
                                           "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}]
        if _stage(ex_name) in GPU_STAGES:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu", ex_name
            assert res["accelerator"]["resourceCount"].startswith("{{$.inputs.parameters['pipelinechannel--gpu_count"), ex_name
            assert plat["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector")
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in plat["tolerations"]
            assert "nodeAffinity" not in plat
        else:
            assert "accelerator" not in res, ex_name
            assert "tolerations" not in plat and "nodeSelector" not in plat, ex_name
            expr = plat["nodeAffinity"][0]["matchExpressions"][0]
            assert expr == {"key": "pro.ai/pool", "operator": "NotIn", "values": ["gpu"]}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_caching_and_no_secrets_as_parameters(name):
    spec, _ = _load(name)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if any(w in p.lower() for w in ("secret", "password", "token", "access_key"))]
    tasks = _tasks(spec["root"]["dag"], spec["components"])
    assert tasks
    for executor, task in tasks.items():
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        assert cached == (_stage(executor) not in NEVER_CACHED), executor


def _body(spec) -> dict:
    """The pipeline's stages: the tasks inside its exit handler (checked to end the MLflow run)."""
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "finish-pipeline-run"}, set(root)
    fin = root["finish-pipeline-run"]
    assert fin["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert fin["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    # every pipeline parameter reaches the exit task (it logs them on the parent run)
    passed = set(fin["inputs"]["parameters"]) - {"status", "pipeline", "base_image"}
    assert {k for k in passed if not k.startswith("pipelinechannel--")} == \
        set(spec["root"]["inputDefinitions"]["parameters"]), passed
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_orchestrator_graph_and_typed_artifacts():
    spec, _ = _load("orchestrator")
    comps = spec["components"]
    loop = comps["comp-for-loop-2"]  # for-loop-1 would be the exit handler's number
    assert _body(spec)["for-loop-2"]["parameterIterator"]["items"]["inputParameter"] \
        == "pipelinechannel--objectives"
    assert set(loop["dag"]["tasks"]) == {"train-reward-model", "register-model", "promote-model"}
    score_inputs = comps["comp-score-targets"]["inputDefinitions"]["artifacts"]["reward_models"]
    assert score_inputs["isArtifactList"] and score_inputs["artifactType"]["schemaTitle"] == "system.Model"
    ev_out = comps["comp-evaluate-orchestrator"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in ev_out.items()} == \
        {"metrics": "system.Metrics", "report": "system.Markdown", "plot": "system.HTML"}
    order = _body(spec)
    assert order["promote-model-2"]["dependentTasks"] == ["register-model-2"]
    assert set(order["register-model-2"]["dependentTasks"]) == {"evaluate-orchestrator", "train-orchestrator"}


def test_wic_rounds_shape_the_graph(tmp_path):
    spec = list(yaml.safe_load_all(compile_pipeline("pro_wic", tmp_path / "w.yaml", online_rounds=3)
                                   .read_text()))[0]
    names = _body(spec)
    assert {"register-endpoint", "promote-model-3"} <= set(names)  # the pro-endpoint and its promotion
    assert {n for n in names if n.startswith("wic-online-sample")} == {
        "wic-online-sample", "wic-online-sample-2", "wic-online-sample-3"}


def test_compile_image_option_sets_default(tmp_path):
    out = compile_pipeline("orchestrator", tmp_path / "o.yaml", image="registry.local/pro:dev")
    spec = list(yaml.safe_load_all(out.read_text()))[0]
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == "registry.local/pro:dev"


def test_parse_sets_merges_into_dict_defaults():
    from pipelines.orchestrator import orchestrator_pipeline
    from pro_lib.errors import ConfigError

    defaults = pipeline_defaults(orchestrator_pipeline)
    args = parse_sets(["reward_config.epochs=0.5", "objectives=[helpful, harmless]", "promote=false",
                            "reward_config.limit=null"], defaults)
    assert args["objectives"] == ["helpful", "harmless"] and args["promote"] is False
    assert args["reward_config"]["epochs"] == 0.5 and args["reward_config"]["limit"] == "null"
    assert args["reward_config"]["base_model"] == "minilm"   # other keys keep their defaults
    with pytest.raises(ConfigError, match="unknown pipeline parameter 'nope'"):
        parse_sets(["nope=1"], defaults)
    with pytest.raises(ConfigError, match="not a dict"):
        parse_sets(["image.tag=1"], defaults)


def test_submit_uses_kfp_client(monkeypatch, capsys):
    calls = {}

    class FakeClient:
        def __init__(self, host=None, namespace=None, existing_token=None):
            calls["client"] = (host, namespace, existing_token)

        def create_run_from_pipeline_package(self, path, **kw):
            calls["package"] = yaml.safe_load_all(Path(path).read_text()).__next__()["pipelineInfo"]["name"]
            calls["kw"] = kw

            class R:
                run_id = "run-123"
            return R()

    import kfp

    monkeypatch.setattr(kfp, "Client", FakeClient)
    monkeypatch.setenv("KFP_TOKEN", "t0k")
    from pro_lib.cli import main

    assert main(["pipeline", "submit", "orchestrator", "--host", "http://kfp.example:8080", "--namespace", "team-a",
                 "--experiment", "nightly", "--run-name", "r1", "--set", "gpu_count=2",
                 "--image", "ghcr.io/pro-align/pro-components:0.2.0"]) == 0
    assert calls["client"] == ("http://kfp.example:8080", "team-a", "t0k")
    assert calls["package"] == "pro-orchestrator"
    kw = calls["kw"]
    assert kw["arguments"] == {"gpu_count": 2, "image": "ghcr.io/pro-align/pro-components:0.2.0"}
    assert (kw["run_name"], kw["experiment_name"], kw["namespace"], kw["service_account"]) == \
        ("r1", "nightly", "team-a", "pro-pipeline-runner")
    assert "run-123" in capsys.readouterr().out


def test_cli_compile_check_and_help(capsys):
    from pro_lib.cli import main

    assert main(["pipeline", "compile", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --local.*pro pipeline submit"):
        main(["pipeline", "run", "orchestrator"])   # without --local: explains submit


def test_pro_wic_run_prints_the_weight_response_of_its_evaluation(tmp_path, capsys):
    """A local pro_wic run ends with the per-objective weight response read from its wic_evaluate stage."""
    import json

    from pro_lib import tracking

    ev = {"objectives": ["helpful", "harmless", "humor"], "n_prompts": 48,
          "bootstrap": {"level": 0.95, "n_boot": 1000, "weight_response": {"pro-wic": [0.8, 0.5, -0.1]},
                        "weight_response_ci": {"pro-wic": [[0.4, 1.2], [0.1, 0.9], [-0.3, 0.1]]}}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    with tracking.pipeline_run("pro_wic", {}) as parent:
        with tracking.stage_run("wic_evaluate", {}):
            tracking.log_artifacts(tmp_path / "eval.json", "wic_evaluate")
    assert weight_response_of_run(parent)["bootstrap"] == ev["bootstrap"]
    print_weight_response(parent)
    out = capsys.readouterr().out
    assert "helpful" in out and "+0.800   [+0.400, +1.200]   yes" in out
    assert "humor" in out and "NO (interval reaches 0)" in out and "not every interval is above 0" in out
    assert "pro ui" in out and "pro generate" in out
