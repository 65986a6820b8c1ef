"""The kubeflow-pipelines overlay: one pinned KFP release, renders with the remote stubbed."""

from __future__ import annotations

import os
import re

import yaml

from .helpers import K8S, _copy_k8s, _find, _write_kustomization

REMOTE = re.compile(r"^(https://)?github\.com/kubeflow/pipelines/manifests/kustomize/"
                    r"(?P<path>[\w/-]+)\?ref=(?P<ref>[^&\s]+)$")


def _remote_resources():
    overlay = K8S / "overlays" / "kubeflow-pipelines"
    found = {}
    for path in (overlay / "kustomization.yaml", overlay / "crds" / "kustomization.yaml"):
        for res in yaml.safe_load(path.read_text())["resources"]:
            if "://" in res or res.startswith("github.com"):
                found[(path, res)] = REMOTE.match(res)
    return found


def test_kubeflow_pipelines_overlay_pins_one_kfp_release():
    remotes = _remote_resources()
    assert len(remotes) == 2 and all(remotes.values()), f"unexpected remote bases: {remotes}"
    refs = {m["ref"] for m in remotes.values()}
    assert len(refs) == 1, f"KFP refs differ between the two steps: {refs}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", refs.pop()), "pin a KFP release tag, not a branch"
    assert {m["path"] for m in remotes.values()} == {"env/platform-agnostic",
                                                     "cluster-scoped-resources"}


def test_kubeflow_pipelines_overlay_renders_with_the_remote_stubbed(render, tmp_path):
    """CI has no network: swap the GitHub base for a local stand-in and render the rest."""
    k8s = _copy_k8s(tmp_path)
    stub = _write_kustomization(tmp_path / "repo" / "kfp-stub", {"resources": ["kfp.yaml"]})
    (stub / "kfp.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kfp-launcher", "namespace": "kubeflow"}, "data": {}},
    ]))
    overlay = k8s / "overlays" / "kubeflow-pipelines" / "kustomization.yaml"
    body = yaml.safe_load(overlay.read_text())
    body["resources"] = [os.path.relpath(stub, overlay.parent) if REMOTE.match(r) else r
                         for r in body["resources"]]
    overlay.write_text(yaml.safe_dump(body))
    objs = render(overlay.parent)[1]
    _find(objs, "ConfigMap", "kfp-launcher", "kubeflow")
    _find(objs, "Deployment", "mlflow")
    _find(objs, "ServiceAccount", "pro-pipeline-runner", "kubeflow")
