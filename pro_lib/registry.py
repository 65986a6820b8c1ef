"""MLflow model registry: register model folders, load them by alias, gated promotion.

Registered names: ``pro-orchestrator``, ``pro-reward-<objective>``, ``pro-policy-<method>``.

- :func:`register_model` writes a ``save_pretrained`` folder as an MLflow pyfunc model
  (:mod:`pro_lib.serving`: signature, input example, ``code_paths``), uploads it as run artifacts
  and creates a new model version (versions are never overwritten) with the alias ``challenger``. The version carries
  its evaluation metrics as tags ``pro.metric.<name>`` and its gate as ``pro.gate_metric`` /
  ``pro.gate_mode`` (``max`` or ``min``).
- :func:`promote` moves ``champion`` to the challenger (or a given version) only when it beats the
  current champion on the gate metric; otherwise nothing changes. ``force=True`` skips the gate but
  needs a reason, which is recorded on the version.
  Concurrent promotions are serialised by a lock kept in the registry; of those started together
  the best candidate wins (see :func:`promotion_lock`).
- :func:`download_model` resolves ``models:/name@alias`` or ``models:/name/<version>`` to a local
  folder (cached per store and version identity under ``$PRO_HOME/models``): the PRO folder inside
  the MLflow model, or a bare folder registered before that format. It is what every
  ``from_pretrained`` in PRO gets through :func:`pro_lib.refs.localize`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from pro_lib.errors import CheckpointError, ConfigError, ProError
from pro_lib.io import atomic_dir, pro_home

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
GATE_METRIC_TAG = "pro.gate_metric"
GATE_MODE_TAG = "pro.gate_mode"
METRIC_TAG_PREFIX = "pro.metric."
FORMAT_TAG = "pro.format"   # versions registered as MLflow pyfunc models carry it (pro_lib.serving.FORMAT)
KIND_TAG = "pro.kind"       # orchestrator | reward | policy | endpoint

# The registered names (defined here only): pro-orchestrator, pro-reward-<objective>, pro-policy-<method>,
# pro-endpoint.
ORCHESTRATOR_MODEL = "pro-orchestrator"
ENDPOINT_MODEL = "pro-endpoint"
REWARD_MODEL_PREFIX = "pro-reward-"
POLICY_MODEL_PREFIX = "pro-policy-"


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


def _as_mlflow_model(local_dir: Path, name: str, staging: Path) -> tuple[str, Path]:
    """The folder to upload: ``local_dir`` written as a PRO pyfunc model (or as is, when it already
    is an MLflow model); the kind is read from the folder and must match the name's family."""
    from pro_lib import serving

    if (local_dir / "MLmodel").is_file():
        import yaml

        meta = (yaml.safe_load((local_dir / "MLmodel").read_text()) or {}).get("metadata") or {}
        kind = meta.get("pro_kind") or "mlflow"
        inner = None
    else:
        kind = inner = serving.detect_kind(local_dir)
    expected = serving.kind_of_name(name)
    if expected and kind != expected:
        raise ConfigError(f"cannot register {local_dir} as {name}: the name is for a{'n' if expected[0] in 'aeiou' else ''} "
                          f"{expected} but the folder holds a{'n' if kind[0] in 'aeiou' else ''} {kind} model")
    if inner is None:
        return kind, local_dir
    serving.save_pyfunc(local_dir, staging, kind=kind)
    return kind, staging


