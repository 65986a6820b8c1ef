"""The kubeflow-pipelines overlays: one pinned KFP release, its default credentials replaced, its
API fenced; rendered with the remote stubbed (or with real manifests: $PRO_KFP_MANIFESTS)."""

from __future__ import annotations

import re

import pytest
import yaml

from .helpers import (
    KFP_FOLDERS,
    KFP_REMOTE,
    Pod,
    _allowed,
    _find,
    _offline_kfp_copy,
    _pod_spec,
    _secret_values,
)


def _remote_resources():
    found = {}
    for folder in KFP_FOLDERS:
        path = folder / "kustomization.yaml"
        for res in yaml.safe_load(path.read_text())["resources"]:
            if "://" in res or res.startswith("github.com"):
                found[(path, res)] = KFP_REMOTE.match(res)
    return found


def test_kubeflow_pipelines_overlay_pins_one_kfp_release():
    remotes = _remote_resources()
    assert len(remotes) == 2 and all(remotes.values()), f"unexpected remote bases: {remotes}"
    refs = {m["ref"] for m in remotes.values()}
    assert len(refs) == 1, f"KFP refs differ between the two steps: {refs}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", refs.pop()), "pin a KFP release tag, not a branch"
    assert {m["path"] for m in remotes.values()} == {"env/platform-agnostic",
                                                     "cluster-scoped-resources"}


@pytest.fixture(scope="module")
def kfp_renders(render, tmp_path_factory):
    k8s = _offline_kfp_copy(tmp_path_factory.mktemp("kfp"))
    return {name: render(k8s / "overlays" / name)[1] for name in ("kubeflow-pipelines", "local-kfp")}


@pytest.mark.parametrize("overlay", ["kubeflow-pipelines", "local-kfp"])
def test_kfp_overlays_render_and_replace_kfps_default_credentials(overlay, kfp_renders):
    objs = kfp_renders[overlay]
    _find(objs, "ConfigMap", "kfp-launcher", "kubeflow")
    _find(objs, "Deployment", "mlflow")
    _find(objs, "ServiceAccount", "pro-pipeline-runner", "kubeflow")
    store = _secret_values(_find(objs, "Secret", "mlpipeline-minio-artifact", "kubeflow"))
    mysql = _secret_values(_find(objs, "Secret", "mysql-secret", "kubeflow"))
    # upstream's well-known values (minio / minio123, an empty root password) are gone: the
    # rendered values are this repository's placeholders, which docs/deploy.md has you replace
    assert store["accesskey"] != "minio" and store["secretkey"] != "minio123"
    assert all(v.startswith("CHANGE_ME") for v in (store["accesskey"], store["secretkey"],
                                                   mysql["password"]))
    assert set(store) == {"accesskey", "secretkey"} and set(mysql) == {"username", "password"}
    # MySQL takes its root password from that Secret instead of allowing an empty one
    (c,) = _pod_spec(_find(objs, "Deployment", "mysql", "kubeflow"))["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert "MYSQL_ALLOW_EMPTY_PASSWORD" not in env
    assert env["MYSQL_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mysql-secret",
                                                                       "key": "password"}


@pytest.mark.parametrize("overlay", ["kubeflow-pipelines", "local-kfp"])
def test_kfp_api_answers_only_kfps_own_namespace(overlay, kfp_renders):
    objs = kfp_renders[overlay]
    ports = {"ml-pipeline": (8888, 8887), "ml-pipeline-ui": (3000,)}
    for app, numbers in ports.items():
        labels = _find(objs, "Deployment", app, "kubeflow")["spec"]["template"]["metadata"]["labels"]
        api = Pod(app, "kubeflow", labels, {str(p): p for p in numbers})
        for port in numbers:
            assert _allowed(objs, Pod("kfp-ui-or-driver", "kubeflow", {"app": "x"}), api, port)
            for stranger in (Pod("explorer", "pro", {"app.kubernetes.io/name": "pro-ui"}),
                             Pod("any", "default", {"app": "debug"}),
                             Pod("pipeline-label@elsewhere", "team-a", {"pro.ai/role": "pipeline"})):
                assert not _allowed(objs, stranger, api, port), f"{stranger.name} -> {app}:{port}"
