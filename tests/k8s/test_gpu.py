"""GPU scheduling: the pool's label and taint, from one source."""

from __future__ import annotations

import pytest

from .helpers import (
    CONTRACT_POOL_LABEL,
    CONTRACT_TAINT,
    GPU_RESOURCE,
    OVERLAYS,
    _containers,
    _copy_k8s,
    _find,
    _pod_spec,
    _workloads,
)


def _gpu_pod_specs(objs):
    for obj in _workloads(objs):
        spec = _pod_spec(obj)
        if any(GPU_RESOURCE in c.get("resources", {}).get("limits", {}) for c in _containers(spec)):
            yield obj, spec


def _schedules_on_pool(spec, label: tuple[str, str]) -> bool:
    key, value = label
    if spec.get("nodeSelector", {}).get(key) == value:
        return True
    terms = (spec.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    # every alternative term must pin the pool, or the pod could land elsewhere
    return bool(terms) and all(
        any(e["key"] == key and e["operator"] == "In" and e["values"] == [value]
            for e in term.get("matchExpressions", []))
        for term in terms)


def _tolerates(spec, taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for t in spec.get("tolerations", []):
        if t.get("effect") not in (None, "", effect):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, key):
            return True
        if t.get("operator", "Equal") == "Equal" and t.get("key") == key and t.get("value") == value:
            return True
    return False


def _pool(objs) -> tuple[tuple[str, str], tuple[str, str, str]]:
    data = _find(objs, "ConfigMap", "pro-gpu-pool")["data"]
    return ((data["GPU_NODE_LABEL_KEY"], data["GPU_NODE_LABEL_VALUE"]),
            (data["GPU_TAINT_KEY"], data["GPU_TAINT_VALUE"], data["GPU_TAINT_EFFECT"]))


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_gpu_workloads_select_the_pool_and_tolerate_its_taint(overlay, rendered):
    objs = rendered[overlay]
    gpu = list(_gpu_pod_specs(objs))
    if overlay != "gpu":
        assert not gpu, f"{overlay} must not ask for GPUs (kind/minikube have none)"
        return
    label, taint = _pool(objs)
    assert (label, taint) == (CONTRACT_POOL_LABEL, CONTRACT_TAINT)  # the documented defaults
    assert sorted(o["metadata"]["name"] for o, _ in gpu) == ["pro-serving", "pro-ui"]
    for obj, spec in gpu:
        assert _schedules_on_pool(spec, label), f"{obj['metadata']['name']} may leave the pool"
        assert _tolerates(spec, taint), f"{obj['metadata']['name']} does not tolerate {taint}"
        (c,) = [c for c in spec["containers"] if GPU_RESOURCE in c["resources"].get("limits", {})]
        assert c["image"].endswith("-cuda"), "the GPU UI must run the CUDA build of the image"
    # nothing else lands on (or tolerates) the expensive pool
    for obj in _workloads(objs):
        if obj["metadata"]["name"] not in ("pro-ui", "pro-serving"):
            assert not _tolerates(_pod_spec(obj), taint), obj["metadata"]["name"]


def test_gpu_pool_parameters_are_the_single_source(render, tmp_path):
    k8s = _copy_k8s(tmp_path)
    env = k8s / "overlays" / "gpu" / "gpu-pool.env"
    env.write_text("GPU_NODE_LABEL_KEY=cloud.google.com/gke-nodepool\nGPU_NODE_LABEL_VALUE=a100\n"
                   "GPU_TAINT_KEY=dedicated\nGPU_TAINT_VALUE=ml\nGPU_TAINT_EFFECT=NoExecute\n")
    objs = render(env.parent)[1]
    label, taint = _pool(objs)
    assert label == ("cloud.google.com/gke-nodepool", "a100")
    assert taint == ("dedicated", "ml", "NoExecute")
    specs = [spec for _, spec in _gpu_pod_specs(objs)]
    assert len(specs) == 2  # the explorer and the serving endpoint
    for spec in specs:
        assert _schedules_on_pool(spec, label) and _tolerates(spec, taint)
        assert not _schedules_on_pool(spec, CONTRACT_POOL_LABEL)
