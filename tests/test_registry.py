"""Model registry and gated promotion against a real `mlflow server` (S3 artifact store on moto)."""

from __future__ import annotations

import os
import uuid

import pytest

from platform_services import (  # noqa: F401  (fixtures)
    mlflow_env, mlflow_server, s3_endpoint, s3_env, start_mlflow_server, stop_server)
from pro_lib import registry
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import localize


# the metadata file that makes a folder a PRO model of its kind (registration reads only that)
KIND_FILES = {"orchestrator": ("pro_orchestrator.json", '{"objectives": ["helpful", "harmless"]}'),
              "reward": ("pro_reward.json", '{"objective": "helpful", "input_format": "pair"}'),
              "policy": ("wic.json", '{"objectives": ["helpful", "harmless"]}')}


def _model_dir(path, marker: str, kind: str = "orchestrator"):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert", "marker": "%s"}' % marker)
    (path / "model.safetensors").write_bytes(marker.encode() * 100)
    (path / KIND_FILES[kind][0]).write_text(KIND_FILES[kind][1])
    return path


def _snapshot(name):
    return [(v["version"], sorted(v["aliases"]), v["tags"]) for v in registry.list_versions(name)]


def _promotion_flow(tmp_path, name):
    """register -> first champion -> better challenger wins -> worse challenger refused, nothing changes."""
    v1 = registry.register_model(_model_dir(tmp_path / "v1", "one"), name, metrics={"orchestrator_kl": 0.40},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    assert v1 == "1"
    assert registry.list_versions(name)[0]["aliases"] == ["challenger"]
    r = registry.promote(name)
    assert r.promoted and r.champion == "1" and r.previous_champion is None

    v2 = registry.register_model(_model_dir(tmp_path / "v2", "two"), name,
                                 metrics={"orchestrator_kl": 0.25, "n": 10},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    r = registry.promote(name)
    assert r.promoted, r.message
    assert (r.candidate, r.previous_champion, r.candidate_value, r.champion_value) == (v2, "1", 0.25, 0.40)

    v3 = registry.register_model(_model_dir(tmp_path / "v3", "three"), name, metrics={"orchestrator_kl": 0.31},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    before = _snapshot(name)
    r = registry.promote(name)
    assert not r.promoted and r.champion == v2 and "refused" in r.message and "0.31" in r.message
    assert _snapshot(name) == before  # a refused promotion changes nothing
    # loading by alias returns the champion's and the challenger's own files
    champ = registry.download_model(f"models:/{name}@champion")
    assert '"marker": "two"' in (champ / "config.json").read_text()
    chall = localize(f"models:/{name}@challenger")
    assert (chall / "model.safetensors").read_bytes() == b"three" * 100
    assert '"marker": "one"' in (registry.download_model(f"models:/{name}/1") / "config.json").read_text()
    return v3


def test_gated_promotion_on_real_server(mlflow_env, tmp_path):
    name = f"pro-orchestrator-{uuid.uuid4().hex[:6]}"
    v3 = _promotion_flow(tmp_path, name)

    with pytest.raises(ConfigError, match="--force needs --reason"):
        registry.promote(name, force=True)
    r = registry.promote(name, version=v3, force=True, reason="rollback drill: v3 fixes a tokenizer bug")
    assert r.promoted and r.forced and r.champion == v3
    info = {v["version"]: v for v in registry.list_versions(name)}
    assert info[v3]["aliases"] == ["champion"]
    assert info[v3]["tags"]["pro.promotion_reason"] == "rollback drill: v3 fixes a tokenizer bug"
    assert info[v3]["tags"]["pro.promotion_forced"] == "true"
    assert "pro.retired_at" in info["2"]["tags"]
    # artifacts really went to the S3 bucket behind the server
    import boto3
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(f"registered/{name}/artifacts/" in k and k.endswith("/model.safetensors") for k in keys)
    assert any(k.endswith(f"registered/{name}/MLmodel") for k in keys)  # an MLflow model


def test_max_gate_and_ties_are_refused(mlflow_env, tmp_path):
    name = f"pro-reward-helpful-{uuid.uuid4().hex[:6]}"
    registry.register_model(_model_dir(tmp_path / "a", "a", "reward"), name, metrics={"accuracy": 0.7})
    assert registry.list_versions(name)[0]["gate_metric"] == "accuracy"  # default gate for reward models
    assert registry.promote(name).promoted
    registry.register_model(_model_dir(tmp_path / "b", "b", "reward"), name, metrics={"accuracy": 0.7})
    assert not registry.promote(name).promoted  # a tie does not beat the champion
    registry.register_model(_model_dir(tmp_path / "c", "c", "reward"), name, metrics={"accuracy": 0.75})
    r = registry.promote(name)
    assert r.promoted and r.champion == "3"
    assert registry.promote(name, version=3).message.endswith("nothing to do")


def test_bad_refs_and_inputs(mlflow_env, tmp_path):
    with pytest.raises(ConfigError, match="expected models:/<name>@<alias>"):
        registry.download_model("models:/no-alias-or-version")
    with pytest.raises(CheckpointError, match="pro registry list"):
        registry.download_model(f"models:/pro-orchestrator-{uuid.uuid4().hex[:6]}@champion")
    with pytest.raises(CheckpointError, match="not a folder"):
        registry.register_model(tmp_path / "missing", "pro-orchestrator")
    with pytest.raises(ConfigError, match="gate metric 'orchestrator_kl'"):
        registry.register_model(_model_dir(tmp_path / "m", "m"), "pro-orchestrator", metrics={"mse": 1.0})


def test_local_sqlite_store_default(tmp_path, monkeypatch):
    """Without MLFLOW_TRACKING_URI everything lands in $PRO_HOME (SQLite + local artifacts)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = "pro-policy-wic"
    registry.register_model(_model_dir(tmp_path / "p", "p", "policy"), name, metrics={"hypervolume": 0.5})
    assert registry.promote(name).promoted
    assert (tmp_path / ".pro" / "mlflow.db").is_file()
    assert registry.download_model(f"models:/{name}@champion").is_relative_to(tmp_path / ".pro")


@pytest.mark.skipif(not os.environ.get("PRO_TEST_POSTGRES_URI"),
                    reason="PRO_TEST_POSTGRES_URI unset (scripts/ci_services.sh starts PostgreSQL and sets it)")
def test_promotion_with_postgres_backend(s3_env, tmp_path, monkeypatch):
    """The deployment's stack: mlflow server on PostgreSQL with an S3 artifact store."""
    proc, url = start_mlflow_server(os.environ["PRO_TEST_POSTGRES_URI"], s3_env, tmp_path, bucket="mlflow-pg")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        _promotion_flow(tmp_path, f"pro-orchestrator-pg-{uuid.uuid4().hex[:6]}")
    finally:
        stop_server(proc)


def test_registry_cli_list_promote_download(tmp_path, capsys):
    """`pro registry ...` on the default local store: refused promotion exits 1 and changes nothing."""
    from pro_lib.cli import main

    name = "pro-orchestrator"
    for marker, kl in (("a", "0.2"), ("b", "0.3")):
        assert main(["registry", "register", str(_model_dir(tmp_path / marker, marker)), "--name", name,
                     "--metric", f"orchestrator_kl={kl}"]) == 0
        if marker == "a":
            assert main(["registry", "promote", name]) == 0
    before = _snapshot(name)
    with pytest.raises(SystemExit) as exc:
        main(["registry", "promote", name])
    assert exc.value.code == 1 and _snapshot(name) == before
    assert "refused" in capsys.readouterr().out
    assert main(["registry", "promote", name, "--force"]) == 2   # ProError: --force needs --reason
    assert main(["registry", "promote", name, "--force", "--reason", "manual override for the demo"]) == 0
    capsys.readouterr()
    assert main(["registry", "list"]) == 0
    listing = capsys.readouterr().out
    assert "v2" in listing and "champion" in listing and "orchestrator_kl=0.3" in listing
    assert main(["registry", "download", f"models:/{name}@champion", "--output", str(tmp_path / "out")]) == 0
    assert '"marker": "b"' in (tmp_path / "out" / "config.json").read_text()
