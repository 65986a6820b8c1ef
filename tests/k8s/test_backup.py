"""Security of the database wiring and the backup/restore round trip, run for real.

The scripts of ConfigMap pro-scripts (k8s/base/scripts/) run against a real local PostgreSQL
(the `postgresql` apt package; scripts/ci_services.sh installs it in CI); the test skips with
the reason where PostgreSQL's server binaries are missing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    NON_SECRET_KEYS,
    OVERLAYS,
    RESTORE_FOLDER,
    _container_env,
    _containers,
    _find,
    _pod_spec,
    _secret_values,
    _assert_no_secret_in_argv,
    _run_tracing_argv,
    _workloads,
    _write_scripts,
)


def _secrets_used(container: dict) -> set[str]:
    refs = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    return refs | {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                   if "secretKeyRef" in e.get("valueFrom", {})}


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_only_postgres_and_its_setup_job_hold_the_superuser(overlay, rendered):
    objs = rendered[overlay]
    users = {o["metadata"]["name"] for o in _workloads(objs)
             if any("pro-postgres" in _secrets_used(c) for c in _containers(_pod_spec(o)))}
    assert users == {"postgres", "pro-postgres-setup"}
    superuser = _secret_values(_find(objs, "Secret", "pro-postgres"))["POSTGRES_USER"]
    assert _secret_values(_find(objs, "Secret", "pro-mlflow-db"))["PGUSER"] != superuser
    for name in ("mlflow", "pro-backup"):  # the MLflow DB connections: the owner's login
        pod = next(_pod_spec(o) for o in _workloads(objs) if o["metadata"]["name"] == name)
        assert any("pro-mlflow-db" in _secrets_used(c) for c in _containers(pod))


@pytest.mark.parametrize("overlay", [*OVERLAYS, "restore"])
def test_no_credential_in_process_arguments_and_every_pod_refuses_placeholders(overlay, rendered,
                                                                              render):
    objs = render(RESTORE_FOLDER)[1] if overlay == "restore" else rendered[overlay]
    scripts = _find(rendered["root"], "ConfigMap", "pro-scripts")["data"]
    secret_keys = {k for o in rendered["root"] + objs if o["kind"] == "Secret" for k in o["data"]}
    for obj in _workloads(objs):
        spec = _pod_spec(obj)
        init = {c["name"]: c for c in spec.get("initContainers", [])}
        guarded = _secrets_used(init["refuse-placeholders"]) if "refuse-placeholders" in init else set()
        for c in _containers(spec):
            where = f"{overlay}: {obj['metadata']['name']}/{c['name']}"
            words = " ".join(c.get("command", []) + c.get("args", []))
            for var in re.findall(r"\$\((\w+)\)", words):  # kubelet expands these into argv
                assert var not in secret_keys or var in NON_SECRET_KEYS, f"{where}: $({var})"
            used = _secrets_used(c)
            if not used or used <= guarded:
                continue
            # no guarding init container: the container's own script checks first
            run = [scripts[Path(w).name] for w in words.split() if Path(w).name in scripts] + [words]
            assert any("sh /scripts/refuse-placeholders.sh" in s or
                       "refuse-placeholders.sh" in words for s in run), \
                f"{where} uses {used - guarded} but never refuses CHANGE_ME placeholders"


def test_refuse_placeholders_fails_closed_and_names_no_value(rendered, tmp_path):
    script = _write_scripts(rendered["root"], tmp_path) / "refuse-placeholders.sh"
    base = {"PATH": os.environ["PATH"]}
    bad = subprocess.run(["sh", str(script)], env={**base, "DB_PASSWORD": "CHANGE_ME-secret9"},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "DB_PASSWORD" in bad.stderr and "secret9" not in bad.stderr
    good = subprocess.run(["sh", str(script)], env={**base, "DB_PASSWORD": "s3cret"},
                          capture_output=True, text=True, timeout=30)
    assert good.returncode == 0, good.stderr


def test_setup_backup_and_restore_round_trip_on_a_real_postgres(rendered, render, postgres_server,
                                                                 tmp_path):
    """pro-postgres-setup creates MLflow's databases and a non-superuser owner; the CronJob's
    dump step and the pro-restore Job's restore step (their real scripts and environment) then
    bring back data lost after the backup."""
    base, superuser = postgres_server
    objs = rendered["root"]
    scripts = _write_scripts(objs, tmp_path / "scripts")
    db = _secret_values(_find(objs, "Secret", "pro-mlflow-db"))
    db["PGPASSWORD"] = "owner-" + os.urandom(6).hex()
    secrets = {"pro-postgres": superuser, "pro-mlflow-db": db}

    def run_container(container: dict, extra: dict | None = None) -> subprocess.CompletedProcess:
        env = {**_container_env(container, objs, secrets, base), **(extra or {})}
        cmd = [a.replace("/scripts/", f"{scripts}/") for a in container["command"]]
        proc, argvs = _run_tracing_argv(cmd, env, tmp_path / f"{container['name']}.trace")
        assert proc.returncode == 0, f"{container['name']}: {proc.stdout}{proc.stderr}"
        _assert_no_secret_in_argv(argvs, [superuser["POSTGRES_PASSWORD"], db["PGPASSWORD"]],
                                  container["name"])  # pg_dump/psql/pg_restore read PGPASSWORD
        return proc

    (setup,) = _find(objs, "Job", "pro-postgres-setup")["spec"]["template"]["spec"]["containers"]
    run_container(setup)
    run_container(setup)  # idempotent: a second apply changes nothing

    def psql(sql: str, user: dict) -> str:
        env = {**base, "PGUSER": user["user"], "PGPASSWORD": user["password"],
               "PGDATABASE": user["db"]}
        return subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql], env=env,
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    owner = {"user": db["PGUSER"], "password": db["PGPASSWORD"], "db": db["PGDATABASE"]}
    su = {"user": superuser["POSTGRES_USER"], "password": superuser["POSTGRES_PASSWORD"],
          "db": "postgres"}
    assert psql(f"select rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = "
                f"'{db['PGUSER']}'", su) == "f|f|f"
    # MLflow's kind of data, written as the owner in both databases
    psql("create table registered_models (name text primary key, alias text);"
         "insert into registered_models values ('pro-endpoint', 'champion');", owner)
    auth = {**owner, "db": db["MLFLOW_AUTH_DATABASE"]}
    psql("create table users (username text primary key); insert into users values ('pro_ui');", auth)

    cron = _find(objs, "CronJob", "pro-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    dump = {c["name"]: c for c in cron["initContainers"]}["dump-postgres"]
    backups = tmp_path / "backups"
    run_container(dump, {"BACKUP_DIR": str(backups)})
    (stamp,) = [p for p in (backups / "postgres").iterdir()]
    assert sorted(p.name for p in stamp.iterdir()) == sorted(
        [f"{db['PGDATABASE']}.dump", f"{db['MLFLOW_AUTH_DATABASE']}.dump"])

    # disaster after the backup
    psql("update registered_models set alias = 'broken'; drop table if exists nothing;", owner)
    psql("drop table users;", auth)

    restore_job = render(RESTORE_FOLDER)[1]
    job = _find(restore_job, "Job", "pro-restore")["spec"]["template"]["spec"]
    restore = {c["name"]: c for c in job["initContainers"]}["restore-postgres"]
    out = run_container(restore, {"BACKUP_DIR": str(backups)}).stdout
    assert stamp.name in out
    assert psql("select name, alias from registered_models", owner) == "pro-endpoint|champion"
    assert psql("select username from users", auth) == "pro_ui"


def test_bucket_mirror_runs_bucket_to_backup_and_back_on_restore(rendered, render, tmp_path):
    """The CronJob's and the restore Job's MinIO containers run the same script in opposite
    directions, as the bucket-scoped user (stub `mc` records the calls)."""
    objs = rendered["root"]
    scripts = _write_scripts(objs, tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text('#!/bin/sh\necho "$MC_HOST_pro $*" >> "$CALLS"\n')
    (bin_dir / "mc").chmod(0o755)
    cron = _find(objs, "CronJob", "pro-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = _find(render(RESTORE_FOLDER)[1], "Job", "pro-restore")["spec"]["template"]["spec"]
    s3 = {"AWS_ACCESS_KEY_ID": "prokey", "AWS_SECRET_ACCESS_KEY": "secret-value"}
    mirrors = {}
    for name, spec in (("backup", cron), ("restore", job)):
        (c,) = spec["containers"]
        assert {"secretRef": {"name": "pro-mlflow-s3"}} in c["envFrom"]  # never MinIO's root
        calls = tmp_path / f"{name}.calls"
        env = _container_env(c, objs, {"pro-mlflow-s3": s3},
                             {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
                              "BACKUP_DIR": str(tmp_path / "backups")})
        cmd = [a.replace("/scripts/", f"{scripts}/") for a in c["command"]]
        proc, argvs = _run_tracing_argv(cmd, env, tmp_path / f"{name}.trace")
        assert proc.returncode == 0, proc.stderr
        _assert_no_secret_in_argv(argvs, [s3["AWS_SECRET_ACCESS_KEY"]], name)
        (line,) = calls.read_text().splitlines()
        host, *args = line.split()
        endpoint = _find(objs, "ConfigMap", "pro-config")["data"]["MLFLOW_S3_ENDPOINT_URL"]
        assert host == endpoint.replace("://", "://prokey:secret-value@")  # credentials: env only
        assert "secret-value" not in " ".join(args)
        mirrors[name] = args[-2:]
    bucket = _find(objs, "ConfigMap", "pro-config")["data"]["PRO_S3_BUCKET"]
    copy = str(tmp_path / "backups" / "minio" / bucket)
    assert mirrors["backup"] == [f"pro/{bucket}", copy]
    assert mirrors["restore"] == [copy, f"pro/{bucket}"]
