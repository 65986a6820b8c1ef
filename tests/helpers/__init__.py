"""Shared test helpers: what CI must have, free ports, the repo's folders.

Submodules: :mod:`helpers.services` (moto S3, ``mlflow server``, ``mlflow models serve``),
:mod:`helpers.wic` and :mod:`helpers.morlhf` (tiny policies, suites, stand-in orchestrators),
:mod:`helpers.ui` (tiny explorer models), :mod:`helpers.browser` (headless Chromium, ``pro ui`` server).
Test modules import from here, never from another test module; tests/conftest.py registers the fixtures.

``PRO_CI_REQUIRE`` (set by ``.ci/run``): a comma-separated list of what the environment must have. A test
that would skip because one of those is missing fails instead (:func:`require`), so CI cannot pass by
skipping what it is meant to run. Known names: ``postgres``, ``chromium``, ``shared-data``, ``demo-store``,
``nginx`` (the explorer's auth proxy, run by tests/k8s/test_ui_auth.py).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
CI_REQUIRE_ENV = "PRO_CI_REQUIRE"
REQUIREMENTS = ("postgres", "chromium", "shared-data", "demo-store", "nginx")


def required() -> set[str]:
    """The names in ``PRO_CI_REQUIRE`` (an unknown name is an error: a typo must not turn a check off)."""
    names = {n.strip() for n in os.environ.get(CI_REQUIRE_ENV, "").split(",") if n.strip()}
    unknown = names - set(REQUIREMENTS)
    if unknown:
        raise pytest.UsageError(f"{CI_REQUIRE_ENV} names {sorted(unknown)}; known: {', '.join(REQUIREMENTS)}")
    return names


def require(what: str, reason: str, *, module: bool = False) -> None:
    """``what`` is missing (``reason`` says how to get it): skip, or fail when ``PRO_CI_REQUIRE`` names it."""
    if what not in REQUIREMENTS:
        raise ValueError(f"unknown requirement {what!r}; known: {REQUIREMENTS}")
    if what in required():
        pytest.fail(f"{reason} [{CI_REQUIRE_ENV} names {what!r}: this environment must have it]", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def shared_file(relative: str) -> Path:
    """``../shared/data/<relative>``, or skip (fail under ``PRO_CI_REQUIRE=shared-data``) when absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        require("shared-data", f"shared data not found at {path} (only present in the project workspace)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(capsys) -> str:
    """The single ``error:`` line a CLI printed to stderr, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]
