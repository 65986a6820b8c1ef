"""Where a logged dataset comes from: a source URI that a reader of the MLflow run can open, not a pod's path.

Used by :func:`pro_lib.tracking.log_dataset` (every stage's ``mlflow.data`` inputs).
"""

from __future__ import annotations

from pathlib import Path

# a KFP pod sees its input artifacts under these mounts of the pipeline root's object store
KFP_MOUNTS = {"/s3/": "s3://", "/minio/": "s3://", "/gcs/": "gs://"}
MAX_DATASET_UPLOAD = 16 << 20  # bytes: larger data files keep their path as the source


def dataset_source(path: str | Path) -> str:
    """A data file's source URI, one a reader of the run can open: the object behind a KFP pod's artifact
    mount (``/s3/b/k`` -> ``s3://b/k``; ``/minio/``: KFP's MinIO, S3 on its endpoint); else, when the active
    run's artifacts are remote, the file uploaded as a run artifact (``datasets/<folder>/<file>``) and its
    URI (``s3://...``, or the server's HTTP URL for proxied ``mlflow-artifacts:``); else the local path."""
    import mlflow

    path = Path(path).resolve()
    text = str(path)
    for mount, scheme in KFP_MOUNTS.items():
        if text.startswith(mount):
            return scheme + text[len(mount):]
    if mlflow.active_run() is None:
        return text
    root = mlflow.get_artifact_uri()
    from urllib.parse import urlparse

    if urlparse(root).scheme in ("", "file") or path.stat().st_size > MAX_DATASET_UPLOAD:
        return text
    sub = f"datasets/{path.parent.name}"
    mlflow.log_artifact(text, artifact_path=sub)
    uri = mlflow.get_artifact_uri(f"{sub}/{path.name}")
    if uri.startswith("mlflow-artifacts:"):  # proxied by the tracking server: its HTTP route serves the file
        route = "api/2.0/mlflow-artifacts/artifacts"
        uri = f"{mlflow.get_tracking_uri().rstrip('/')}/{route}/{uri.split(':', 1)[1].lstrip('/')}"
    return uri
