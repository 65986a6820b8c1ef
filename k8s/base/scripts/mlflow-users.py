"""pro-mlflow-setup Job: the MLflow users of the platform, created (or their password reset) by
MLflow's admin through the basic-auth API. Idempotent; run on every apply.

Environment: MLFLOW_TRACKING_URI; the admin as MLFLOW_TRACKING_USERNAME / _PASSWORD; and for
each client user <NAME>_USERNAME / <NAME>_PASSWORD (NAME in PRO_MLFLOW_USERS)."""

import os
import sys
import time
import urllib.request

from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient

uri = os.environ["MLFLOW_TRACKING_URI"]
print(f"waiting for MLflow at {uri} ...", flush=True)
for _ in range(200):
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as resp:
            if resp.status == 200:
                break
    except OSError:
        time.sleep(3)
else:
    sys.exit(f"MLflow at {uri} did not become healthy")
client = AuthServiceClient(uri)
for name in os.environ["PRO_MLFLOW_USERS"].split():
    user, password = os.environ[f"{name}_USERNAME"], os.environ[f"{name}_PASSWORD"]
    try:
        client.create_user(user, password)
        print(f"created MLflow user {user}")
    except RestException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(user, password)
        print(f"MLflow user {user} exists; password set from its Secret")
