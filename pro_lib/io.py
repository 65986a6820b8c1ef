"""Small I/O helpers: PRO's working folder, atomic writes, JSON/JSONL, and URI localisation.

Everything PRO writes goes through :func:`atomic_write_text`, :func:`atomic_dir` or friends, so a
crash never leaves a half-written artifact where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from pro_lib.errors import CheckpointError, DataError


def pro_home(env: Mapping[str, str] | None = None, *, create: bool = True) -> Path:
    """PRO's working folder (caches, local MLflow store, converted models): ``$PRO_HOME`` or ./.pro.

    The one definition of the default; ``env`` instead of ``os.environ`` (e.g. a child's environment).
    """
    env = os.environ if env is None else env
    home = Path(env.get("PRO_HOME") or Path.cwd() / ".pro").resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}; "
                              "the file is corrupt, re-create it") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    lines = [json.dumps(r, default=_json_default, ensure_ascii=False) for r in rows]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: str | Path, *, required: Iterable[str] = (), what: str = "record") -> list[dict]:
    """The records of a JSONL file written by :func:`write_jsonl` (blank lines skipped). A line that is not a
    JSON object, or lacks a ``required`` key, is a :class:`DataError` naming the file and line."""
    path, required = Path(path), tuple(required)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: bad {what}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            missing = [k for k in required if k not in rec] if isinstance(rec, dict) else list(required)
            if not isinstance(rec, dict) or missing:
                want = f"; expected {', '.join(required)}" if required else ""
                got = f"missing {', '.join(map(repr, missing))}" if isinstance(rec, dict) else "not a JSON object"
                raise DataError(f"{path}:{lineno}: bad {what} ({got}){want}")
            rows.append(rec)
    return rows


def atomic_savefig(fig, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a matplotlib figure via a temporary file and an atomic rename, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    >>> with atomic_dir("out/model") as tmp:
    ...     model.save_pretrained(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output folder or remove it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def utf8_problem(text: str) -> str | None:
    """Why ``text`` is not valid UTF-8 (command-line bytes that did not decode arrive as lone surrogates),
    e.g. ``byte 0xff at character 3``; None when it is fine."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"code point U+{code:04X}"
        return f"{what} at character {exc.start + 1}"

