"""Small I/O helpers: PRO's working folder, atomic writes, JSON/JSONL, and URI localisation.

Everything PRO writes goes through :func:`atomic_write_text`, :func:`atomic_dir` or friends, so a
crash never leaves a half-written artifact where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from pro_lib.errors import CheckpointError, ConfigError, DataError


def pro_home(env: Mapping[str, str] | None = None, *, create: bool = True) -> Path:
    """PRO's working folder (caches, local MLflow store, converted models): ``$PRO_HOME`` or ./.pro.

    The one definition of the default; ``env`` instead of ``os.environ`` (e.g. a child's environment).
    """
    env = os.environ if env is None else env
    home = Path(env.get("PRO_HOME") or Path.cwd() / ".pro").resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


_FULL_HASH_BYTES = 32 * 2**20   # files up to this size are hashed whole
_PART_BYTES = 4 * 2**20         # bigger ones: size + first and last 4 MiB


def _file_digest(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:
            h.update(fh.read(_PART_BYTES))
            fh.seek(size - _PART_BYTES)
            h.update(fh.read(_PART_BYTES))


def digest_path(path: str | Path) -> str:
    """sha256 of a file or a folder's files (names + contents; files over 32 MiB: size, head and tail)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _file_digest(path, h)
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path)
            if any(part.startswith(".") for part in rel.parts):
                continue  # locks, temporary files
            h.update(f"{rel.as_posix()}\0".encode())
            _file_digest(f, h)
    return "sha256:" + h.hexdigest()[:16]


def check_output_dir(path: str | Path, *, what: str = "this command", allowed: Iterable[str] | None = None,
                     flag: str = "--output-dir") -> Path:
    """Refuse an output folder a command cannot (or must not) write into, before it starts: a file
    where the folder should be, and, with ``allowed`` (the names the command itself writes), a
    folder that holds anything else (another artifact: merging into it would mix the two)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {flag} {path} is a file, not a folder; choose another {flag} "
                          "(or move the file away)")
    if allowed is not None and path.is_dir():
        other = sorted(p.name for p in path.iterdir() if p.name not in set(allowed) and not p.name.startswith("."))
        if other:
            shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
            raise ConfigError(f"{what}: {flag} {path} already holds other files ({shown}); writing there would "
                              f"mix them with this output: choose an empty or new folder")
    return path


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error a user can fix (read-only or full disk, a file where a folder
    should be), naming the path."""
    import errno

    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    hint = {errno.EACCES: "not writable by this user: choose another folder (or fix its permissions)",
            errno.EPERM: "not writable by this user: choose another folder (or fix its permissions)",
            errno.EROFS: "on a read-only file system: choose another folder",
            errno.ENOTDIR: "a file stands where a folder is expected: choose another path or move the file",
            errno.EEXIST: "a file stands where a folder is expected: choose another path or move the file",
            errno.ENOSPC: "the disk is full: free space or choose another folder",
            errno.EDQUOT: "the disk quota is exceeded: free space or choose another folder"}.get(exc.errno, "")
    return f"{exc.strerror or exc}: {where}" + (f" ({hint})" if hint else "")


CHARS_PER_TOKEN_MAX = 32  # no tokenizer PRO uses makes one token of more characters than this


def tail_chars(text: str, max_tokens: int) -> str:
    """The end of ``text`` that can hold its last ``max_tokens`` tokens: cut before tokenising, so a huge
    prompt (a pasted 30 MB file) costs what a long one does, not minutes and gigabytes."""
    limit = max(1, int(max_tokens)) * CHARS_PER_TOKEN_MAX
    return text if len(text) <= limit else text[-limit:]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: honour the umask, as open() would
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
    if path.exists() and not path.is_dir():  # never rename a file away in its place
        raise ConfigError(f"{path} is a file, not a folder; choose another output folder (or move the file away)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output folder or remove it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: a serving pod of another uid could not read it
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

