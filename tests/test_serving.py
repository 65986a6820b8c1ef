"""Registered models are MLflow pyfunc models; `pro-endpoint` is served by `mlflow models serve`.

Against a real `mlflow server` whose artifacts go to an S3-compatible server (moto): every kind is
registered, then loaded through the mlflow API alone in a fresh process; the endpoint is served for
real on a loopback port and queried over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.services import FAKE_KEYS, serve_model, stop_server
from pro_lib import packaging, promotion, registry, serving
from pro_lib.errors import CheckpointError, ConfigError

NAMES = ["helpful", "harmless"]
REPO = Path(__file__).resolve().parents[1]


def tiny_models(root: Path, tiny_encoder_dir: Path, tiny_reward_dir: Path) -> dict[str, Path]:
    """Orchestrator, two reward models + their suite, a WIC policy and the endpoint folder (tiny)."""
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.testing import build_tiny_policy

    PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), NAMES, max_length=32).save_pretrained(root / "orch")
    objs = []
    for n in NAMES:
        shutil.copytree(tiny_reward_dir, root / f"rm_{n}")
        (root / f"rm_{n}" / "pro_reward.json").write_text(
            json.dumps({"objective": n, "input_format": "pair", "max_length": 64}))
        objs.append({"name": n, "model": str(root / f"rm_{n}"), "input_format": "pair", "max_length": 64})
    (root / "suite").mkdir()
    (root / "suite" / "suite.yaml").write_text(yaml.safe_dump(
        {"objectives": objs, "stats": {n: [0.0, 2.0] for n in NAMES}}))
    build_tiny_policy(root / "policy", NAMES)
    serving.build_endpoint(root / "endpoint", orchestrator=root / "orch", policy=root / "policy",
                           suite=root / "suite")
    return {"orch": root / "orch", "rm": root / "rm_helpful", "policy": root / "policy",
            "endpoint": root / "endpoint"}


@pytest.fixture(scope="module")
def registered(mlflow_server, s3_endpoint, tiny_encoder_dir, tiny_reward_dir, tmp_path_factory):
    """Each kind registered once on the real server (S3 artifacts); the endpoint promoted to champion."""
    root = tmp_path_factory.mktemp("serving_models")
    dirs = tiny_models(root, tiny_encoder_dir, tiny_reward_dir)
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_REGISTRY_URI": mlflow_server,
           "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
           "PRO_HOME": str(root / ".pro"), **FAKE_KEYS}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        refs = {
            "pro-orchestrator": packaging.register_model(dirs["orch"], "pro-orchestrator",
                                                        metrics={"orchestrator_kl": 0.3}),
            "pro-reward-helpful": packaging.register_model(dirs["rm"], "pro-reward-helpful",
                                                          metrics={"accuracy": 0.6}),
            "pro-policy-pro-wic": packaging.register_model(dirs["policy"], "pro-policy-pro-wic",
                                                          metrics={"hypervolume": 0.5}),
            "pro-endpoint": packaging.register_model(dirs["endpoint"], "pro-endpoint",
                                                    metrics={"hypervolume": 0.5}),
        }
        assert promotion.promote("pro-endpoint").promoted
    return {"env": env, "versions": refs, "dirs": dirs}


FRESH = r"""
import json, sys
import mlflow, pandas as pd
out = {}
versions = json.loads(sys.argv[2])
for name, frame in json.loads(sys.argv[1]).items():
    m = mlflow.pyfunc.load_model(f"models:/{name}/{versions[name]}")
    pred = m.predict(pd.DataFrame(frame), params={"max_new_tokens": 4} if "policy" in name or "endpoint" in name else None)
    out[name] = {"columns": list(pred.columns), "rows": len(pred), "first": pred.iloc[0].to_dict(),
                 "inputs": [c.name for c in m.metadata.get_input_schema().inputs],
                 "example": m.metadata.saved_input_example_info is not None}
