#!/usr/bin/env python3
"""Replace every ``CHANGE_ME`` placeholder in k8s/'s secret ``.env`` files with a random value.

Portable (Python's standard library only; no GNU ``sed -i``, so it runs on macOS hosts of kind and
minikube too), idempotent (only placeholders are replaced: running it again keeps the values you
already have) and quiet about values: it prints which file and key it filled, never the value.
Each file is rewritten atomically (temporary file + rename), keeping its comments and order.

    python scripts/fill_secrets.py                 # every .env file under k8s/
    python scripts/fill_secrets.py --check         # exit 1 while a placeholder is left
    python scripts/fill_secrets.py k8s/base/secrets/postgres.env ...

Values are hex (URL-safe: MinIO's keys also travel inside an ``mc`` host URL). Access keys get a
short readable prefix and stay within MinIO's limits (access keys 3-20, secret keys 8-40
characters); user and database names (no placeholder) are left alone. The explorer's login
(Secret ``pro-ui-basic-auth``, an htpasswd file) is not generated here: you create it
(docs/deploy.md, "Explorer login").
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = "CHANGE_ME"
# keys that name an account (short, readable prefix) rather than hold a password
ACCESS_KEYS = {"AWS_ACCESS_KEY_ID": "pro", "MINIO_ROOT_USER": "admin", "accesskey": "kfp"}


def new_value(key: str) -> str:
    """A random value for ``key``: an access key of at most 20 characters, else 32 hex digits."""
    if key in ACCESS_KEYS:
        return ACCESS_KEYS[key] + secrets.token_hex(6)
    return secrets.token_hex(16)


def fill(path: Path) -> list[str]:
    """Replace the placeholders of one .env file in place; returns the keys it filled."""
    lines = path.read_text().splitlines(keepends=True)
    filled = []
    for i, line in enumerate(lines):
        key, sep, value = line.rstrip("\r\n").partition("=")
        if sep and not key.lstrip().startswith("#") and value.strip().startswith(PLACEHOLDER):
            lines[i] = f"{key}={new_value(key.strip())}" + line[len(line.rstrip("\r\n")):]
            filled.append(key.strip())
    if filled:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.writelines(lines)
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return filled


def placeholders(paths: list[Path]) -> list[str]:
    return [f"{p}:{n}" for p in paths for n, line in enumerate(p.read_text().splitlines(), 1)
            if not line.lstrip().startswith("#") and line.partition("=")[2].strip().startswith(PLACEHOLDER)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: every .env file under k8s/")
    parser.add_argument("--root", type=Path, default=REPO / "k8s", help="folder to search (default k8s/)")
    parser.add_argument("--check", action="store_true", help="only report placeholders; exit 1 if any")
    args = parser.parse_args(argv)
    paths = args.files or sorted(args.root.rglob("*.env"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if args.check:
        left = placeholders(paths)
        for where in left:
            print(f"placeholder left: {where}")
        return 1 if left else 0
    for path in paths:
        for key in fill(path):
            print(f"filled {path}: {key}")
    left = placeholders(paths)
    print("no placeholders left" if not left else f"placeholders left: {', '.join(left)}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
