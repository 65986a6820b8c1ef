#!/usr/bin/env bash
# Build (and optionally push) PRO's container images with docker.
#
#   scripts/build_images.sh                      # all three images, tag = version in pyproject.toml
#   IMAGE_REGISTRY=registry.example.com/me TAG=dev PUSH=1 scripts/build_images.sh
#   IMAGES="ui mlflow" scripts/build_images.sh   # a subset
#   UI_CUDA=1 scripts/build_images.sh            # also the CUDA UI ($TAG-cuda, k8s/overlays/gpu)
#   DRY_RUN=1 scripts/build_images.sh            # print the docker commands only
#
# Environment:
#   IMAGE_REGISTRY  registry/namespace           (default ghcr.io/pro-align)
#   TAG             image tag                    (default: project version, e.g. 0.1.0)
#   IMAGES          which of: components ui mlflow (default: all three)
#   TORCH_CUDA_INDEX  PyTorch CUDA wheel index   (default https://download.pytorch.org/whl/cu128)
#   PUSH=1          docker push after building;  UI_CUDA=1  also build pro-ui:$TAG-cuda
#   DOCKER          docker-compatible CLI        (default docker; podman works too)
#
# Images -> Dockerfiles -> where they are used:
#   $IMAGE_REGISTRY/pro-components:$TAG  docker/components.Dockerfile  KFP components (pipelines/)
#   $IMAGE_REGISTRY/pro-ui:$TAG          docker/ui.Dockerfile          k8s/base/ui.yaml
#   $IMAGE_REGISTRY/pro-mlflow:$TAG      docker/mlflow.Dockerfile      k8s/base/mlflow.yaml
# If you change IMAGE_REGISTRY or TAG, point the manifests at them, e.g. in an overlay:
#   kustomize edit set image ghcr.io/pro-align/pro-ui=$IMAGE_REGISTRY/pro-ui:$TAG
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=$(sed -n 's/^__version__ *= *"\([^"]*\)".*/\1/p' pro_lib/__init__.py | head -n 1)   # defined once
IMAGE_REGISTRY=${IMAGE_REGISTRY:-ghcr.io/pro-align}
IMAGE_REGISTRY=${IMAGE_REGISTRY%/}
TAG=${TAG:-$version}
IMAGES=${IMAGES:-components ui mlflow}
TORCH_CUDA_INDEX=${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
DOCKER=${DOCKER:-docker}
PUSH=${PUSH:-0}
UI_CUDA=${UI_CUDA:-0}
DRY_RUN=${DRY_RUN:-0}

if [[ -z "$TAG" ]]; then
  echo "error: no TAG given and no version found in pyproject.toml" >&2
  exit 2
fi
if [[ "$DRY_RUN" != 1 ]] && ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "error: '$DOCKER' not found; install Docker (or set DOCKER=podman)," \
       "or run with DRY_RUN=1 to see the commands" >&2
  exit 2
fi

run() {
  echo "+ $*"
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}

build() {  # build <image name> <dockerfile> <tag> [docker build args...]
  local name=$1 dockerfile=$2 tag=$3
  shift 3
  local ref="$IMAGE_REGISTRY/$name:$tag"
  run "$DOCKER" build -f "$dockerfile" -t "$ref" "$@" .
  if [[ "$PUSH" == 1 ]]; then run "$DOCKER" push "$ref"; fi
}

for image in $IMAGES; do
  case "$image" in
    components)
      build pro-components docker/components.Dockerfile "$TAG" \
        --build-arg "TORCH_INDEX_URL=$TORCH_CUDA_INDEX" ;;
    ui)
      build pro-ui docker/ui.Dockerfile "$TAG"
      if [[ "$UI_CUDA" == 1 ]]; then
        build pro-ui docker/ui.Dockerfile "$TAG-cuda" --build-arg "TORCH_INDEX_URL=$TORCH_CUDA_INDEX"
      fi ;;
    mlflow)
      build pro-mlflow docker/mlflow.Dockerfile "$TAG" ;;
    *)
      echo "error: unknown image '$image' in IMAGES (choose from: components ui mlflow)" >&2
      exit 2 ;;
  esac
done