def register_model(local_dir: str | Path, name: str, *, run_id: str | None = None,
                   metrics: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                   gate_metric: str | None = None, gate_mode: str | None = None,
                   description: str | None = None) -> str:
    """Register ``local_dir`` as a new version of ``name`` with alias ``challenger``; return the version.

    The folder (whose kind, read from its files, must match the name's family) is written as an
    MLflow pyfunc model and logged as artifacts of ``run_id`` (or of a new run in the current experiment,
    a child of the pipeline's parent run when there is one) under ``registered/<name>``.
    ``gate_metric``/``gate_mode`` default to :data:`DEFAULT_GATES`; the gate metric must be among
    ``metrics`` (a version without it can never win a gated promotion, so this fails early).
    """
    import mlflow

    from pro_lib import serving, tracking

    local_dir = Path(local_dir)
    if not local_dir.is_dir() or not any(local_dir.iterdir()):
        raise CheckpointError(f"cannot register {local_dir}: not a folder with a saved model in it")
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
    c = _client()
    artifact_path = f"registered/{name}"
    if run_id is None:
        active = mlflow.active_run()
        if active is not None:
            run_id = active.info.run_id
    with tempfile.TemporaryDirectory(prefix="pro-register-") as staging:
        kind, model_dir = _as_mlflow_model(local_dir, name, Path(staging) / "model")
        if run_id is None:
            with tracking.stage_run(f"register:{name}", {"source_dir": str(local_dir)}) as run:
                mlflow.log_artifacts(str(model_dir), artifact_path=artifact_path)
                run_id = run.info.run_id
        else:
            c.log_artifacts(run_id, str(model_dir), artifact_path=artifact_path)
    source = f"{c.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    try:
        c.get_registered_model(name)
    except Exception as exc:
        if not _not_found(exc):
            raise
        try:
            c.create_registered_model(name, tags={"pro.family": name.rsplit("-", 1)[0]})
        except Exception:  # registered concurrently
            c.get_registered_model(name)
    all_tags = {**metric_tags, **dict(tags or {}), "pro.source_dir": str(local_dir.resolve()),
                FORMAT_TAG: serving.FORMAT, KIND_TAG: kind}
    if gate_metric:
        all_tags.update({GATE_METRIC_TAG: gate_metric, GATE_MODE_TAG: gate_mode})
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=all_tags,
                                description=description)
    for _ in range(60):  # file/sql stores are READY at once; servers may take a moment
        mv = c.get_model_version(name, mv.version)
        if str(mv.status) in ("READY", "ModelVersionStatus.READY"):
            break
        time.sleep(0.5)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    log.info("registered %s version %s (alias %s) from %s", name, mv.version, CHALLENGER, local_dir)
    return str(mv.version)


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


def download_model(ref: str) -> Path:
    """``models:/name@alias`` or ``models:/name/<version>`` -> a local folder (cached, see :func:`_cache_dir`)."""
    import mlflow

    name, alias, version = parse_ref(ref)
    version = resolve_version(name, alias=alias, version=version)
    target = _cache_dir(name, _client().get_model_version(name, version))
    if target.is_dir() and any(target.iterdir()):
        return _pro_folder(target)
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
    log.info("downloaded models:/%s/%s -> %s", name, version, target)
    return _pro_folder(target)


def _pro_folder(target: Path) -> Path:
    """What PRO's loaders read: the folder inside an MLflow model version, or a bare (pre-MLflow) folder."""
    from pro_lib.serving import model_folder

    return model_folder(target)


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


def list_models() -> list[str]:
    return sorted(m.name for m in _client().search_registered_models() if not is_lock_name(m.name))


@dataclass
class PromotionResult:
    name: str
    promoted: bool
    candidate: str | None                 # version considered for champion
    previous_champion: str | None
    champion: str | None                  # champion after the call
    gate_metric: str | None
    gate_mode: str | None
    candidate_value: float | None
    champion_value: float | None
    forced: bool
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _beats(candidate: float, champion: float, mode: str) -> bool:
    return candidate > champion if mode == "max" else candidate < champion


# Gated promotion under concurrency. Two promotions of one model may run at once (two pipelines, a
# pipeline and a person): each announces its candidate (version tag PENDING_TAG), waits SETTLE_S so
# that concurrent announcements are visible, then decides and moves the alias while holding a lock
# kept in the registry itself (a registered model named <name>.promotion-lock: creating a registered
# model that exists fails on every store, so exactly one holder across processes and hosts). Under
# the lock a candidate is gated against the champion and against every other announced candidate:
# of promotions started together the best wins and the others are refused; later ones are gated
# against the new champion.
LOCK_SUFFIX = ".promotion-lock"
LOCK_OWNER_TAG = "pro.lock_owner"
PENDING_TAG = "pro.promotion_pending"
SETTLE_S = 1.0         # seconds; env PRO_PROMOTION_SETTLE_S
LOCK_WAIT_S = 120.0    # give up waiting for the lock after this long
LOCK_STALE_S = 60.0    # a lock held by the same owner this long was left by a crashed promotion
PENDING_STALE_S = 300.0


