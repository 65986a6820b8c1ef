"""k8s/components/pipeline-judge: the LLM-judge task (and only it) may reach DNS and HTTPS; nothing else opens."""

from __future__ import annotations

import os

from .helpers import K8S, _allowed_paths, _expected_paths, _find, _write_kustomization


def test_pipeline_judge_component_opens_dns_and_https_for_the_judge_task_only(render, tmp_path):
    rel = os.path.relpath(K8S, tmp_path / "overlay")
    folder = _write_kustomization(tmp_path / "overlay", {
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/pipeline-judge"]})
    objs = render(folder)[1]
    # no path between the platform's pods changes
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro"})
    policy = _find(objs, "NetworkPolicy", "pipeline-judge-egress")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"pro.ai/role": "pipeline", "pro.ai/judge": "true"}
    assert policy["spec"]["policyTypes"] == ["Egress"]
    ports = sorted((p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("UDP", 53)]
    # no Secret with a placeholder key is generated: the user creates pro-judge (docs/evaluation.md)
    assert not [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == "pro-judge"]
