"""The contract names of docs/ARCHITECTURE.md and how MLflow, the UI and minio-setup are wired."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest

from .helpers import (
    OVERLAYS,
    REPO,
    _config,
    _find,
    _flags,
    _port_of,
    _secret_values,
    _service_url,
    _ui_containers,
    _assert_no_secret_in_argv,
    _run_tracing_argv,
    _write_scripts,
)


def test_contract_names_of_architecture_md(rendered):
    objs = rendered["root"]
    config = _config(objs)
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow.pro.svc.cluster.local:5000"
    assert {"MLFLOW_S3_ENDPOINT_URL", "PRO_S3_BUCKET"} <= set(config)
    assert set(_find(objs, "Secret", "pro-s3-credentials")["data"]) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(_find(objs, "Secret", "pro-postgres")["data"]) == {
        "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    _find(objs, "ServiceAccount", "pro-pipeline-runner")
    from pro_lib import __version__ as version
    ui, _ = _ui_containers(objs)
    assert ui["image"] == f"ghcr.io/pro-align/pro-ui:{version}"



@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_mlflow_server_matches_what_components_expect(overlay, rendered):
    objs = rendered[overlay]
    config = _config(objs)
    svc = _find(objs, "Service", "mlflow")
    pod = _find(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["mlflow", "server"] and "command" not in c  # ENTRYPOINT tini
    flags = _flags(c["args"][2:])
    # the URI components read is exactly the Service's DNS name and port ...
    assert config["MLFLOW_TRACKING_URI"] == _service_url(svc, "http")
    # ... and that port reaches the port the server listens on
    target = svc["spec"]["ports"][0]["targetPort"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports.get(target, target) == int(flags["--port"])
    assert flags["--host"] == "0.0.0.0"
    assert flags.get("--serve-artifacts") is True, "artifacts must be proxied (--serve-artifacts)"
    assert "--default-artifact-root" not in flags, "an s3:// artifact root would bypass the proxy"
    assert not flags.get("--artifacts-only")
    # backend store: PostgreSQL through psycopg2, at the postgres Service
    backend = flags["--backend-store-uri"]
    assert backend.startswith("postgresql+psycopg2://")
    pg = _find(objs, "Service", "postgres")
    parts = urlsplit(backend)
    assert parts.netloc == urlsplit(_service_url(pg, "postgres")).netloc, "credentials in the URI"
    # the database owner's login (not the superuser's) comes from the environment (libpq)
    assert {"secretRef": {"name": "pro-mlflow-db"}} in c["envFrom"]
    assert not any(s.get("secretRef", {}).get("name") == "pro-postgres" for s in c["envFrom"])
    # MLflow's basic-auth app, configured from the mounted ConfigMap
    assert flags["--app-name"] == "basic-auth"
    assert {"secretRef": {"name": "pro-mlflow-admin"}} in c["envFrom"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    auth_path = next(e["value"] for e in c["env"] if e["name"] == "MLFLOW_AUTH_CONFIG_PATH")
    volume = next(v for v in pod["volumes"] if v["name"] == "auth-config")
    assert volume["configMap"]["name"] == "pro-mlflow-auth"
    assert auth_path == f"{mounts['auth-config']}/basic_auth.ini"
    ini = _find(objs, "ConfigMap", "pro-mlflow-auth")["data"]["basic_auth.ini"]
    auth_db = urlsplit(re.search(r"^database_uri = (\S+)", ini, re.M).group(1))
    assert auth_db.netloc == parts.netloc and not re.search(r"^admin_password", ini, re.M)
    db = _secret_values(_find(objs, "Secret", "pro-mlflow-db"))
    assert auth_db.path == f"/{db['MLFLOW_AUTH_DATABASE']}" != f"/{db['PGDATABASE']}"
    # every $(VAR) in the arguments is defined in the container's env (or a Secret's keys)
    env = {e["name"]: e for e in c.get("env", [])}
    from_secrets = {k for s in c["envFrom"] if "secretRef" in s
                    for k in _find(objs, "Secret", s["secretRef"]["name"])["data"]}
    for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
        assert var in env or var in from_secrets, f"mlflow args use undefined $({var})"
    # artifacts land in pro-config's bucket, on pro-config's S3 endpoint (the minio Service)
    assert flags["--artifacts-destination"].startswith("s3://$(PRO_S3_BUCKET)/")
    assert env["PRO_S3_BUCKET"]["valueFrom"]["configMapKeyRef"] == {
        "name": "pro-config", "key": "PRO_S3_BUCKET"}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "pro-config"
    assert config["MLFLOW_S3_ENDPOINT_URL"] == _service_url(_find(objs, "Service", "minio"), "s3")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "pro-mlflow-s3"
    # the Host header of in-cluster clients and of `kubectl port-forward` passes MLflow's
    # DNS-rebinding filter (an unlisted host gets 403 from mlflow>=3.5)
    allowed = flags["--allowed-hosts"].split(",")
    for host in (urlsplit(config["MLFLOW_TRACKING_URI"]).netloc, "mlflow:5000",
                 "localhost:5000", "127.0.0.1:5000"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), f"{host} rejected"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"  # exempt from the host filter


def test_mlflow_arguments_parse_with_the_installed_mlflow_cli(rendered):
    """The server flags exist in the MLflow that PRO pins (caught renamed/removed options)."""
    cli = pytest.importorskip("mlflow.cli")
    (c,) = _find(rendered["root"], "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["mlflow", "server"]
    ctx = cli.server.make_context("server", list(c["args"][2:]), resilient_parsing=False)
    assert ctx.params["serve_artifacts"] is True and ctx.params["port"] == 5000
    assert ctx.params["backend_store_uri"].startswith("postgresql+psycopg2://")


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_ui_reads_in_cluster_mlflow(overlay, rendered):
    objs = rendered[overlay]
    svc = _find(objs, "Service", "pro-ui")
    pod = _find(objs, "Deployment", "pro-ui")["spec"]["template"]
    c, proxy = _ui_containers(objs)
    assert c["args"] == ["pro", "ui"] and "command" not in c  # ENTRYPOINT tini
    assert {"configMapRef": {"name": "pro-config"}} in c["envFrom"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # Streamlit on loopback only; the Service's port is the auth proxy's (test_ui_auth.py)
    assert env["STREAMLIT_SERVER_PORT"] == "8501" and env["STREAMLIT_SERVER_ADDRESS"] == "127.0.0.1"
    assert "ports" not in c
    assert _port_of(svc, "http") == 8501
    (proxy_port,) = proxy["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # through the proxy
        assert c[probe]["httpGet"] == {"path": "/_stcore/health", "port": proxy_port["containerPort"]}
    assert pod["metadata"]["labels"]["pro.ai/role"] == "ui"  # what mlflow-ingress admits
    # its only credentials: its own MLflow user (artifacts come through MLflow, no S3 keys)
    assert not any(e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"])
    assert [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s] == ["pro-mlflow-explorer"]


def test_minio_setup_job_is_idempotent_and_reapplyable(rendered):
    job = _find(rendered["root"], "Job", "minio-setup")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # a finished Job never blocks re-apply
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mb --ignore-existing" in script
    env = {e["name"]: e["valueFrom"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRO_S3_BUCKET"]["configMapKeyRef"]["name"] == "pro-config"
    assert env["S3_ENDPOINT"]["configMapKeyRef"]["key"] == "MLFLOW_S3_ENDPOINT_URL"
    # users it creates are exactly the ones MLflow and the pipelines authenticate with
    assert env["MLFLOW_ACCESS_KEY"]["secretKeyRef"]["name"] == "pro-mlflow-s3"
    assert env["PIPELINE_ACCESS_KEY"]["secretKeyRef"]["name"] == "pro-s3-credentials"


MC_STUB = """#!/bin/sh
# stand-in for MinIO's `mc`: records each call, keeps attached policies in $STATE
echo "$*" >> "$STATE/calls"
shift 3  # --config-dir DIR --quiet
case "$1 $2" in
  "admin info") n=$(cat "$STATE/tries" 2>/dev/null || echo 0); echo $((n + 1)) > "$STATE/tries"
               echo "$MC_HOST_pro" > "$STATE/host"
               [ "$n" -ge 2 ] ;;  # MinIO is "up" at the third try
  "admin policy") [ "$3" = create ] && cp "$6" "$STATE/policy.json" ;;
  "admin user") [ "$3" = info ] && { echo "AccessKey: $5"; cat "$STATE/attached-$5" 2>/dev/null; }
                [ "$3" = add ] && { read -r secret; echo "$5 $secret" >> "$STATE/users"; }
                true ;;
  *) true ;;