class RegistryBusy(ProError):
    """The promotion lock of a registered model could not be taken."""


def is_lock_name(name: str) -> bool:
    return name.endswith(LOCK_SUFFIX)


@contextlib.contextmanager
def promotion_lock(name: str, *, wait_s: float = LOCK_WAIT_S, stale_s: float = LOCK_STALE_S):
    """Hold the promotion lock of ``name`` (see above). A lock whose owner did not change while we
    waited ``stale_s`` seconds is broken (measured on this host's clock only, so skew does not matter)."""
    c = _client()
    lock = f"{name}{LOCK_SUFFIX}"
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    start, seen = time.monotonic(), None  # seen: (owner, since when we see it)
    while True:
        try:
            c.create_registered_model(lock, tags={LOCK_OWNER_TAG: token},
                                      description=f"promotion of {name} in progress (pro registry promote); "
                                                  "deleted when it ends")
            break
        except Exception as exc:  # noqa: BLE001 - only "already exists" means held
            if not _already_exists(exc):
                raise
        try:
            owner = dict(c.get_registered_model(lock).tags or {}).get(LOCK_OWNER_TAG)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                continue  # released meanwhile
            raise
        now = time.monotonic()
        if seen is None or seen[0] != owner:
            seen = (owner, now)
        elif now - seen[1] > stale_s:
            log.warning("breaking the promotion lock of %s held by %s for over %.0f s", name, owner, stale_s)
            with contextlib.suppress(Exception):
                c.delete_registered_model(lock)
            seen = None
            continue
        if now - start > wait_s:
            raise RegistryBusy(f"another promotion of {name} holds the lock {lock!r} ({owner}) for over "
                               f"{wait_s:.0f} s; retry later, or delete that registered model if no "
                               "promotion is running")
        time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 100) / 100)
    try:
        yield
    finally:
        try:
            if dict(c.get_registered_model(lock).tags or {}).get(LOCK_OWNER_TAG) == token:
                c.delete_registered_model(lock)
        except Exception as exc:  # noqa: BLE001 - a lock left behind is broken after LOCK_STALE_S
            log.warning("could not release the promotion lock of %s: %s", name, exc)


def _rivals(c, name: str, mine: str, champion: str | None) -> list[dict]:
    """Other versions of ``name`` announced for promotion in the last PENDING_STALE_S seconds."""
    now_ms = time.time() * 1000
    out = []
    for mv in c.search_model_versions(f"name = '{name}'"):
        tags = dict(mv.tags or {})
        stamp = tags.get(PENDING_TAG)
        if str(mv.version) in (mine, champion) or not stamp:
            continue
        try:
            fresh = abs(now_ms - float(stamp)) < PENDING_STALE_S * 1000
        except ValueError:
            fresh = False
        if fresh:
            out.append(_version_info(mv))
    return out


def promote(name: str, *, version: str | int | None = None, force: bool = False,
            reason: str | None = None, alias_from: str = CHALLENGER) -> PromotionResult:
    """Move ``champion`` to the challenger (or ``version``) if it beats the champion on the gate.

    Refused (``promoted=False``): nothing changes. With ``force=True`` the gate is skipped; a
    non-empty ``reason`` is required and recorded on the version (``pro.promotion_reason``).
    Safe under concurrency (see :func:`promotion_lock`): of gated promotions started together the
    best candidate wins and the others are refused.
    """
    if force and not (reason and reason.strip()):
        raise ConfigError("--force needs --reason '<why>' (it is recorded on the model version)")
    c = _client()
    cand_v = resolve_version(name, alias=None if version is not None else alias_from, version=version)
    if force:
        with promotion_lock(name):
            return _promote_locked(c, name, cand_v, force=True, reason=reason)
    c.set_model_version_tag(name, cand_v, PENDING_TAG, str(int(time.time() * 1000)))
    try:
        time.sleep(float(os.environ.get("PRO_PROMOTION_SETTLE_S") or SETTLE_S))
        with promotion_lock(name):
            return _promote_locked(c, name, cand_v, force=False, reason=reason)
    finally:
        try:
            c.delete_model_version_tag(name, cand_v, PENDING_TAG)
        except Exception as exc:  # noqa: BLE001 - an old announcement is ignored after PENDING_STALE_S
            log.warning("could not clear %s on %s version %s: %s", PENDING_TAG, name, cand_v, exc)


