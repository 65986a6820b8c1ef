"""Local-runner overhead: the orchestrator pipeline through KFP's local runner vs the same stages
called directly in one Python process (same configs, same MLflow tracking).

    python bench/bench_local_runner.py               # tiny models built here (about 3-4 minutes)
    flock /tmp/pro-heavy.lock python bench/bench_local_runner.py --minilm   # the demo's real encoder

Prints a table: per stage, the time inside the stage's MLflow run for each path (the work), and the
wall time of each path; the difference is the local runner's cost (a fresh Python per task that
imports torch/transformers/mlflow, executor I/O, KFP bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Artifact:
    """Stand-in for a KFP artifact (path + metadata), as a component body sees it."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.metadata: dict = {}

    def log_metric(self, k, v):
        self.metadata[k] = v


def tiny_models(root: Path) -> tuple[str, str]:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from pro_lib.models import bundled_minilm_path

    tok = AutoTokenizer.from_pretrained(str(bundled_minilm_path()))
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(BertConfig(**cfg)).save_pretrained(root / "enc")
    tok.save_pretrained(root / "enc")
    BertForSequenceClassification(BertConfig(**cfg, num_labels=1)).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return str(root / "rm"), str(root / "enc")


def pipeline_args(args, work: Path) -> dict:
    from pipelines.orchestrator import (DEFAULT_DATA, DEFAULT_EVAL, DEFAULT_OBJECTIVES, DEFAULT_ORCHESTRATOR,
                                        DEFAULT_REWARD, DEFAULT_SCORE)

    if args.minilm:
        return {"objectives": DEFAULT_OBJECTIVES, "data_config": DEFAULT_DATA, "reward_config": DEFAULT_REWARD,
                "score_config": DEFAULT_SCORE, "orchestrator_config": DEFAULT_ORCHESTRATOR,
                "eval_config": DEFAULT_EVAL}
    rm, enc = tiny_models(work / "models")
    return {"objectives": DEFAULT_OBJECTIVES, "data_config": DEFAULT_DATA,
            "reward_config": {**DEFAULT_REWARD, "base_model": rm, "epochs": 1},
            "score_config": DEFAULT_SCORE,
            "orchestrator_config": {**DEFAULT_ORCHESTRATOR, "backbone": enc, "epochs": 1},
            "eval_config": DEFAULT_EVAL}


def in_process(a: dict, work: Path) -> None:
    """The pipeline's stages, in order, through the same component runtime, in this process."""
    from components import reports
    from components.runtime import (promote_stage, register_stage, reward_suite_specs, run_stage,
                                    scratch_dir)

    data = Artifact(work / "data")
    run_stage("prepare_data", a["data_config"], overrides={"output_dir": data.path},
              metrics=Artifact(work / "m0"), report=Artifact(work / "r0"), report_fn=reports.data_report)
    rms = []
    for obj in a["objectives"]:
        model, metrics = Artifact(work / f"rm-{obj}"), Artifact(work / f"m-{obj}")
        run_stage("train_reward_model", a["reward_config"], overrides={
            "objective": obj, "source": obj, "data": [f"{data.path}/train.jsonl"],
            "eval_data": [f"{data.path}/eval.jsonl"], "output_dir": model.path}, metrics=metrics)
        v = register_stage("pro-reward-{objective}", model.path, metrics, objective=obj)
        promote_stage("pro-reward-{objective}", v, objective=obj)
        rms.append(model.path)
    targets = Artifact(work / "targets")
    run_stage("score_targets", a["score_config"], overrides={
        "data": f"{data.path}/train.jsonl", "objectives": reward_suite_specs(a["objectives"], rms), "suite": None,
        "output_dir": targets.path}, metrics=Artifact(work / "m1"))
    orch = Artifact(work / "orch")
    run_stage("train_orchestrator", a["orchestrator_config"], overrides={
        "targets": targets.path, "output_dir": orch.path}, metrics=Artifact(work / "m2"))
    ev = Artifact(work / "m3")
    run_stage("evaluate_orchestrator", a["eval_config"], overrides={
        "orchestrator": orch.path, "data": f"{data.path}/eval.jsonl", "train_targets": targets.path,
        "output_dir": str(scratch_dir("bench-eval"))}, metrics=ev, report=Artifact(work / "r3"),
        report_fn=reports.orchestrator_eval_report, html=Artifact(work / "h3"), html_fn=reports.orchestrator_eval_plot)
    promote_stage("pro-orchestrator", register_stage("pro-orchestrator", orch.path, ev))


def stage_seconds(parent_id: str) -> dict[str, float]:
    from pro_lib import tracking

    c = tracking.client()
    exp = c.get_run(parent_id).info.experiment_id
    out: dict[str, float] = defaultdict(float)
    for r in c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000):
        out[r.data.tags["pro.stage"]] += (r.info.end_time - r.info.start_time) / 1000
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", action="store_true", help="use the demo defaults (bundled MiniLM) instead of tiny models")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pro-bench-local-"))
    os.environ["PRO_HOME"] = str(work / ".pro")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / '.pro' / 'mlflow.db'}"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.disable(logging.WARNING)
    from pipelines.runner import run_local
    from pro_lib import tracking

    a = pipeline_args(args, work)
    rows = {}
    t0 = time.time()
    with tracking.pipeline_run("bench-in-process", run_name="bench-in-process") as pid:
        in_process(a, work / "inproc")
    rows["in-process"] = (time.time() - t0, stage_seconds(pid))

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # the local runner prints every executor input
        summary = run_local("orchestrator", a, pipeline_root=work / "kfp")
    rows["kfp-local"] = (summary["seconds"], stage_seconds(summary["parent_run_id"]))

    stages = list(rows["in-process"][1])
    print(f"\norchestrator pipeline, {'bundled MiniLM' if args.minilm else 'tiny BERT'}, "
          f"{len(a['objectives'])} objectives, {os.cpu_count()} CPUs\n")
    print(f"{'stage (time inside its MLflow run)':<36} {'in-process s':>13} {'kfp local s':>12}")
    for s in stages:
        print(f"{s:<36} {rows['in-process'][1].get(s, 0):>13.1f} {rows['kfp-local'][1].get(s, 0):>12.1f}")
    w_in, w_kfp = rows["in-process"][0], rows["kfp-local"][0]
    work_in, work_kfp = sum(rows["in-process"][1].values()), sum(rows["kfp-local"][1].values())
    print(f"{'sum of stage runs':<36} {work_in:>13.1f} {work_kfp:>12.1f}")
    print(f"{'wall time':<36} {w_in:>13.1f} {w_kfp:>12.1f}")
    print(f"\nlocal runner / in-process wall time: {w_kfp / w_in:.2f}x; overhead {w_kfp - w_in:.0f} s "
          f"({(w_kfp - w_in) / max(1, 1 + 3 * len(a['objectives']) + 5):.1f} s per task; reward-model tasks run "
          f"in parallel under the local runner)")
    print(json.dumps({"in_process_s": round(w_in, 1), "kfp_local_s": round(w_kfp, 1)}))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
