"""The rendered MLflow and UI commands, run for real on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .helpers import (
    _config,
    _find,
    _flags,
    _free_port,
    _postgres_bin,
    _secret_values,
    _service_url,
    _wait_http,
)


@pytest.mark.slow
def test_rendered_mlflow_command_serves_proxied_artifacts_on_postgres(rendered, tmp_path,
                                                                      monkeypatch):
    """Run the exact `mlflow server` arguments of the Deployment against a real PostgreSQL and an
    S3 endpoint (moto), with the placeholder credentials of the Secrets; then log an artifact
    from a client that has no S3 credentials and find it in the bucket under the proxy prefix."""
    import time
    import urllib.error
    import urllib.request

    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install -y postgresql)")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="moto[server] not installed (dev extra)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary not installed (dev extra)")

    objs = rendered["root"]
    pg_secret = _secret_values(_find(objs, "Secret", "pro-postgres"))
    s3_secret = _secret_values(_find(objs, "Secret", "pro-mlflow-s3"))
    config = _config(objs)
    (c,) = _find(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    procs: list[subprocess.Popen] = []
    as_postgres: list[str] = []
    # pytest's tmp folders are private to their owner; PostgreSQL may run as another user
    import tempfile

    pg_root = Path(tempfile.mkdtemp(prefix="pro-k8s-pg-"))
    os.chmod(pg_root, 0o777)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
    pgdata, sockets = pg_root / "pgdata", pg_root / "sock"
    sockets.mkdir()
    os.chmod(sockets, 0o777)
    pwfile = pg_root / "pw"
    pwfile.write_text(pg_secret["POSTGRES_PASSWORD"] + "\n")
    os.chmod(pwfile, 0o644)
    pg_port, s3_port, mlflow_port = _free_port(), _free_port(), _free_port()
    run = lambda cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True,  # noqa: E731
                                           timeout=120, **kw)
    try:
        run([*as_postgres, str(pg_bin / "initdb"), "-D", str(pgdata), "-U",
             pg_secret["POSTGRES_USER"], "--auth=scram-sha-256", f"--pwfile={pwfile}"])
        run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-l",
             str(pg_root / "pg.log"), "start", "-o",
             f"-p {pg_port} -k {sockets} -c listen_addresses=127.0.0.1"])
        pg_env = {**os.environ, "PGPASSWORD": pg_secret["POSTGRES_PASSWORD"]}
        run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U",
             pg_secret["POSTGRES_USER"], pg_secret["POSTGRES_DB"]], env=pg_env)

        s3_log = tmp_path / "moto.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(s3_port)], stdout=s3_log.open("w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        s3_url = f"http://127.0.0.1:{s3_port}"
        _wait_http(f"{s3_url}/moto-api/", 60, procs[-1], s3_log)
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id=s3_secret["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_secret["AWS_SECRET_ACCESS_KEY"])
        bucket = config["PRO_S3_BUCKET"]
        s3.create_bucket(Bucket=bucket)  # what the minio-setup Job does in the cluster

        # the container's environment, resolved as the kubelet would, pointed at local servers
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))},
               "POSTGRES_USER": pg_secret["POSTGRES_USER"],
               "POSTGRES_PASSWORD": pg_secret["POSTGRES_PASSWORD"],
               "POSTGRES_DB": pg_secret["POSTGRES_DB"], "PRO_S3_BUCKET": bucket,
               "MLFLOW_S3_ENDPOINT_URL": s3_url, **{k: s3_secret[k] for k in s3_secret},
               **{e["name"]: e["value"] for e in c["env"] if "value" in e},
               "HOME": str(tmp_path)}
        pg_host = urlsplit(_service_url(_find(objs, "Service", "postgres"), "postgres")).netloc
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
        args = [a.replace(pg_host, f"127.0.0.1:{pg_port}") for a in args]
        args = [f"--port={mlflow_port}" if a.startswith("--port=") else
                "--workers=1" if a.startswith("--workers=") else a for a in args]
        mlflow_log = tmp_path / "mlflow.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "mlflow", *args[1:]], env=env,
                                      stdout=mlflow_log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        base = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{base}/health", 180, procs[-1], mlflow_log)

        def status_with_host(host: str) -> int:
            req = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": host})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        # in-cluster clients use pro-config's URI as Host; unknown hosts are refused
        assert status_with_host(urlsplit(config["MLFLOW_TRACKING_URI"]).netloc) == 200
        assert status_with_host("evil.example.com") == 403

        # a client without any S3 credentials logs an artifact through the proxy
        for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3"))]:
            monkeypatch.delenv(key)
        import mlflow

        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        client = mlflow.MlflowClient(tracking_uri=base)
        exp = client.create_experiment(f"k8s-check-{time.time_ns()}")
        run_ = client.create_run(exp)
        note = tmp_path / "note.txt"
        note.write_text("proxied through mlflow\n")
        client.log_artifact(run_.info.run_id, str(note))
        assert run_.info.artifact_uri.startswith("mlflow-artifacts:/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        prefix = urlsplit(re.sub(r"\$\((\w+)\)", bucket, _flags(c["args"][2:])["--artifacts-destination"])).path
        assert any(k.startswith(prefix.strip("/") + "/") and k.endswith("note.txt") for k in keys), keys
        back = Path(client.download_artifacts(run_.info.run_id, "note.txt", str(tmp_path / "dl")))
        assert back.read_text() == "proxied through mlflow\n"
    finally:
        import signal

        for p in procs:  # mlflow's uvicorn runs as a child: stop the whole group
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-m", "fast",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(pg_root, ignore_errors=True)


def _ui_container_env(objs, overrides: dict | None = None) -> tuple[list[str], dict]:
    """The UI container's command and environment, resolved as the kubelet would."""
    (c,) = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"]
    env = {"PATH": os.environ["PATH"]}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_config(objs) if source["configMapRef"]["name"] == "pro-config" else {})
        else:
            env.update(_secret_values(_find(objs, "Secret", source["secretRef"]["name"])))
    env.update({e["name"]: e["value"] for e in c["env"]})
    env.update(overrides or {})
    pro = Path(sys.executable).parent / c["args"][0]
    if not pro.exists():
        pytest.skip(f"the `{c['args'][0]}` entry point is not installed next to {sys.executable}")
    return [str(pro), *c["args"][1:]], env


def test_ui_command_serves_the_pod_port_and_in_cluster_mlflow(rendered, tmp_path):
    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    objs = rendered["root"]
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro")})
    proc = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    port = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"][0][
        "ports"][0]["containerPort"]
    assert f"MLFLOW_TRACKING_URI={_config(objs)['MLFLOW_TRACKING_URI']} " in out
    assert "--server.address 0.0.0.0" in out and f"--server.port {port}" in out


@pytest.mark.slow
def test_ui_container_command_answers_its_probe(rendered, tmp_path):
    """Start the UI exactly as the container does (port moved to a free one) and hit the
    readiness probe's path."""
    import time
    import urllib.request

    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    objs = rendered["root"]
    port = _free_port()
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro"),
                                        "STREAMLIT_SERVER_PORT": str(port)})
    (c,) = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"]
    path = c["readinessProbe"]["httpGet"]["path"]
    log = tmp_path / "ui.log"
    # own process group: `pro ui` starts Streamlit as a child (tini -g does this in the image)
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}{path}", 120, proc, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert resp.read().decode().strip() == "ok"
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