def _promote_locked(c, name: str, cand_v: str, *, force: bool, reason: str | None) -> PromotionResult:
    cand = _version_info(c.get_model_version(name, cand_v))
    try:
        champ_v = str(c.get_model_version_by_alias(name, CHAMPION).version)
    except Exception as exc:  # noqa: BLE001
        if not _not_found(exc):
            raise
        champ_v = None
    champ = _version_info(c.get_model_version(name, champ_v)) if champ_v else None
    metric = cand["gate_metric"] or (champ or {}).get("gate_metric") or default_gate(name)[0]
    mode = cand["gate_mode"] or (champ or {}).get("gate_mode") or default_gate(name)[1]
    cand_val = cand["metrics"].get(metric) if metric else None
    champ_val = champ["metrics"].get(metric) if (champ and metric) else None

    def result(promoted: bool, message: str) -> PromotionResult:
        return PromotionResult(name=name, promoted=promoted, candidate=cand_v, previous_champion=champ_v,
                               champion=cand_v if promoted else champ_v, gate_metric=metric, gate_mode=mode,
                               candidate_value=cand_val, champion_value=champ_val, forced=force and promoted,
                               message=message)

    if champ_v == cand_v:
        return result(False, f"version {cand_v} of {name} is already the champion; nothing to do")
    if not force:
        if champ_v is None:
            message = f"no champion yet: version {cand_v} becomes the first champion"
        elif metric is None:
            return result(False, f"refused: {name} has no gate metric (tag {GATE_METRIC_TAG}); "
                                 "register with a gate metric or use --force --reason")
        elif cand_val is None or (isinstance(cand_val, float) and math.isnan(cand_val)):
            return result(False, f"refused: version {cand_v} has no value for the gate metric '{metric}'")
        elif champ_val is None:
            return result(False, f"refused: champion version {champ_v} has no value for '{metric}'; "
                                 "compare by hand and use --force --reason")
        elif not _beats(cand_val, champ_val, mode):
            better = "higher" if mode == "max" else "lower"
            return result(False, f"refused: version {cand_v} has {metric}={cand_val:.6g}, champion version "
                                 f"{champ_v} has {champ_val:.6g} ({better} is better); champion unchanged")
        else:
            message = (f"promoted: version {cand_v} {metric}={cand_val:.6g} beats champion version {champ_v} "
                       f"({champ_val:.6g}, {mode})")
        for rival in _rivals(c, name, cand_v, champ_v) if metric and cand_val is not None else []:
            val = rival["metrics"].get(metric) if metric else None
            if val is None or (isinstance(val, float) and math.isnan(val)):
                continue
            if champ_val is not None and not _beats(val, champ_val, mode):
                continue  # that one will be refused by the gate
            if _beats(val, cand_val, mode) or (val == cand_val and int(rival["version"]) > int(cand_v)):
                return result(False, f"refused: version {rival['version']} ({metric}={val:.6g}) is being "
                                     f"promoted at the same time and beats version {cand_v} ({cand_val:.6g}); "
                                     "champion unchanged by this promotion")
    else:
        message = f"forced: version {cand_v} becomes champion (reason: {reason.strip()})"

    now = str(int(time.time() * 1000))
    c.set_model_version_tag(name, cand_v, "pro.promoted_at", now)
    c.set_model_version_tag(name, cand_v, "pro.promoted_over", champ_v or "none")
    c.set_model_version_tag(name, cand_v, "pro.promotion_reason", reason.strip() if force else message)
    if force:
        c.set_model_version_tag(name, cand_v, "pro.promotion_forced", "true")
    c.set_registered_model_alias(name, CHAMPION, cand_v)
    if champ_v:
        c.set_model_version_tag(name, champ_v, "pro.retired_at", now)
    try:  # the challenger slot is now free
        if str(c.get_model_version_by_alias(name, CHALLENGER).version) == cand_v:
            c.delete_registered_model_alias(name, CHALLENGER)
    except Exception:
        pass
    log.info("%s: %s", name, message)
    return result(True, message)
