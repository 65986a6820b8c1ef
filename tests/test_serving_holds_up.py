"""Serving that holds up (issue 24, item 5): OpenAI-style ``max_tokens`` honoured, torch threads from the
container's CPU limit. The served checks (PRO's 400 message, readiness) are in tests/test_serving.py."""

from __future__ import annotations

import os

import pytest

from pro_lib import serving
from pro_lib.errors import DataError


def test_generation_params():
    assert serving._gen_kwargs({"max_tokens": 7})["max_new_tokens"] == 7
    assert serving._gen_kwargs({})["max_new_tokens"] == serving.GEN_PARAMS["max_new_tokens"][1]
    assert serving._gen_kwargs({"max_tokens": 7, "max_new_tokens": 64})["max_new_tokens"] == 7  # 64: the default
    with pytest.raises(DataError, match="disagree"):
        serving._gen_kwargs({"max_tokens": 7, "max_new_tokens": 8})
    with pytest.raises(DataError, match="unknown generation parameter"):
        serving._gen_kwargs({"max_lenght": 7})


def test_torch_threads_follow_the_container_cpu_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("PRO_SERVING_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")   # resources.limits.cpu: 1500m
    assert serving.container_cpu_limit(cpu_max) == 1.5
    assert serving.serving_threads(cpu_max) == min(cores, 2)
    cpu_max.write_text("max 100000\n")      # no limit: the cores this process may use
    assert serving.container_cpu_limit(cpu_max) is None or os.path.exists(serving.CGROUP_V1_QUOTA)
    monkeypatch.setenv("PRO_SERVING_THREADS", "3")
    assert serving.serving_threads(cpu_max) == 3


def test_recorded_requirements_name_the_torch_index_of_a_cpu_build(tmp_path, tiny_encoder_dir):
    from importlib import metadata

    from pro_lib import packaging
    from pro_lib.orchestrator import PreferenceOrchestrator

    def versions(torch: str):
        return lambda pkg: torch if pkg == "torch" else metadata.version(pkg)

    cpu = packaging.pip_requirements(versions("2.13.0+cpu"))
    assert cpu[0] == "--extra-index-url https://download.pytorch.org/whl/cpu" and "torch==2.13.0" in cpu
    assert packaging.pip_requirements(versions("2.13.0+cu126"))[0].endswith("/whl/cu126")
    assert not [r for r in packaging.pip_requirements(versions("2.13.0")) if r.startswith("--")]  # PyPI's build
    # a model saved from this environment records what its torch is
    PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), ["a", "b"], max_length=16).save_pretrained(
        tmp_path / "orch")
    packaging.save_pyfunc(tmp_path / "orch", tmp_path / "mlmodel")
    lines = (tmp_path / "mlmodel" / "requirements.txt").read_text().splitlines()
    local = metadata.version("torch").partition("+")[2]
    has_index = f"--extra-index-url https://download.pytorch.org/whl/{local}" in lines
    assert has_index == (local == "cpu" or local.startswith(("cu", "rocm"))), lines
    assert f"torch=={metadata.version('torch').partition('+')[0]}" in lines
