"""`pro pipeline ...` (plugged into the `pro` command via the `pro.commands` entry-point group, so
pro_lib itself never imports kfp). `pro registry ...` is a library command: pro_lib/commands/registry.py.

    pro pipeline list
    pro pipeline compile [NAME ...] [--image IMAGE] [--check]
    pro pipeline run --local NAME [--set key=value ...] [--params-file FILE]
    pro pipeline submit NAME --host URL [--namespace pro] [--experiment pro] [--run-name NAME] [--set ...]

This module is the argparse; the parameters (--set, --params-file, their checks) are pipelines/params.py,
compile / local run / submit pipelines/runner.py, what is printed after a run pipelines/report.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from pipelines.params import pipeline_arguments, pipeline_defaults
from pipelines.report import print_summary
from pipelines.runner import PIPELINE_DIR, compile_pipeline, require_kfp_endpoint, run_local, same_spec, submit


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


def _cmd_run(args) -> None:
    if not args.local:
        sys.exit("error: `pro pipeline run` runs on this machine and needs --local; "
                 "use `pro pipeline submit` for a Kubeflow Pipelines cluster")
    from pro_lib.tracking import check_reachable

    check_reachable()  # a tracking server that is away fails now, not after minutes of retries
    arguments = pipeline_arguments(args.name, args.set, args.params_file)
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
    print_summary(summary)


def _cmd_submit(args) -> None:
    require_kfp_endpoint(args.host)
    arguments = pipeline_arguments(args.name, args.set, args.params_file)
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
