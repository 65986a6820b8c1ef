"""Security of the database wiring and the backup/restore round trip, run for real.

The scripts of ConfigMap pro-scripts (k8s/base/scripts/) run against a real local PostgreSQL
(the `postgresql` apt package; scripts/ci_services.sh installs it in CI); the test skips with
the reason where PostgreSQL's server binaries are missing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import (
    K8S,
    NAMESPACE_FOLDERS,
    NON_SECRET_KEYS,
    OVERLAYS,
    RESTORE_FOLDER,
    _container_env,
    _containers,
    _find,
    _matches,
    _pod_labels,
    _pod_spec,
    _secret_values,
    _assert_no_secret_in_argv,
    _run_tracing_argv,
    _workloads,
    _write_kustomization,
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
    # how many dumps to keep: ConfigMap pro-backup (one setting for dumps and bucket history)
    keep_ref = {e["name"]: e for e in dump["env"]}["BACKUP_KEEP"]["valueFrom"]["configMapKeyRef"]
    assert keep_ref == {"name": "pro-backup", "key": "BACKUP_KEEP"}
    assert _find(objs, "ConfigMap", "pro-backup")["data"]["BACKUP_KEEP"] == "7"
    backups = tmp_path / "backups"
    # three nights with BACKUP_KEEP=2: only the newest two dump folders remain
    for night, alias in enumerate(["night-1", "night-2", "champion"]):
        if night:
            time.sleep(1.1)   # the folders are named by the second
        psql(f"update registered_models set alias = '{alias}'", owner)
        run_container(dump, {"BACKUP_DIR": str(backups), "BACKUP_KEEP": "2"})
    stamps = sorted((backups / "postgres").iterdir())
    assert len(stamps) == 2 and not [p for p in stamps if p.name.endswith(".partial")]
    for stamp in stamps:
        assert sorted(p.name for p in stamp.iterdir()) == sorted(
            [f"{db['PGDATABASE']}.dump", f"{db['MLFLOW_AUTH_DATABASE']}.dump"])

    # disaster after the backup
    psql("update registered_models set alias = 'broken'; drop table if exists nothing;", owner)
    psql("drop table users;", auth)

    restore_job = render(RESTORE_FOLDER)[1]
    job = _find(restore_job, "Job", "pro-restore")["spec"]["template"]["spec"]
    restore = {c["name"]: c for c in job["initContainers"]}["restore-postgres"]
    out = run_container(restore, {"BACKUP_DIR": str(backups)}).stdout
    assert stamps[-1].name in out   # `latest`: the newest of those kept
    assert psql("select name, alias from registered_models", owner) == "pro-endpoint|champion"
    assert psql("select username from users", auth) == "pro_ui"
    # an older one on request (BACKUP_ID)
    run_container(restore, {"BACKUP_DIR": str(backups), "BACKUP_ID": stamps[0].name})
    assert psql("select alias from registered_models", owner) == "night-2"


# --------------------------------------------------------------------------- the bucket's copy

def _bucket_containers(objs, restore_objs) -> dict[str, dict]:
    cron = _find(objs, "CronJob", "pro-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = _find(restore_objs, "Job", "pro-restore")["spec"]["template"]["spec"]
    (backup,) = cron["containers"]
    (restore,) = job["containers"]
    fetch = {c["name"]: c for c in job["initContainers"]}["fetch-dumps"]
    return {"backup": backup, "restore": restore, "fetch": fetch}


class _BucketRun:
    """Runs the rendered bucket containers' command (their script from pro-scripts, with this
    Python's boto3 first on PATH) against the moto S3 server, as their environment says."""

    def __init__(self, objs, restore_objs, tmp_path, s3_endpoint, bucket, secrets=None):
        self.objs, self.tmp = objs, tmp_path
        self.scripts = _write_scripts(objs, tmp_path / "scripts")
        self.containers = _bucket_containers(objs, restore_objs)
        self.secrets = {"pro-mlflow-s3": {"AWS_ACCESS_KEY_ID": "prokey", "AWS_SECRET_ACCESS_KEY":
                                          "bucket-secret-" + os.urandom(4).hex()}, **(secrets or {})}
        self.base = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
                     "S3_ENDPOINT": s3_endpoint, "PRO_S3_BUCKET": bucket,
                     "BACKUP_DIR": str(tmp_path / "backups")}
        self.runs = 0

    def __call__(self, which: str, check: bool = True, **extra) -> subprocess.CompletedProcess:
        c = self.containers[which]
        env = _container_env(c, self.objs, self.secrets, {**self.base, **extra})
        cmd = [a.replace("/scripts/", f"{self.scripts}/") for a in c["command"]]
        self.runs += 1
        proc, argvs = _run_tracing_argv(cmd, env, self.tmp / f"{which}-{self.runs}.trace")
        if check:
            assert proc.returncode == 0, f"{which}: {proc.stdout}{proc.stderr}"
        secrets = [v for s in self.secrets.values() for k, v in s.items() if "SECRET" in k]
        _assert_no_secret_in_argv(argvs, secrets, which)
        return proc


