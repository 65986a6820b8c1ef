"""pro-endpoint references the registered versions it composes (issue 24, item 2), against a real
`mlflow server` (SQLite, moto S3): the pipeline's register_endpoint stage finds the versions its parts were
registered as (by their training runs), the endpoint version holds no reward / policy / orchestrator
weights, and `mlflow.pyfunc.load_model` of it (fresh download cache) answers as the copying endpoint does.
Also: MLmodel names the training run and LoggedModel; dataset sources are URIs a reader can open."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from components import runtime
from helpers.endpoint import NAMES, build_tiny_endpoint
from pro_lib import data_sources, endpoint_refs, registry, serving, tracking
from pro_lib.artifacts import EndpointManifest
from pro_lib.errors import CheckpointError, ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class Metrics:  # what KFP hands a component: an artifact with numbers in its metadata
    def __init__(self, path: Path, numbers: dict):
        self.path, self.metadata = str(path), dict(numbers)


def _trained(folder: Path, stage: str, run_name: str) -> str:
    """A stage run that wrote ``folder`` (what run_stage records: the output tag)."""
    with tracking.stage_run(stage, {"epochs": 1}, run_name=run_name,
                            tags={runtime.OUTPUT_TAG: runtime.output_key(folder)}) as run:
        tracking.log_step({"train/loss": 0.5}, 1)
    return run.info.run_id


def test_the_endpoint_references_its_registered_parts_and_loads_them(tmp_path, mlflow_env, monkeypatch):
    dirs = build_tiny_endpoint(tmp_path / "models")
    rm_dirs = [str(tmp_path / "models" / f"rm_{n}") for n in NAMES]
    prefix = "refs-"
    with tracking.pipeline_run("refs"):
        runs = {"orchestrator": _trained(dirs["orchestrator"], "train_orchestrator", "train_orchestrator"),
                "policy": _trained(dirs["policy"], "wic_offline_sft", "wic_offline_sft")}
        for n, d in zip(NAMES, rm_dirs):
            runs[n] = _trained(Path(d), "train_reward_model", f"train_reward_model[{n}]")
        versions = {
            "orchestrator": runtime.register_stage("pro-orchestrator", str(dirs["orchestrator"]),
                                                   Metrics(tmp_path / "m", {"orchestrator_kl": 0.3}), name_prefix=prefix),
            "policy": runtime.register_stage("pro-policy-pro-wic", str(dirs["policy"]),
                                             Metrics(tmp_path / "m", {"hypervolume": 0.5}), name_prefix=prefix),
            **{f"suite/{n}": runtime.register_stage("pro-reward-{objective}", d, Metrics(tmp_path / "m", {"accuracy": 0.6}),
                                                    objective=n, name_prefix=prefix) for n, d in zip(NAMES, rm_dirs)}}
        ep_version = runtime.register_endpoint_stage("pro-endpoint", str(dirs["orchestrator"]), str(dirs["policy"]),
                                                     str(dirs["suite"]), rm_dirs, Metrics(tmp_path / "m", {"hypervolume": 0.5}),
                                                     name_prefix=prefix)
    names = {"orchestrator": "refs-pro-orchestrator", "policy": "refs-pro-policy-pro-wic",
             **{f"suite/{n}": f"refs-pro-reward-{n}" for n in NAMES}}
    expected = {part: f"models:/{names[part]}/{v}" for part, v in versions.items()}

    # the version's tags and manifest name the versions it composes
    c = tracking.client()
    mv = c.get_model_version("refs-pro-endpoint", ep_version)
    assert {k[len(endpoint_refs.REF_TAG_PREFIX):]: v for k, v in mv.tags.items()
            if k.startswith(endpoint_refs.REF_TAG_PREFIX)} == expected
    # its artifacts hold no weights: the parts are downloaded from their own versions when it loads
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/refs-pro-endpoint/{ep_version}",
                                                   dst_path=str(tmp_path / "ep_download")))
    files = [p for p in got.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in WEIGHT_SUFFIXES], files
    folder = registry.model_folder(got)
    meta = EndpointManifest.load(folder)
    assert meta.references == expected and set(meta.digests) == set(expected)
    assert not (folder / "orchestrator").exists() and not (folder / "policy").exists()
    ep_bytes = sum(p.stat().st_size for p in files if "code" not in p.relative_to(got).parts)
    copy_bytes = sum(p.stat().st_size for p in dirs["endpoint"].rglob("*") if p.is_file())
    assert ep_bytes < copy_bytes / 20, (ep_bytes, copy_bytes)

    # MLmodel names the training run and the LoggedModel (item 2: lineage from the model file itself)
    orch = registry.model_folder(Path(mlflow.artifacts.download_artifacts(
        artifact_uri=expected["orchestrator"], dst_path=str(tmp_path / "orch_download"))))
    mlmodel = mlflow.models.Model.load(str(orch.parents[1] / "MLmodel"))
    assert mlmodel.run_id == runs["orchestrator"]
    assert f"models:/{mlmodel.model_id}" == c.get_model_version("refs-pro-orchestrator", versions["orchestrator"]).source

    # a fresh process's view (empty download cache): pyfunc loads it and answers as the copying endpoint
    monkeypatch.setenv("PRO_HOME", str(tmp_path / "fresh_home"))
    model = mlflow.pyfunc.load_model(f"models:/refs-pro-endpoint/{ep_version}")
    df = pd.DataFrame({"prompt": ["tell me a joke", "how do i stay safe"], "weights": [[], [0.2, 0.3, 0.5]]})
    out = model.predict(df, params={"max_new_tokens": 4})
    ref = serving.Endpoint(dirs["endpoint"]).predict(df, {"max_new_tokens": 4})
    pd.testing.assert_frame_equal(out[ref.columns].reset_index(drop=True), ref, check_exact=False, atol=1e-5)

    # a reference whose version now holds other files is an error, not another model served
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(folder, tampered)
    data = json.loads((tampered / EndpointManifest.FILE).read_text())
    data["digests"]["policy"] = "sha256:0000000000000000"
    (tampered / EndpointManifest.FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="now holds other files"):
        serving.Endpoint(tampered)


def test_references_name_versions_of_known_parts():
    assert endpoint_refs.check_references({"suite/helpful": "models:/pro-reward-helpful/3"}) == {
        "suite/helpful": "models:/pro-reward-helpful/3"}
    with pytest.raises(ConfigError, match="not an alias"):
        endpoint_refs.check_references({"policy": "models:/pro-policy-pro-wic@champion"})
    with pytest.raises(ConfigError, match="parts are orchestrator"):
        endpoint_refs.check_references({"weights": "models:/x/1"})


def test_dataset_sources_are_uris_a_reader_can_open(tmp_path, mlflow_env):
    data = tmp_path / "data" / "eval.jsonl"
    data.parent.mkdir()
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert data_sources.dataset_source("/s3/bucket/v2/artifacts/run/data/eval.jsonl") == \
        "s3://bucket/v2/artifacts/run/data/eval.jsonl"
    assert data_sources.dataset_source("/minio/mlpipeline/v2/artifacts/x/train.jsonl") == \
        "s3://mlpipeline/v2/artifacts/x/train.jsonl"
    with tracking.stage_run("wic_evaluate") as run:
        tracking.log_dataset(data, context="evaluation")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    source = json.loads(inputs[0].dataset.source)
    url = source.get("url") or source.get("uri")
    # the server's artifact route: open it with any HTTP client, no pod path involved
    assert url.startswith(mlflow_env) and url.endswith("/datasets/data/eval.jsonl"), source
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == data.read_bytes()


def test_a_reference_for_a_part_the_endpoint_lacks_is_refused(tmp_path):
    dirs = build_tiny_endpoint(tmp_path / "models")
    with pytest.raises(ConfigError, match=r"parts this endpoint does not have: \['suite/funny'\]"):
        serving.build_endpoint(tmp_path / "ep", orchestrator=dirs["orchestrator"], policy=dirs["policy"],
                               suite=dirs["suite"], references={"suite/funny": "models:/pro-reward-funny/1"})
    assert not (tmp_path / "ep").exists()
