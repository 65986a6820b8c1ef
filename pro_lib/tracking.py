"""MLflow tracking: one parent run per pipeline run, one child run per stage.

Where runs go: ``MLFLOW_TRACKING_URI`` (an ``http://`` MLflow server, a ``postgresql+psycopg2://``
or ``sqlite:///`` store); unset, a local SQLite store ``$PRO_HOME/mlflow.db`` with artifacts in
``$PRO_HOME/mlartifacts``. The experiment is ``$PRO_EXPERIMENT`` (default ``pro``).

How a stage finds its parent run, in order:

1. ``PRO_PARENT_RUN_ID`` (set by :func:`pipeline_run`, which ``pro pipeline run --local`` uses);
2. ``PRO_KFP_RUN`` (on a cluster every pod gets its Argo workflow name through the downward API):
   the parent is found, or created, by the tag ``pro.kfp_run``. The parent id is deliberately not
   a pipeline parameter or task input: that would change every task's cache key on every run and
   switch KFP caching off;
3. neither: the stage run is a top-level run.

>>> with pipeline_run("orchestrator", {"objectives": "helpful,harmless"}):
...     with stage_run("train_orchestrator", to_dict(cfg)) as run:
...         log_metrics(train_orchestrator(cfg))
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from pro_lib.artifacts import EVAL_FILE
from pro_lib.errors import TrackingUnavailable
from pro_lib.io import pro_home

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "pro"
PARENT_ENV = "PRO_PARENT_RUN_ID"
KFP_RUN_ENV = "PRO_KFP_RUN"
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def tracking_uri(env: Mapping[str, str] | None = None, *, create: bool = True) -> str:
    """``MLFLOW_TRACKING_URI`` or the local SQLite store ``$PRO_HOME/mlflow.db`` (the one default;
    ``create`` makes ``$PRO_HOME`` so that SQLite can open the file there)."""
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{pro_home(env, create=create) / 'mlflow.db'}"


def is_local_store(uri: str | None = None) -> bool:
    uri = uri or tracking_uri()
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def experiment_name() -> str:
    return os.environ.get("PRO_EXPERIMENT") or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def configure() -> str:
    """Point mlflow at :func:`tracking_uri` (tracking and registry); return the URI.

    A tracking server that does not answer fails here, fast, with :class:`TrackingUnavailable`
    (see :func:`check_reachable`).
    """
    uri = tracking_uri()
    check_reachable(uri)  # before importing mlflow (seconds): an unreachable server fails at once
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


PROBE_TIMEOUT_S = 5.0
_REACHABLE: set[str] = set()  # URIs that answered once in this process


def check_reachable(uri: str | None = None, timeout: float | None = None) -> None:
    """Raise :class:`TrackingUnavailable` unless the tracking server at ``uri`` answers.

    MLflow retries a refused connection seven times with backoff (minutes) before it gives up with a
    traceback. This is one short probe (``GET <uri>/health``, ``PRO_MLFLOW_PROBE_TIMEOUT`` seconds,
    default 5) before a command uses the server; the first success is remembered per process, so
    long-running stages keep MLflow's retries for transient errors during the run. Stores that are
    not servers (``sqlite:``, ``file:``, databases) are not probed.
    """
    uri = (uri or tracking_uri()).rstrip("/")
    if uri in _REACHABLE or not uri.startswith(("http://", "https://")):
        return
    import requests

    timeout = timeout or float(os.environ.get("PRO_MLFLOW_PROBE_TIMEOUT") or PROBE_TIMEOUT_S)
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
    try:
        r = requests.get(f"{uri}/health", timeout=timeout, allow_redirects=False,
                         verify=not insecure and (os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True))
        why = f"it answers HTTP {r.status_code}" if r.status_code in (502, 503, 504) else None
        if why is None and (other := _not_mlflow(r)):
            raise TrackingUnavailable(
                f"MLFLOW_TRACKING_URI={uri} answers, but not as an MLflow tracking server: GET {uri}/health gave "
                f"{other} where MLflow answers 'OK'. Wrong host or port? Set MLFLOW_TRACKING_URI to the MLflow "
                "server (unset, PRO uses the local store $PRO_HOME/mlflow.db)")
    except requests.exceptions.SSLError:
        why = None  # something answers; MLflow reports its own TLS settings problem
    except requests.exceptions.RequestException as exc:
        why = connection_problem(exc)
    if why:
        raise TrackingUnavailable(unreachable_message(uri, why))
    _REACHABLE.add(uri)


def _not_mlflow(r) -> str | None:
    """What answered ``GET /health`` when it was not an MLflow server (HTTP status, type, the start of its
    text); None when it was, or may be (MLflow answers 'OK'; login walls and redirects are left to MLflow)."""
    if r.status_code == 200 and r.text.strip() == "OK":
        return None
    if r.status_code in (401, 403, 407) or 300 <= r.status_code < 400:
        return None
    text = " ".join(r.text.split())
    kind = r.headers.get("content-type", "no content type").split(";")[0]
    return f"HTTP {r.status_code} ({kind}: {text[:80]!r}{'...' if len(text) > 80 else ''})"


def is_connection_failure(exc: BaseException) -> bool:
    """An MLflow/requests error that means the server did not answer (not a "no such model")."""
    if isinstance(exc, (TrackingUnavailable, ConnectionError)):
        return True
    text = str(exc)
    needles = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
               "Read timed out", "RemoteDisconnected", "Connection aborted")
    return any(k in text for k in needles)


def connection_problem(exc: BaseException) -> str:
    text = str(exc)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                          ("No route to host", "no route to host"), ("Temporary failure in name", "unknown host")):
        if needle in text:
            return short
    return type(exc).__name__


def unreachable_message(uri: str, why: str) -> str:
    return (f"the MLflow tracking server at {uri} is not reachable ({why}). Check it with "
            f"`curl {uri}/health` (a running server answers OK), start it, or set MLFLOW_TRACKING_URI to "
            f"a running server (unset, PRO uses the local store $PRO_HOME/mlflow.db)")


def client():
    uri = configure()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str | None = None) -> str:
    """The experiment's id, creating it (artifacts under ``$PRO_HOME/mlartifacts`` for local stores)."""
    name = name or experiment_name()
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if is_local_store():
        location = (pro_home() / "mlartifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by a parallel stage
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> ``a.b`` keys; values as strings within MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[name] = text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."
    return out


def numeric_metrics(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The finite numbers in a (nested) metrics dict; strings, lists and NaN are left out."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, prefix=f"{name}."))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)) or type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
            f = float(value)
            if math.isfinite(f):
                out[name] = f
    return out


def sanitize_key(key: str) -> str:
    """A metric/param key MLflow accepts (registry, components use it)."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)



def _find_or_create_kfp_parent(kfp_run: str, pipeline: str | None) -> str:
    """Parent run for a KFP run: found by tag, else created; parallel stages converge on the oldest."""
    c = client()
    exp_id = ensure_experiment()
    query = f"tags.`pro.kfp_run` = '{kfp_run}' and tags.`pro.role` = 'pipeline'"

    def search():
        return c.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], max_results=5)

    found = search()
    if found:
        return found[0].info.run_id
    run = c.create_run(exp_id, run_name=pipeline or kfp_run,
                       tags={"pro.kfp_run": kfp_run, "pro.role": "pipeline", "pro.pipeline": pipeline or ""})
    time.sleep(0.5)
    found = search()
    winner = found[0].info.run_id if found else run.info.run_id
    if winner != run.info.run_id:  # another stage created one first: use it, drop ours
        c.delete_run(run.info.run_id)
    return winner


def parent_run_id() -> str | None:
    """The current pipeline run's MLflow run id (see the module docs), or None."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    kfp_run = os.environ.get(KFP_RUN_ENV)
    if kfp_run:
        key = (tracking_uri(), experiment_name(), kfp_run)
        if key not in _KFP_PARENTS:
            _KFP_PARENTS[key] = _find_or_create_kfp_parent(kfp_run, os.environ.get("PRO_PIPELINE"))
        return _KFP_PARENTS[key]
    return None


_KFP_PARENTS: dict[tuple[str, str, str], str] = {}  # per process: one lookup per KFP run


@contextlib.contextmanager
def pipeline_run(pipeline: str, params: Mapping[str, Any] | None = None, *,
                 run_name: str | None = None, tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """Create the parent run of a pipeline run; stages started inside become its children.

    Sets ``PRO_PARENT_RUN_ID`` for the duration (subprocesses such as KFP's local runner inherit
    it); the run ends FINISHED, or FAILED when the block raises.
    """
    c = client()
    exp_id = ensure_experiment()
    run = c.create_run(exp_id, run_name=run_name or pipeline,
                       tags={"pro.role": "pipeline", "pro.pipeline": pipeline, **dict(tags or {})})
    rid = run.info.run_id
    for key, value in flatten_params(params).items():
        c.log_param(rid, sanitize_key(key), value)
    old = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = rid
    status = "FAILED"
    try:
        yield rid
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        c.set_terminated(rid, status)
        if old is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = old


# KFP's PipelineTaskFinalStatus.state -> MLflow run status
KFP_FINAL_STATES = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "CANCELED": "KILLED", "CANCELLED": "KILLED",
                    "SYSTEM_ERROR": "FAILED"}


def log_params_once(run_id: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    """Log (flattened) params that the run does not have yet (MLflow params cannot change); returns them."""
    c = client()
    have = c.get_run(run_id).data.params
    new = {k: v for k, v in ((sanitize_key(k), v) for k, v in flatten_params(params).items()) if k not in have}
    if new:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in new.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            c.log_batch(run_id, params=items[start:start + 100])
    return new


def finish_pipeline_run(state: str, params: Mapping[str, Any] | None = None, *, error: str | None = None,
                        pipeline: str | None = None) -> str | None:
    """End the pipeline's parent run (the KFP exit handler calls this whatever the outcome).

    ``state``: KFP's final state (SUCCEEDED, FAILED, CANCELED...) -> FINISHED / FAILED / KILLED.
    ``params``: every pipeline parameter (defaults included), logged on the parent run. On a cluster
    the parent is found (or, when the first stage never started, created) by ``PRO_KFP_RUN``.
    Returns the parent run id (None outside a pipeline).
    """
    if pipeline and not os.environ.get("PRO_PIPELINE"):
        os.environ["PRO_PIPELINE"] = pipeline
    rid = parent_run_id()
    if rid is None:
        log.warning("no pipeline parent run (neither %s nor %s set): nothing to end", PARENT_ENV, KFP_RUN_ENV)
        return None
    status = KFP_FINAL_STATES.get(str(state).upper(), "FAILED")
    decoded = {k: _maybe_json(v) for k, v in dict(params or {}).items()}
    log_params_once(rid, decoded)
    c = client()
    c.set_tag(rid, "pro.final_state", str(state))
    if error:
        c.set_tag(rid, "pro.error", str(error)[:5000])
    c.set_terminated(rid, status)
    log.info("pipeline run %s ended %s (KFP state %s)", rid, status, state)
    return rid


def _maybe_json(value: Any) -> Any:
    """Dict/list parameters may arrive as JSON text: decode them (one param per key, as pipeline_run logs)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@contextlib.contextmanager
def stage_run(stage_name: str, params: Mapping[str, Any] | None = None, *,
              tags: Mapping[str, str] | None = None, run_name: str | None = None):
    """A child run of the pipeline's parent run (or a top-level run outside a pipeline), named ``run_name``
    (default: the stage's name; ``train_reward_model[helpful]`` tells parallel stages apart).

    Yields the active ``mlflow.ActiveRun``; :func:`log_metrics` / :func:`log_artifacts` log to it.
    """
    import mlflow

    configure()
    parent = parent_run_id()
    if parent:
        exp_id = client().get_run(parent).info.experiment_id
    else:
        exp_id = ensure_experiment()
    all_tags = {"pro.role": "stage", "pro.stage": stage_name, **dict(tags or {})}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name or stage_name, parent_run_id=parent,
                          nested=mlflow.active_run() is not None, tags=all_tags) as run:
        flat = flatten_params(params)
        if flat:
            mlflow.log_params({sanitize_key(k): v for k, v in flat.items()})
        try:
            yield run
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (interrupt_on_sigterm): KILLED, never left RUNNING
            mlflow.end_run("KILLED")
            raise


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cancelled KFP task, a deleted pod) raised as an interrupt, so that ``finally`` blocks
    and run contexts end MLflow runs as KILLED instead of leaving them RUNNING forever."""


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (where Python delivers signals).

    Left alone outside the main thread and where a handler other than the default is installed already
    (a server, a test runner, torchrun's agent)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return

    def _raise(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> dict[str, float]:
    """Log the numeric entries of ``metrics`` to the active run; return what was logged."""
    import mlflow

    nums = {sanitize_key(k): v for k, v in numeric_metrics(metrics).items()}
    if nums:
        mlflow.log_metrics(nums, step=step)
    return nums


def log_step(metrics: Mapping[str, Any], step: int) -> None:
    """Per-step training metrics (loss curves) to the active run, asynchronously; a no-op outside a run."""
    import mlflow

    if mlflow.active_run() is None:
        return
    nums = {sanitize_key(k): v for k, v in numeric_metrics(metrics).items()}
    if nums:
        mlflow.log_metrics(nums, step=int(step), synchronous=False)


def trainer_callback():
    """A transformers ``TrainerCallback`` that sends every trainer log (loss, lr, grad norm, rewards...)
    to the active MLflow run as ``train/<key>`` at the trainer's global step (main process only)."""
    from transformers import TrainerCallback

    class StepMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log_step({f"train/{k}": v for k, v in logs.items()}, state.global_step)

    return StepMetrics()


DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def log_dataset(path: str | Path, *, context: str, name: str | None = None) -> int:
    """Log a data file (or every data file of a folder) to the active run with ``mlflow.data``
    (source, schema, digest, row count); returns how many were logged. Never fails a stage."""
    import mlflow
    import pandas as pd

    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.suffix in DATASET_SUFFIXES and f.is_file()
                   and f.name not in ("metrics.json", EVAL_FILE)) if path.is_dir() else [path]
    done = 0
    for f in files:
        if f.suffix not in DATASET_SUFFIXES or not f.is_file():
            continue
        try:
            if f.suffix == ".json":
                records = json.loads(f.read_text())
                if not isinstance(records, list):  # a report (one JSON object), not a table of rows
                    log.debug("not logging %s as a dataset: a JSON object, not a list of rows", f)
                    continue
                df = pd.DataFrame(records)
            else:
                df = (pd.read_json(f, lines=True) if f.suffix == ".jsonl" else pd.read_csv(f) if f.suffix == ".csv"
                      else pd.read_parquet(f))
            # nested cells (lists, dicts) as JSON text: the schema stays flat and the digest stable
            df = df.apply(lambda col: col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))
            ds = mlflow.data.from_pandas(df, source=str(f.resolve()), name=name or f"{f.parent.name}/{f.name}")
            mlflow.log_input(ds, context=context)
            done += 1
        except Exception as exc:  # noqa: BLE001 - lineage is best effort, the stage's result is not
            log.warning("could not log dataset %s to MLflow: %s", f, exc)
    return done


def log_artifacts(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a folder to the active run."""
    import mlflow

    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def run_url(run_id: str) -> str:
    """Where to look at a run: the server's UI URL, or how to open the local store."""
    uri = tracking_uri()
    c = client()
    run = c.get_run(run_id)
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return f"run {run_id} in {uri} (browse: mlflow ui --backend-store-uri {uri})"
