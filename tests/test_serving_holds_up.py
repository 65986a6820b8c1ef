"""Serving that holds up (issue 24, item 5): PRO's own message in a 400 without a stack trace (served by
`mlflow models serve` from a real `mlflow server`), OpenAI-style ``max_tokens`` honoured, every model in
memory before the server says it is ready, torch threads from the container's CPU limit."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from platform_services import (  # noqa: F401  (fixtures)
    mlflow_server, s3_endpoint, serve_model, stop_server)
from pro_lib import serving
from pro_lib.errors import DataError
from test_serving import registered, tiny_models  # noqa: F401  (module fixture: tiny models on a real server)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_input_is_a_400_with_pros_message_and_max_tokens_is_honoured(registered, tmp_path):  # noqa: F811
    proc, url = serve_model({**registered["env"], "PRO_HOME": str(tmp_path / "serve")}, tmp_path)
    try:
        status, body = _post(url, {"dataframe_records": [{"prompt": "  "}]})
        assert status == 400, body
        assert "row 0: 'prompt' must be non-empty text" in body["message"]
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in body
        status, body = _post(url, {"dataframe_records": [{"prompt": "Hi", "weights": [0.5, 0.3, 0.2]}]})
        assert status == 400 and "'weights' must be 2 non-negative numbers" in body["message"], body
        # max_tokens (OpenAI's name) reaches the model: honoured, and checked like max_new_tokens
        status, body = _post(url, {"dataframe_records": [{"prompt": "Hi"}], "params": {"max_tokens": 0}})
        assert status == 400 and "max_new_tokens must be >= 1" in body["message"], body
        status, body = _post(url, {"dataframe_records": [{"prompt": "Hi"}], "params": {"max_tokens": 2,
                                                                                        "score": False}})
        assert status == 200 and len(body["predictions"]) == 1, body
    finally:
        stop_server(proc)


def test_generation_params():
    assert serving._gen_kwargs({"max_tokens": 7})["max_new_tokens"] == 7
    assert serving._gen_kwargs({})["max_new_tokens"] == serving.GEN_PARAMS["max_new_tokens"][1]
    assert serving._gen_kwargs({"max_tokens": 7, "max_new_tokens": 64})["max_new_tokens"] == 7  # 64: the default
    with pytest.raises(DataError, match="disagree"):
        serving._gen_kwargs({"max_tokens": 7, "max_new_tokens": 8})
    with pytest.raises(DataError, match="unknown generation parameter"):
        serving._gen_kwargs({"max_lenght": 7})


def test_the_endpoint_loads_every_reward_model_before_it_is_ready(registered):  # noqa: F811
    ep = serving.Endpoint(registered["dirs"]["endpoint"])
    assert sorted(ep.suite._scorers) == ["harmless", "helpful"]


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
