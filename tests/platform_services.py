"""Moved to tests/helpers/services.py; this name stays importable for branches written before the move."""

from helpers.services import *  # noqa: F401,F403
from helpers.services import (  # noqa: F401
    ARTIFACT_BUCKET, FAKE_KEYS, free_port, mlflow_env, mlflow_server, s3_endpoint, s3_env, serve_model,
    start_mlflow_server, stop_server, wait_http)
