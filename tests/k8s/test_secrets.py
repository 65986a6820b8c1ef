"""Placeholder-only Secrets, generated from .env files."""

from __future__ import annotations

import re

import pytest
import yaml

from .helpers import K8S, NON_SECRET_KEYS, OVERLAYS, PLACEHOLDER, _find, _secret_values


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_no_secret_holds_a_real_value(overlay, rendered):
    secrets = [o for o in rendered[overlay] if o["kind"] == "Secret"]
    assert len(secrets) >= 4
    for secret in secrets:
        for key, value in _secret_values(secret).items():
            where = f"{overlay}: Secret {secret['metadata']['name']} key {key}"
            if key in NON_SECRET_KEYS:
                assert re.fullmatch(r"[a-z_][a-z0-9_]*", value), f"{where}: odd identifier {value!r}"
            else:
                assert PLACEHOLDER.match(value), f"{where} holds a non-placeholder value"


def test_placeholder_credentials_fit_minio_limits(rendered):
    """So that the default deploy starts (MinIO: access keys 3-20 chars, secrets 8-40)."""
    objs = rendered["root"]
    pairs = [("pro-minio", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
             ("pro-mlflow-s3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
             ("pro-s3-credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    for name, user_key, secret_key in pairs:
        values = _secret_values(_find(objs, "Secret", name))
        assert 3 <= len(values[user_key]) <= 20 and 8 <= len(values[secret_key]) <= 40, name


def test_no_credentials_outside_secret_generators():
    """Secrets come only from secretGenerator .env files; no Secret manifests, no inline data."""
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                pytest.fail(f"{path} declares a Secret; use a secretGenerator with a .env file")
            if doc and doc.get("kind") == "Kustomization":
                for gen in doc.get("secretGenerator", []):
                    assert not gen.get("literals"), f"{path}: inline secret literals"


def test_existing_kfp_secret_recipe_of_the_docs_renders(render, tmp_path):
    """docs/deploy.md's replacement of the pipeline Secrets in an existing-kfp overlay (each copy
    named with its namespace; without it kustomize fails with "found multiple objects")."""
    import re as re_

    from .helpers import REPO, _copy_k8s

    k8s = _copy_k8s(tmp_path)
    text = (REPO / "docs" / "deploy.md").read_text()
    recipe = re_.search(r"# my-overlay/kustomization.yaml\n(.*?)```", text, re_.S).group(1)
    overlay = k8s.parent / "my-overlay"
    (overlay / "secrets").mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(recipe)
    (overlay / "secrets" / "s3-credentials.env").write_text("AWS_ACCESS_KEY_ID=prox1\nAWS_SECRET_ACCESS_KEY=s3cret-value\n")
    (overlay / "secrets" / "mlflow-pipeline.env").write_text("MLFLOW_TRACKING_USERNAME=pro_pipeline\nMLFLOW_TRACKING_PASSWORD=pw-value\n")
    objs = render(overlay)[1]
    for ns in ("pro", "kubeflow"):
        assert _secret_values(_find(objs, "Secret", "pro-s3-credentials", ns))["AWS_ACCESS_KEY_ID"] == "prox1"
        assert _secret_values(_find(objs, "Secret", "pro-mlflow-pipeline", ns))["MLFLOW_TRACKING_PASSWORD"] == "pw-value"
