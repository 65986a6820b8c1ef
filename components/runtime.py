"""What every PRO component does inside its container: build the stage's config, run it, track it.

A component body is three lines: import :func:`run_stage`, map its KFP artifacts onto the stage
config's path fields, call it. Here the stage's pro_lib config dataclass is built from the
component's ``config`` dict (the *same* keys as the stage's CLI flags and YAML; no field is copied
into the component signature), the stage runs inside an MLflow child run (params, metrics,
plots/tables as artifacts), and its numbers/reports are written into the KFP output artifacts so
the KFP UI shows them.

This module imports neither kfp nor anything heavy at import time; KFP artifacts are duck-typed
(``.path``, ``.metadata``, ``.log_metric``) so tests and the in-process benchmark can call it with
simple stand-ins.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger("pro.components")


@dataclass(frozen=True)
class Stage:
    module: str
    function: str
    config: str | None          # None: not a config stage (the registry's side effects)
    gpu: bool = False           # scheduled on the GPU pool on a cluster (pipelines.scheduling.Placement)
    deterministic: bool = True  # KFP caching on when True (off for sampling, RL and side effects)
    trainable: bool = False     # data-parallel over the pod's GPUs / across num_nodes (pro_lib.distributed)

    def load(self) -> tuple[type, Callable[[Any], dict]]:
        try:
            mod = importlib.import_module(self.module)
            return getattr(mod, self.config), getattr(mod, self.function)
        except (ImportError, AttributeError) as exc:
            from pro_lib.errors import ConfigError

            raise ConfigError(f"stage needs {self.module}.{self.function}({self.config}), which is not "
                              f"available in this installation ({exc}); update the image/package") from None


# The one table of stages: component name -> pro_lib function and config dataclass, GPU or CPU
# placement and whether KFP may cache it. Pipelines place every task by this table.
STAGES: dict[str, Stage] = {
    "prepare_data": Stage("pro_lib.data", "prepare_data", "DataConfig"),
    "train_reward_model": Stage("pro_lib.rewards", "train_reward_model", "RewardTrainConfig", gpu=True, trainable=True),
    "score_targets": Stage("pro_lib.suite", "score_and_target", "ScoreConfig", gpu=True),
    "train_orchestrator": Stage("pro_lib.orchestrator", "train_orchestrator", "OrchestratorTrainConfig", gpu=True, trainable=True),
    "evaluate_orchestrator": Stage("pro_lib.evaluation", "evaluate_orchestrator", "OrchestratorEvalConfig", gpu=True),
    "wic_offline_sft": Stage("pro_lib.wic_offline", "train_wic_offline", "WICOfflineConfig", gpu=True, trainable=True),
    "wic_online_sample": Stage("pro_lib.wic_rounds", "sample_online_round", "WICSampleConfig", gpu=True,
                               deterministic=False),
    "wic_online_sft": Stage("pro_lib.wic_rounds", "train_wic_online", "WICOnlineConfig", gpu=True, trainable=True),
    "wic_evaluate": Stage("pro_lib.wic_eval", "evaluate_wic", "WICEvalConfig", gpu=True),
    "morlhf_train": Stage("pro_lib.morlhf", "train_morlhf", "MorlhfTrainConfig", gpu=True, deterministic=False, trainable=True),
    "morlhf_evaluate": Stage("pro_lib.morlhf_eval", "evaluate_morlhf", "MorlhfEvalConfig", gpu=True),
    # optional LLM judge after evaluation: generates answers (GPU), calls an outside endpoint (never cached)
    "judge_evaluate": Stage("pro_lib.judge", "judge_eval", "JudgeConfig", gpu=True, deterministic=False),
    # registry side effects (register_stage / promote_stage below): CPU, never cached
    "register_model": Stage("pro_lib.packaging", "register_model", None, deterministic=False),
    "promote_model": Stage("pro_lib.promotion", "promote", None, deterministic=False),
    "register_endpoint": Stage("pro_lib.serving", "build_endpoint", None, deterministic=False),
    # the exit handler that ends the pipeline's MLflow parent run (components/tracking.py)
    "finish_pipeline_run": Stage("pro_lib.tracking", "finish_pipeline_run", None, deterministic=False),
}

# Small outputs worth keeping in MLflow next to the metrics (model weights go to the registry).
ARTIFACT_SUFFIXES = {".json", ".md", ".txt", ".png", ".svg", ".html", ".yaml", ".yml", ".csv"}
MAX_ARTIFACT_BYTES = 5 * 2**20


def use_experiment(experiment: str | None) -> None:
    """Stages of a run with the pipeline parameter ``experiment`` log to that MLflow experiment
    (``PRO_EXPERIMENT`` for this process); empty: the environment's (default ``pro``)."""
    if experiment:
        os.environ["PRO_EXPERIMENT"] = experiment


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("PRO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def merge_stage_config(defaults: Mapping[str, Any] | None, config: Mapping[str, Any] | None) -> dict:
    """The pipeline's defaults for a stage with the submitted ``config`` on top, key by key.

    KFP passes a dict parameter verbatim: a partial dict from ``--params-file``, the KFP UI or
    ``kfp.Client(arguments=...)`` (``{"epochs": 1}``) reaches the component alone. The pipeline compiles
    its defaults for the stage (``pipelines/*.py``, the same dicts as the parameters' defaults) into the
    task as the constant input ``defaults``, and the merge happens here, at run time, whichever way the
    run was submitted. ``learning-rate`` and ``learning_rate`` are one key."""
    def norm(d):
        return {str(k).replace("-", "_"): v for k, v in dict(d or {}).items()}

    return {**norm(defaults), **norm(config)}


def build_stage_config(stage: str, config: Mapping[str, Any] | None, overrides: Mapping[str, Any],
                       defaults: Mapping[str, Any] | None = None):
    """The stage's config dataclass from the pipeline's ``defaults`` for the stage, the component's
    ``config`` dict on top (:func:`merge_stage_config`), plus artifact paths."""
    from pro_lib.config import build_config

    spec = STAGES[stage]
    cls, _ = spec.load()
    values = {**merge_stage_config(defaults, config), **{k: v for k, v in overrides.items()}}
    # KFP parameters cannot carry None (the local runner rejects it): "null" in a config dict means None.
    values = {k: (None if isinstance(v, str) and v.strip() == "null" else v)
              for k, v in values.items()}
    return build_config(cls, values, where=f"component '{stage}' config")


def _log_small_artifacts(folder: Path, artifact_path: str) -> None:
    from pro_lib import tracking

    if not folder.is_dir():
        return
    for f in sorted(folder.rglob("*")):
        if (f.is_file() and f.suffix in ARTIFACT_SUFFIXES and f.stat().st_size <= MAX_ARTIFACT_BYTES
                and ".checkpoints" not in f.parts and not f.name.startswith(".")
                and "checkpoint-" not in str(f.relative_to(folder))):
            rel = f.relative_to(folder).parent.as_posix()
            tracking.log_artifacts(f, artifact_path if rel == "." else f"{artifact_path}/{rel}")


def write_kfp_metrics(metrics_artifact, numbers: Mapping[str, float]) -> None:
    """Scalars into a KFP ``Metrics`` artifact (UI) and as JSON in its file (for downstream stages)."""
    if metrics_artifact is None:
        return
    for k, v in numbers.items():
        metrics_artifact.log_metric(k, float(v))
    Path(metrics_artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_artifact.path).write_text(json.dumps(dict(numbers), indent=2, sort_keys=True))


def read_kfp_metrics(metrics_artifact) -> dict[str, float]:
    """Numbers of an upstream ``Metrics`` artifact: its metadata, else the JSON file."""
    meta = {k: v for k, v in dict(getattr(metrics_artifact, "metadata", {}) or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if meta:
        return meta
    p = Path(metrics_artifact.path)
    return json.loads(p.read_text()) if p.is_file() else {}


def image_html(title: str, png: Path, caption: str = "") -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return (f"<html><body><h3>{title}</h3><img src='data:image/png;base64,{data}' style='max-width:100%'/>"
            f"<p>{caption}</p></body></html>")


def run_stage(stage: str, config: Mapping[str, Any] | None, *, overrides: Mapping[str, Any],
              output_dir: str | Path | None = None, metrics=None, report=None,
              report_fn: Callable[[Any, dict], str] | None = None, html=None,
              html_fn: Callable[[Any, dict, Path], str | None] | None = None,
              tags: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None,
              experiment: str = "", num_nodes: int = 1) -> dict:
    """Run one stage: config -> pro_lib function -> MLflow child run -> KFP artifacts.

    ``defaults``: the pipeline's defaults for this stage, under ``config`` (:func:`merge_stage_config`);
    the run records the effective config as params and as ``<stage>/stage_config.json`` (submitted,
    pipeline defaults, effective). ``experiment``: the pipeline's MLflow experiment (:func:`use_experiment`).

    ``output_dir``: the stage's output folder (for MLflow artifacts); defaults to the config's
    ``output_dir``. ``report_fn(cfg, result)`` returns Markdown for ``report``; ``html_fn`` returns
    HTML for ``html`` (plots as embedded PNG) or None.
    """
    from pro_lib import tracking
    from pro_lib.config import to_dict

    setup_logging()
    tracking.interrupt_on_sigterm()  # a cancelled task / deleted pod ends the stage's run KILLED, not RUNNING
    use_experiment(experiment)
    spec = STAGES[stage]
    _, fn = spec.load()
    cfg = build_stage_config(stage, config, overrides, defaults)
    out = Path(output_dir or getattr(cfg, "output_dir", "") or ".")
    objective = (tags or {}).get("pro.objective")
    with tracking.stage_run(stage, to_dict(cfg), tags={**dict(tags or {}), OUTPUT_TAG: output_key(out)},
                            run_name=f"{stage}[{objective}]" if objective else None) as run:
        log_stage_config(stage, config, defaults, to_dict(cfg))
        log_stage_datasets(overrides, "input", stage=stage)
        result = call_stage(stage, cfg, num_nodes=num_nodes, run_id=run.info.run_id)
        if stage in OUTPUT_DATASETS:
            tracking.log_dataset(out, context="output")
        numbers = tracking.log_metrics(result)
        if report is not None and report_fn is not None:
            text = report_fn(cfg, result)
            Path(report.path).parent.mkdir(parents=True, exist_ok=True)
            Path(report.path).write_text(text)
            tracking.log_artifacts(Path(report.path), f"{stage}/report")
        if html is not None and html_fn is not None:
            page = html_fn(cfg, result, out)  # may add plot files to ``out``
            Path(html.path).parent.mkdir(parents=True, exist_ok=True)
            Path(html.path).write_text(page or "<html><body>no plot for this run</body></html>")
        _log_small_artifacts(out, stage)
        run_id = run.info.run_id
    if stage in EVALUATION_STAGES:
        log_parent_summary(stage, numbers)
    write_kfp_metrics(metrics, numbers)
    log.info("stage %s finished (MLflow run %s): %s", stage, run_id,
             ", ".join(f"{k}={v:.4g}" for k, v in list(numbers.items())[:8]))
    return result


def call_stage(stage: str, cfg, *, num_nodes: int = 1, run_id: str | None = None) -> dict:
    """The stage function on ``cfg``: in this process, or data-parallel when the stage is trainable and
    there is more than one process to use (the pod's GPUs, ``PRO_NPROC_PER_NODE`` on a CPU, or
    ``num_nodes`` > 1). On a cluster (``KUBERNETES_SERVICE_HOST``) more than one node is a TrainJob
    (components/trainjob.py); elsewhere (``pro pipeline run --local``) the nodes are local torchrun
    agents started by the same launcher. Rank 0's metrics come back; rank 0 wrote the outputs."""
    from pro_lib import distributed, launcher
    from pro_lib.config import to_dict
    from pro_lib.errors import ConfigError

    spec = STAGES[stage]
    _, fn = spec.load()
    num_nodes = 1 if num_nodes is None else int(num_nodes)
    if num_nodes < 1:
        raise ConfigError(f"num_nodes must be >= 1, got {num_nodes}")
    if not spec.trainable:
        return fn(cfg)
    nproc = launcher.default_nproc_per_node()
    if num_nodes == 1 and nproc == 1:
        return fn(cfg)
    job = distributed.StageSpec(stage=stage, module=spec.module, function=spec.function,
                                config_class=spec.config, config=to_dict(cfg), mlflow_run_id=run_id)
    if num_nodes > 1 and os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("PRO_DIST_LOCAL") != "1":
        from components.trainjob import run_trainjob

        return run_trainjob(stage, job, num_nodes=num_nodes, gpus_per_node=nproc if _gpus() else 0,
                            cpu=os.environ.get("PRO_NODE_CPU"), memory=os.environ.get("PRO_NODE_MEMORY"))
    plan = launcher.LaunchPlan.for_pod(num_nodes, nproc_per_node=nproc)
    return launcher.run_stage_distributed(job, plan, work_dir=scratch_dir(f"{stage}-ranks"))


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


STAGE_CONFIG_FILE = "stage_config.json"


def log_stage_config(stage: str, config: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None,
                     effective: Mapping[str, Any]) -> None:
    """``<stage>/stage_config.json`` on the active run: what was submitted, the pipeline's defaults and
    the effective config the stage ran with (also the run's params)."""
    import mlflow

    mlflow.log_dict({"submitted": dict(config or {}), "pipeline_defaults": dict(defaults or {}),
                     "effective": dict(effective)}, f"{stage}/{STAGE_CONFIG_FILE}")


# component overrides that name a stage's input data (files or folders); stages whose output is data
DATASET_INPUTS = {"data": "training", "eval_data": "evaluation", "targets": "training",
                  "train_targets": "training", "samples": "training"}
OUTPUT_DATASETS = {"prepare_data", "score_targets", "wic_online_sample"}


EVALUATION_STAGES = {"evaluate_orchestrator", "wic_evaluate", "morlhf_evaluate"}
OUTPUT_TAG = "pro.output_dir"  # a stage run's output folder: how a register stage finds the training run


def output_key(path: str | Path) -> str:
    return str(Path(path).resolve())


def log_parent_summary(stage: str, numbers: Mapping[str, float]) -> None:
    """An evaluation stage's numbers also on the pipeline's parent run, as ``<stage>.<metric>``."""
    from mlflow.entities import Metric

    from pro_lib import tracking

    parent = tracking.parent_run_id()
    if not parent or not numbers:
        return
    import time

    now = int(time.time() * 1000)
    items = [Metric(tracking.sanitize_key(f"{stage}.{k}"), float(v), now, 0) for k, v in numbers.items()]
    for start in range(0, len(items), 500):
        tracking.client().log_batch(parent, metrics=items[start:start + 500])


def training_run_of(model_dir: str | Path) -> str | None:
    """The MLflow run of the stage that wrote ``model_dir`` (or the folder it is a ``subdir`` of), found by
    its :data:`OUTPUT_TAG` in this run's experiment; None when no stage run wrote it (a folder assembled
    at registration, e.g. the pro-endpoint bundle)."""
    from pro_lib import tracking

    c = tracking.client()
    exp_id = tracking.ensure_experiment()
    for p in (Path(model_dir), Path(model_dir).parent):
        key = output_key(p).replace("'", "\\'")
        runs = c.search_runs([exp_id], f"tags.`{OUTPUT_TAG}` = '{key}' and tags.`pro.role` = 'stage'",
                             order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0].info.run_id
    return None


def log_stage_datasets(overrides: Mapping[str, Any], _where: str = "input", *, stage: str = "") -> None:
    """Each input data file of a stage, logged with ``mlflow.data`` (context training / evaluation; an
    evaluation stage's ``data`` is its held-out data)."""
    from pro_lib import tracking

    for key, context in DATASET_INPUTS.items():
        if stage in EVALUATION_STAGES and key == "data":
            context = "evaluation"
        value = overrides.get(key)
        for p in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(p, str) and p and Path(p).exists():
                tracking.log_dataset(p, context=context)


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for stage outputs that are not KFP artifacts (logged to MLflow instead)."""
    return Path(tempfile.mkdtemp(prefix=f"pro-{prefix}-"))


def md_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |\n" for r in rows)


# -- helpers the component bodies call -------------------------------------------------------

def parse_objective_spec(spec: str) -> tuple[str, str | None]:
    """``helpful`` -> ("helpful", "helpful"); ``helpful=hh-rlhf/helpful-base`` -> (..., that source);
    ``helpful=`` -> ("helpful", None): train on every pair, no source filter."""
    from pro_lib.errors import ConfigError

    name, eq, source = str(spec).partition("=")
    name = name.strip()
    if not name:
        raise ConfigError(f"bad objective {spec!r}: expected name or name=<source filter>")
    if not eq:
        return name, name
    return name, (source.strip() or None)


def reward_suite_specs(objectives: list, model_dirs: list[str]) -> list[str]:
    """``name=<model dir>`` per objective, in the order of ``objectives``, matching each trained
    reward model by the objective recorded in its folder (pro_reward.json)."""
    from pro_lib.artifacts import RewardModelInfo
    from pro_lib.errors import CheckpointError, ConfigError
    from pro_lib.suite import reward_model_info

    by_name: dict[str, str] = {}
    for d in model_dirs:
        info = reward_model_info(Path(d))
        if not info.objective:
            raise CheckpointError(f"{d} has no {RewardModelInfo.FILE} naming its objective; "
                                  "train it with `pro rewards train`")
        by_name[info.objective] = str(d)
    specs = []
    for spec in objectives:
        name, _ = parse_objective_spec(spec)
        if name not in by_name:
            raise ConfigError(f"no trained reward model for objective '{name}' (have: {sorted(by_name)})")
        specs.append(f"{name}={by_name[name]}")
    return specs


def suite_dir(path: str) -> str:
    """A targets folder holds its suite in ``suite/``; accept either."""
    from pro_lib.artifacts import SuiteManifest

    return str(SuiteManifest.folder(path))


def registered_name(name: str, objective: str = "", prefix: str = "") -> str:
    """``prefix + name`` with ``{objective}`` filled in. ``prefix`` (the pipeline parameter
    ``registered_prefix``, e.g. ``test-``) keeps a trial run's versions and aliases off the production names."""
    from pro_lib.errors import ConfigError

    if prefix and not all(ch.isalnum() or ch in "-_." for ch in prefix):
        raise ConfigError(f"registered_prefix {prefix!r}: use letters, digits, '-', '_' or '.' (e.g. 'test-')")
    if "{objective}" in name:
        if not objective:
            raise ConfigError(f"registered name {name!r} needs an objective")
        name_, _ = parse_objective_spec(objective)
        name = name.replace("{objective}", name_)
    return f"{prefix}{name}"


def register_stage(name: str, model_dir: str, metrics_artifact, *, objective: str = "", gate_metric: str = "",
                   gate_mode: str = "", name_prefix: str = "", experiment: str = "") -> str:
    from pro_lib import packaging, registry, tracking

    setup_logging()
    use_experiment(experiment)
    name = registered_name(name, objective, name_prefix)
    numbers = read_kfp_metrics(metrics_artifact) if metrics_artifact is not None else {}
    trained_by = training_run_of(model_dir)
    tags = {"pro.registered_name": name, **({"pro.training_run": trained_by} if trained_by else {})}
    with tracking.stage_run("register_model", {"name": name, "gate_metric": gate_metric or "default"},
                            tags=tags, run_name=f"register_model[{name}]"):
        version = registered_from(name, trained_by)
        if version:  # a cached rerun: the same training run's weights are registered already
            print(f"models:/{name}/{version} already holds the weights of training run {trained_by}: "
                  "not registered again")
        else:
            # the version (its run_id, its LoggedModel) belongs to the training run, with its loss curves
            version = packaging.register_model(model_dir, name, run_id=trained_by, metrics=numbers,
                                               gate_metric=gate_metric or None, gate_mode=gate_mode or None)
        tracking.log_metrics({"registered_version": int(version)})
    print(f"registered models:/{name}/{version} (alias {registry.CHALLENGER})")
    return version


def registered_from(name: str, run_id: str | None) -> str | None:
    """The version of ``name`` registered from training run ``run_id`` already, if any (it gets the
    alias ``challenger`` back); None otherwise."""
    from pro_lib import registry, tracking

    if not run_id:
        return None
    c = tracking.client()
    try:
        found = c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - no such model yet
        return None
    if not found:
        return None
    version = str(max(int(v.version) for v in found))
    c.set_registered_model_alias(name, registry.CHALLENGER, version)
    return version


def register_endpoint_stage(name: str, orchestrator_dir: str, policy_dir: str, targets_dir: str,
                            reward_model_dirs: list[str], metrics_artifact, *, gate_metric: str = "",
                            gate_mode: str = "", name_prefix: str = "", experiment: str = "") -> str:
    """Assemble the pro-endpoint folder (orchestrator + policy + reward suite) and register it."""
    from pro_lib.serving import build_endpoint

    folder = build_endpoint(scratch_dir("endpoint") / "endpoint", orchestrator=orchestrator_dir,
                            policy=policy_dir, suite=suite_dir(targets_dir), reward_models=reward_model_dirs)
    return register_stage(name, str(folder), metrics_artifact, gate_metric=gate_metric, gate_mode=gate_mode,
                          name_prefix=name_prefix, experiment=experiment)


def promote_stage(name: str, version: str, *, objective: str = "", force: bool = False, reason: str = "",
                  name_prefix: str = "", experiment: str = "") -> str:
    from pro_lib import promotion, tracking

    setup_logging()
    use_experiment(experiment)
    name = registered_name(name, objective, name_prefix)
    with tracking.stage_run("promote", {"name": name, "version": version, "force": force},
                            tags={"pro.registered_name": name}, run_name=f"promote[{name}]"):
        result = promotion.promote(name, version=version, force=force, reason=reason or None)
        import mlflow

        mlflow.set_tags({"pro.promoted": str(result.promoted).lower(), "pro.promotion": result.message})
        tracking.log_metrics({"promoted": result.promoted})
        from pro_lib.io import write_json

        tmp = scratch_dir("promotion")
        write_json(tmp / "promotion.json", result.to_dict())
        tracking.log_artifacts(tmp / "promotion.json", "promote")
    print(f"{name}: {result.message}")
    return result.message
