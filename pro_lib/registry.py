"""MLflow model registry: register model versions, load them by alias, registered names.

Registered names: ``pro-orchestrator``, ``pro-reward-<objective>``, ``pro-policy-<method>``, ``pro-endpoint``,
``pro-base-<name>`` (a full model that LoRA adapter versions of ``pro-policy-<method>`` name as their base).

- :func:`register_version` uploads an MLflow model folder as run artifacts and creates a new model
  version (versions are never overwritten) with the alias ``challenger``. The version carries its
  evaluation metrics as tags ``pro.metric.<name>`` and its gate as ``pro.gate_metric`` /
  ``pro.gate_mode`` (``max`` or ``min``). A PRO folder (``save_pretrained``) is registered with
  :func:`pro_lib.packaging.register_model`, which writes it as an MLflow pyfunc model first (signature,
  input example, ``code_paths``) and then calls :func:`register_version`.
- Gated promotion of a version to ``champion`` is :func:`pro_lib.promotion.promote`.
- :func:`download_model` resolves ``models:/name@alias`` or ``models:/name/<version>`` to a local
  folder (cached per store and version identity under ``$PRO_HOME/models``): the PRO folder inside
  the MLflow model (:func:`model_folder`), or a bare folder registered before that format. It is what
  every ``from_pretrained`` in PRO gets through :func:`pro_lib.refs.localize`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Mapping

from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_dir, digest_path, pro_home

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
GATE_METRIC_TAG = "pro.gate_metric"
GATE_MODE_TAG = "pro.gate_mode"
METRIC_TAG_PREFIX = "pro.metric."
FORMAT_TAG = "pro.format"   # every version registered as an MLflow pyfunc model carries it: FORMAT
FORMAT = "mlflow-pyfunc/1"
ARTIFACT_KEY = "model"      # the PRO folder is the pyfunc model's artifact of this name (pro_lib.packaging)
KIND_TAG = "pro.kind"       # orchestrator | reward | policy | endpoint

# The registered names (defined here only): pro-orchestrator, pro-reward-<objective>, pro-policy-<method>,
# pro-endpoint, pro-base-<name>.
ORCHESTRATOR_MODEL = "pro-orchestrator"
ENDPOINT_MODEL = "pro-endpoint"
REWARD_MODEL_PREFIX = "pro-reward-"
POLICY_MODEL_PREFIX = "pro-policy-"
BASE_MODEL_PREFIX = "pro-base-"   # a full causal LM that LoRA adapter policies name as their base (no gate)
# tags of every version registered through pro_lib.packaging: its size; for a LoRA adapter its base and rank
SIZE_TAG = "pro.size_bytes"
BASE_TAG = "pro.base"
BASE_DIGEST_TAG = "pro.base_digest"
RANK_TAG = "pro.adapter_rank"


def reward_model_name(objective: str) -> str:
    """``pro-reward-<objective>`` (``reward_model_name("{objective}")`` is the pipelines' template)."""
    return f"{REWARD_MODEL_PREFIX}{objective}"


def policy_model_name(method: str) -> str:
    """``pro-policy-<method>`` (pro-wic, pro-morlhf, morlhf, ...)."""
    return f"{POLICY_MODEL_PREFIX}{method}"


def model_ref(name: str, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``."""
    return f"models:/{name}@{alias}"


# Default gate per registered-name family: (metric, mode). Stages may pass their own.
DEFAULT_GATES: dict[str, tuple[str, str]] = {
    ORCHESTRATOR_MODEL: ("orchestrator_kl", "min"),
    REWARD_MODEL_PREFIX: ("accuracy", "max"),
    POLICY_MODEL_PREFIX: ("hypervolume", "max"),
}

_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def default_gate(name: str) -> tuple[str | None, str]:
    for prefix, gate in DEFAULT_GATES.items():
        if name == prefix or (prefix.endswith("-") and name.startswith(prefix)):
            return gate
    return None, "max"


def _client():
    from pro_lib.tracking import client

    return client()


def _not_found(exc: Exception) -> bool:
    """The store answered "no such model/version/alias" (a server that is away is not that)."""
    code = str(getattr(exc, "error_code", "") or "")
    if "RESOURCE_DOES_NOT_EXIST" in code:
        return True
    from pro_lib.tracking import is_connection_failure

    if is_connection_failure(exc):
        return False
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text


def _already_exists(exc: Exception) -> bool:
    return "RESOURCE_ALREADY_EXISTS" in str(getattr(exc, "error_code", "") or "") \
        or "already exists" in str(exc).lower()


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    m = _REF.match(str(ref).strip())
    if not m:
        raise ConfigError(f"bad model reference {ref!r}; expected models:/<name>@<alias> "
                          "(e.g. models:/pro-orchestrator@champion) or models:/<name>/<version>")
    return m["name"], m["alias"], m["version"]


def _metric_tags(metrics: Mapping[str, Any] | None) -> dict[str, str]:
    from pro_lib.tracking import numeric_metrics

    return {f"{METRIC_TAG_PREFIX}{k}": repr(v) for k, v in numeric_metrics(metrics).items()}


def check_registration(name: str, metrics: Mapping[str, Any] | None = None, *, gate_metric: str | None = None,
                       gate_mode: str | None = None) -> tuple[dict[str, str], str | None, str]:
    """Check a registration before anything is written: the name, the gate (``gate_metric`` /
    ``gate_mode`` default to :data:`DEFAULT_GATES`; the gate metric must be among ``metrics``, as a
    version without it can never win a gated promotion). Returns (metric tags, gate metric, gate mode)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ConfigError(f"bad registered model name {name!r}: use letters, digits, '-', '_', '.'")
    dflt_metric, dflt_mode = default_gate(name)
    gate_metric = gate_metric or dflt_metric
    gate_mode = gate_mode or dflt_mode
    if gate_mode not in ("max", "min"):
        raise ConfigError(f"gate_mode must be 'max' or 'min', got {gate_mode!r}")
    metric_tags = _metric_tags(metrics)
    if gate_metric and f"{METRIC_TAG_PREFIX}{gate_metric}" not in metric_tags:
        raise ConfigError(f"cannot register {name}: its gate metric '{gate_metric}' is not among the "
                          f"metrics given ({', '.join(sorted(k[len(METRIC_TAG_PREFIX):] for k in metric_tags)) or 'none'}); "
                          "pass metrics=... with it or choose gate_metric=")
    return metric_tags, gate_metric, gate_mode


def register_version(model_dir: str | Path, name: str, *, kind: str, source_dir: str | Path | None = None,
                     run_id: str | None = None, metrics: Mapping[str, Any] | None = None,
                     tags: Mapping[str, str] | None = None, gate_metric: str | None = None,
                     gate_mode: str | None = None, description: str | None = None) -> str:
    """Register ``model_dir`` (an MLflow model folder, as :func:`pro_lib.packaging.register_model` writes
    it from a PRO folder) as a new version of ``name`` with alias ``challenger``; return the version.

    The folder is logged as artifacts of ``run_id`` (or of a new run in the current experiment, a child
    of the pipeline's parent run when there is one) under ``registered/<name>``; the version is tagged
    with ``kind``, its metrics and its gate (see :func:`check_registration`)."""
    import mlflow

    from pro_lib import tracking

    model_dir, source_dir = Path(model_dir), Path(source_dir or model_dir)
    metric_tags, gate_metric, gate_mode = check_registration(name, metrics, gate_metric=gate_metric,
                                                             gate_mode=gate_mode)
    c = _client()
    if run_id is None:
        active = mlflow.active_run()
        if active is not None:
            run_id = active.info.run_id
    if run_id is None:  # the register run stays open until the version exists: a kill ends it KILLED
        with tracking.stage_run(f"register:{name}", {"source_dir": str(source_dir)}) as run:
            return register_version(model_dir, name, kind=kind, source_dir=source_dir, run_id=run.info.run_id,
                                    metrics=metrics, tags=tags, gate_metric=gate_metric, gate_mode=gate_mode,
                                    description=description)
    model_id = log_logged_model(c, run_id, model_dir, name=name, kind=kind, metrics=metrics)
    source = f"models:/{model_id}"
    try:
        c.get_registered_model(name)
    except Exception as exc:
        if not _not_found(exc):
            raise
        try:
            c.create_registered_model(name, tags={"pro.family": family_of(name)},
                                      description=MODEL_DESCRIPTIONS.get(kind))
        except Exception:  # registered concurrently
            c.get_registered_model(name)
    all_tags = {**metric_tags, **dict(tags or {}), "pro.source_dir": str(source_dir.resolve()),
                FORMAT_TAG: FORMAT, KIND_TAG: kind}
    if gate_metric:
        all_tags.update({GATE_METRIC_TAG: gate_metric, GATE_MODE_TAG: gate_mode})
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=all_tags, model_id=model_id,
                                description=description or version_description(kind, run_id, metrics, gate_metric))
    for _ in range(60):  # file/sql stores are READY at once; servers may take a moment
        mv = c.get_model_version(name, mv.version)
        if str(mv.status) in ("READY", "ModelVersionStatus.READY"):
            break
        time.sleep(0.5)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("registered %s version %s (alias %s) from %s", name, mv.version, CHALLENGER, source_dir)
    return str(mv.version)


MODEL_DESCRIPTIONS = {
    "orchestrator": "PRO's Preference Orchestrator: prompt -> a weight per objective (w*), trained on the reward "
                    "models' scores of the preferred responses.",
    "reward": "A Bradley-Terry reward model for one objective (the name's suffix); scores (prompt, response).",
    "policy": "A policy LLM aligned for several objectives; generates with per-prompt objective weights.",
    "endpoint": "PRO's served bundle: orchestrator + policy + reward suite as one pyfunc model "
                "(mlflow models serve -m models:/pro-endpoint@champion).",
}


def family_of(name: str) -> str:
    """The ``pro.family`` tag: ``pro-reward`` / ``pro-policy`` for the per-objective / per-method names,
    else the name itself (``pro-orchestrator``, ``pro-endpoint``; a ``registered_prefix`` stays on)."""
    for prefix in (REWARD_MODEL_PREFIX, POLICY_MODEL_PREFIX):
        i = name.find(prefix)
        if i >= 0:
            return name[:i] + prefix.rstrip("-")
    return name


def version_description(kind: str, run_id: str, metrics: Mapping[str, Any] | None, gate_metric: str | None) -> str:
    """A version's description: what it is, the run that trained it, its gate number."""
    from pro_lib.tracking import numeric_metrics

    nums = numeric_metrics(metrics)
    gate = f"; gate {gate_metric} = {nums[gate_metric]:.4g}" if gate_metric and gate_metric in nums else ""
    return f"{kind} model logged by MLflow run {run_id}{gate}."


def log_logged_model(c, run_id: str, model_dir: str | Path, *, name: str, kind: str,
                     metrics: Mapping[str, Any] | None = None) -> str:
    """``model_dir`` (an MLflow model folder) as an MLflow 3 LoggedModel of ``run_id`` (the experiment's
    Models tab), with ``metrics`` as the model's metrics (also on the run); returns its model id."""
    from mlflow.entities import LoggedModelStatus, Metric

    from pro_lib.tracking import numeric_metrics, sanitize_key

    run = c.get_run(run_id)
    lm = c.create_logged_model(run.info.experiment_id, name=name.replace("/", "-"), source_run_id=run_id,
                               tags={KIND_TAG: kind, FORMAT_TAG: FORMAT}, model_type=f"pro-{kind}")
    try:
        c.log_model_artifacts(lm.model_id, str(model_dir))
        now = int(time.time() * 1000)
        nums = [Metric(sanitize_key(k), float(v), now, 0, model_id=lm.model_id)
                for k, v in numeric_metrics(metrics).items()]
        for start in range(0, len(nums), 500):
            c.log_batch(run_id, metrics=nums[start:start + 500])
    except BaseException:  # an upload cut short (an error, Ctrl-C, SIGTERM): FAILED, never PENDING forever
        with contextlib.suppress(Exception):
            c.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
        raise
    c.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    return lm.model_id


def resolve_version(name: str, *, alias: str | None = None, version: str | int | None = None) -> str:
    c = _client()
    if version is not None:
        try:
            return str(c.get_model_version(name, str(version)).version)
        except Exception as exc:
            if _not_found(exc):
                raise CheckpointError(f"models:/{name}/{version} does not exist; "
                                      f"list versions with `pro registry list {name}`") from None
            raise
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if _not_found(exc):
            raise CheckpointError(f"models:/{name}@{alias} does not exist: no version of {name} has the "
                                  f"alias '{alias}'; list versions with `pro registry list {name}`") from None
        raise


CACHE_DIGEST_FILE = ".pro-download.sha256"  # hidden: not part of the digest it records


def download_model(ref: str) -> Path:
    """``models:/name@alias`` or ``models:/name/<version>`` -> a local folder (cached, see :func:`_cache_dir`)."""
    import mlflow

    name, alias, version = parse_ref(ref)
    version = resolve_version(name, alias=alias, version=version)
    target = _cache_dir(name, _client().get_model_version(name, version))
    stamp = target / CACHE_DIGEST_FILE
    if target.is_dir() and any(target.iterdir()):
        recorded = stamp.read_text().strip() if stamp.is_file() else None
        if recorded is not None and recorded == digest_path(target):
            return model_folder(target)
        log.warning("the cached download of models:/%s/%s in %s %s; downloading it again", name, version, target,
                    "was changed or cut short since it was downloaded" if recorded else "has no checksum")
    from pro_lib.tracking import configure

    configure()
    with atomic_dir(target) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
        # download_artifacts puts the artifact folder's contents (or the folder) under tmp
        entries = list(tmp.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not (tmp / "config.json").exists() \
                and entries[0].name == name:
            for child in entries[0].iterdir():
                child.rename(tmp / child.name)
            entries[0].rmdir()
        (tmp / CACHE_DIGEST_FILE).write_text(digest_path(tmp) + "\n")  # checked before the cache is reused
    log.info("downloaded models:/%s/%s -> %s", name, version, target)
    return model_folder(target)


def model_folder(path: str | Path) -> Path:
    """What PRO's loaders read: a downloaded version -> the PRO folder inside it (``artifacts/<folder>``
    of an MLflow model); a plain folder (versions registered before the MLflow format) as it is."""
    import yaml

    path = Path(path)
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        return path
    conf = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    art = (conf.get("artifacts") or {}).get(ARTIFACT_KEY)
    if not art:
        raise CheckpointError(f"{path} is an MLflow model but not one PRO registered (no '{ARTIFACT_KEY}' "
                              "artifact); load it with mlflow.pyfunc.load_model")
    return path / art["path"]


def _cache_dir(name: str, mv) -> Path:
    """Download cache folder of one model version: ``$PRO_HOME/models/<name>/<version>-<key>``.

    The key hashes the store (registry URI) and the version's immutable identity (run id, source,
    creation time), so version 1 of another store, or of a store recreated at the same URI, never
    hits this version's files.
    """
    from pro_lib.tracking import tracking_uri

    identity = [tracking_uri().rstrip("/"), name, str(mv.version), mv.run_id, mv.source,
                mv.creation_timestamp]
    key = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]
    return pro_home() / "models" / name / f"{mv.version}-{key}"


def _version_info(mv) -> dict:
    tags = dict(mv.tags or {})
    metrics = {k[len(METRIC_TAG_PREFIX):]: float(v) for k, v in tags.items() if k.startswith(METRIC_TAG_PREFIX)}
    gate = tags.get(GATE_METRIC_TAG)
    return {
        "name": mv.name, "version": str(mv.version), "aliases": list(getattr(mv, "aliases", []) or []),
        "gate_metric": gate, "gate_mode": tags.get(GATE_MODE_TAG),
        "gate_value": metrics.get(gate) if gate else None, "metrics": metrics,
        "run_id": mv.run_id, "created": mv.creation_timestamp, "source": mv.source,
        "tags": {k: v for k, v in tags.items() if not k.startswith(METRIC_TAG_PREFIX)},
    }


def list_versions(name: str) -> list[dict]:
    """Every version of ``name``, newest first: version, aliases, gate metric and value, run_id, created."""
    c = _client()
    try:
        c.get_registered_model(name)
    except Exception as exc:
        if _not_found(exc):
            raise CheckpointError(f"no registered model named {name!r}; registered: "
                                  f"{', '.join(list_models()) or 'none'}") from None
        raise
    versions = c.search_model_versions(f"name = '{name}'")
    # search results may lack aliases on some stores: fetch each version for its aliases
    infos = [_version_info(c.get_model_version(name, mv.version)) for mv in versions]
    return sorted(infos, key=lambda d: int(d["version"]), reverse=True)


# the registered model that holds a promotion's lock (pro_lib.promotion): hidden from listings
LOCK_SUFFIX = ".promotion-lock"


def is_lock_name(name: str) -> bool:
    return name.endswith(LOCK_SUFFIX)


def list_models() -> list[str]:
    return sorted(m.name for m in _client().search_registered_models() if not is_lock_name(m.name))
