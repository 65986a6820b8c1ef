"""Models load once per process, when a view first needs them (or ahead of time, in the background).

The explorer's first screen needs only the orchestrator. The reward suite and Policy A (Generate)
are fetched in a background thread once the page is drawn; Policy B (the Compare tab) loads when
Compare is first pressed. Every load goes through :func:`get` (or :func:`prefetch`) and from there
through one :class:`~ui.backend.Backend` method per kind (``load_orchestrator``, ``load_suite``,
``load_policy``), so a new way of loading a policy is added in one place.

No Streamlit here: the page (ui/sidebar.py) shows the states (:func:`state`) and spinners.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, NamedTuple

MAX_MODELS = 8  # loaded models kept per process (oldest finished ones are dropped first)


class Key(NamedTuple):
    kind: str                       # "orchestrator", "suite" or "policy"
    tracking_uri: str
    load_ref: str
    objectives: tuple | None = None  # policies: the orchestrator's objectives (None: the policy's own)


_lock = threading.Lock()
_futures: dict[Key, Future] = {}


def _load(key: Key) -> Any:
    from ui.backend import Backend

    be = Backend(key.tracking_uri)
    if key.kind == "orchestrator":
        return be.load_orchestrator(key.load_ref)
    if key.kind == "suite":
        return be.load_suite(key.load_ref)
    if key.kind == "policy":
        return be.load_policy(key.load_ref, key.objectives)
    raise ValueError(f"unknown model kind {key.kind!r}")


def _claim(key: Key) -> tuple[Future, bool]:
    """The key's future, and whether the caller must run the load (nobody has, or the last try failed)."""
    with _lock:
        fut = _futures.get(key)
        if fut is not None and not (fut.done() and fut.exception() is not None):
            return fut, False
        fut = Future()
        fut.set_running_or_notify_cancel()
        _futures[key] = fut
        done = [k for k, f in _futures.items() if f.done()]
        while len(_futures) > MAX_MODELS and done:
            _futures.pop(done.pop(0), None)
        return fut, True


def _log(text: str) -> None:
    """One line in the server's log (what loads when, and how long it took)."""
    print(f"pro ui: {text}", file=sys.stderr, flush=True)


def _run(key: Key, fut: Future) -> None:
    start = time.monotonic()
    _log(f"loading {key.kind} {key.load_ref} ({threading.current_thread().name})")
    try:
        fut.set_result(_load(key))
        _log(f"loaded {key.kind} {key.load_ref} in {time.monotonic() - start:.1f} s")
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
        _log(f"failed to load {key.kind} {key.load_ref}: {exc}")
        fut.set_exception(exc)


def get(key: Key, timeout: float | None = None) -> Any:
    """The loaded model: loads it here unless a load of it is already running (then waits for that one)."""
    fut, mine = _claim(key)
    if mine:
        _run(key, fut)
    return fut.result(timeout)


def prefetch(key: Key) -> None:
    """Start loading in a background thread (nothing happens if it is loaded or loading)."""
    fut, mine = _claim(key)
    if mine:
        threading.Thread(target=_run, args=(key, fut), name=f"pro-ui-load-{key.kind}", daemon=True).start()


def state(key: Key) -> str:
    """``loaded``, ``loading``, ``failed`` or ``not loaded``."""
    with _lock:
        fut = _futures.get(key)
    if fut is None:
        return "not loaded"
    if not fut.done():
        return "loading"
    return "failed" if fut.exception() is not None else "loaded"


def loading() -> list[Key]:
    with _lock:
        return [k for k, f in _futures.items() if not f.done()]


def wait_all(timeout: float = 300.0) -> None:
    """Block until no load is running (tests; a load's error stays with its key)."""
    with _lock:
        running = [f for f in _futures.values() if not f.done()]
    for f in running:
        try:
            f.result(timeout)
        except Exception:  # noqa: BLE001 - reported by get() to whoever needs the model
            pass


def clear() -> None:
    """Forget every model (↻ Reload); loads already running finish into futures nobody holds."""
    with _lock:
        _futures.clear()
