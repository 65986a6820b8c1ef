"""`pro pipeline ...` (plugged into the `pro` command via the `pro.commands` entry-point group, so
pro_lib itself never imports kfp). `pro registry ...` is a library command: pro_lib/commands/registry.py.

    pro pipeline list
    pro pipeline compile [NAME ...] [--image IMAGE] [--check]
    pro pipeline run --local NAME [--set key=value ...] [--params-file FILE]
    pro pipeline submit NAME --host URL [--namespace pro] [--experiment pro] [--run-name NAME] [--set ...]
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from pro_lib.errors import ConfigError

PIPELINE_DIR = Path(__file__).resolve().parent
NULL = "null"  # KFP parameters cannot carry None; stage configs read the string "null" as None


# -- pipeline parameters --------------------------------------------------------------------

def pipeline_defaults(fn) -> dict[str, Any]:
    """The pipeline's parameters and their defaults (from the Python signature)."""
    sig = inspect.signature(fn.pipeline_func if hasattr(fn, "pipeline_func") else fn)
    return {n: copy.deepcopy(p.default) for n, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty}


def parse_sets(sets: list[str], defaults: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` (value parsed as YAML) and ``config.key=value`` (one key of a dict parameter,
    merged into its default) -> the arguments that differ from the defaults."""
    args: dict[str, Any] = dict(base or {})
    for item in sets:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set reward_config.epochs=2)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        top, dot, sub = key.partition(".")
        if top not in defaults:
            raise ConfigError(f"--set {item!r}: unknown pipeline parameter '{top}'; parameters: "
                              f"{', '.join(defaults)}")
        if dot:
            current = args.get(top, copy.deepcopy(defaults[top]))
            if not isinstance(current, dict):
                raise ConfigError(f"--set {item!r}: parameter '{top}' is not a dict; use --set {top}=<value>")
            node = current
            parts = sub.split(".")
            for i, p in enumerate(parts[:-1]):
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {item!r}: '{top}.{'.'.join(parts[:i + 1])}' is not a dict; "
                                      f"use --set {top}.{'.'.join(parts[:i + 1])}=<value>")
            node[parts[-1]] = NULL if value is None else value
            args[top] = current
        else:
            args[top] = value
    return args


# Dict parameters that are one stage's config (keys = that stage's CLI flags): pipeline parameter -> stage.
STAGE_CONFIG_PARAMS = {
    "data_config": "prepare_data", "reward_config": "train_reward_model", "score_config": "score_targets",
    "orchestrator_config": "train_orchestrator", "eval_config": "evaluate_orchestrator",
    "wic_offline_config": "wic_offline_sft", "wic_sample_config": "wic_online_sample",
    "wic_online_config": "wic_online_sft", "wic_eval_config": "wic_evaluate",
    "morlhf_config": "morlhf_train", "morlhf_eval_config": "morlhf_evaluate",
    "judge_config": "judge_evaluate",
}


def check_stage_configs(arguments: dict[str, Any]) -> None:
    """Every key (and value) of a stage-config parameter against the stage's config class, before anything
    starts: a typo is a one-line error with a suggestion here, not a failed pod later."""
    import typing

    from components.runtime import STAGES
    from pro_lib.config import _coerce, unknown_key_message

    from pro_lib.targets import check_objective_name

    for item in arguments.get("objectives") or []:  # `name` or `name=<source filter>`
        check_objective_name(str(item).partition("=")[0].strip(), where="pipeline parameter objectives")
    for param, stage in STAGE_CONFIG_PARAMS.items():
        values = arguments.get(param)
        if not isinstance(values, dict):
            continue
        cls, _ = STAGES[stage].load()
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{param}: {unknown_key_message(key, fields, what=cls.__name__)}")
            if isinstance(value, dict) and typing.get_origin(hints[name]) is not dict and hints[name] is not dict:
                raise ConfigError(f"{param}.{key} is not a dict option; set it with --set {param}.{key}=<value>")
            _coerce(cls, name, None if value == NULL else value, where=f"pipeline parameter {param}")


def load_params_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--params-file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--params-file {p}: expected a mapping of pipeline parameters")
    return data


def _pipeline_args(args, name: str) -> dict[str, Any]:
    from pipelines import load_pipeline

    base = load_params_file(args.params_file)
    # Stage-config keys first: a typo fails here in a second, not after building the pipeline or in a pod.
    check_stage_configs(parse_sets([s for s in args.set or [] if s.partition("=")[0].strip().partition(".")[0]
                                    in STAGE_CONFIG_PARAMS], {p: {} for p in STAGE_CONFIG_PARAMS},
                                   {k: v for k, v in base.items() if k in STAGE_CONFIG_PARAMS}))
    defaults = pipeline_defaults(load_pipeline(name))
    for k in base:
        if k not in defaults:
            raise ConfigError(f"{args.params_file}: unknown pipeline parameter '{k}'; parameters: {', '.join(defaults)}")
    return parse_sets(args.set or [], defaults, base)


# -- compile ----------------------------------------------------------------------------------

def compile_pipeline(name: str, output: str | Path | None = None, *, image: str | None = None,
                     online_rounds: int | None = None) -> Path:
    """Compile pipeline ``name`` to YAML (default: pipelines/<name>.yaml)."""
    from kfp import compiler

    from pipelines import load_pipeline

    fn = load_pipeline(name, online_rounds=online_rounds)
    out = Path(output) if output else PIPELINE_DIR / f"{name}.yaml"
    params = {"image": image} if image else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / out.name
        compiler.Compiler().compile(fn, str(tmp_file), pipeline_parameters=params)
        if out.is_file() and same_spec(out.read_text(), tmp_file.read_text()):
            return out  # unchanged as data: keep the file (no diff from the header's random dict order)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_file, out) if tmp_file.stat().st_dev == out.parent.stat().st_dev else \
            out.write_text(tmp_file.read_text())
    return out


def same_spec(a: str, b: str) -> bool:
    """Compiled YAMLs are equal as data (the SDK's header comment prints dict defaults in random order)."""
    return list(yaml.safe_load_all(a)) == list(yaml.safe_load_all(b))


def _cmd_compile(args) -> None:
    from pipelines import PIPELINES

    names = args.names or list(PIPELINES)
    stale = []
    for name in names:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                fresh = compile_pipeline(name, Path(tmp) / f"{name}.yaml", image=args.image,
                                         online_rounds=args.online_rounds).read_text()
            committed = PIPELINE_DIR / f"{name}.yaml"
            if not committed.is_file() or not same_spec(committed.read_text(), fresh):
                stale.append(name)
            continue
        out = compile_pipeline(name, Path(args.output_dir) / f"{name}.yaml" if args.output_dir else None,
                               image=args.image, online_rounds=args.online_rounds if name == "pro_wic" else None)
        print(f"compiled {name} -> {out}")
    if args.check:
        if stale:
            sys.exit(f"out of date: {', '.join(stale)}; run `pro pipeline compile` and commit the YAML")
        print(f"up to date: {', '.join(names)}")


# -- local run --------------------------------------------------------------------------------

def run_local(name: str, arguments: dict[str, Any] | None = None, *, pipeline_root: str | Path | None = None,
              cache: bool = False, run_name: str | None = None, online_rounds: int | None = None) -> dict:
    """Run pipeline ``name`` with KFP's local runner (SubprocessRunner, no Docker, this Python env).

    One MLflow parent run wraps the pipeline run (its id reaches every stage subprocess through
    ``PRO_PARENT_RUN_ID``). Returns a summary: parent run id, tracking URI, outputs folder, seconds.
    """
    from kfp import local

    from pipelines import load_pipeline
    from pro_lib import tracking
    from pro_lib.io import pro_home
    from pro_lib.policy import PARALLEL_TASKS_ENV

    fn = load_pipeline(name, online_rounds=online_rounds)
    arguments = dict(arguments or {})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(pipeline_root) if pipeline_root else pro_home() / "pipeline_runs"
    root.mkdir(parents=True, exist_ok=True)
    # Stages in subprocesses must land in the same MLflow store and PRO_HOME as this process.
    os.environ["PRO_HOME"] = str(pro_home())
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if arguments.get("experiment"):  # the parent run too (the stages get the parameter)
        os.environ["PRO_EXPERIMENT"] = str(arguments["experiment"])
    # KFP's local runner runs up to two ParallelFor iterations (the reward models) at once: they split
    # the cores instead of fighting over them (pro_lib.policy.share_cpu_threads)
    os.environ.setdefault(PARALLEL_TASKS_ENV, "2")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               enable_caching=cache, raise_on_error=True)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # cluster-only settings (resources, GPU, node selectors) are expected to be no-ops here
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        # every pipeline parameter on the parent run, the defaults too (not only the overridden ones)
        with tracking.pipeline_run(name, {**pipeline_defaults(fn), **arguments}, run_name=run_name or f"{name}-{stamp}",
                                   tags={"pro.runner": "kfp-local"}) as parent:
            fn(**arguments)
    return {"pipeline": name, "parent_run_id": parent, "tracking_uri": tracking.tracking_uri(),
            "pipeline_root": str(root), "seconds": time.time() - t0}


def _print_where_to_look(summary: dict) -> None:
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
        _print_weight_response(summary["parent_run_id"])


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


def _print_weight_response(parent_run_id: str) -> None:
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


def _cmd_run(args) -> None:
    if not args.local:
        sys.exit("error: `pro pipeline run` runs on this machine and needs --local; "
                 "use `pro pipeline submit` for a Kubeflow Pipelines cluster")
    from pro_lib.tracking import check_reachable

    check_reachable()  # a tracking server that is away fails now, not after minutes of retries
    arguments = _pipeline_args(args, args.name)
    run = lambda: run_local(args.name, arguments, pipeline_root=args.pipeline_root, cache=args.cache,  # noqa: E731
                            run_name=args.run_name, online_rounds=args.online_rounds)
    if args.stream_log or getattr(args, "verbose", False):
        summary = run()
    else:   # one line per stage; KFP's task dumps and the stages' output go to the log file
        from pipelines.progress import StageReport
        from pro_lib.io import pro_home

        log = pro_home() / "logs" / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        print(f"pipeline {args.name} on KFP's local runner; full log: {log} (--verbose: stream it here)")
        try:
            with StageReport(log):
                summary = run()
        except Exception:  # noqa: BLE001 - the report printed the failed stage's lines and the log's path
            sys.exit(1)
        summary["log"] = str(log)
    _print_where_to_look(summary)


# -- submit -----------------------------------------------------------------------------------

def require_kfp_endpoint(host: str | None) -> None:
    """Without --host, kfp.Client finds KFP only inside a cluster, through a kubeconfig or from
    KF_PIPELINES_ENDPOINT; elsewhere it would fail with a connection traceback: say so first."""
    if host or os.environ.get("KF_PIPELINES_ENDPOINT") or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    configs = os.environ.get("KUBECONFIG") or "~/.kube/config"
    if not any(Path(p).expanduser().is_file() for p in configs.split(os.pathsep) if p):
        raise ConfigError("no KFP endpoint: pass --host http://<KFP API> (or set KFP_HOST), e.g. --host "
                          "http://localhost:8080 after `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`; "
                          "without --host, submit works only inside a cluster or with a kubeconfig "
                          "(KUBECONFIG or ~/.kube/config), and neither is here")


def submit(name: str, arguments: dict[str, Any], *, host: str | None, namespace: str, experiment: str,
           run_name: str | None, image: str | None = None, service_account: str | None = None,
           enable_caching: bool | None = None, existing_token: str | None = None,
           online_rounds: int | None = None):
    """Compile and submit to a KFP cluster with kfp.Client; returns the run id."""
    import kfp

    require_kfp_endpoint(host)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(name, Path(tmp) / f"{name}.yaml", image=image, online_rounds=online_rounds)
        client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
        result = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, run_name=run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=experiment, namespace=namespace, enable_caching=enable_caching,
            service_account=service_account)
    return result.run_id


def _cmd_submit(args) -> None:
    require_kfp_endpoint(args.host)
    arguments = _pipeline_args(args, args.name)
    if args.image:
        arguments.setdefault("image", args.image)
    run_id = submit(args.name, arguments, host=args.host, namespace=args.namespace, experiment=args.experiment,
                    run_name=args.run_name, image=args.image, service_account=args.service_account,
                    enable_caching=False if args.no_cache else None,
                    existing_token=os.environ.get("KFP_TOKEN") or None, online_rounds=args.online_rounds)
    where = (args.host or "the in-cluster KFP endpoint").rstrip("/")
    print(f"submitted {args.name}: run {run_id} in namespace {args.namespace}, experiment {args.experiment}")
    if args.host:
        print(f"  {where}/#/runs/details/{run_id}")


def _cmd_list(args) -> None:
    from pipelines import PIPELINES, load_pipeline

    for name in PIPELINES:
        fn = load_pipeline(name)
        desc = getattr(fn, "description", "") or ""
        print(f"{name:<14} {desc}")
        if args.verbose_params:
            for k, v in pipeline_defaults(fn).items():
                print(f"    {k} = {json.dumps(v)}")


def _add_param_flags(p) -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="pipeline parameter (value parsed as YAML); KEY may name one key of a dict "
                        "parameter: --set reward_config.epochs=2 --set objectives='[helpful, harmless]'")
    p.add_argument("--params-file", metavar="YAML", help="YAML mapping of pipeline parameters (--set wins)")
    p.add_argument("--run-name", help="run name (default: <pipeline>-<timestamp>)")
    _add_rounds_flag(p)


def _add_rounds_flag(p) -> None:
    p.add_argument("--online-rounds", type=int, default=None,
                   help="pro_wic only: number of online sampling + SFT rounds (shapes the graph; default: pipelines/pro_wic.py DEFAULT_ONLINE_ROUNDS)")


def register(subparsers) -> None:
    """`pro pipeline ...`"""
    from pipelines import PIPELINES

    names = list(PIPELINES)
    p = subparsers.add_parser(
        "pipeline", help="compile, submit or locally run the Kubeflow pipelines",
        description="PRO's Kubeflow pipelines: " + ", ".join(names) + ". Parameters of each: "
                    "`pro pipeline list --params`. Stage options live in the *_config dict parameters "
                    "(keys = the stage's CLI flags).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = sub.add_parser("list", help="list the pipelines (and their parameters)")
    c.add_argument("--params", dest="verbose_params", action="store_true", help="show parameters and defaults")
    c.set_defaults(func=_cmd_list)

    c = sub.add_parser("compile", help="compile pipelines to YAML (pipelines/<name>.yaml)",
                       description="Compile to KFP IR YAML. --image changes the default of the pipelines' "
                                   "`image` parameter (each run can still override it).")
    c.add_argument("names", nargs="*", choices=names + [[]], metavar="NAME", help=f"pipelines (default: all): {names}")
    c.add_argument("--image", help="component image name:tag baked in as the `image` parameter's default")
    c.add_argument("--output-dir", help="write YAML here instead of pipelines/")
    c.add_argument("--check", action="store_true", help="fail if the committed YAML is out of date")
    _add_rounds_flag(c)
    c.set_defaults(func=_cmd_compile)

    c = sub.add_parser("run", help="run a pipeline on this machine with KFP's local runner (--local)",
                       description="Run with kfp.local.SubprocessRunner (no Docker, no cluster): every "
                                   "component runs as a subprocess of this Python. MLflow: MLFLOW_TRACKING_URI "
                                   "or $PRO_HOME/mlflow.db.")
    c.add_argument("name", choices=names, help="pipeline")
    c.add_argument("--local", action="store_true", help="run locally (the only mode of `run`)")
    c.add_argument("--pipeline-root", help="where KFP writes task outputs (default: $PRO_HOME/pipeline_runs)")
    c.add_argument("--cache", action="store_true", help="reuse outputs of identical earlier local tasks")
    c.add_argument("--verbose", dest="stream_log", action="store_true",
                   help="stream KFP's whole log here (default: one line per stage, the log in $PRO_HOME/logs/)")
    _add_param_flags(c)
    c.set_defaults(func=_cmd_run)

    c = sub.add_parser("submit", help="submit a pipeline run to a Kubeflow Pipelines cluster (kfp.Client)",
                       description="Compile and submit. Auth: in-cluster service-account credentials, or "
                                   "KFP_TOKEN in the environment for a bearer token.")
    c.add_argument("name", choices=names, help="pipeline")
    c.add_argument("--host", default=os.environ.get("KFP_HOST"),
                   help="KFP API endpoint, e.g. http://localhost:8080 (env KFP_HOST; default: in-cluster)")
    c.add_argument("--namespace", default=os.environ.get("KFP_NAMESPACE", "pro"), help="namespace (env KFP_NAMESPACE)")
    c.add_argument("--experiment", default="pro", help="KFP experiment")
    c.add_argument("--image", help="component image name:tag for this run")
    c.add_argument("--service-account", default="pro-pipeline-runner", help="service account of the pods")
    c.add_argument("--no-cache", action="store_true", help="disable caching for this run")
    _add_param_flags(c)
    c.set_defaults(func=_cmd_submit)
