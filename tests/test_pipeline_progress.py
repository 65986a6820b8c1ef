"""`pro pipeline run --local` output: one line per stage, the full log in a file, a failed stage's own lines.

The successful run's report is checked on the tiny orchestrator pipeline that
tests/test_pipelines_local.py::test_orchestrator_pipeline_local_run already runs (helpers.pipelines.check_report)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

from helpers import REPO
from helpers.pipelines import MAX_LINES
from pipelines.progress import StageReport, key_number

def test_key_number_reads_the_stage_metrics():
    out = {"metrics": SimpleNamespace(metadata={"accuracy": 0.8125, "eval_loss": 0.5}), "model": object()}
    assert key_number("train-reward-model-2", out) == "accuracy 0.812"
    ev = {"metrics": SimpleNamespace(metadata={"mse_ratio_vs_best_fixed": 0.81})}
    assert key_number("evaluate-orchestrator", ev) == "MSE ratio vs best fixed 0.810"
    assert key_number("prepare-data", {"data": SimpleNamespace(metadata={})}) == ""
    sample = {"metrics": SimpleNamespace(metadata={"kept": 12.0, "samples": 48.0, "round": 1.0})}
    assert key_number("wic-online-sample", sample) == "kept 12 of 48 samples"
    assert key_number("unknown", None) == ""


def test_report_restores_the_streams_and_the_kfp_dispatcher(tmp_path):
    from kfp.local import task_dispatcher

    original, out = task_dispatcher.run_single_task_implementation, io.StringIO()
    stdout = sys.stdout
    with StageReport(tmp_path / "x.log", out=out, spinner=False):
        print("to the log")
        assert task_dispatcher.run_single_task_implementation is not original
    assert sys.stdout is stdout and task_dispatcher.run_single_task_implementation is original
    assert "to the log" in (tmp_path / "x.log").read_text() and "to the log" not in out.getvalue()


def test_a_failed_stage_shows_its_error_and_the_log_path(tmp_path):
    """The first stage fails on a missing data file: the terminal shows that stage's own error lines and the log."""
    env = {**os.environ, "PRO_HOME": str(tmp_path / ".pro"), "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    missing = tmp_path / "missing.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pro_lib.cli", "pipeline", "run", "--local", "orchestrator",
                           "--set", f"data_config.sources=[{missing}]"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 1, shown
    assert "stage prepare-data failed" in shown, shown
    tail = shown.split("stage prepare-data failed", 1)[1]
    assert str(missing) in tail, shown             # the stage's own error, quoted from its output
    (log,) = (tmp_path / ".pro" / "logs").glob("orchestrator-*.log")
    assert f"full log: {log}" in shown
    assert "Traceback" not in shown and len(shown.splitlines()) < MAX_LINES, shown
    assert str(missing) in log.read_text() and "Executing task" in log.read_text()
