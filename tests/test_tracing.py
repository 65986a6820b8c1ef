"""MLflow 3 traces of pro-endpoint's predict and its held-out evaluation through mlflow.genai.evaluate.

Against a real `mlflow server` (SQLite backend, moto S3 artifacts) with tiny models: a registered
endpoint loaded with mlflow.pyfunc records a trace per predict call (orchestrator, generation and
scoring spans under the root), and `pro eval genai` logs per-row assessments from the reward scorers.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from helpers.endpoint import NAMES, build_tiny_endpoint
from pro_lib import genai_eval, packaging, tracing, tracking


@pytest.fixture(scope="module")
def endpoint_dirs(tmp_path_factory):
    return build_tiny_endpoint(tmp_path_factory.mktemp("traced_endpoint"))


def _experiment(monkeypatch, prefix: str) -> str:
    import mlflow

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    monkeypatch.setenv("PRO_EXPERIMENT", name)
    return mlflow.set_experiment(name).experiment_id


def _spans(trace) -> dict:
    return {s.name: s for s in trace.data.spans}


def test_a_predict_call_records_a_trace_with_orchestrator_generation_and_scoring_spans(
        mlflow_env, endpoint_dirs, monkeypatch):
    import mlflow

    exp_id = _experiment(monkeypatch, "pro-traces")
    version = packaging.register_model(endpoint_dirs["endpoint"], "pro-endpoint-traces")
    model = mlflow.pyfunc.load_model(f"models:/pro-endpoint-traces/{version}")
    given = [0.2, 0.3, 0.5]
    df = pd.DataFrame({"prompt": ["tell me a joke", "how do i stay safe"], "weights": [[], given]})
    out = model.predict(df, params={"max_new_tokens": 4})

    traces = mlflow.search_traces(locations=[exp_id], return_type="list", flush=True)
    assert len(traces) == 1, [t.info.trace_id for t in traces]
    spans = _spans(mlflow.get_trace(traces[0].info.trace_id, flush=True))
    assert set(spans) == set(tracing.SPANS), sorted(spans)
    root = spans[tracing.ROOT_SPAN]
    assert root.parent_id is None
    assert all(spans[n].parent_id == root.span_id for n in tracing.SPANS[1:])
    assert root.inputs["prompt"] == df["prompt"].tolist()
    assert root.inputs["weights"] == [None, given] and root.inputs["params"]["max_new_tokens"] == 4
    assert [r["response"] for r in root.outputs] == out["response"].tolist()
    assert root.attributes["pro.objectives"] == NAMES

    # the orchestrator ran for the row without weights only; its weights are the ones the answer used
    orch = spans[tracing.ORCHESTRATOR_SPAN]
    assert orch.inputs == {"prompts": ["tell me a joke"]}
    (w_orch,) = orch.outputs["weights"]
    assert list(w_orch) == NAMES and sum(w_orch.values()) == pytest.approx(1.0, abs=1e-5)
    assert [w_orch[n] for n in NAMES] == pytest.approx([out[f"weight_{n}"][0] for n in NAMES], abs=1e-5)

    gen = spans[tracing.GENERATION_SPAN]
    assert gen.inputs["prompts"] == df["prompt"].tolist()
    assert [gen.inputs["weights"][1][n] for n in NAMES] == pytest.approx(given)
    assert gen.inputs["generation"]["max_new_tokens"] == 4
    assert gen.outputs["responses"] == out["response"].tolist()
    assert gen.attributes["pro.policy"] == "default" and gen.attributes["pro.conditioned"] is True

    score = spans[tracing.SCORING_SPAN]
    assert score.inputs["responses"] == out["response"].tolist() and score.inputs["normalize"] is True
    got = np.array([[row[n] for n in NAMES] for row in score.outputs["scores"]])
    np.testing.assert_allclose(got, out[[f"score_{n}" for n in NAMES]].to_numpy(), atol=1e-5)
    assert score.attributes["pro.suite_stats"]["humor"] == [0.0, 1.0]

    # PRO_TRACING=0: no further trace
    monkeypatch.setenv(tracing.TRACING_ENV, "0")
    model.predict(df.iloc[:1], params={"max_new_tokens": 2})
    mlflow.flush_trace_async_logging()
    assert len(mlflow.search_traces(locations=[exp_id], return_type="list", flush=True)) == 1


def test_a_reward_objective_is_a_genai_scorer(endpoint_dirs):
    from mlflow.entities import Feedback

    from pro_lib.errors import ConfigError, DataError
    from pro_lib.suite import RewardSuite

    suite = RewardSuite.load(endpoint_dirs["suite"])
    prompt, response = "tell me a joke", "ha ha the cat is on the mat"
    z = suite.score([prompt], [response], normalize=True, progress=False)[0]
    humor = genai_eval.reward_scorer(suite, "humor")
    assert humor.name == "humor"
    fb = humor(inputs={"prompt": prompt}, outputs={"response": response})
    assert isinstance(fb, Feedback) and fb.value == pytest.approx(float(z[2]), abs=1e-5)
    assert "z-score" in fb.rationale
    weights = {"weight_helpful": 0.5, "weight_harmless": 0.25, "weight_humor": 0.25}
    pro = genai_eval.weighted_reward_scorer(suite)(inputs={"prompt": prompt}, outputs={"response": response, **weights})
    assert pro.value == pytest.approx(float(0.5 * z[0] + 0.25 * z[1] + 0.25 * z[2]), abs=1e-5)
    with pytest.raises(ConfigError, match="no objective 'funny'"):
        genai_eval.reward_scorer(suite, "funny")
    with pytest.raises(DataError, match=r"outputs\['response'\]"):
        humor(inputs={"prompt": prompt}, outputs={"text": response})


def test_pro_eval_genai_logs_per_row_reward_assessments_to_its_run(mlflow_env, endpoint_dirs, tmp_path,
                                                                   monkeypatch, capsys):
    import mlflow

    from pro_lib.cli import main
    from pro_lib.suite import RewardSuite

    exp_id = _experiment(monkeypatch, "pro-genai-eval")
    version = packaging.register_model(endpoint_dirs["endpoint"], "pro-endpoint-genai")
    prompts = ["tell me a joke", "how do i stay safe", "what is the moon"]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": "yes", "rejected": "no"}) + "\n" for p in prompts))
    main(["eval", "genai", "--endpoint", f"models:/pro-endpoint-genai/{version}", "--data", str(data),
          "--max-prompts", "3", "--max-new-tokens", "4"])
    printed = capsys.readouterr().out
    assert "humor/mean" in printed and "3 held-out prompts" in printed

    runs = [r for r in mlflow.search_runs([exp_id], output_format="list") if r.info.run_name == "eval_genai"]
    assert len(runs) == 1
    run = runs[0]
    model_id = tracking.client().get_model_version("pro-endpoint-genai", version).source.removeprefix("models:/")
    traces = mlflow.search_traces(locations=[exp_id], run_id=run.info.run_id, return_type="list", flush=True)
    assert len(traces) == 3
    suite = RewardSuite.load(endpoint_dirs["suite"])
    per_objective = {n: [] for n in NAMES}
    for t in traces:
        t = mlflow.get_trace(t.info.trace_id)
        spans = _spans(t)
        assert {tracing.ROOT_SPAN, tracing.GENERATION_SPAN, tracing.ORCHESTRATOR_SPAN} <= set(spans)
        prompt = spans[tracing.ROOT_SPAN].inputs["prompt"][0]
        row = spans[tracing.ROOT_SPAN].outputs[0]
        z = suite.score([prompt], [row["response"]], normalize=True, progress=False)[0]
        assert t.info.request_metadata.get("mlflow.modelId") == model_id  # linked to the version's LoggedModel
        got = {a.name: a.value for a in t.info.assessments if a.feedback is not None}
        assert set(got) == {*NAMES, "pro_reward"}, got
        for j, n in enumerate(NAMES):  # each assessment is that reward model's z-score of this row's answer
            assert got[n] == pytest.approx(float(z[j]), abs=1e-5)
            per_objective[n].append(got[n])
        assert got["pro_reward"] == pytest.approx(sum(row[f"weight_{n}"] * z[j] for j, n in enumerate(NAMES)),
                                                  abs=1e-5)
    assert sorted(p for p in prompts) == sorted(_spans(mlflow.get_trace(t.info.trace_id))[tracing.ROOT_SPAN]
                                                 .inputs["prompt"][0] for t in traces)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    for n in NAMES:
        assert metrics[f"{n}/mean"] == pytest.approx(float(np.mean(per_objective[n])), abs=1e-5)


def test_the_served_endpoint_sends_its_traces_to_the_tracking_server(mlflow_env, endpoint_dirs, tmp_path,
                                                                     monkeypatch):
    """`mlflow models serve`: each request's trace reaches the experiment the serving process names."""
    import time

    import mlflow

    from helpers.services import FAKE_KEYS, serve_model, stop_server
    from pro_lib import serving

    exp_id = _experiment(monkeypatch, "pro-served-traces")
    version = packaging.register_model(endpoint_dirs["endpoint"], "pro-endpoint-served-traces")
    env = {"MLFLOW_TRACKING_URI": mlflow_env, "MLFLOW_EXPERIMENT_NAME": mlflow.get_experiment(exp_id).name,
           "PRO_HOME": str(tmp_path / "serve"), **FAKE_KEYS}
    proc, url = serve_model(env, tmp_path, ref=f"models:/pro-endpoint-served-traces/{version}")
    try:
        out = serving.EndpointClient(url).invoke(["tell me a joke"], max_new_tokens=3)
        deadline, traces = time.monotonic() + 30, []
        while not traces and time.monotonic() < deadline:  # exported asynchronously by the server process
            traces = mlflow.search_traces(locations=[exp_id], return_type="list")
            time.sleep(0.5)
    finally:
        stop_server(proc)
    assert len(traces) == 1
    spans = _spans(mlflow.get_trace(traces[0].info.trace_id))
    assert set(spans) == set(tracing.SPANS)
    assert spans[tracing.GENERATION_SPAN].outputs["responses"] == out["response"].tolist()
