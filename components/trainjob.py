"""A trainable stage across nodes: one Kubeflow Trainer v2 TrainJob per stage run (``num_nodes`` > 1).

The component (its KFP pod) uploads the stage's inputs and a :class:`pro_lib.distributed.StageSpec`
to S3/MinIO (``s3://$PRO_S3_BUCKET/trainjobs/<name>/``), creates a TrainJob on PRO's
TrainingRuntime (``pro-torch-distributed``, k8s/components/trainer: restricted security context, GPU
pool, the pipeline's ServiceAccount) whose trainer runs ``python -m pro_lib.launcher node --spec
<uri>`` on every node with the component's own image, streams node 0's log into the KFP task's log,
waits, downloads the output folder rank 0 uploaded, and fails the task with the TrainJob's reason.

Built with the Trainer API models (``kubeflow-trainer-api``, what the ``kubeflow`` SDK's TrainerClient
submits) and created through the Kubernetes API. The pod needs RBAC to create/get/watch TrainJobs and
read pods and their logs in its own namespace (k8s/components/trainer/rbac.yaml).

No kfp import here: :func:`build_trainjob` is tested offline against the TrainJob CRD schema.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from pro_lib.errors import ConfigError, ProError

log = logging.getLogger("pro.components.trainjob")

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
TRAINJOB_CRD = f"{PLURAL}.{GROUP}"
RUNTIME_KIND = "TrainingRuntime"
RUNTIME_NAME = "pro-torch-distributed"          # k8s/components/trainer/trainingruntime.yaml
GPU_RESOURCE = "nvidia.com/gpu"
# the environment every node gets, by reference (secrets never travel in the TrainJob's spec)
CONFIG_MAP = "pro-config"
CONFIG_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "PRO_S3_BUCKET")
SECRET_KEYS = {"pro-s3-credentials": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
               "pro-mlflow-pipeline": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
               "pro-hf-token": ("HF_TOKEN",)}
OPTIONAL_SECRETS = {"pro-mlflow-pipeline", "pro-hf-token"}


class TrainJobFailed(ProError, RuntimeError):
    """The TrainJob failed (the message carries its reason) or could not be created."""


def trainjob_name(stage: str) -> str:
    """A DNS-1035 name (TrainJob names become Service names): ``pro-<stage>-<8 hex>``, at most 40 characters."""
    return f"pro-{stage.replace('_', '-')}"[:31].rstrip("-") + "-" + uuid.uuid4().hex[:8]


def _env(extra: Mapping[str, str]) -> list:
    from kubeflow_trainer_api import models as m

    env = [m.IoK8sApiCoreV1EnvVar(name=k, value=str(v)) for k, v in sorted(extra.items())]
    env += [m.IoK8sApiCoreV1EnvVar(name=k, value_from=m.IoK8sApiCoreV1EnvVarSource(
        config_map_key_ref=m.IoK8sApiCoreV1ConfigMapKeySelector(name=CONFIG_MAP, key=k, optional=False)))
        for k in CONFIG_KEYS]
    for secret, keys in SECRET_KEYS.items():
        env += [m.IoK8sApiCoreV1EnvVar(name=k, value_from=m.IoK8sApiCoreV1EnvVarSource(
            secret_key_ref=m.IoK8sApiCoreV1SecretKeySelector(name=secret, key=k,
                                                              optional=secret in OPTIONAL_SECRETS)))
            for k in keys]
    return env


def build_trainjob(*, name: str, namespace: str, stage: str, image: str, spec_uri: str, num_nodes: int,
                   gpus_per_node: int = 0, cpu: str | None = None, memory: str | None = None,
                   env: Mapping[str, str] | None = None, runtime: str = RUNTIME_NAME,
                   active_deadline_seconds: int | None = None, labels: Mapping[str, str] | None = None) -> dict:
    """The TrainJob (a plain dict, as submitted) that runs ``stage`` on ``num_nodes`` nodes.

    One process per GPU on each node (``numProcPerNode`` = ``gpus_per_node``), or one CPU process per node
    without GPUs. The runtime supplies placement, security context and ServiceAccount; the job names its
    image, command, node count, per-node resources and environment."""
    from kubeflow_trainer_api import models as m

    if num_nodes < 2:
        raise ConfigError(f"a TrainJob is for num_nodes >= 2 (got {num_nodes}); one node trains in the KFP pod")
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if cpu:
        requests["cpu"] = str(cpu)
    if memory:
        requests["memory"] = limits["memory"] = str(memory)
    if gpus_per_node:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(int(gpus_per_node))
    q = m.IoK8sApimachineryPkgApiResourceQuantity
    requests = {k: q(v) for k, v in requests.items()}
    limits = {k: q(v) for k, v in limits.items()}
    trainer = m.TrainerV1alpha1Trainer(
        image=image, command=["python", "-m", "pro_lib.launcher", "node", "--spec", spec_uri],
        num_nodes=int(num_nodes), num_proc_per_node=max(1, int(gpus_per_node)),
        resources_per_node=m.IoK8sApiCoreV1ResourceRequirements(requests=requests or None, limits=limits or None),
        env=_env({"PRO_DIST_STAGE": stage, "PRO_HOME": "/tmp/pro", "PYTHONUNBUFFERED": "1", **dict(env or {})}))
    job = m.TrainerV1alpha1TrainJob(
        api_version=f"{GROUP}/{VERSION}", kind=KIND,
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=namespace,
            labels={"pro.ai/role": "pipeline", "pro.ai/stage": stage.replace("_", "-"), **dict(labels or {})}),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtime_ref=m.TrainerV1alpha1RuntimeRef(api_group=GROUP, kind=RUNTIME_KIND, name=runtime),
            trainer=trainer, active_deadline_seconds=active_deadline_seconds))
    return job.to_dict()


# ---------------------------------------------------------------------------------------------
# the cluster side
# ---------------------------------------------------------------------------------------------
def _k8s():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client


def own_namespace() -> str:
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return os.environ.get("PRO_NAMESPACE") or (p.read_text().strip() if p.is_file() else "pro")


def own_image(client) -> str:
    """The component's image: this pod's container image (the pipeline's ``image`` parameter)."""
    if os.environ.get("PRO_IMAGE"):
        return os.environ["PRO_IMAGE"]
    from components import DEFAULT_IMAGE

    try:
        pod = client.CoreV1Api().read_namespaced_pod(os.environ.get("HOSTNAME", ""), own_namespace())
        main = [c for c in pod.spec.containers if c.name == "main"] or pod.spec.containers
        return main[0].image
    except Exception as exc:  # noqa: BLE001 - fall back to the default image, said in the log
        log.warning("could not read this pod's image (%s); the TrainJob uses %s", exc, DEFAULT_IMAGE)
        return DEFAULT_IMAGE


def check_trainer_installed(client, namespace: str, runtime: str = RUNTIME_NAME) -> None:
    """A clear error at submit time (not a Pending pod) when Kubeflow Trainer or PRO's runtime is missing."""
    from kubernetes.client.rest import ApiException

    try:
        client.ApiextensionsV1Api().read_custom_resource_definition(TRAINJOB_CRD)
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigError(f"num_nodes > 1 needs Kubeflow Trainer v2 on the cluster, and the CRD {TRAINJOB_CRD} "
                              "is not installed; install Trainer (docs/deploy.md, 'Multi-node training') or run "
                              "with num_nodes=1") from None
        if exc.status != 403:  # without the right to read CRDs, the runtime lookup below still tells
            raise
    try:
        client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruntimes", runtime)
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigError(f"TrainingRuntime {namespace}/{runtime} not found: apply PRO's trainer component "
                              "(k8s/components/trainer, docs/deploy.md 'Multi-node training') or run with "
                              "num_nodes=1") from None
        raise


def trainjob_state(obj: Mapping[str, Any]) -> tuple[str | None, str]:
    """("Complete" | "Failed" | None, reason) from a TrainJob's status conditions."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"], f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")
    return None, ""


def _stream_node0(client, namespace: str, name: str, stop_after: float) -> None:
    """Copy node 0's log into this task's log until it ends (best effort)."""
    core = client.CoreV1Api()
    deadline = time.time() + stop_after
    while time.time() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={name}").items
        pods = sorted((p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")),
                      key=lambda p: p.metadata.name)
        if pods:
            try:
                for line in core.read_namespaced_pod_log(pods[0].metadata.name, namespace, container="node",
                                                         follow=True, _preload_content=False).stream():
                    print(line.decode(errors="replace"), end="", flush=True)
            except Exception as exc:  # noqa: BLE001 - the job's state decides success, not the log stream
                log.warning("log stream of %s ended: %s", pods[0].metadata.name, exc)
            return
        time.sleep(3)


def run_trainjob(stage: str, spec, *, num_nodes: int, gpus_per_node: int, cpu: str | None = None,
                 memory: str | None = None, timeout: float = 7 * 24 * 3600, poll: float = 10.0) -> dict:
    """Upload inputs, submit the TrainJob, stream, wait; download the outputs and return rank 0's metrics."""
    import threading

    from pro_lib import storage

    client = _k8s()
    namespace = own_namespace()
    check_trainer_installed(client, namespace)
    name = trainjob_name(stage)
    bucket = os.environ.get("PRO_S3_BUCKET") or "pro"
    prefix = f"s3://{bucket}/trainjobs/{name}"
    inputs, outputs, locals_ = staged_inputs(spec.config)
    uploaded = {}
    for key, value in inputs.items():
        paths = value if isinstance(value, list) else [value]
        uris = [storage.upload(p, f"{prefix}/inputs/{key}/{i}/{Path(p).name}") for i, p in enumerate(paths)]
        uploaded[key] = uris if isinstance(value, list) else uris[0]
    spec.inputs = uploaded
    spec.outputs = {k: f"{prefix}/outputs/{k}" for k in outputs}
    spec.result = f"{prefix}/result.json"
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "spec.json").write_text(spec.to_json())
        spec_uri = storage.upload(Path(d) / "spec.json", f"{prefix}/spec.json")
    body = build_trainjob(name=name, namespace=namespace, stage=stage, image=own_image(client), spec_uri=spec_uri,
                          num_nodes=num_nodes, gpus_per_node=gpus_per_node, cpu=cpu, memory=memory)
    api = client.CustomObjectsApi()
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    print(f"TrainJob {namespace}/{name}: {num_nodes} nodes x {max(1, gpus_per_node)} processes", flush=True)
    threading.Thread(target=_stream_node0, args=(client, namespace, name, timeout), daemon=True).start()
    t0 = time.time()
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state, reason = trainjob_state(obj)
        if state == "Complete":
            break
        if state == "Failed":
            raise TrainJobFailed(f"stage '{stage}': TrainJob {namespace}/{name} failed: {reason}. Re-run the "
                                 "pipeline to resume from the stage's last checkpoint.")
        if time.time() - t0 > timeout:
            raise TrainJobFailed(f"stage '{stage}': TrainJob {namespace}/{name} did not finish in {timeout:.0f} s")
        time.sleep(poll)
    for key, local in locals_.items():
        storage.download(spec.outputs[key], dest=Path(local), refresh=True)
    return json.loads(storage.download(spec.result, refresh=True).read_text())


def staged_inputs(config: Mapping[str, Any]) -> tuple[dict, list[str], dict]:
    """Which config fields a TrainJob node must download (existing local files/folders, except the
    output folder) and which it uploads back (``output_dir``)."""
    inputs: dict[str, Any] = {}
    for key, value in config.items():
        if key == "output_dir":
            continue
        if isinstance(value, str) and value and Path(value).exists():
            inputs[key] = value
        elif isinstance(value, Sequence) and not isinstance(value, str) and value and all(
                isinstance(v, str) and Path(v).exists() for v in value):
            inputs[key] = list(value)
    outputs = ["output_dir"] if config.get("output_dir") else []
    return inputs, outputs, {k: config[k] for k in outputs}
