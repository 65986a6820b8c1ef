"""Fixtures of the k8s tests: the kubectl binary, the validator, and renders cached for the
whole test session (rendering an overlay takes a second or two; every module shares one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import OVERLAYS, _kustomize, _objects, kubectl_helper


@pytest.fixture(scope="session")
def kubectl() -> Path:
    try:
        return kubectl_helper.kubectl_path()
    except kubectl_helper.KubectlUnavailable as exc:
        pytest.skip(f"kubectl not available: {exc}")


@pytest.fixture(scope="session")
def validator():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def render(kubectl):
    """render(folder) -> (yaml text, objects); each folder is rendered once per session."""
    cache: dict[Path, tuple[str, list[dict]]] = {}

    def _render(folder: Path) -> tuple[str, list[dict]]:
        folder = Path(folder).resolve()
        if folder not in cache:
            text = _kustomize(kubectl, folder)
            cache[folder] = (text, _objects(text))
        return cache[folder]

    return _render


@pytest.fixture(scope="session")
def rendered(render) -> dict[str, list[dict]]:
    return {name: render(path)[1] for name, path in OVERLAYS.items()}
