"""Real services on loopback for the platform tests: an S3-compatible server (moto), `mlflow server`
and `mlflow models serve` (serve_model).

Its fixtures are registered in tests/conftest.py. Nothing is mocked inside the process under test: boto3 and mlflow talk HTTP to these servers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import free_port

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1"}
ARTIFACT_BUCKET = "mlflow-artifacts"


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """moto's S3-compatible server in a thread on loopback; returns its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> str:
    """Point boto3/mlflow at the moto server with fake credentials; returns the endpoint."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    return s3_endpoint


def s3_keys(bucket: str = "mlflow-artifacts") -> list[str]:
    """Every key in ``bucket`` of the moto S3 behind the test server, all pages (one page holds only 1000)."""
    import boto3
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def start_mlflow_server(backend_uri: str, s3_endpoint: str, workdir: Path,
                        bucket: str = ARTIFACT_BUCKET, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with ``backend_uri`` and s3://<bucket> (on ``s3_endpoint``) as artifact store
    (on ``port``, e.g. to restart a stopped server where its clients expect it; default: a free one)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    port = port or free_port()
    env = {**os.environ, **FAKE_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
           "--backend-store-uri", backend_uri, "--artifacts-destination", f"s3://{bucket}/artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(workdir / f"mlflow-server-{port}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}); log: "
                               + (workdir / f"mlflow-server-{port}.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("mlflow server did not become healthy in 120 s; log: "
                       + (workdir / f"mlflow-server-{port}.log").read_text()[-3000:])


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def mlflow_server(s3_endpoint, tmp_path_factory) -> str:
    """A real `mlflow server` (SQLite backend, moto S3 artifact store) on loopback; returns its URL."""
    if shutil.which("mlflow") is None and not Path(sys.executable).with_name("mlflow").exists():
        pytest.skip("the mlflow CLI is not installed")
    work = tmp_path_factory.mktemp("mlflow_server")
    proc, url = start_mlflow_server(f"sqlite:///{work / 'mlflow.db'}", s3_endpoint, work)
    yield url
    stop_server(proc)


@pytest.fixture
def mlflow_env(mlflow_server, s3_env, monkeypatch) -> str:
    """Tracking and registry on the real server; S3 client settings for artifacts."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait until ``url`` answers 200; fail early, with the server's log, when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}")


def serve_model(env: dict, workdir: Path, ref: str = "models:/pro-endpoint@champion"):
    """`mlflow models serve -m <ref> --env-manager local` on a loopback port; returns (process, url)."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = workdir / f"serve-{port}.log"
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "models", "serve", "-m", ref,
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # the server runs `uvicorn` from PATH: the interpreter's bin folder first (a venv not activated)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PATH": path}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ping", proc, log)
    except RuntimeError:
        stop_server(proc)
        raise
    return proc, url
