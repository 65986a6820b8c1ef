"""The CPU-only path of docs/deploy.md: the local overlay asks for no GPU (test_gpu.py) and the
pipeline parameters file it documents is valid for the orchestrator pipeline and drops the GPU."""

from __future__ import annotations

import re

import yaml

from .helpers import K8S, REPO

PARAMS = K8S / "overlays" / "local" / "pipeline-cpu.yaml"


def test_cpu_pipeline_parameters_are_valid_and_need_no_gpu():
    """Checked against the compiled pipeline that `pro pipeline submit` sends (types included)."""
    params = yaml.safe_load(PARAMS.read_text())
    spec = next(yaml.safe_load_all((REPO / "pipelines" / "orchestrator.yaml").read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) <= set(inputs), set(params) - set(inputs)
    types = {"NUMBER_INTEGER": int, "STRUCT": dict, "STRING": str}
    for key, value in params.items():
        assert isinstance(value, types[inputs[key]["parameterType"]]), key
    assert params["gpu_count"] == 0 and params["gpu_node_selector"] == {}
    for key in ("gpu_memory_request", "memory_request"):
        assert int(re.match(r"(\d+)Gi$", params[key]).group(1)) <= 4, key  # fits a kind node
    # the models stay the bundled small ones the pipeline defaults to
    assert not {"reward_config", "orchestrator_config", "data_config"} & set(params)
    assert inputs["orchestrator_config"]["defaultValue"]["backbone"] == "minilm"
    assert inputs["reward_config"]["defaultValue"]["base_model"] == "minilm"
