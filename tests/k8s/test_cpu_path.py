"""The CPU-only path of docs/deploy.md: the local overlay asks for no GPU (test_gpu.py) and the
pipeline parameters file it documents is valid for the orchestrator pipeline and drops the GPU."""

from __future__ import annotations

import re

import pytest
import yaml

from .helpers import K8S, REPO

PARAMS = K8S / "overlays" / "local" / "pipeline-cpu.yaml"


def test_cpu_pipeline_parameters_are_valid_and_need_no_gpu():
    pytest.importorskip("kfp", reason="the platform extra is not installed")
    from pipelines import load_pipeline
    from pipelines.cli import pipeline_defaults

    params = yaml.safe_load(PARAMS.read_text())
    defaults = pipeline_defaults(load_pipeline("orchestrator"))
    assert set(params) <= set(defaults), set(params) - set(defaults)
    assert params["gpu_count"] == 0 and params["gpu_node_selector"] == {}
    for key in ("gpu_memory_request", "memory_request"):
        assert int(re.match(r"(\d+)Gi$", params[key]).group(1)) <= 4, key  # fits a kind node
    # the models stay the bundled small ones the pipeline defaults to
    assert not {"reward_config", "orchestrator_config", "data_config"} & set(params)
    assert defaults["orchestrator_config"]["backbone"] == "minilm"


def test_deploy_docs_walk_through_the_cpu_path_and_the_missing_steps():
    text = (REPO / "docs" / "deploy.md").read_text()
    for needle in ("kubectl apply -k k8s/namespace", "kind create cluster", "kind load docker-image",
                   "--params-file k8s/overlays/local/pipeline-cpu.yaml", "KFP_TOKEN",
                   "found multiple objects", "namespace: kubeflow, behavior: replace",
                   "kubectl apply -k k8s/restore", "kubectl delete -k k8s/namespace",
                   "--image registry.example.com", "PRO_UI_ALLOW_PROMOTION", "pro-serving",
                   "scripts/checkov.sh"):
        assert needle in text, f"docs/deploy.md does not mention {needle!r}"
