"""The rendered MLflow and UI commands, run for real on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .helpers import (
    _config,
    _container_env,
    _find,
    _flags,
    _free_port,
    _secret_values,
    _service_url,
    _ui_container_env,
    _ui_container_running,
    _wait_http,
    _write_scripts,
)


def _stop(procs: list[subprocess.Popen]) -> None:
    import signal

    for p in procs:  # mlflow's uvicorn runs as a child: stop the whole group
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_rendered_mlflow_serves_with_auth_on_postgres_as_the_db_owner(rendered, postgres_server,
                                                                      tmp_path, monkeypatch):
    """The platform's MLflow, as rendered, on this machine: pro-postgres-setup's script creates
    the database owner in a real PostgreSQL; the exact `mlflow server` arguments and environment
    run against it and an S3 endpoint (moto) with basic auth; pro-mlflow-setup's script creates
    the client users. Then: no request without a login; the pipelines' user logs an artifact
    through the proxy (no S3 keys) and registers a champion; the explorer's user reads it but may
    not move the alias; MLflow's tables belong to the non-superuser owner."""
    import time
    import urllib.error
    import urllib.request

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="moto[server] not installed (dev extra)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary not installed (dev extra)")
    from mlflow.exceptions import MlflowException

    base, superuser = postgres_server
    objs = rendered["root"]
    scripts = _write_scripts(objs, tmp_path / "scripts")
    # the Secrets as an operator fills them in (section 2 of docs/deploy.md)
    secrets = {o["metadata"]["name"]: {k: v.replace("CHANGE_ME", f"x{os.urandom(3).hex()}")
                                        for k, v in _secret_values(o).items()}
               for o in objs if o["kind"] == "Secret" and o["metadata"]["namespace"] == "pro"}
    secrets["pro-postgres"] = superuser
    config = _config(objs)
    local = {"PATH": f"{Path(sys.executable).parent}:{base['PATH']}", "HOME": str(tmp_path)}

    def job(name: str, extra: dict) -> None:
        (c,) = _find(objs, "Job", name)["spec"]["template"]["spec"]["containers"]
        words = [*c.get("command", []), *c.get("args", [])]
        words = [w.replace("/scripts/", f"{scripts}/").replace("exec python ", f"exec {sys.executable} ")
                 for w in words]
        proc = subprocess.run(words, env=_container_env(c, objs, secrets, {**local, **extra}),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"

    job("pro-postgres-setup", {"PGHOST": base["PGHOST"], "PGPORT": base["PGPORT"]})

    procs: list[subprocess.Popen] = []
    try:
        s3_port, mlflow_port = _free_port(), _free_port()
        s3_log = tmp_path / "moto.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(s3_port)], stdout=s3_log.open("w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        s3_url = f"http://127.0.0.1:{s3_port}"
        _wait_http(f"{s3_url}/moto-api/", 60, procs[-1], s3_log)
        s3_keys = secrets["pro-mlflow-s3"]
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id=s3_keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_keys["AWS_SECRET_ACCESS_KEY"])
        bucket = config["PRO_S3_BUCKET"]
        s3.create_bucket(Bucket=bucket)  # what the minio-setup Job does in the cluster

        pod = _find(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        pg_host = urlsplit(_service_url(_find(objs, "Service", "postgres"), "postgres")).netloc
        local_pg = f"127.0.0.1:{base['PGPORT']}"
        ini = _find(objs, "ConfigMap", "pro-mlflow-auth")["data"]["basic_auth.ini"]
        (tmp_path / "basic_auth.ini").write_text(ini.replace(pg_host, local_pg))
        env = _container_env(c, objs, secrets, {**local, "MLFLOW_S3_ENDPOINT_URL": s3_url,
                                                "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini")})
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
        args = [a.replace(pg_host, local_pg) for a in args]
        args = [f"--port={mlflow_port}" if a.startswith("--port=") else
                "--workers=1" if a.startswith("--workers=") else a for a in args]
        assert not any(env["PGPASSWORD"] in a or env["MLFLOW_AUTH_ADMIN_PASSWORD"] in a for a in args)
        mlflow_log = tmp_path / "mlflow.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "mlflow", *args[1:]], env=env,
                                      stdout=mlflow_log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        url = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{url}{c['readinessProbe']['httpGet']['path']}", 240, procs[-1], mlflow_log)

        job("pro-mlflow-setup", {"MLFLOW_TRACKING_URI": url})
        job("pro-mlflow-setup", {"MLFLOW_TRACKING_URI": url})  # idempotent

        def status(host: str, user: dict | None) -> int:
            import base64

            headers = {"Host": host}
            if user:
                token = f"{user['MLFLOW_TRACKING_USERNAME']}:{user['MLFLOW_TRACKING_PASSWORD']}"
                headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
            req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        pipeline, explorer = secrets["pro-mlflow-pipeline"], secrets["pro-mlflow-explorer"]
        in_cluster = urlsplit(config["MLFLOW_TRACKING_URI"]).netloc
        assert status(in_cluster, None) == 401                     # no login, no access
        assert status(in_cluster, {**explorer, "MLFLOW_TRACKING_PASSWORD": "wrong"}) == 401
        assert status(in_cluster, explorer) == 200
        assert status("evil.example.com", explorer) == 403        # DNS-rebinding filter

        # the pipelines' user, without any S3 credentials, logs through the proxy and registers
        for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_"))]:
            monkeypatch.delenv(key)
        import mlflow

        def as_user(user: dict) -> mlflow.MlflowClient:
            for key, value in user.items():
                monkeypatch.setenv(key, value)
            return mlflow.MlflowClient(tracking_uri=url, registry_uri=url)  # not a registry URI an earlier test set

        client = as_user(pipeline)
        exp = client.create_experiment(f"k8s-check-{time.time_ns()}")
        run_ = client.create_run(exp)
        note = tmp_path / "note.txt"
        note.write_text("proxied through mlflow\n")
        client.log_artifact(run_.info.run_id, str(note))
        assert run_.info.artifact_uri.startswith("mlflow-artifacts:/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        prefix = urlsplit(_flags(args[2:])["--artifacts-destination"]).path.strip("/")
        assert any(k.startswith(prefix + "/") and k.endswith("note.txt") for k in keys), keys
        client.create_registered_model("pro-endpoint")
        version = client.create_model_version("pro-endpoint", run_.info.artifact_uri, run_.info.run_id)
        client.set_registered_model_alias("pro-endpoint", "champion", version.version)

        # the explorer's user reads all of it, but cannot promote (READ on others' models)
        reader = as_user(explorer)
        assert reader.get_model_version_by_alias("pro-endpoint", "champion").version == version.version
        back = Path(reader.download_artifacts(run_.info.run_id, "note.txt", str(tmp_path / "dl")))
        assert back.read_text() == "proxied through mlflow\n"
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            reader.set_registered_model_alias("pro-endpoint", "champion", version.version)
        # ... until the admin grants EDIT on that model (docs/deploy.md, enabling promotion)
        from mlflow.server.auth.client import AuthServiceClient

        admin = secrets["pro-mlflow-admin"]
        as_user({"MLFLOW_TRACKING_USERNAME": admin["MLFLOW_AUTH_ADMIN_USERNAME"],
                 "MLFLOW_TRACKING_PASSWORD": admin["MLFLOW_AUTH_ADMIN_PASSWORD"]})
        AuthServiceClient(url).grant_user_permission(
            explorer["MLFLOW_TRACKING_USERNAME"], "registered_model", "pro-endpoint", "EDIT")
        as_user(explorer).set_registered_model_alias("pro-endpoint", "champion", version.version)

        # MLflow's schema belongs to the databases' owner, who is no superuser
        owner = secrets["pro-mlflow-db"]
        check = subprocess.run(
            ["psql", "-qtA", "-c", "select tableowner from pg_tables where tablename = "
             "'registered_models'; select rolsuper from pg_roles where rolname = current_user"],
            env={**base, **{k: owner[k] for k in ("PGUSER", "PGPASSWORD", "PGDATABASE")}},
            capture_output=True, text=True, timeout=60, check=True)
        assert check.stdout.split() == [owner["PGUSER"], "f"]
    finally:
        _stop(procs)


def test_ui_command_serves_the_pod_port_and_in_cluster_mlflow(rendered, tmp_path):
    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    objs = rendered["root"]
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro")})
    proc = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # loopback only (the pod's auth proxy forwards to 127.0.0.1:8501: ui-auth/nginx.conf)
    assert f"MLFLOW_TRACKING_URI={_config(objs)['MLFLOW_TRACKING_URI']} " in out
    assert "--server.address 127.0.0.1" in out and "--server.port 8501" in out
    conf = _find(objs, "ConfigMap", "pro-ui-auth-proxy")["data"]["nginx.conf"]
    assert "proxy_pass http://127.0.0.1:8501;" in conf


@pytest.mark.slow
def test_ui_container_command_answers_its_probe(rendered, tmp_path):
    """Start the UI exactly as the container does (port moved to a free one) and hit the
    readiness probe's path."""
    import urllib.request

    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    with _ui_container_running(rendered["root"], tmp_path) as (port, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert resp.read().decode().strip() == "ok"