"""S3 (or S3-compatible: MinIO, moto) storage for datasets and artifacts.

Endpoint, credentials and the default bucket come from the environment, the same variables MLflow
uses, so one setting serves both:

- ``MLFLOW_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``): e.g. ``http://minio:9000``
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and optionally ``AWS_DEFAULT_REGION``)
- ``PRO_S3_BUCKET``: the bucket ``upload`` uses when given a bare key (default ``pro-artifacts``)

``download("s3://bucket/key")`` fetches one object, or every object under a prefix (a "folder"),
into a cache under ``$PRO_HOME/s3`` and returns the local path; ``upload(path, "s3://...")`` sends a
file or a folder. Anything that accepts a local path in PRO accepts an ``s3://`` URI through
:func:`pro_lib.refs.localize`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_dir, pro_home

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "pro-artifacts"


def default_bucket() -> str:
    return os.environ.get("PRO_S3_BUCKET") or DEFAULT_BUCKET


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment (None means AWS itself)."""
    for var in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def client():
    """A boto3 S3 client configured from the environment."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url(),
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/part`` -> (bucket, "key/part"). Errors name the bad URI."""
    parsed = urlparse(str(uri))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"{uri!r} is not an S3 URI; expected s3://<bucket>/<key>")
    return parsed.netloc, parsed.path.lstrip("/")


def _explain(exc: Exception, uri: str, action: str) -> Exception:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return ConfigError(f"cannot {action} {uri}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for MinIO)")
    if isinstance(exc, EndpointConnectionError):
        return ConfigError(f"cannot {action} {uri}: S3 endpoint {endpoint_url() or 'AWS'} is unreachable; "
                           "check MLFLOW_S3_ENDPOINT_URL")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return CheckpointError(f"cannot {action} {uri}: bucket does not exist; create it or set PRO_S3_BUCKET")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return ConfigError(f"cannot {action} {uri}: access denied ({code}); check the S3 credentials")
        return CheckpointError(f"cannot {action} {uri}: {code or exc}")
    return exc


def _list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def download(uri: str, dest: str | Path | None = None, *, refresh: bool = False) -> Path:
    """Download an object or every object under a prefix; return the local file or folder.

    Without ``dest`` the copy goes to ``$PRO_HOME/s3/<bucket>/<key>`` and is reused on later calls
    (``refresh=True`` fetches again). A folder is written atomically: a crash never leaves half of it.
    """
    bucket, key = parse_s3_uri(uri)
    target = Path(dest) if dest is not None else pro_home() / "s3" / bucket / (key.rstrip("/") or "_root")
    if target.exists() and not refresh:
        return target
    s3 = client()
    try:
        prefix = key.rstrip("/") + "/" if key else ""
        keys = [] if key.endswith("/") else _list_keys(s3, bucket, key.rstrip("/"))
        if key and key in keys:  # a single object
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            s3.download_file(bucket, key, str(tmp))
            os.replace(tmp, target)
            log.info("downloaded %s -> %s", uri, target)
            return target
        keys = _list_keys(s3, bucket, prefix)
        if not keys:
            raise CheckpointError(f"nothing at {uri}: no object and no objects under that prefix; "
                                  "check the bucket and key (aws s3 ls or mc ls)")
        with atomic_dir(target) as tmp:
            for k in keys:
                rel = k[len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, k, str(out))
        log.info("downloaded %d objects %s -> %s", len(keys), uri, target)
        return target
    except CheckpointError:
        raise
    except Exception as exc:  # botocore errors -> messages that say what to fix
        raise _explain(exc, uri, "download") from exc


def upload(path: str | Path, uri: str | None = None) -> str:
    """Upload a file or a folder (recursively); return the ``s3://`` URI it landed at.

    ``uri`` may be a full ``s3://bucket/key``, a bare key (put in ``$PRO_S3_BUCKET``), or None
    (key = the file/folder name).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"cannot upload {path}: it does not exist")
    if uri is None:
        uri = f"s3://{default_bucket()}/{path.name}"
    elif not str(uri).startswith("s3://"):
        uri = f"s3://{default_bucket()}/{str(uri).lstrip('/')}"
    bucket, key = parse_s3_uri(uri)
    s3 = client()
    try:
        if path.is_file():
            if not key or key.endswith("/"):
                key = key + path.name
            s3.upload_file(str(path), bucket, key)
            return f"s3://{bucket}/{key}"
        key = key.rstrip("/")
        n = 0
        for f in sorted(path.rglob("*")):
            if f.is_file():
                s3.upload_file(str(f), bucket, f"{key}/{f.relative_to(path).as_posix()}" if key
                               else f.relative_to(path).as_posix())
                n += 1
        log.info("uploaded %d files %s -> s3://%s/%s", n, path, bucket, key)
        return f"s3://{bucket}/{key}"
    except Exception as exc:
        raise _explain(exc, uri, "upload to") from exc


def ensure_bucket(bucket: str | None = None) -> str:
    """Create the bucket if it is missing (MinIO/moto set-up); return its name."""
    bucket = bucket or default_bucket()
    s3 = client()
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        try:
            s3.create_bucket(Bucket=bucket)
        except Exception as exc:
            raise _explain(exc, f"s3://{bucket}", "create bucket") from exc
    return bucket