def _s3(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _bucket_state(s3, bucket, prefix="") -> dict[str, bytes]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_bucket_copy_keeps_n_history_generations_and_restores_the_newest(rendered, render, s3_endpoint,
                                                                        tmp_path):
    """Several nights on the backup volume (the default target) with BACKUP_KEEP=2: the copy
    follows the bucket, the earlier content of changed and deleted objects goes to dated history
    folders of which only the newest two remain, a marker records the success, and the restore
    Job's container puts the newest state back into an emptied bucket."""
    pytest.importorskip("boto3")
    objs = rendered["root"]
    assert _find(objs, "ConfigMap", "pro-backup")["data"]["BACKUP_TARGETS"] == "pvc"
    bucket = "pro-bk-" + os.urandom(4).hex()
    s3 = _s3(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    run = _BucketRun(objs, render(RESTORE_FOLDER)[1], tmp_path, s3_endpoint, bucket)
    for name in ("backup", "restore"):   # the bucket-scoped user, never MinIO's root
        assert {"secretRef": {"name": "pro-mlflow-s3"}} in run.containers[name]["envFrom"]
        assert "pro-minio" not in str(run.containers[name])
    backups = tmp_path / "backups"
    nights = [
        {"1/artifacts/model.bin": b"weights-v1", "1/artifacts/metrics.json": b"{}", "old/gone.txt": b"x"},
        {"1/artifacts/model.bin": b"weights-v2", "1/artifacts/metrics.json": b"{}", "2/new.txt": b"n"},
        {"1/artifacts/model.bin": b"weights-v3", "1/artifacts/metrics.json": b"{}", "2/new.txt": b"n2"},
        {"1/artifacts/model.bin": b"weights-v4", "1/artifacts/metrics.json": b"{}", "2/new.txt": b"n2"},
    ]
    present: set[str] = set()
    for night, state in enumerate(nights):
        if night:
            time.sleep(1.1)   # history folders are named by the second
        for key in present - set(state):
            s3.delete_object(Bucket=bucket, Key=key)
        for key, body in state.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        present = set(state)
        out = run("backup", BACKUP_KEEP="2").stdout
        assert f"backed up bucket {bucket} ({len(state)} objects)" in out
        assert _files(backups / "minio" / bucket) == state     # the copy is the bucket, deletions too
    history = sorted((backups / "minio-history").iterdir())
    assert len(history) == 2, [h.name for h in history]       # nights 3 and 4; night 2's dropped
    assert _files(history[0]) == {"1/artifacts/model.bin": b"weights-v2", "2/new.txt": b"n"}
    assert _files(history[1]) == {"1/artifacts/model.bin": b"weights-v3"}
    marker = json.loads((backups / "last-success.json").read_text())
    assert marker["bucket"] == bucket and marker["targets"]["pvc"]["objects"] == 3
    assert marker["targets"]["pvc"]["history_dropped"] and marker["targets"]["pvc"]["copied"] == 1

    # disaster: the bucket emptied; the restore Job's container brings back the newest state
    for key in present:
        s3.delete_object(Bucket=bucket, Key=key)
    out = run("restore").stdout
    assert "restored bucket" in out and _bucket_state(s3, bucket) == nights[-1]
    run("fetch")   # RESTORE_FROM=pvc: nothing to fetch, succeeds


def test_bucket_copy_adopts_a_copy_made_by_mc_mirror(rendered, render, s3_endpoint, tmp_path):
    """Upgrading from the `mc mirror` backup: its files are adopted (no second copy, no history);
    a file lost from the volume is copied again."""
    pytest.importorskip("boto3")
    objs = rendered["root"]
    bucket = "pro-bk-" + os.urandom(4).hex()
    s3 = _s3(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"same")
    old = tmp_path / "backups" / "minio" / bucket / "a"
    old.mkdir(parents=True)
    (old / "b.txt").write_bytes(b"same")
    run = _BucketRun(objs, render(RESTORE_FOLDER)[1], tmp_path, s3_endpoint, bucket)
    run("backup")
    marker = json.loads((tmp_path / "backups" / "last-success.json").read_text())
    assert marker["targets"]["pvc"]["copied"] == 0 and not (tmp_path / "backups" / "minio-history").exists()
    (old / "b.txt").unlink()   # lost from the volume: the next run copies it again
    time.sleep(1.1)
    run("backup")
    assert (old / "b.txt").read_bytes() == b"same"


def _offsite_overlay(tmp_path) -> Path:
    rel = os.path.relpath(K8S, tmp_path / "overlay")
    return _write_kustomization(tmp_path / "overlay", {
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/backup-offsite"]})


def test_offsite_target_holds_the_copy_and_the_dumps_pruned_and_restores(render, s3_endpoint, tmp_path):
    """components/backup-offsite: the CronJob refuses to run until the bucket URL is set; then the
    copy, its history and the newest BACKUP_KEEP dump folders go to the off-cluster bucket (not the
    volume), and a restore from there fetches the newest dumps onto an empty volume and refills
    the bucket."""
    pytest.importorskip("boto3")
    objs = render(_offsite_overlay(tmp_path))[1]
    config = _find(objs, "ConfigMap", "pro-backup")["data"]
    assert config["BACKUP_TARGETS"] == "offsite" and config["BACKUP_KEEP"] == "7"   # merged
    restore_objs = [*objs, *[o for o in render(RESTORE_FOLDER)[1] if o["kind"] == "Job"]]
    bucket, offsite = "pro-bk-" + os.urandom(4).hex(), "pro-off-" + os.urandom(4).hex()
    s3 = _s3(s3_endpoint)
    for b in (bucket, offsite):
        s3.create_bucket(Bucket=b)
    keys = {"BACKUP_OFFSITE_ACCESS_KEY_ID": "offkey",
            "BACKUP_OFFSITE_SECRET_ACCESS_KEY": "offsite-secret-" + os.urandom(4).hex()}
    run = _BucketRun(objs, restore_objs, tmp_path, s3_endpoint, bucket, {"pro-backup-offsite": keys})
    proc = run("backup", check=False)
    assert proc.returncode == 1 and "BACKUP_OFFSITE_URL is a CHANGE_ME placeholder" in proc.stderr

    url = {"BACKUP_OFFSITE_URL": f"s3://{offsite}/team/pro", "BACKUP_OFFSITE_ENDPOINT_URL": s3_endpoint,
           "BACKUP_KEEP": "2"}
    dumps = tmp_path / "backups" / "postgres"
    for night in range(3):
        stamp = f"2026120{night + 1}T021700Z"   # what dump-postgres leaves on the volume
        (dumps / stamp).mkdir(parents=True)
        (dumps / stamp / "mlflow.dump").write_bytes(f"dump {night}".encode())
        s3.put_object(Bucket=bucket, Key="run/model.bin", Body=f"weights {night}".encode())
        if night:
            time.sleep(1.1)
        run("backup", **url)
    remote = _bucket_state(s3, offsite, "team/pro/")
    assert {k: v for k, v in remote.items() if k.startswith("minio/")} == {
        f"minio/{bucket}/run/model.bin": b"weights 2"}
    assert {k for k in remote if k.startswith("postgres/")} == {
        "postgres/20261202T021700Z/mlflow.dump", "postgres/20261203T021700Z/mlflow.dump"}
    assert sorted({k.split("/")[1] for k in remote if k.startswith("minio-history/")}).__len__() == 2
    assert json.loads(remote["last-success.json"])["targets"]["offsite"]["objects"] == 1
    assert not (tmp_path / "backups" / "minio").exists()   # nothing of the bucket on the volume
    assert (tmp_path / "backups" / "last-success.json").exists()

    # disaster: volume and bucket gone; restore from the off-cluster bucket
    import shutil

    shutil.rmtree(tmp_path / "backups")
    s3.delete_object(Bucket=bucket, Key="run/model.bin")
    out = run("fetch", RESTORE_FROM="offsite", **url).stdout
    assert "fetched 20261203T021700Z" in out
    assert (dumps / "20261203T021700Z" / "mlflow.dump").read_bytes() == b"dump 2"
    run("restore", RESTORE_FROM="offsite", **url)
    assert _bucket_state(s3, bucket) == {"run/model.bin": b"weights 2"}


def test_offsite_component_opens_https_egress_for_backup_pods_only(render, tmp_path):
    objs = render(_offsite_overlay(tmp_path))[1]
    wide = [p for p in objs if p["kind"] == "NetworkPolicy"
            and any("ipBlock" in peer for r in p["spec"].get("egress") or [] for peer in r.get("to", []))]
    assert [p["metadata"]["name"] for p in wide] == ["backup-offsite-egress"]
    (policy,) = wide
    selected = {o["metadata"]["name"] for o in _workloads(objs + render(RESTORE_FOLDER)[1])
                if _matches(policy["spec"]["podSelector"], _pod_labels(o))}
    assert selected == {"pro-backup", "pro-restore"}
    assert [p["port"] for r in policy["spec"]["egress"] for p in r["ports"]] == [443]


def _gib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", quantity)
    return int(m.group(1)) * {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}[m.group(2)]


@pytest.mark.parametrize("overlay", list(NAMESPACE_FOLDERS))
def test_backup_volume_holds_the_overlays_bucket_and_a_database(overlay, rendered, render):
    """Sized per overlay (the namespace folder applied with it): at least the bucket's volume plus
    the database's, the copy of the one and a dump of the other, with room for history."""
    objs = rendered[overlay]
    claim = _find(render(NAMESPACE_FOLDERS[overlay])[1], "PersistentVolumeClaim", "pro-backups")
    size = _gib(claim["spec"]["resources"]["requests"]["storage"])

    def volume(name):
        sts = _find(objs, "StatefulSet", name)
        (vct,) = sts["spec"]["volumeClaimTemplates"]
        return _gib(vct["spec"]["resources"]["requests"]["storage"])

    assert size >= 1.1 * (volume("minio") + volume("postgres")), (overlay, size)
    assert size <= 2 * (volume("minio") + volume("postgres")) + 4, (overlay, size)   # not wasteful


def test_backup_alerts_component_watches_the_cronjobs_last_success(render, rendered, tmp_path):
    rel = os.path.relpath(K8S, tmp_path / "alerts")
    objs = render(_write_kustomization(tmp_path / "alerts", {
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/backup-alerts"]}))[1]
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    cron = _find(rendered["root"], "CronJob", "pro-backup")
    assert cron["spec"]["schedule"].split()[2:] == ["*", "*", "*"]   # daily
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    selector = f'namespace="{cron["metadata"]["namespace"]}", cronjob="{cron["metadata"]["name"]}"'
    assert f"kube_cronjob_status_last_successful_time{{{selector}}}" in exprs["ProBackupTooOld"]
    # more than one day (one missed night) and less than a week
    days = float(re.search(r">\s*(\d+)\s*\*\s*86400", exprs["ProBackupTooOld"]).group(1))
    assert 1 < days < 7
    assert "job_name=~\"pro-backup-.*\"" in exprs["ProBackupJobFailed"]