esac
if [ "$1 $2 $3" = "admin policy attach" ]; then
  [ -e "$STATE/attached-$7" ] && { echo "already attached" >&2; exit 1; }
  echo "PolicyName: $5" > "$STATE/attached-$7"
fi
"""


def test_minio_setup_script_waits_creates_and_is_idempotent(rendered, tmp_path):
    """Run the Job's script twice with a stub `mc`: it waits for MinIO, creates the bucket, a
    bucket-scoped policy and both users, and the second run attaches nothing twice."""
    import json

    (c,) = _find(rendered["root"], "Job", "minio-setup")["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["/bin/sh", "-ec"]
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("mc", MC_STUB), ("sleep", "#!/bin/sh\ntrue\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    objs = rendered["root"]
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state)}
    for e in c["env"]:
        ref = e["valueFrom"]
        if "configMapKeyRef" in ref:
            env[e["name"]] = _config(objs)[ref["configMapKeyRef"]["key"]]
        else:
            key = ref["secretKeyRef"]
            env[e["name"]] = _secret_values(_find(objs, "Secret", key["name"]))[key["key"]]
    (tmp_path / "work").mkdir()
    scripts = _write_scripts(objs, tmp_path / "scripts")
    script = c["args"][0].replace("/tmp/", f"{tmp_path}/work/")  # the pod's emptyDir
    script = script.replace("/scripts/", f"{scripts}/")         # ConfigMap pro-scripts
    # the repository's placeholders: refused before anything is created
    proc = subprocess.run([*c["command"], script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "CHANGE_ME placeholder" in proc.stderr
    assert not (state / "calls").exists()
    env = {k: v.replace("CHANGE_ME", "real") for k, v in env.items()}  # replaced secrets
    secrets = [v for k, v in env.items() if k.endswith(("_PASSWORD", "_SECRET_KEY"))]
    for attempt in (1, 2):
        proc, argvs = _run_tracing_argv([*c["command"], script], env, tmp_path / f"trace{attempt}")
        assert proc.returncode == 0, f"run {attempt}: {proc.stdout}{proc.stderr}"
        _assert_no_secret_in_argv(argvs, secrets, "minio-setup")
    calls = (state / "calls").read_text().splitlines()
    # root login through MC_HOST_pro (environment), users' secret keys through stdin
    endpoint = env["S3_ENDPOINT"]
    assert (state / "host").read_text().strip() == endpoint.replace(
        "://", f"://{env['MINIO_ROOT_USER']}:{env['MINIO_ROOT_PASSWORD']}@")
    assert sorted(set((state / "users").read_text().splitlines())) == sorted(
        {f"{env['MLFLOW_ACCESS_KEY']} {env['MLFLOW_SECRET_KEY']}",
         f"{env['PIPELINE_ACCESS_KEY']} {env['PIPELINE_SECRET_KEY']}"})
    bucket = env["PRO_S3_BUCKET"]
    assert sum(f"mb --ignore-existing pro/{bucket}" in line for line in calls) == 2
    attaches = [line for line in calls if "admin policy attach" in line]
    assert sorted(line.split()[-1] for line in attaches) == sorted(
        [env["MLFLOW_ACCESS_KEY"], env["PIPELINE_ACCESS_KEY"]])  # once each, over both runs
    policy = json.loads((state / "policy.json").read_text())
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_serving_endpoint_serves_the_champion_for_the_explorer(overlay, rendered):
    objs = rendered[overlay]
    svc = _find(objs, "Service", "pro-serving")
    pod = _find(objs, "Deployment", "pro-serving")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # the release fetched and verified by the init container (test_trust_boundary.py), not an alias
    assert c["args"] == ["mlflow", "models", "serve", "-m", "/models/release",
                         "--env-manager", "local", "--host", "0.0.0.0", "--port", "5001"]
    assert "command" not in c  # ENTRYPOINT tini
    assert _port_of(svc, "http") == 5001 == c["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"  # the scoring server's readiness path
    # the in-cluster MLflow, with the serving pods' own (read-only) user, for the download only
    fetch = {i["name"]: i for i in pod["initContainers"]}["fetch-release"]
    assert {"configMapRef": {"name": "pro-config"}} in fetch["envFrom"]
    assert {"secretRef": {"name": "pro-mlflow-serving"}} in fetch["envFrom"]
    assert set(_find(objs, "Secret", "pro-mlflow-serving")["data"]) == {
        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    # the explorer finds it at PRO_UI_ENDPOINT; promotion from the explorer is off
    ui, _ = _ui_containers(objs)
    ui_env = {e["name"]: e.get("value") for e in ui["env"]}
    assert ui_env["PRO_UI_ENDPOINT"] == _service_url(svc, "http")
    assert ui_env["PRO_UI_ALLOW_PROMOTION"] == "false"
    assert {"secretRef": {"name": "pro-mlflow-explorer"}} in ui["envFrom"]


def test_serving_arguments_parse_with_the_installed_mlflow_cli(rendered):
    models_cli = pytest.importorskip("mlflow.models.cli")
    (c,) = _find(rendered["root"], "Deployment", "pro-serving")["spec"]["template"]["spec"]["containers"]
    assert c["args"][:3] == ["mlflow", "models", "serve"]
    ctx = models_cli.serve.make_context("serve", list(c["args"][3:]), resilient_parsing=False)
    assert ctx.params["model_uri"] == "/models/release"
    assert ctx.params["env_manager"] == "local" and ctx.params["port"] == 5001
