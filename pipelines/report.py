"""What `pro pipeline run --local` prints after a run: where the results are (MLflow, KFP outputs, the
log, the registry) and, for pro_wic, the weight response of the trained policy with its intervals."""

from __future__ import annotations

import json
from pathlib import Path


def print_summary(summary: dict) -> None:
    """Where to look after a run: MLflow, the KFP outputs, the log, the registered models; for pro_wic the
    weight-response table."""
    from pro_lib import registry, tracking

    print()
    print(f"pipeline {summary['pipeline']} finished in {summary['seconds'] / 60:.1f} min")
    print(f"  MLflow tracking: {summary['tracking_uri']}")
    print(f"  pipeline run:    {tracking.run_url(summary['parent_run_id'])}")
    print(f"  KFP outputs:     {summary['pipeline_root']}")
    if summary.get("log"):
        print(f"  full log:        {summary['log']}")
    try:
        names = registry.list_models()
    except Exception:  # noqa: BLE001 - the summary must not hide the successful run
        names = []
    if names:
        print("  registered models (load with models:/<name>@champion):")
        for n in names:
            versions = registry.list_versions(n)
            aliases = ", ".join(f"{a}=v{v['version']}" for v in versions for a in v["aliases"]) or "no aliases"
            print(f"    {n:<28} {len(versions)} version(s); {aliases}")
    uri = summary["tracking_uri"]
    if not uri.startswith("http"):
        print(f"  browse:          mlflow ui --backend-store-uri {uri}")
    print("  try:             pro weights \"Tell me a joke about cats\" --orchestrator "
          f"{registry.model_ref(registry.ORCHESTRATOR_MODEL)}")
    if summary["pipeline"] == "pro_wic":
        print_weight_response(summary["parent_run_id"])


def weight_response_of_run(parent_run_id: str) -> dict | None:
    """The PRO-WIC evaluation of a pipeline run (its ``wic_evaluate`` stage's eval.json), or None."""
    import mlflow

    from pro_lib import tracking
    from pro_lib.artifacts import EVAL_FILE

    runs = tracking.client().search_runs(
        [tracking.ensure_experiment()],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`pro.stage` = 'wic_evaluate'")
    for run in runs:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                       artifact_path=f"wic_evaluate/{EVAL_FILE}",
                                                       tracking_uri=tracking.tracking_uri())
        except Exception:  # noqa: BLE001 - an evaluation without its file: nothing to print
            continue
        return {"run_id": run.info.run_id, **json.loads(Path(path).read_text())}
    return None


def print_weight_response(parent_run_id: str) -> None:
    """Per objective: score with all the weight on it minus with the weight elsewhere, 95% bootstrap CI."""
    from pro_lib import tracking

    ev = weight_response_of_run(parent_run_id)
    boot = (ev or {}).get("bootstrap") or {}
    if not boot.get("weight_response"):
        print("  (no weight-response table: the evaluation stage logged no bootstrap)")
        return
    label = next(iter(boot["weight_response"]))
    names = ev["objectives"]
    pct = f"{boot['level']:.0%}"
    print(f"\nWeight response of the PRO-WIC policy on {ev['n_prompts']} held-out prompts "
          f"(mean z-score on an objective with all the weight on it minus with the weight on the others; "
          f"{pct} bootstrap interval over prompts, {boot['n_boot']} resamples):")
    print(f"  {'objective':<12} {'response':>9}   {pct} interval        follows its weight?")
    ok = True
    for name, v, (lo, hi) in zip(names, boot["weight_response"][label], boot["weight_response_ci"][label]):
        yes = lo is not None and lo > 0
        ok &= yes
        print(f"  {name:<12} {v:>+9.3f}   [{lo:+.3f}, {hi:+.3f}]   {'yes' if yes else 'NO (interval reaches 0)'}")
    print("  every interval is above 0: the policy follows its weights" if ok else
          "  not every interval is above 0: train longer (wic_offline_config.epochs) or see docs/results_wic.md")
    print("next:")
    print("  pro ui                                   # explorer: move the weights, watch the response change")
    print('  pro generate "Tell me about the Moon" --weights humor=1 --policy models:/pro-policy-pro-wic@champion')
    print(f"  evaluation run: {tracking.run_url(ev['run_id'])} (eval_table.md, pareto.png, samples.jsonl)")
