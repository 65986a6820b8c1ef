"""Fixtures of the k8s tests: the kubectl binary, the validator, and renders cached for the
whole test session (rendering an overlay takes a second or two; every module shares one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import require

from .helpers import (
    OVERLAYS,
    _find,
    _free_port,
    _kustomize,
    _objects,
    _postgres_bin,
    _secret_values,
    kubectl_helper,
)


@pytest.fixture(scope="session")
def kubectl() -> Path:
    try:
        return kubectl_helper.kubectl_path()
    except kubectl_helper.KubectlUnavailable as exc:
        pytest.skip(f"kubectl not available: {exc}")


@pytest.fixture(scope="session")
def validator():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def render(kubectl):
    """render(folder) -> (yaml text, objects); each folder is rendered once per session."""
    cache: dict[Path, tuple[str, list[dict]]] = {}

    def _render(folder: Path) -> tuple[str, list[dict]]:
        folder = Path(folder).resolve()
        if folder not in cache:
            text = _kustomize(kubectl, folder)
            cache[folder] = (text, _objects(text))
        return cache[folder]

    return _render


@pytest.fixture(scope="session")
def rendered(render) -> dict[str, list[dict]]:
    return {name: render(path)[1] for name, path in OVERLAYS.items()}


@pytest.fixture
def postgres_server(rendered):
    """A throwaway PostgreSQL cluster whose superuser is the one of Secret pro-postgres."""
    pg_bin = _postgres_bin()
    if pg_bin is None:
        require("postgres", "PostgreSQL server binaries not installed (apt-get install -y postgresql)")
    if shutil.which("psql") is None and not (pg_bin / "psql").exists():
        require("postgres", "psql not installed")
    secret = _secret_values(_find(rendered["root"], "Secret", "pro-postgres"))
    secret["POSTGRES_PASSWORD"] = "super-" + os.urandom(6).hex()   # a "replaced" secret
    root = Path(tempfile.mkdtemp(prefix="pro-k8s-backup-"))
    os.chmod(root, 0o777)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pwfile = root / "pw"
    pwfile.write_text(secret["POSTGRES_PASSWORD"] + "\n")
    os.chmod(pwfile, 0o644)
    port = _free_port()
    run = lambda cmd: subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run([*as_pg, str(pg_bin / "initdb"), "-D", str(root / "data"), "-U", secret["POSTGRES_USER"],
             "--auth=scram-sha-256", f"--pwfile={pwfile}"])
        run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log"),
             "start", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1"])
        env = {"PATH": f"{pg_bin}:{os.environ['PATH']}", "PGHOST": "127.0.0.1", "PGPORT": str(port)}
        yield env, secret
    finally:
        subprocess.run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(root / "data"), "-m", "fast",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
