# MLflow tracking server for k8s/base/mlflow.yaml. The public MLflow image has neither the
# PostgreSQL driver nor boto3; this one adds both, pins MLflow to the version PRO's clients use
# (pyproject.toml: mlflow>=3.17,<3.18) with its basic-auth app (extra `auth`: Flask-WTF) and runs
# as a non-root user.
#   docker build -f docker/mlflow.Dockerfile -t ghcr.io/pro-align/pro-mlflow:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG MLFLOW_VERSION=3.17.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HOME=/home/mlflow
# tini as PID 1: forwards SIGTERM to the whole process group (the server runs as a child of the
# CLI), so pods stop at once instead of after the 30 s grace period.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
RUN pip install "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary>=2.9,<3" "boto3>=1.34" \
 && groupadd --gid 10001 mlflow && useradd --uid 10001 --gid 10001 --create-home mlflow
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
# `docker run` only (Kubernetes ignores HEALTHCHECK and uses the manifests' probes)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
