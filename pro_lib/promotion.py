"""Gated promotion of registered model versions (``champion`` alias), safe under concurrency.

:func:`promote` moves ``champion`` to the challenger (or a given version) only when it beats the
current champion on the model's gate metric (version tags ``pro.gate_metric`` / ``pro.gate_mode``,
written by :func:`pro_lib.packaging.register_model`); otherwise nothing changes. ``force=True`` skips
the gate but needs a reason, which is recorded on the version. Concurrent promotions are serialised
by a lock kept in the registry; of those started together the best candidate wins (see
:func:`promotion_lock`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass

from pro_lib.errors import ConfigError, ProError
from pro_lib.registry import (CHALLENGER, CHAMPION, GATE_METRIC_TAG, LOCK_SUFFIX, _already_exists, _client,
                              _not_found, _version_info, default_gate, resolve_version)

log = logging.getLogger(__name__)


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
LOCK_OWNER_TAG = "pro.lock_owner"
PENDING_TAG = "pro.promotion_pending"
SETTLE_S = 1.0         # seconds; env PRO_PROMOTION_SETTLE_S
LOCK_WAIT_S = 120.0    # give up waiting for the lock after this long
LOCK_STALE_S = 60.0    # a lock held by the same owner this long was left by a crashed promotion
PENDING_STALE_S = 300.0


class RegistryBusy(ProError):
    """The promotion lock of a registered model could not be taken."""


def _owner_dead(owner: str | None) -> bool:
    """Whether a lock token ``host:pid:...`` names a process of this host that no longer runs."""
    host, _, rest = str(owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


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
            if _owner_dead(owner):  # a promotion on this host that is no longer running: stale now
                log.warning("the promotion lock of %s is stale: its owner %s (this host) is no longer running; "
                            "breaking it", name, owner)
                with contextlib.suppress(Exception):
                    c.delete_registered_model(lock)
                seen = None
                continue
            log.warning("waiting for the promotion lock of %s, held by %s; a lock that stays with one owner for "
                        "%.0f s is taken as left by a crashed promotion and broken", name, owner, stale_s)
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
