"""How PRO tasks are scheduled on a cluster (kfp + kfp-kubernetes); ignored by the local runner.

- every task: the image from the pipeline's ``image`` parameter, CPU and memory requests, the
  ``pro-config`` ConfigMap, the ``pro-s3-credentials`` Secret and (optional) the pipelines' MLflow
  user from ``pro-mlflow-pipeline`` as environment (secrets never travel
  as pipeline parameters), pod label ``pro.ai/role=pipeline``, and ``PRO_KFP_RUN`` (the Argo
  workflow name, via the downward API) so stages find their MLflow parent run without a per-run
  input that would defeat caching;
- GPU stages: ``nvidia.com/gpu`` with a configurable count, a node selector for the GPU pool
  (pipeline parameter, default ``pro.ai/pool=gpu``) and the usual ``nvidia.com/gpu`` NoSchedule
  toleration;
- CPU stages: a required node affinity *away* from the GPU pool (``pro.ai/pool NotIn [gpu]``), on
  top of the GPU taint they do not tolerate;
- caching: on for deterministic stages, off for sampling/RL and for registry side effects.

GPU or CPU and caching are not chosen at the call sites: :class:`Placement` reads them from the one
stage table (``components.runtime.STAGES``: ``Stage.gpu``, ``Stage.deterministic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfp import kubernetes
from kfp.dsl import pipeline_channel

from components import DEFAULT_IMAGE

GPU_RESOURCE = "nvidia.com/gpu"
GPU_POOL_KEY = "pro.ai/pool"
GPU_POOL_VALUE = "gpu"
CONFIG_MAP = "pro-config"
CONFIG_KEYS = ["MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "PRO_S3_BUCKET"]
S3_SECRET = "pro-s3-credentials"
S3_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
HF_SECRET = "pro-hf-token"      # optional: a Hugging Face token for gated hub models
MLFLOW_SECRET = "pro-mlflow-pipeline"  # the pipelines' MLflow user (k8s/: MLflow's basic auth)
MLFLOW_KEYS = ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
ARGO_WORKFLOW_LABEL = "metadata.labels['workflows.argoproj.io/workflow']"

DEFAULT_GPU_POOL = {GPU_POOL_KEY: GPU_POOL_VALUE}
# The scheduling parameters of every pipeline (the same names in each compiled YAML) and their defaults,
# defined here only. KFP 2.17 builds a pipeline's inputs from its function's signature (each parameter
# named, with a type and a default), so each pipeline function lists these names with
# ``PLACEMENT_DEFAULTS[...]`` as defaults and builds its Placement with ``Placement.of(params, ...)``.
PLACEMENT_DEFAULTS: dict[str, Any] = {
    "image": DEFAULT_IMAGE, "gpu_count": 1, "gpu_node_selector": DEFAULT_GPU_POOL,
    "gpu_cpu_request": "4", "gpu_memory_request": "24Gi", "cpu_request": "1", "memory_request": "4Gi",
    # nodes each trainable stage spans (> 1: a Kubeflow Trainer TrainJob; components.runtime.call_stage)
    "num_nodes": 1}
# pipelines that train an LLM policy ask more of a GPU node
POLICY_PLACEMENT_DEFAULTS: dict[str, Any] = {**PLACEMENT_DEFAULTS, "gpu_cpu_request": "8", "gpu_memory_request": "48Gi"}


def _register_channels(task, *values) -> None:
    """Resource setters in kfp 2.17 do not register the pipeline parameters they use, so inside a
    ParallelFor those parameters never reach the loop's sub-DAG (the run fails with "input
    argument 'pipelinechannel--gpu_count' not found"). Register them as task inputs explicitly."""
    channels = [v for v in values if isinstance(v, pipeline_channel.PipelineChannel)]
    if channels:
        task.register_pipeline_channels(channels)


def _common(task, *, image, pipeline: str, cpu, memory, cache: bool):
    task.set_container_image(image)
    task.set_cpu_request(cpu)
    task.set_memory_request(memory)
    _register_channels(task, cpu, memory)
    task.set_caching_options(enable_caching=cache)
    task.set_env_variable("PRO_PIPELINE", pipeline)
    task.set_env_variable("PRO_HOME", "/tmp/pro")
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, {k: k for k in CONFIG_KEYS})
    kubernetes.use_secret_as_env(task, S3_SECRET, {k: k for k in S3_KEYS})
    kubernetes.use_secret_as_env(task, HF_SECRET, {"HF_TOKEN": "HF_TOKEN"}, optional=True)
    # optional: an MLflow without authentication needs no user
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {k: k for k in MLFLOW_KEYS}, optional=True)
    kubernetes.use_field_path_as_env(task, "PRO_KFP_RUN", ARGO_WORKFLOW_LABEL)
    kubernetes.add_pod_label(task, "pro.ai/role", "pipeline")
    return task


def gpu_stage(task, *, image, pipeline: str, gpu_count, node_selector, cpu, memory, cache: bool):
    """A GPU stage: GPUs, the GPU pool's node selector and the nvidia.com/gpu toleration."""
    _common(task, image=image, pipeline=pipeline, cpu=cpu, memory=memory, cache=cache)
    task.set_accelerator_type(GPU_RESOURCE)
    task.set_accelerator_limit(gpu_count)
    _register_channels(task, gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    return task


def cpu_stage(task, *, image, pipeline: str, cpu, memory, cache: bool):
    """A CPU stage: kept off the GPU pool by a required node anti-affinity."""
    _common(task, image=image, pipeline=pipeline, cpu=cpu, memory=memory, cache=cache)
    kubernetes.add_node_affinity(task, match_expressions=[
        {"key": GPU_POOL_KEY, "operator": "NotIn", "values": [GPU_POOL_VALUE]}])
    return task


def stage_of(task):
    """The stage-table entry of a pipeline task (by its component's name)."""
    from components.runtime import STAGES

    name = task.component_spec.name.replace("-", "_")
    if name not in STAGES:
        raise KeyError(f"component {task.component_spec.name!r} has no entry in components.runtime.STAGES; "
                       "add one (GPU or not, deterministic or not)")
    return STAGES[name]


@dataclass(frozen=True)
class Placement:
    """A pipeline's scheduling parameters; ``place(task)`` puts the task on the GPU or CPU pool and sets
    its caching as the stage table says. Values may be pipeline parameters (channels)."""

    image: Any
    pipeline: str
    gpu_count: Any
    gpu_node_selector: Any
    gpu_cpu_request: Any
    gpu_memory_request: Any
    cpu_request: Any
    memory_request: Any
    num_nodes: Any = 1

    @classmethod
    def of(cls, params: dict[str, Any], pipeline: str) -> "Placement":
        """The placement of a pipeline whose parameters (``dict(locals())`` at the top of the pipeline
        function) include the keys of :data:`PLACEMENT_DEFAULTS`."""
        return cls(pipeline=pipeline, **{k: params[k] for k in PLACEMENT_DEFAULTS})

    def __call__(self, task):
        stage = stage_of(task)
        if stage.gpu:
            return gpu_stage(task, image=self.image, pipeline=self.pipeline, gpu_count=self.gpu_count,
                             node_selector=self.gpu_node_selector, cpu=self.gpu_cpu_request,
                             memory=self.gpu_memory_request, cache=stage.deterministic)
        return cpu_stage(task, image=self.image, pipeline=self.pipeline, cpu=self.cpu_request,
                         memory=self.memory_request, cache=stage.deterministic)
