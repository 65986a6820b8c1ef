"""Rendering: the kubectl helper, strict schema validation of every overlay, namespaces."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from .helpers import (
    ALL_FOLDERS,
    CLUSTER_SCOPED,
    K8S,
    MIN_K8S_VERSION,
    REPO,
    _find,
    _validate_strict,
    kubectl_helper,
)


def test_kubectl_helper_finds_the_wheels_binary(monkeypatch, kubectl):
    monkeypatch.delenv("PRO_KUBECTL", raising=False)
    path = kubectl_helper.kubectl_path()
    assert path.name == "kubectl" and os.access(path, os.X_OK)
    out = subprocess.run([str(path), "version", "--client"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "Kustomize Version" in out and re.search(r"Client Version: v1\.\d+", out), out
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "kubectl.py"), "--path"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == str(path)


def test_kubectl_helper_explains_a_bad_override(tmp_path, monkeypatch):
    monkeypatch.setenv("PRO_KUBECTL", str(tmp_path / "nope"))
    with pytest.raises(kubectl_helper.KubectlUnavailable, match="PRO_KUBECTL=.*not an executable"):
        kubectl_helper.kubectl_path()



@pytest.mark.parametrize("overlay", list(ALL_FOLDERS))
def test_overlay_renders_and_passes_strict_validation(overlay, render, validator, tmp_path):
    text, objs = render(ALL_FOLDERS[overlay])
    assert objs, f"{overlay} rendered nothing"
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(text)
    latest = validator.utils.latest_version()
    for version in (latest, MIN_K8S_VERSION):
        rc, messages = _validate_strict(validator, out, version)
        assert rc == 0, f"{overlay} fails kubernetes-validate --strict for Kubernetes {version}:\n{messages}"


def test_strict_validation_really_rejects_unknown_fields(render, validator, tmp_path):
    """Guard against a validator that passes everything: a typo'd field must fail."""
    objs = [dict(o) for o in render(K8S)[1]]
    mlflow = _find(objs, "Deployment", "mlflow")
    mlflow["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(objs))
    rc, messages = _validate_strict(validator, out, validator.utils.latest_version())
    assert rc != 0 and "imagePullPolicyy" in messages


@pytest.mark.parametrize("overlay", list(ALL_FOLDERS))
def test_every_namespaced_object_has_a_namespace(overlay, render):
    for obj in render(ALL_FOLDERS[overlay])[1]:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace"), \
                f"{overlay}: {obj['kind']}/{obj['metadata']['name']} has no namespace"
