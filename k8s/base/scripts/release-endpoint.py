"""What pro-serving serves: a release record that only the cluster's operator can write.

MLflow's `champion` alias is moved by whoever may edit the registered model, and the pipelines'
MLflow user (whose Secret every pipeline run holds) owns the models it registers: it can move the
alias, and it can overwrite the files of its own runs through MLflow's artifact proxy. So
pro-serving does not follow the alias. It serves the model named by ConfigMap
`pro-serving-release` in namespace `pro` (never part of a kustomize build, so no apply resets it;
only an identity with write access to ConfigMaps in `pro` can change it, which no pipeline run
has), and only if the downloaded files have the SHA-256 recorded there.

    # the operator, from a machine that reaches MLflow (docs/deploy.md, "Release to pro-serving"):
    python k8s/base/scripts/release-endpoint.py record models:/pro-endpoint@champion > release.yaml
    kubectl apply -f release.yaml && kubectl -n pro rollout restart deploy/pro-serving

    # pro-serving's init container (k8s/base/serving.yaml):
    python /scripts/release-endpoint.py fetch      # MODEL_URI, MODEL_SHA256, DEST from the environment

`record` resolves an alias to its version number (the record pins `models:/<name>/<version>`),
downloads the model and prints the ConfigMap. `fetch` downloads MODEL_URI into DEST and refuses
(exit 1, both digests named) when the files differ from MODEL_SHA256. MLflow's login comes from
the environment (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME / _PASSWORD), never from arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

RELEASE_CONFIGMAP = "pro-serving-release"
NAMESPACE = "pro"


def tree_digest(folder: Path) -> str:
    """SHA-256 over every file of ``folder``: sorted relative paths and each file's own SHA-256
    (so a renamed, added, removed or changed file changes the digest)."""
    outer = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"{folder} holds no files: nothing to release")
    for path in files:
        inner = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{path.relative_to(folder).as_posix()}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def pinned_uri(uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` (a release never follows an alias)."""
    if not uri.startswith("models:/"):
        raise SystemExit(f"release a registered model version (models:/<name>/<version> or "
                         f"models:/<name>@<alias>), not {uri!r}")
    body = uri[len("models:/"):]
    if "@" in body:
        from mlflow import MlflowClient

        name, alias = body.split("@", 1)
        version = MlflowClient().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}"
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise SystemExit(f"{uri!r}: expected models:/<name>/<version> or models:/<name>@<alias>")
    return uri


def download(uri: str, dest: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    dest.mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(artifact_uri=uri, dst_path=str(dest)))


def record(uri: str) -> str:
    """The ConfigMap (JSON, which kubectl applies as YAML) releasing ``uri`` to pro-serving."""
    pinned = pinned_uri(uri)
    with tempfile.TemporaryDirectory() as tmp:
        digest = tree_digest(download(pinned, Path(tmp) / "model"))
    return json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": RELEASE_CONFIGMAP, "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/part-of": "pro",
                                "app.kubernetes.io/name": "pro-serving"}},
        "data": {"MODEL_URI": pinned, "MODEL_SHA256": digest},
    }, indent=2)


def fetch(env: dict) -> Path:
    """Download the released model into DEST and check it against the record."""
    uri, want, dest = env.get("MODEL_URI"), env.get("MODEL_SHA256"), Path(env.get("DEST", "/models/release"))
    if not uri or not want:
        raise SystemExit(f"no release yet: ConfigMap {NAMESPACE}/{RELEASE_CONFIGMAP} with MODEL_URI and "
                         "MODEL_SHA256 is missing; release a registered version (docs/deploy.md, "
                         "\"Release to pro-serving\")")
    if "@" in uri:
        raise SystemExit(f"MODEL_URI={uri} names an alias; a release pins a version (record it again)")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    root = download(uri, staging)
    got = tree_digest(root)
    if got != want:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"refusing to serve {uri}: its files have SHA-256 {got}, the release record "
                         f"says {want} (changed after it was released?)")
    shutil.rmtree(dest, ignore_errors=True)
    root.rename(dest)
    shutil.rmtree(staging, ignore_errors=True)
    print(f"released {uri} (sha256 {got}) ready in {dest}", flush=True)
    return dest


def main(argv: list[str]) -> int:
    if argv[:1] == ["record"] and len(argv) == 2:
        print(record(argv[1]))
        return 0
    if argv == ["fetch"]:
        fetch(dict(os.environ))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
