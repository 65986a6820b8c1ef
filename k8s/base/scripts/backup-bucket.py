"""pro-backup CronJob, step 2 (and the pro-restore Job): the artifact bucket's copy, pruned, on the
backup volume and/or an off-cluster S3 bucket. Python's standard library and boto3 only (the
pro-mlflow image). Started by backup-minio.sh after the placeholder check:

    python3 backup-bucket.py backup     # bucket -> targets; dumps -> off-cluster; prune; last-success
    python3 backup-bucket.py fetch      # pro-restore, first: the off-cluster dumps -> the volume
    python3 backup-bucket.py restore    # pro-restore, last: a copy -> the bucket

Environment (the CronJob sets it from pro-config, ConfigMap pro-backup and the Secrets):
  S3_ENDPOINT, PRO_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the bucket and its user
  BACKUP_DIR          the backup volume (postgres/<stamp>/ dumps, minio/<bucket>/ copy)
  BACKUP_KEEP         how many dump folders and history generations to keep (default 7)
  BACKUP_TARGETS      where the bucket copy goes: `pvc`, `offsite` or `pvc,offsite`
  BACKUP_OFFSITE_URL  s3://<bucket>[/<prefix>] (with `offsite`), BACKUP_OFFSITE_ENDPOINT_URL (not
                      AWS), BACKUP_OFFSITE_REGION, and from Secret pro-backup-offsite:
                      BACKUP_OFFSITE_ACCESS_KEY_ID, BACKUP_OFFSITE_SECRET_ACCESS_KEY
  RESTORE_FROM        restore/fetch: `pvc` (default) or `offsite`; BACKUP_ID: `latest` or a dump folder

Each target holds `minio/<bucket>/<key>` (the bucket as of the last run), `minio-history/<stamp>/<key>`
(the earlier content of every object changed or deleted in the bucket since the run before: the
newest BACKUP_KEEP generations are kept, older ones deleted) and `last-success.json`; the
off-cluster target also `postgres/<stamp>/` (the newest BACKUP_KEEP dump folders). The run fails
(and the CronJob's lastSuccessfulTime stays put, which is what to alert on) if any step fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

MANIFEST = "minio.manifest.json"   # key -> source ETag of the copy, per target
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class Error(Exception):
    pass


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise Error(f"{name} is not set (k8s/base/backup-cronjob.yaml, ConfigMap pro-backup)")
    return value


def keep() -> int:
    raw = os.environ.get("BACKUP_KEEP", "7")
    if not raw.isdigit() or int(raw) < 1:
        raise Error(f"BACKUP_KEEP={raw!r}: a whole number of at least 1 (ConfigMap pro-backup)")
    return int(raw)


def targets() -> list[str]:
    names = [t.strip() for t in os.environ.get("BACKUP_TARGETS", "pvc").split(",") if t.strip()]
    bad = [t for t in names if t not in ("pvc", "offsite")]
    if bad or not names:
        raise Error(f"BACKUP_TARGETS={os.environ.get('BACKUP_TARGETS')!r}: `pvc`, `offsite` or `pvc,offsite`")
    return names


def source_client():
    import boto3

    return boto3.client("s3", endpoint_url=env("S3_ENDPOINT"),
                        aws_access_key_id=env("AWS_ACCESS_KEY_ID"),
                        aws_secret_access_key=env("AWS_SECRET_ACCESS_KEY"),
                        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def list_objects(client, bucket: str, prefix: str = "") -> dict[str, dict]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue   # a "folder" marker some S3 tools create: no content to keep
            out[obj["Key"][len(prefix):]] = {"etag": obj["ETag"].strip('"'), "size": obj["Size"]}
    return out


def safe_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Error(f"object key {key!r} cannot be stored as a file (empty, '.' or '..' segment)")
    return key


# --------------------------------------------------------------------------- targets

class VolumeTarget:
    """The backup volume: minio/<bucket>/ as files (written atomically)."""

    name = "pvc"

    def __init__(self, root: Path, bucket: str):
        self.root, self.bucket = root, bucket
        self.copy = root / "minio" / bucket

    def manifest(self) -> dict[str, str | None]:
        path = self.root / MANIFEST
        if path.exists():
            return json.loads(path.read_text())
        # a copy from before manifests (`mc mirror`): adopt its files, compared by size below
        if not self.copy.is_dir():
            return {}
        return {key: None for key in self.keys()}

    def size(self, key: str) -> int | None:
        path = self.copy / safe_key(key)
        return path.stat().st_size if path.is_file() else None

    def save_manifest(self, manifest: dict) -> None:
        write_atomic(self.root / MANIFEST, json.dumps(manifest, sort_keys=True).encode())

    def put(self, key: str, client, bucket: str) -> None:
        path = self.copy / safe_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        os.close(fd)
        try:
            client.download_file(bucket, key, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def to_history(self, key: str, stamp: str) -> None:
        path = self.copy / safe_key(key)
        if path.is_file():
            dest = self.root / "minio-history" / stamp / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)

    def generations(self) -> list[str]:
        folder = self.root / "minio-history"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def drop_generation(self, stamp: str) -> None:
        shutil.rmtree(self.root / "minio-history" / stamp)

    def write_marker(self, data: bytes) -> None:
        write_atomic(self.root / "last-success.json", data)

    def missing(self, key: str) -> bool:
        return not (self.copy / safe_key(key)).is_file()

    # restore
    def keys(self) -> list[str]:
        return sorted(p.relative_to(self.copy).as_posix() for p in self.copy.rglob("*")
                      if p.is_file() and not p.name.startswith(".partial-")) if self.copy.is_dir() else []

    def upload_to(self, key: str, client, bucket: str) -> None:
        client.upload_file(str(self.copy / safe_key(key)), bucket, key)


class OffsiteTarget:
    """An S3 bucket off the cluster: <prefix>/minio/<bucket>/..., <prefix>/postgres/<stamp>/..."""

    name = "offsite"

    def __init__(self, bucket: str):
        import boto3

        url = env("BACKUP_OFFSITE_URL")
        if not url.startswith("s3://") or len(url) <= 5:
            raise Error(f"BACKUP_OFFSITE_URL={url!r}: expected s3://<bucket>[/<prefix>]")
        self.obucket, _, prefix = url[5:].partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.bucket = bucket
        self.client = boto3.client(
            "s3", endpoint_url=os.environ.get("BACKUP_OFFSITE_ENDPOINT_URL") or None,
            region_name=os.environ.get("BACKUP_OFFSITE_REGION") or "us-east-1",
            aws_access_key_id=env("BACKUP_OFFSITE_ACCESS_KEY_ID"),
            aws_secret_access_key=env("BACKUP_OFFSITE_SECRET_ACCESS_KEY"))

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def manifest(self) -> dict[str, str | None]:
        try:
            body = self.client.get_object(Bucket=self.obucket, Key=self._key(MANIFEST))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return {}
        return json.loads(body)

    def save_manifest(self, manifest: dict) -> None:
        self.client.put_object(Bucket=self.obucket, Key=self._key(MANIFEST),
                               Body=json.dumps(manifest, sort_keys=True).encode())

    def size(self, key: str) -> int | None:
        return None

    def missing(self, key: str) -> bool:
        return False   # the manifest says what is there (listing every object would cost a request per 1000)

    def put(self, key: str, client, bucket: str) -> None:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        self.client.upload_fileobj(body, self.obucket, self._key("minio", self.bucket, key))

    def to_history(self, key: str, stamp: str) -> None:
        src = self._key("minio", self.bucket, key)
        self.client.copy({"Bucket": self.obucket, "Key": src}, self.obucket,
                         self._key("minio-history", stamp, key))
        self.client.delete_object(Bucket=self.obucket, Key=src)

    def _folders(self, name: str) -> list[str]:
        prefix = self._key(name) + "/"
        out = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.obucket, Prefix=prefix, Delimiter="/"):
            out |= {p["Prefix"][len(prefix):].strip("/") for p in page.get("CommonPrefixes", [])}
        return sorted(out)

    def generations(self) -> list[str]:
        return self._folders("minio-history")

    def _delete_prefix(self, prefix: str) -> None:
        keys = list(list_objects(self.client, self.obucket, prefix))
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.obucket, Delete={
                "Objects": [{"Key": prefix + k} for k in keys[i:i + 1000]], "Quiet": True})

    def drop_generation(self, stamp: str) -> None:
        self._delete_prefix(self._key("minio-history", stamp) + "/")

    def write_marker(self, data: bytes) -> None:
        self.client.put_object(Bucket=self.obucket, Key=self._key("last-success.json"), Body=data)

    # dumps
    def dump_folders(self) -> list[str]:
        return self._folders("postgres")

    def upload_dumps(self, folder: Path) -> None:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for path in files:
            self.client.upload_file(str(path), self.obucket, self._key("postgres", folder.name, path.name))

    def drop_dumps(self, stamp: str) -> None:
        self._delete_prefix(self._key("postgres", stamp) + "/")

    def fetch_dumps(self, stamp: str, dest: Path) -> None:
        found = list_objects(self.client, self.obucket, self._key("postgres", stamp) + "/")
        if not found:
            raise Error(f"no dumps at s3://{self.obucket}/{self._key('postgres', stamp)}/")
        partial = dest.with_name(dest.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        for name in found:
            self.client.download_file(self.obucket, self._key("postgres", stamp, name), str(partial / name))
        os.replace(partial, dest)

    # restore
    def keys(self) -> list[str]:
        return sorted(list_objects(self.client, self.obucket, self._key("minio", self.bucket) + "/"))

    def upload_to(self, key: str, client, bucket: str) -> None:
        body = self.client.get_object(Bucket=self.obucket, Key=self._key("minio", self.bucket, key))["Body"]
        client.upload_fileobj(body, bucket, key)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_targets(bucket: str, backup_dir: Path, names: list[str]):
    return [VolumeTarget(backup_dir, bucket) if n == "pvc" else OffsiteTarget(bucket) for n in names]


# --------------------------------------------------------------------------- commands

def sync(target, client, bucket: str, objects: dict[str, dict], stamp: str) -> dict:
    """Bring one target's copy to the bucket's state; the earlier content of changed or deleted
    objects goes to history generation `stamp`. Returns counts."""
    before = target.manifest()
    changed = gone = copied = 0
    for key, old_etag in sorted(before.items()):
        now = objects.get(key)
        if now is None:
            target.to_history(key, stamp)
            gone += 1
        elif old_etag is None and target.size(key) == now["size"]:
            before[key] = now["etag"]   # adopted from a pre-manifest copy
        elif old_etag != now["etag"]:
            target.to_history(key, stamp)
            changed += 1
    manifest = {k: v for k, v in before.items() if k in objects and v == objects[k]["etag"]}
    for key, info in sorted(objects.items()):
        if manifest.get(key) != info["etag"] or target.missing(key):
            target.put(key, client, bucket)
            manifest[key] = info["etag"]
            copied += 1
            if copied % 500 == 0:
                target.save_manifest(manifest)   # a long first copy resumes where it stopped
    target.save_manifest(manifest)
    dropped = prune(target.generations(), target.drop_generation)
    return {"objects": len(objects), "copied": copied, "changed": changed, "deleted": gone,
            "history_dropped": dropped}


def prune(names: list[str], drop) -> list[str]:
    old = sorted(names)[:-keep()] if len(names) > keep() else []
    for name in old:
        drop(name)
    return old


def complete_dumps(backup_dir: Path) -> list[Path]:
    folder = backup_dir / "postgres"
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.endswith("Z")) if folder.is_dir() else []


def backup() -> None:
    bucket, backup_dir = env("PRO_S3_BUCKET"), Path(env("BACKUP_DIR"))
    keep()
    names = targets()
    stamp = dt.datetime.now(dt.timezone.utc).strftime(STAMP_FORMAT)
    client = source_client()
    objects = list_objects(client, bucket)
    report = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "bucket": bucket,
              "targets": {}}
    dumps = complete_dumps(backup_dir)
    report["postgres"] = dumps[-1].name if dumps else None
    for target in make_targets(bucket, backup_dir, names):
        counts = sync(target, client, bucket, objects, stamp)
        if isinstance(target, OffsiteTarget):
            have = set(target.dump_folders())
            for folder in dumps[-keep():]:
                if folder.name not in have:
                    target.upload_dumps(folder)
            counts["dumps_dropped"] = prune(target.dump_folders(), target.drop_dumps)
        report["targets"][target.name] = counts
        print(f"{target.name}: {json.dumps(counts)}")
    marker = (json.dumps(report, sort_keys=True) + "\n").encode()
    for target in make_targets(bucket, backup_dir, names):
        target.write_marker(marker)
    # the volume always gets the marker (the dumps live there); `offsite` alone included
    if "pvc" not in names:
        write_atomic(backup_dir / "last-success.json", marker)
    print(f"backed up bucket {bucket} ({len(objects)} objects) to {', '.join(names)}")


def restore_from() -> str:
    where = os.environ.get("RESTORE_FROM", "pvc")
    if where not in ("pvc", "offsite"):
        raise Error(f"RESTORE_FROM={where!r}: `pvc` or `offsite`")
    return where


def fetch() -> None:
    """pro-restore's first step: with RESTORE_FROM=offsite, the dump folder BACKUP_ID (or the newest)
    from the off-cluster bucket onto the volume, where restore-postgres.sh reads it."""
    if restore_from() != "offsite":
        print("RESTORE_FROM=pvc: the dumps are on the volume already")
        return
    backup_dir = Path(env("BACKUP_DIR"))
    target = OffsiteTarget(env("PRO_S3_BUCKET"))
    folders = target.dump_folders()
    if not folders:
        raise Error(f"no dump folders under s3://{target.obucket}/{target._key('postgres')}/")
    wanted = os.environ.get("BACKUP_ID", "latest")
    stamp = folders[-1] if wanted == "latest" else wanted
    if stamp not in folders:
        raise Error(f"no off-cluster dump folder {stamp!r}; there are: {', '.join(folders)}")
    dest = backup_dir / "postgres" / stamp
    if dest.is_dir():
        print(f"{dest} is there already")
    else:
        target.fetch_dumps(stamp, dest)
        print(f"fetched {stamp} to {dest}")
    if wanted == "latest" and complete_dumps(backup_dir)[-1].name != stamp:
        raise Error(f"the volume holds dumps newer than the off-cluster {stamp}: set BACKUP_ID={stamp}")


def restore() -> None:
    bucket = env("PRO_S3_BUCKET")
    where = restore_from()
    (target,) = make_targets(bucket, Path(env("BACKUP_DIR")), [where])
    keys = target.keys()
    if not keys:
        raise Error(f"no copy of bucket {bucket} in the {where} target")
    client = source_client()
    for key in keys:
        target.upload_to(key, client, bucket)
    print(f"restored bucket {bucket} from the {where} copy ({len(keys)} objects)")


def main(argv: list[str]) -> int:
    commands = {"backup": backup, "fetch": fetch, "restore": restore}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: backup-bucket.py {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        commands[argv[0]]()
    except Error as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
