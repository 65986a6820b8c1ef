"""What a pipeline run can reach, and what decides which model pro-serving runs.

A run's pods can mount any Secret of the namespace they run in and run as any ServiceAccount of
it, and the pipelines' MLflow user owns (so may re-alias, and overwrite the files of) the models
it registers. pro-serving therefore serves only a release record (ConfigMap pro-serving-release in
`pro`, digest-pinned) that nothing reachable from a run namespace can write.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import (
    OVERLAYS,
    _containers,
    _find,
    _offline_kfp_copy,
    _pod_spec,
    _write_scripts,
)

WRITE = {"create", "update", "patch", "delete", "deletecollection", "*"}
# Secrets that decide what pro-serving runs or administer MLflow / the stores: never in a run namespace
PRIVILEGED_SECRETS = {"pro-mlflow-admin", "pro-postgres", "pro-minio", "pro-mlflow-db", "pro-mlflow-s3",
                      "pro-mlflow-serving", "pro-mlflow-explorer"}


@pytest.fixture(scope="module")
def all_renders(rendered, render, tmp_path_factory):
    k8s = _offline_kfp_copy(tmp_path_factory.mktemp("kfp"))
    out = dict(rendered)
    for name in ("kubeflow-pipelines", "local-kfp"):
        out[name] = render(k8s / "overlays" / name)[1] + render(
            k8s / "overlays" / "kubeflow-pipelines" / "crds")[1]
    return out


def _run_namespaces(objs) -> set[str]:
    """Where pipeline runs execute: the namespaces of pro-pipeline-runner outside `pro` (KFP's)."""
    return {o["metadata"]["namespace"] for o in objs if o["kind"] == "ServiceAccount"
            and o["metadata"]["name"] == "pro-pipeline-runner"} - {"pro"}


def _grants(objs, binding) -> list[dict]:
    ref = binding["roleRef"]
    ns = binding["metadata"].get("namespace")
    roles = [o for o in objs if o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"]
             and (ref["kind"] == "ClusterRole" or o["metadata"].get("namespace") == ns)]
    return [rule for role in roles for rule in role.get("rules", [])]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "kubeflow-pipelines", "local-kfp"])
def test_no_secret_or_account_a_pipeline_run_can_use_moves_what_serving_runs(overlay, all_renders):
    objs = all_renders[overlay]
    run_ns = _run_namespaces(objs)
    if overlay in ("existing-kfp", "kubeflow-pipelines", "local-kfp"):
        assert run_ns == {"kubeflow"}
    # 1. the Secrets a run can mount: only the pipelines' own (their MLflow user, their bucket user)
    for secret in (o for o in objs if o["kind"] == "Secret" and o["metadata"]["namespace"] in run_ns):
        name = secret["metadata"]["name"]
        assert name not in PRIVILEGED_SECRETS, f"{overlay}: {name} is mountable by pipeline runs"
        assert name.startswith(("pro-s3-credentials", "pro-mlflow-pipeline")) or not name.startswith("pro-")
    # 2. the release record lives in `pro`, where no Role lets anyone but cluster admins write ConfigMaps
    for role in (o for o in objs if o["kind"] == "Role" and o["metadata"]["namespace"] == "pro"):
        for rule in role["rules"]:
            if {"configmaps", "*"} & set(rule["resources"]):
                assert not WRITE & set(rule["verbs"]), f"{overlay}: Role pro/{role['metadata']['name']} {rule}"
    # 3. no account of a run namespace holds a right outside it (a run may use any account there)
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {s.get("namespace", binding["metadata"].get("namespace")) for s in binding["subjects"]}
        if binding["kind"] == "ClusterRoleBinding":
            assert not subjects & run_ns, \
                f"{overlay}: ClusterRoleBinding {binding['metadata']['name']} gives {subjects & run_ns} " \
                f"cluster-wide rights: {_grants(objs, binding)}"
        elif binding["metadata"]["namespace"] == "pro":
            assert not subjects & run_ns, f"{overlay}: {binding['metadata']['name']} reaches into pro"
    # 4. no kustomize build carries the record, so no `kubectl apply -k` resets a release
    assert not [o for o in objs if o["metadata"]["name"] == "pro-serving-release"]


