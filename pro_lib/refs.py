"""Model and artifact references -> local paths: ``models:/`` (MLflow registry), ``s3://``, folders.

Kept out of :mod:`pro_lib.io` so that the I/O helpers the registry, storage and tracking modules
build on do not import them back (no import cycle inside pro_lib).
"""

from __future__ import annotations

from pathlib import Path


def localize(ref: str | Path) -> Path | str:
    """Turn a model/artifact reference into something ``from_pretrained`` can open.

    - ``models:/name@alias`` or ``models:/name/3``: downloaded from the MLflow registry.
    - ``s3://bucket/key``: downloaded with boto3 (endpoint and credentials from the environment).
    - an existing local path: returned as a Path.
    - anything else (a hub name such as ``sentence-transformers/all-MiniLM-L6-v2``): returned as is.
    """
    text = str(ref)
    if text.startswith("models:/"):
        from pro_lib.registry import download_model  # mlflow import is slow: only when needed

        return download_model(text)
    if text.startswith("s3://"):
        from pro_lib.storage import download

        return download(text)
    path = Path(text).expanduser()
    if path.exists():
        return path
    return text
