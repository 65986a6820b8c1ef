"""Compile a pipeline to YAML, run it on this machine with KFP's local runner, or submit it to a Kubeflow
Pipelines cluster (``pro pipeline compile|run --local|submit``; the arguments come from
:mod:`pipelines.params`)."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from pipelines.params import pipeline_defaults
from pro_lib.errors import ConfigError

PIPELINE_DIR = Path(__file__).resolve().parent


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
