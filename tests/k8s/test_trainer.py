"""Multi-node training on Kubeflow Trainer v2 (k8s/components/trainer, components/trainjob.py), offline:

- the rendered TrainingRuntime validates against Trainer v2.3.0's CRD schema made strict (an unknown
  field anywhere fails), has the restricted security context and the GPU pool placement of the other
  GPU stages (pipelines/scheduling.py);
- its RBAC lets only the pipelines' ServiceAccount create / watch TrainJobs, in its own namespace;
- the TrainJob the component would submit validates against the TrainJob CRD schema, field by field,
  names this runtime, and carries secrets only by reference;
- a cluster without Trainer is a clear error at submit time.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from .helpers import K8S, MIN_K8S_VERSION, _find, _validate_strict

OVERLAY = K8S / "overlays" / "gpu-trainer"
CRDS = K8S / "components" / "trainer" / "crds"
NS = "pro"


def _strict(schema):
    """A CRD's structural schema, with every object closed (the API server prunes unknown fields;
    here they are errors), except where the CRD says x-kubernetes-preserve-unknown-fields."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get(
                    "x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(schema)
    # metadata is the API server's ObjectMeta, not part of the CRD's schema
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def _crd_validator(kind: str):
    jsonschema = pytest.importorskip("jsonschema")
    plural = {"TrainJob": "trainjobs", "TrainingRuntime": "trainingruntimes"}[kind]
    crd = yaml.safe_load((CRDS / f"trainer.kubeflow.org_{plural}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _errors(validator, obj) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.fixture(scope="module")
def objs(kubectl):
    from .helpers import _kustomize, _objects

    return _objects(_kustomize(kubectl, OVERLAY))


def _runtime(objs):
    return _find(objs, "TrainingRuntime", "pro-torch-distributed", NS)


def test_training_runtime_validates_against_the_trainer_crd(objs):
    validator = _crd_validator("TrainingRuntime")
    runtime = _runtime(objs)
    assert _errors(validator, runtime) == []
    broken = copy.deepcopy(runtime)  # the strict schema really rejects a typo
    broken["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["backoffLimitt"] = 0
    assert any("backoffLimitt" in e for e in _errors(validator, broken))


def test_the_rest_passes_kubernetes_validate_strict(objs, validator, tmp_path):
    core = [o for o in objs if o["kind"] != "TrainingRuntime"]
    out = tmp_path / "trainer.yaml"
    out.write_text(yaml.safe_dump_all(core))
    for version in (validator.utils.latest_version(), MIN_K8S_VERSION):
        rc, messages = _validate_strict(validator, out, version)
        assert rc == 0, messages


def test_runtime_pods_are_restricted_and_placed_on_the_gpu_pool(objs):
    from pipelines.scheduling import GPU_POOL_KEY, GPU_POOL_VALUE, GPU_RESOURCE

    runtime = _runtime(objs)
    assert runtime["spec"]["mlPolicy"]["torch"] == {}  # torchrun on every node (PET_* variables)
    job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert job["name"] == "node" and job["template"]["spec"]["backoffLimit"] == 0
    assert runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == 0
    pod = job["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["pro.ai/role"] == "pipeline"  # MLflow / MinIO admit it
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "pro-trainjob" and spec["automountServiceAccountToken"] is False
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["nodeSelector"] == {GPU_POOL_KEY: GPU_POOL_VALUE}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (c,) = spec["containers"]
    assert c["name"] == "node"  # components/trainjob.py streams the container named node
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
    assert csc["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/dev/shm"}


def test_only_the_pipeline_service_account_may_create_trainjobs_in_its_namespace(objs):
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")
                and "trainjob" in o["metadata"]["name"]]
    role = _find(objs, "Role", "pro-trainjob-submitter", NS)
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}
    assert rules[("trainer.kubeflow.org", "trainjobs")] == {"create", "get", "list", "watch", "delete"}
    assert rules[("trainer.kubeflow.org", "trainingruntimes")] == {"get"}
    assert all("*" not in verbs and "*" not in key for key, verbs in rules.items())
    binding = _find(objs, "RoleBinding", "pro-trainjob-submitter", NS)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "pro-trainjob-submitter"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pro-pipeline-runner", "namespace": NS}]
    # the training pods' account has no binding at all
    assert not [b for b in objs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s.get("name") == "pro-trainjob" for s in b.get("subjects", []))]


def test_component_builds_a_trainjob_that_the_crd_accepts(objs):
    pytest.importorskip("kubeflow_trainer_api")
    from components.trainjob import RUNTIME_NAME, build_trainjob, trainjob_name

    name = trainjob_name("train_reward_model")
    assert len(name) <= 40 and name.startswith("pro-train-reward-model-")
    job = build_trainjob(name=name, namespace=NS, stage="train_reward_model",
                         image="ghcr.io/pro-align/pro-components:0.1.0", spec_uri=f"s3://pro/trainjobs/{name}/spec.json",
                         num_nodes=2, gpus_per_node=8, cpu="8", memory="48Gi")
    validator = _crd_validator("TrainJob")
    assert _errors(validator, job) == []
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["namespace"] == _runtime(objs)["metadata"]["namespace"]
    ref = job["spec"]["runtimeRef"]
    assert ref == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": RUNTIME_NAME}
    assert RUNTIME_NAME == _runtime(objs)["metadata"]["name"]
    t = job["spec"]["trainer"]
    assert (t["numNodes"], t["numProcPerNode"]) == (2, 8)
    assert t["command"][:5] == ["python", "-m", "pro_lib.launcher", "node", "--spec"]
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e for e in t["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["key"] == key
    # a field the CRD does not know is rejected (the check is real)
    broken = copy.deepcopy(job)
    broken["spec"]["trainer"]["numNode"] = 2
    assert any("numNode" in e for e in _errors(validator, broken))
    from pro_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="num_nodes >= 2"):
        build_trainjob(name=name, namespace=NS, stage="x", image="i", spec_uri="s3://b/k", num_nodes=1)


class _Missing:
    """A Kubernetes client whose API server has no Trainer CRDs (404 on every lookup)."""

    def __init__(self, status=404):
        from kubernetes.client.rest import ApiException

        self.exc = ApiException(status=status, reason="Not Found")

    def ApiextensionsV1Api(self):
        outer = self

        class Api:
            def read_custom_resource_definition(self, name):
                raise outer.exc

        return Api()

    def CustomObjectsApi(self):
        outer = self

        class Api:
            def get_namespaced_custom_object(self, *a, **k):
                raise outer.exc

        return Api()


def test_num_nodes_without_trainer_is_a_clear_submit_time_error():
    from components.trainjob import check_trainer_installed, trainjob_state
    from pro_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs Kubeflow Trainer v2.*trainjobs.trainer.kubeflow.org.*num_nodes=1"):
        check_trainer_installed(_Missing(), NS)
    assert trainjob_state({"status": {"conditions": [
        {"type": "Created", "status": "True"},
        {"type": "Failed", "status": "True", "reason": "JobsFailed", "message": "jobset node-1 failed"}]}}) == (
        "Failed", "JobsFailed: jobset node-1 failed")
    assert trainjob_state({"status": {}}) == (None, "")


def test_vendored_crds_are_trainer_v2_3_schemas():
    for f in sorted(CRDS.glob("*.yaml")):
        text = Path(f).read_text()
        assert "Kubeflow Trainer v2.3.0" in text.splitlines()[0]
        crd = yaml.safe_load(text)
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "trainer.kubeflow.org"