print("RESULT" + json.dumps(out, default=str))
"""


def test_every_kind_loads_with_mlflow_pyfunc_in_a_fresh_process(registered, tmp_path):
    frames = {"pro-orchestrator": {"prompt": ["How do I bake bread?"]},
              "pro-reward-helpful": {"prompt": ["How do I bake bread?"], "response": ["Knead and bake."]},
              "pro-policy-pro-wic": {"prompt": ["How do I bake bread?"]},
              "pro-endpoint": {"prompt": ["How do I bake bread?"]}}
    # a fresh interpreter with no pro_lib on its path: the model's code_paths copy must suffice
    env = {**os.environ, **registered["env"], "PRO_HOME": str(tmp_path / "fresh"), "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", FRESH, json.dumps(frames),
                           json.dumps(registered["versions"])], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert got["pro-orchestrator"]["columns"] == NAMES
    assert abs(sum(got["pro-orchestrator"]["first"].values()) - 1) < 1e-5
    assert got["pro-reward-helpful"]["columns"] == ["score"]
    assert got["pro-reward-helpful"]["inputs"] == ["prompt", "response"]
    assert got["pro-policy-pro-wic"]["columns"] == ["response", "weight_helpful", "weight_harmless"]
    assert got["pro-policy-pro-wic"]["first"]["weight_helpful"] == pytest.approx(0.5)  # uniform when absent
    assert got["pro-endpoint"]["columns"] == ["weights_source", "weight_helpful", "weight_harmless", "response",
                                              "suite_stats", "score_helpful", "score_harmless"]  # stats: the units
    assert got["pro-endpoint"]["first"]["weights_source"] == "orchestrator"
    assert all(v["example"] for v in got.values())


def test_pro_loaders_read_the_new_format_and_legacy_folders(registered, monkeypatch, tmp_path, capsys):
    """`models:/` refs in pro (from_pretrained, RewardSuite, WICPolicy) open both formats."""
    from mlflow import MlflowClient

    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.wic import WICPolicy

    for k, v in registered["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PRO_HOME", str(tmp_path / ".pro"))
    orch = PreferenceOrchestrator.from_pretrained("models:/pro-orchestrator@challenger")
    assert orch.objectives == NAMES
    assert WICPolicy.from_pretrained("models:/pro-policy-pro-wic@challenger").objectives == NAMES
    folder = registry.download_model("models:/pro-endpoint@champion")
    assert (folder / serving.ENDPOINT_FILE).is_file()
    # a version registered the old way (the bare folder as artifacts, no MLmodel) still loads in pro
    c = MlflowClient()
    run = c.create_run(c.get_experiment_by_name("Default").experiment_id if c.get_experiment_by_name("Default")
                       else c.create_experiment("Default"))
    c.log_artifacts(run.info.run_id, str(registered["dirs"]["orch"]), "registered/pro-orchestrator")
    src = f"{run.info.artifact_uri}/registered/pro-orchestrator"
    mv = c.create_model_version("pro-orchestrator", source=src, run_id=run.info.run_id)
    legacy = PreferenceOrchestrator.from_pretrained(f"models:/pro-orchestrator/{mv.version}")
    w = legacy.predict(["hello"])
    assert np.allclose(w, orch.predict(["hello"]))
    assert not (registry.download_model(f"models:/pro-orchestrator/{mv.version}") / "MLmodel").exists()
    # `pro registry list` says which versions are legacy and how to re-register them
    from pro_lib.cli import main

    capsys.readouterr()
    assert main(["registry", "list", "pro-orchestrator"]) == 0
    listing = capsys.readouterr().out.splitlines()
    (line,) = [ln for ln in listing if "[legacy folder]" in ln]
    assert line.strip().startswith(f"v{mv.version}")
    assert any(f"pro registry download models:/pro-orchestrator/{mv.version}" in ln for ln in listing)


def test_register_refuses_a_folder_of_the_wrong_kind(registered, tmp_path):
    with pytest.raises(ConfigError, match="name is for an orchestrator but the folder holds a policy"):
        packaging.register_model(registered["dirs"]["policy"], "pro-orchestrator", metrics={"orchestrator_kl": 1})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a PRO model folder"):
        packaging.register_model(tmp_path / "junk", "pro-reward-helpful", metrics={"accuracy": 1})


def test_served_endpoint_answers_invocations(registered, tmp_path):
    proc, url = serve_model({**registered["env"], "PRO_HOME": str(tmp_path / "serve")}, tmp_path)
    try:
        client = serving.EndpointClient(url)
        df = client.invoke(["How do I bake bread?", "Tell me a joke."], [None, [0.9, 0.1]], max_new_tokens=4)
        assert list(df["weights_source"]) == ["orchestrator", "given"]
        assert df.loc[1, ["weight_helpful", "weight_harmless"]].tolist() == pytest.approx([0.9, 0.1])
        assert df.loc[0, ["weight_helpful", "weight_harmless"]].sum() == pytest.approx(1.0, abs=1e-5)
        assert all(isinstance(r, str) for r in df["response"])
        assert {"score_helpful", "score_harmless"} <= set(df.columns)
        assert client.objectives() == NAMES
        # best-of-N through the signature's params: the answer is the candidate with the largest sum_k w_k score_k
        bo = client.invoke(["How do I bake bread?"], max_new_tokens=4, best_of_n=3, seed=0).iloc[0]
        assert bo["best_of_n"] == 3 and len(bo["candidate_weighted_scores"]) == 3
        w, z = bo[["weight_helpful", "weight_harmless"]].to_numpy(float), bo[["score_helpful", "score_harmless"]]
        assert bo["weighted_score"] == pytest.approx(float(w @ z.to_numpy(float)), abs=1e-6)
        assert bo["weighted_score"] == pytest.approx(max(bo["candidate_weighted_scores"]))
        # bad weights: a 400 with the reason, not a crash
        with pytest.raises(CheckpointError, match="weights"):
            client.invoke(["hi"], [[0.5, 0.3, 0.2]])
        _explorer_uses_the_endpoint(url, registered["dirs"])
    finally:
        stop_server(proc)


def _explorer_uses_the_endpoint(url: str, dirs: dict) -> None:
    """PRO_UI_ENDPOINT: the explorer's orchestrator and policy are the served endpoint's; an override of
    the weights reaches the policy (same answer as the policy loaded in-process with those weights)."""
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.wic import WICPolicy
    from ui.backend import Backend, ModelSpec

    be = Backend("sqlite:///unused.db")
    prov = be.resolve(ModelSpec.parse(url))
    assert prov.label() == f"served endpoint `{url}`"
    orch = be.load_orchestrator(prov.load_ref)
    assert orch.objectives == NAMES
    prompt = "How do I bake bread?"
    local_w = PreferenceOrchestrator.from_pretrained(dirs["orch"]).predict([prompt])
    assert np.allclose(be.predict(orch, [prompt]), local_w, atol=1e-6)
    policy = be.load_policy(prov.load_ref, NAMES)
    text = "".join(be.stream(policy, prompt, np.array([0.8, 0.2]), max_new_tokens=5, do_sample=False))
    assert text == WICPolicy.from_pretrained(dirs["policy"]).generate([prompt], [0.8, 0.2], max_new_tokens=5)[0]


def test_endpoint_in_process_matches_its_parts(registered):
    """What the endpoint returns is the orchestrator's weights and the policy's greedy answer under them."""
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.wic import WICPolicy

    d = registered["dirs"]
    ep = serving.Endpoint(d["endpoint"])
    prompts = ["How do I bake bread?", "Tell me a joke."]
    out = ep.predict(pd.DataFrame({"prompt": prompts}), {"max_new_tokens": 5})
    w = PreferenceOrchestrator.from_pretrained(d["orch"]).predict(prompts)
    assert np.allclose(out[["weight_helpful", "weight_harmless"]].to_numpy(), w, atol=1e-6)
    policy = WICPolicy.from_pretrained(d["policy"])
    assert out["response"].tolist() == policy.generate(prompts, w, max_new_tokens=5)


# -- issue 24: serving that holds up (served by `mlflow models serve` from the real server) ---------

def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_input_is_a_400_with_pros_message_and_max_tokens_is_honoured(registered, tmp_path):
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
        # the docs' curl example, as written
        doc = (REPO / "docs" / "serving.md").read_text()
        example = doc.split("curl -s localhost:5001/invocations", 1)[1].split("-d '", 1)[1].split("'\n", 1)[0]
        status, body = _post(url, json.loads(example))
        assert status == 200 and len(body["predictions"]) == 2, body
    finally:
        stop_server(proc)


def test_the_endpoint_loads_every_reward_model_before_it_is_ready(registered):
    ep = serving.Endpoint(registered["dirs"]["endpoint"])
    assert sorted(ep.suite._scorers) == ["harmless", "helpful"]
