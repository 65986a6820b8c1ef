"""NetworkPolicies, evaluated for every pair of pods."""

from __future__ import annotations

import os

import pytest
import yaml

from .helpers import (
    K8S,
    OVERLAYS,
    Pod,
    _allowed,
    _allowed_paths,
    _config,
    _copy_k8s,
    _expected_paths,
    _find,
    _matches,
    _platform_pods,
    _policy_types,
    _write_kustomization,
)


def test_policy_evaluator_semantics():
    """The evaluator itself: no policy allows all; a selecting policy denies what it omits."""
    a = Pod("a", "ns", {"x": "1"}, {"http": 80})
    b = Pod("b", "ns", {"y": "2"}, {"http": 80})
    other = Pod("c", "other", {"x": "1"})
    assert _allowed([], b, a, 80)
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "d", "namespace": "ns"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not _allowed([deny], b, a, 80)
    allow = {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "ns"},
             "spec": {"podSelector": {"matchLabels": {"x": "1"}},
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"y": "2"}}}],
                                   "ports": [{"port": "http"}]}]}}
    assert _allowed([deny, allow], b, a, 80) and not _allowed([deny, allow], b, a, 81)
    assert not _allowed([deny, allow], other, a, 80)  # podSelector alone = same namespace
    egress = {"kind": "NetworkPolicy", "metadata": {"name": "e", "namespace": "ns"},
              "spec": {"podSelector": {"matchLabels": {"y": "2"}}, "policyTypes": ["Egress"]}}
    assert not _allowed([egress], b, a, 80)


@pytest.mark.parametrize("overlay", ["root", "local", "gpu"])
def test_network_policies_allow_exactly_the_intended_paths(overlay, rendered):
    objs = rendered[overlay]
    # the UI admits nobody unless the overlay publishes it (gpu: components/ui-ingress)
    ui_sources = {"ingress-controller"} if overlay == "gpu" else set()
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro"}, ui_sources=ui_sources)


def _admits_every_namespace(peer: dict) -> bool:
    if "ipBlock" in peer:
        return peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0")
    selector = peer.get("namespaceSelector")
    return selector is not None and not selector.get("matchLabels") and not selector.get("matchExpressions")


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_no_ingress_rule_admits_every_namespace(overlay, rendered):
    for policy in (o for o in rendered[overlay] if o["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress") or []:
            where = f"{overlay}: NetworkPolicy {policy['metadata']['name']}"
            assert rule.get("from"), f"{where}: an ingress rule without `from` admits everyone"
            assert not any(_admits_every_namespace(peer) for peer in rule["from"]), \
                f"{where} admits every namespace"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_pod_has_egress_rules_and_reaches_only_dns_beyond_the_platform(overlay, rendered):
    objs = rendered[overlay]
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    for pod in _platform_pods(objs):
        egress = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                  and "Egress" in _policy_types(p) and _matches(p["spec"]["podSelector"], pod.labels)]
        assert egress, f"{overlay}: pod {pod.name} has no egress policy (all egress allowed)"
        rules = [r for p in egress for r in p["spec"].get("egress") or []]
        assert all(r.get("to") for r in rules), f"{overlay}: {pod.name} may reach anything"
        outside = [peer for r in rules for peer in r["to"] if "namespaceSelector" in peer
                   or "ipBlock" in peer]
        assert outside, f"{overlay}: {pod.name} cannot resolve names (no DNS egress)"
        for peer in outside:  # the only destination outside the namespace: the cluster DNS
            assert peer.get("namespaceSelector") == {
                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, peer
            assert peer.get("podSelector") == {"matchLabels": {"k8s-app": "kube-dns"}}, peer


def test_existing_kfp_admits_pipeline_pods_of_the_kfp_namespace_only(rendered):
    objs = rendered["existing-kfp"]
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro", "pipeline@kubeflow"})
    # the namespace the runtime is rendered into is the one the policy admits
    runtime_namespaces = {o["metadata"]["namespace"] for o in objs
                          if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "pro-config"}
    policy = _find(objs, "NetworkPolicy", "mlflow-ingress")
    admitted = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert runtime_namespaces == set(admitted["values"]) == {"pro", "kubeflow"}
    assert _config(objs, "kubeflow") == _config(objs, "pro")


def test_pipeline_s3_access_component_opens_minio_to_pipelines_only(render, tmp_path):
    rel = os.path.relpath(K8S, tmp_path / "overlay")
    folder = _write_kustomization(tmp_path / "overlay", {
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/pipeline-s3-access"]})
    objs = render(folder)[1]
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro"}, {"pipeline@pro"})


def test_pipeline_s3_access_in_existing_kfp_covers_the_kfp_namespace(render, tmp_path):
    k8s = _copy_k8s(tmp_path)
    overlay = k8s / "overlays" / "existing-kfp" / "kustomization.yaml"
    body = yaml.safe_load(overlay.read_text())
    body["components"] = ["../../components/pipeline-s3-access"]  # as docs/deploy.md says
    overlay.write_text(yaml.safe_dump(body))
    objs = render(overlay.parent)[1]
    both = {"pipeline@pro", "pipeline@kubeflow"}
    assert _allowed_paths(objs) == _expected_paths(objs, both, both)