def test_the_checks_above_catch_kfps_upstream_cluster_grant(all_renders):
    """Guard for check 3: upstream's v1 cache deployer ClusterRoleBinding (dropped by
    k8s/overlays/kubeflow-pipelines/crds) is what it would report."""
    objs = [o for o in all_renders["local-kfp"]]
    assert not [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    assert not [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "cache-deployer-deployment"]


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_serving_runs_only_the_verified_release_and_holds_no_credentials(overlay, rendered):
    objs = rendered[overlay]
    spec = _pod_spec(_find(objs, "Deployment", "pro-serving"))
    init = {c["name"]: c for c in spec["initContainers"]}
    (server,) = spec["containers"]
    assert "models:/" not in " ".join(server["args"]) and "@champion" not in " ".join(server["args"])
    model_path = server["args"][server["args"].index("-m") + 1]
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and model_path.startswith("/models/")
    assert not server.get("envFrom") and not any("valueFrom" in e for e in server.get("env", []))
    fetch = init["fetch-release"]
    assert fetch["args"] == ["python", "/scripts/release-endpoint.py", "fetch"]
    env = {e["name"]: e for e in fetch["env"]}
    assert env["DEST"]["value"] == model_path
    for key in ("MODEL_URI", "MODEL_SHA256"):
        ref = env[key]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": "pro-serving-release", "key": key, "optional": True}
    assert {"secretRef": {"name": "pro-mlflow-serving"}} in fetch["envFrom"]  # the read-only user
    assert {m["name"] for m in fetch["volumeMounts"]} >= {"models", "scripts"}
    assert "release-endpoint.py" in _find(objs, "ConfigMap", "pro-scripts")["data"]


def _run(script: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_release_record_pins_a_version_and_serving_refuses_changed_files(rendered, tmp_path, monkeypatch):
    """The rendered script end to end on a local MLflow: `record` pins the champion's version and
    its digest; `fetch` (the init container's command) brings exactly those files; after the
    pipelines' user overwrites a file of the released model (as its MLflow user may), fetch
    refuses; without a record it says how to release."""
    mlflow = pytest.importorskip("mlflow")
    scripts = _write_scripts(rendered["root"], tmp_path / "scripts")
    script = scripts / "release-endpoint.py"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("release", artifact_location=(tmp_path / "artifacts").as_uri())
    model_dir = tmp_path / "endpoint"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("trusted\n")
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_artifacts(str(model_dir), "model")
        src = mlflow.get_artifact_uri("model")
    client = mlflow.MlflowClient()
    client.create_registered_model("pro-endpoint")
    v1 = client.create_model_version("pro-endpoint", src).version
    client.set_registered_model_alias("pro-endpoint", "champion", v1)

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HOME": str(tmp_path)}
    proc = _run(script, ["record", "models:/pro-endpoint@champion"], env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["metadata"] == {"name": "pro-serving-release", "namespace": "pro",
                                  "labels": {"app.kubernetes.io/part-of": "pro",
                                             "app.kubernetes.io/name": "pro-serving"}}
    assert record["data"]["MODEL_URI"] == f"models:/pro-endpoint/{v1}"  # pinned, not the alias

    dest = tmp_path / "models" / "release"
    fetch_env = {**env, **record["data"], "DEST": str(dest)}
    proc = _run(script, ["fetch"], fetch_env)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "weights.txt").read_text() == "trusted\n"

    # a later version moved to champion does not change what the record serves
    v2 = client.create_model_version("pro-endpoint", src).version
    client.set_registered_model_alias("pro-endpoint", "champion", v2)
    # the pipelines' user overwrites the released files through its own run's artifacts
    (next((tmp_path / "artifacts").rglob("weights.txt"))).write_text("attacker's\n")
    proc = _run(script, ["fetch"], fetch_env)
    assert proc.returncode == 1 and "refusing to serve" in proc.stderr, proc.stderr
    assert (dest / "weights.txt").read_text() == "trusted\n"   # the verified copy stays

    proc = _run(script, ["fetch"], {**env, "DEST": str(dest)})
    assert proc.returncode == 1 and "no release yet" in proc.stderr
