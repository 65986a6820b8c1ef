"""MLflow tracking: parent run per pipeline run, child run per stage, on a real `mlflow server`."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from helpers.services import s3_keys
from pro_lib import tracking


def _runs(exp_name):
    c = tracking.client()
    exp = c.get_experiment_by_name(exp_name)
    return c.search_runs([exp.experiment_id])


def test_pipeline_parent_and_stage_children_on_server(mlflow_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PRO_EXPERIMENT", f"pro-test-{uuid.uuid4().hex[:6]}")
    plot = tmp_path / "eval" / "table.md"
    plot.parent.mkdir()
    plot.write_text("| weights | KL |\n|---|---|\n| orchestrator | 0.1 |\n")
    with tracking.pipeline_run("orchestrator", {"objectives": ["helpful", "harmless"]}) as parent:
        assert os.environ[tracking.PARENT_ENV] == parent
        with tracking.stage_run("train_orchestrator", {"epochs": 2, "nested": {"lr": 1e-5}}) as run:
            logged = tracking.log_metrics({"train_loss": 0.5, "objective": "helpful", "nan": float("nan"),
                                           "per": {"helpful": 0.7}})
            tracking.log_artifacts(plot.parent, "eval")
            child = run.info.run_id
    assert tracking.PARENT_ENV not in os.environ
    assert logged == {"train_loss": 0.5, "per.helpful": 0.7}

    c = tracking.client()
    p, ch = c.get_run(parent), c.get_run(child)
    assert p.info.status == "FINISHED" and p.data.tags["pro.role"] == "pipeline"
    assert p.data.params["objectives"] == '["helpful", "harmless"]'
    assert ch.data.tags["mlflow.parentRunId"] == parent
    assert ch.data.params == {"epochs": "2", "nested.lr": "1e-05"}
    assert ch.data.metrics == {"train_loss": 0.5, "per.helpful": 0.7}
    assert [a.path for a in c.list_artifacts(child, "eval")] == ["eval/table.md"]
    keys = s3_keys()  # the artifact is in the S3 bucket behind the server
    assert any(k.endswith(f"{child}/artifacts/eval/table.md") for k in keys)


def test_failed_pipeline_marks_parent_failed(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError):
        with tracking.pipeline_run("orchestrator") as parent:
            raise RuntimeError("stage blew up")
    assert tracking.client().get_run(parent).info.status == "FAILED"
    assert (tmp_path / ".pro" / "mlflow.db").is_file()  # default: local SQLite under PRO_HOME


def test_kfp_parallel_stages_share_one_parent(mlflow_env, monkeypatch):
    """On a cluster, stages find (or create) the parent by the Argo workflow name."""
    exp = f"pro-test-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("PRO_EXPERIMENT", exp)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.setenv(tracking.KFP_RUN_ENV, "pro-orchestrator-x7k2p")
    found, errors = [], []

    def stage():
        try:
            found.append(tracking._find_or_create_kfp_parent("pro-orchestrator-x7k2p", "orchestrator"))
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=stage) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(found)) == 1
    with tracking.stage_run("train_reward_helpful", {}) as run:
        pass
    assert tracking.client().get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == found[0]
    alive = [r for r in _runs(exp) if r.data.tags.get("pro.role") == "pipeline"]
    assert [r.info.run_id for r in alive] == found[:1]


def test_flatten_and_numeric_helpers():
    import numpy as np

    assert tracking.flatten_params({"a": {"b": [1, 2]}, "c": "x" * 7000})["a.b"] == "[1, 2]"
    assert len(tracking.flatten_params({"c": "x" * 7000})["c"]) == tracking.MAX_PARAM_LEN
    assert tracking.numeric_metrics({"a": np.float32(0.5), "b": True, "c": [1], "d": float("inf")}) == \
        {"a": 0.5, "b": 1.0}


def test_log_dataset_logs_tables_and_skips_json_reports(tmp_path, monkeypatch, caplog):
    """A stage folder holds data (jsonl, a JSON list) and reports (one JSON object): only the data
    becomes MLflow dataset inputs, and a report is skipped without a warning."""
    import json

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "targets"
    out.mkdir()
    (out / "targets.jsonl").write_text('{"prompt": "hi", "weights": [0.5, 0.5]}\n{"prompt": "yo", "weights": [1, 0]}\n')
    (out / "rows.json").write_text(json.dumps([{"a": 1}, {"a": 2}]))
    (out / "target_report.json").write_text(json.dumps({"tau": 0.5, "stats": {"helpful": [0.1, 0.2]}, "n": 2}))
    with mlflow.start_run() as run:
        assert tracking.log_dataset(out, context="output") == 2
    names = {i.dataset.name for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs}
    assert names == {"targets/targets.jsonl", "targets/rows.json"}
    assert "could not log dataset" not in caplog.text
