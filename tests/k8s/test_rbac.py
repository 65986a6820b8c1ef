"""The pipeline runner's Role is least privilege."""

from __future__ import annotations

import pytest

from .helpers import OVERLAYS, _find


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_pipeline_runner_rbac_is_least_privilege(overlay, rendered):
    objs = rendered[overlay]
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objs if o["kind"] == "Role"]
    assert roles and all(r["metadata"]["name"] == "pro-pipeline-runner" for r in roles)
    for role in roles:
        for rule in role["rules"]:
            for field_ in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field_], f"wildcard {field_} in {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule.get("resourceNames") and set(rule["verbs"]) <= {"get"}, \
                    "secret access must name the secrets and only read them"
            if {"pods", "pods/exec"} & set(rule["resources"]):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for binding in (o for o in objs if o["kind"] == "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pro-pipeline-runner",
                                        "namespace": ns}]
        _find(objs, "ServiceAccount", "pro-pipeline-runner", ns)
        _find(objs, "ConfigMap", "pro-config", ns)  # components read it where they run
        _find(objs, "Secret", "pro-s3-credentials", ns)
        _find(objs, "Secret", "pro-mlflow-pipeline", ns)  # pipelines/scheduling.py MLFLOW_SECRET
