"""Every container: resources, probes, the restricted security context; Services and ports."""

from __future__ import annotations

import re

import pytest

from .helpers import (
    NAMESPACE_FOLDER,
    OVERLAYS,
    _containers,
    _find,
    _matches,
    _pod_labels,
    _pod_spec,
    _workloads,
)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_container_has_requests_limits_probes_and_a_hardened_context(overlay, rendered):
    workloads = _workloads(rendered[overlay])
    assert {o["metadata"]["name"] for o in workloads} >= {"mlflow", "pro-ui", "postgres", "minio",
                                                          "minio-setup"}
    for obj in workloads:
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        spec = _pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{where}: API token mounted"
        # Service links would inject MLFLOW_PORT=tcp://... & co. (a Service is named `mlflow`)
        assert spec.get("enableServiceLinks") is False, f"{where}: enableServiceLinks not off"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in _containers(spec):
            cw = f"{where} container {c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{cw}: no cpu/memory {kind}"
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True, f"{cw}: runAsNonRoot not set"
            assert sc.get("runAsUser", 1) != 0, f"{cw}: runs as uid 0"
            assert sc.get("allowPrivilegeEscalation") is False, f"{cw}: privilege escalation"
            assert not sc.get("privileged"), f"{cw}: privileged"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: caps not dropped"
            assert not sc.get("capabilities", {}).get("add"), f"{cw}: adds capabilities"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cw}: seccomp"
            assert sc.get("readOnlyRootFilesystem") is True, f"{cw}: writable root filesystem"
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{cw}: no emptyDir at /tmp"
            image = c["image"]
            assert re.search(r"^[\w.-]+\.[\w.-]+(:\d+)?/", image), f"{cw}: unqualified {image}"
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), \
                f"{cw}: image {image} has no pinned tag"
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports:  # a server: it must say when it is ready and when it is wedged
                for probe in ("readinessProbe", "livenessProbe"):
                    assert probe in c, f"{cw}: server without {probe}"
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    assert port is None or port in ports or port in ports.values(), \
                        f"{cw}: {probe} targets unknown port {port}"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_namespace_enforces_restricted_and_is_outside_the_deletable_set(overlay, rendered, render):
    """k8s/namespace enforces "restricted" (every pod meets it: previous test); no overlay holds
    the Namespace or the backup PVC, so `kubectl delete -k <overlay>` keeps the data."""
    ns_objs = render(NAMESPACE_FOLDER)[1]
    labels = _find(ns_objs, "Namespace", "pro", None)["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    _find(ns_objs, "PersistentVolumeClaim", "pro-backups")
    kept = {(o["kind"], o["metadata"]["name"]) for o in ns_objs}
    objs = rendered[overlay]
    assert not [o for o in objs if (o["kind"], o["metadata"]["name"]) in kept]
    assert not [o for o in objs if o["kind"] in ("Namespace", "PersistentVolumeClaim")]
    for sts in (o for o in objs if o["kind"] == "StatefulSet"):  # data outlives the StatefulSet
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain", "whenScaled": "Retain"}
    claims = {v["persistentVolumeClaim"]["claimName"] for o in _workloads(objs)
              for v in _pod_spec(o).get("volumes", []) if "persistentVolumeClaim" in v}
    assert claims <= {o["metadata"]["name"] for o in ns_objs if o["kind"] == "PersistentVolumeClaim"}


def test_services_target_declared_container_ports(rendered):
    objs = rendered["root"]
    for svc in (o for o in objs if o["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        pods = [w for w in _workloads(objs) if _matches({"matchLabels": sel}, _pod_labels(w))]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} workloads"
        ports = {p["name"]: p["containerPort"] for c in _pod_spec(pods[0])["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in ports or target in ports.values(), \
                f"Service {svc['metadata']['name']} targets undeclared port {target}"
