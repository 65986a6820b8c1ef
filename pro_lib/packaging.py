"""Packaging: a PRO model folder as an MLflow pyfunc model, and its registration.

:func:`register_model` is how PRO registers a ``save_pretrained`` folder (orchestrator, reward model,
policy or ``pro-endpoint``): the folder's kind (read from its files) must match the name's family; it
is written as an MLflow pyfunc model (:func:`save_pyfunc`: signature, input example, pinned pip
requirements, ``code/pro_lib`` via ``code_paths``, the folder under ``artifacts/<folder>``; the
models themselves are :mod:`pro_lib.serving`'s classes) and registered through
:func:`pro_lib.registry.register_version`. The registry knows nothing of the format beyond
:func:`pro_lib.registry.model_folder`, so the dependency runs one way: packaging -> serving, registry.
"""

from __future__ import annotations

import tempfile
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Mapping

import mlflow.pyfunc
import pandas as pd

from pro_lib import registry, serving
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.registry import (ARTIFACT_KEY, BASE_DIGEST_TAG, BASE_MODEL_PREFIX, BASE_TAG, ENDPOINT_MODEL, FORMAT,
                              ORCHESTRATOR_MODEL, POLICY_MODEL_PREFIX, RANK_TAG, REWARD_MODEL_PREFIX, SIZE_TAG)

KINDS = ("orchestrator", "reward", "policy", "endpoint")
# packages the pyfunc models import at inference time, pinned to the versions that wrote them
TORCH_INDEX = "https://download.pytorch.org/whl"  # PyTorch's wheel indexes: <TORCH_INDEX>/cpu, /cu126, ...
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyyaml", "tqdm", "peft")


# -- what a name is for, what a folder was -------------------------------------------------------

def kind_of_name(name: str) -> str | None:
    """The kind a registered name implies (``pro-reward-helpful`` -> ``reward``), or None."""
    for prefix, kind in ((ORCHESTRATOR_MODEL, "orchestrator"), (REWARD_MODEL_PREFIX, "reward"),
                         (POLICY_MODEL_PREFIX, "policy"), (ENDPOINT_MODEL, "endpoint"), (BASE_MODEL_PREFIX, "policy")):
        if name == prefix or name.startswith(prefix):
            return kind
    return None


def legacy_message(ref: str) -> str:
    return (f"{ref} was registered before PRO's models were MLflow models (a bare folder, no MLmodel), so "
            "mlflow.pyfunc and `mlflow models serve` cannot load it (PRO's own loaders still can). "
            f"Re-register it: pro registry download {ref} --output <dir> && "
            "pro registry register <dir> --name <name> --metric <gate metric>=<value>")


# -- the MLflow model ------------------------------------------------------------------------------

def _gen_param_schema(extra: Mapping[str, tuple[str, Any]] | None = None):
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ParamSchema([ParamSpec(k, t, d) for k, (t, d) in {**serving.GEN_PARAMS, **dict(extra or {})}.items()])


def signature_for(kind: str, info: Mapping[str, Any]):
    """The ModelSignature of a kind (built from the folder's metadata: no model is run)."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    names = list(info.get("objectives") or [])
    prompt = ColSpec(DataType.string, "prompt")
    weights = ColSpec(Array(DataType.double), "weights", required=False)
    if kind == "orchestrator":
        return ModelSignature(Schema([prompt]), Schema([ColSpec(DataType.double, n) for n in names]))
    if kind == "reward":
        return ModelSignature(Schema([prompt, ColSpec(DataType.string, "response")]),
                              Schema([ColSpec(DataType.double, "score")]))
    w_cols = [ColSpec(DataType.double, f"weight_{n}") for n in names]
    if kind == "policy":
        return ModelSignature(Schema([prompt, weights]), Schema([ColSpec(DataType.string, "response"), *w_cols]),
                              params=_gen_param_schema())
    out = [ColSpec(DataType.string, "weights_source"), *w_cols, ColSpec(DataType.string, "response")]
    if info.get("suite"):
        out += [ColSpec(DataType.double, f"score_{n}") for n in names]
        # only with params best_of_n > 1 (pro_lib.best_of_n)
        out += [ColSpec(DataType.long, "best_of_n", required=False),
                ColSpec(DataType.double, "weighted_score", required=False),
                ColSpec(Array(DataType.double), "candidate_weighted_scores", required=False)]
    return ModelSignature(Schema([prompt, weights]), Schema(out), params=_gen_param_schema(serving.ENDPOINT_PARAMS))


def input_example_for(kind: str) -> pd.DataFrame:
    if kind == "reward":
        return pd.DataFrame({"prompt": serving.EXAMPLE_PROMPTS[:1],
                             "response": ["Mix flour, water, yeast and salt, let it rise, then bake."]})
    return pd.DataFrame({"prompt": serving.EXAMPLE_PROMPTS})


def pip_requirements(version=_md.version) -> list[str]:
    """The pinned requirements; a torch wheel from PyTorch's own index (``2.13.0+cpu``, ``+cu126``, ``+rocm6.4``)
    adds that index (``--extra-index-url https://download.pytorch.org/whl/cpu``): PyPI's torch of the same
    version is another build (CUDA on Linux), a GB more to install in a CPU serving image."""
    import re

    reqs = []
    for pkg in REQUIREMENTS:
        try:
            full = version(pkg)
        except _md.PackageNotFoundError:
            reqs.append(pkg)
            continue
        public, _, local = full.partition("+")
        reqs.append(f"{pkg}=={public}")
        if pkg == "torch" and re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", local):
            reqs.insert(0, f"--extra-index-url {TORCH_INDEX}/{local}")
    return reqs


def save_pyfunc(folder: str | Path, dest: str | Path, *, kind: str | None = None) -> tuple[str, dict]:
    """Write ``folder`` as an MLflow pyfunc model at ``dest`` (a new folder); returns (kind, info)."""
    folder = Path(folder)
    kind = kind or serving.detect_kind(folder)
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; one of {KINDS}")
    info = serving.describe(folder, kind)
    model = {"orchestrator": serving.OrchestratorModel, "reward": serving.RewardModel,
             "policy": serving.PolicyModel, "endpoint": serving.EndpointModel}[kind]()
    mlflow.pyfunc.save_model(
        path=str(dest), python_model=model, artifacts={ARTIFACT_KEY: str(folder)},
        code_paths=[str(Path(__file__).resolve().parent)], pip_requirements=pip_requirements(),
        signature=signature_for(kind, info), input_example=input_example_for(kind),
        metadata={"pro_kind": kind, "pro_format": FORMAT, **{k: v for k, v in info.items() if v is not None}})
    return kind, info


# -- registration ---------------------------------------------------------------------------------


def _as_mlflow_model(local_dir: Path, name: str, staging: Path) -> tuple[str, Path]:
    """The folder to upload: ``local_dir`` written as a PRO pyfunc model (or as is, when it already
    is an MLflow model); the kind is read from the folder and must match the name's family."""
    if (local_dir / "MLmodel").is_file():
        import yaml

        meta = (yaml.safe_load((local_dir / "MLmodel").read_text()) or {}).get("metadata") or {}
        kind = meta.get("pro_kind") or "mlflow"
        inner = None
    else:
        kind = inner = serving.detect_kind(local_dir)
    expected = kind_of_name(name)
    if expected and kind != expected:
        raise ConfigError(f"cannot register {local_dir} as {name}: the name is for a{'n' if expected[0] in 'aeiou' else ''} "
                          f"{expected} but the folder holds a{'n' if kind[0] in 'aeiou' else ''} {kind} model")
    if inner is None:
        return kind, local_dir
    save_pyfunc(local_dir, staging, kind=kind)
    return kind, staging


def folder_bytes(folder: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def version_tags(local_dir: Path) -> dict[str, str]:
    """Tags a version carries about its files: size; for a LoRA adapter policy (or an endpoint whose policy
    is one) its base reference and digest and its rank (``pro registry list`` shows them)."""
    tags = {SIZE_TAG: str(folder_bytes(local_dir))}
    for folder in (local_dir, local_dir / "policy"):
        info = serving.adapter_info(folder) if folder.is_dir() else {}
        if info:
            tags.update({BASE_TAG: info["adapter_base"], BASE_DIGEST_TAG: info["adapter_base_digest"],
                         RANK_TAG: str(info["adapter_rank"])})
            break
    return tags


def rebase_adapter(local_dir: Path, base: str, staging: Path) -> Path:
    """A copy of the adapter folder ``local_dir`` (in ``staging``) that names ``base`` as its base, after
    checking ``base`` has the content the adapter was trained on (e.g. the registered copy of a local base)."""
    import dataclasses
    import shutil

    from pro_lib import adapters
    from pro_lib.artifacts import AdapterManifest

    meta = AdapterManifest.load_optional(local_dir)
    if meta is None:
        raise ConfigError(f"--base applies to LoRA adapter folders; {local_dir} has no {AdapterManifest.FILE} "
                          "(a full model carries its own weights)")
    ref = adapters.pin_base(base)
    adapters.check_base(meta, local_dir, ref)
    shutil.copytree(local_dir, staging)
    dataclasses.replace(meta, base=ref).save(staging)
    return staging


def register_model(local_dir: str | Path, name: str, *, run_id: str | None = None,
                   metrics: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                   gate_metric: str | None = None, gate_mode: str | None = None,
                   description: str | None = None, base: str | None = None) -> str:
    """Register ``local_dir`` as a new version of ``name`` with alias ``challenger``; return the version.

    The folder (whose kind, read from its files, must match the name's family) is written as an
    MLflow pyfunc model and logged as artifacts of ``run_id`` (or of a new run in the current experiment,
    a child of the pipeline's parent run when there is one) under ``registered/<name>``.
    ``gate_metric``/``gate_mode`` default to :data:`pro_lib.registry.DEFAULT_GATES`; the gate metric must
    be among ``metrics`` (a version without it can never win a gated promotion, so this fails early).

    A LoRA adapter policy is registered as the adapter alone; its base is resolved by reference when the
    version loads (``pro-base-<name>`` versions, ``smollm2``, a hub name). ``base``: record this base
    instead of the one the adapter names (same content, checked), e.g. ``models:/pro-base-smollm2/1``
    for an adapter trained on a local folder.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir() or not any(local_dir.iterdir()):
        raise CheckpointError(f"cannot register {local_dir}: not a folder with a saved model in it")
    registry.check_registration(name, metrics, gate_metric=gate_metric, gate_mode=gate_mode)  # before writing
    with tempfile.TemporaryDirectory(prefix="pro-register-") as staging:
        source = rebase_adapter(local_dir, base, Path(staging) / "rebased") if base else local_dir
        kind, model_dir = _as_mlflow_model(source, name, Path(staging) / "model")
        all_tags = {**version_tags(source), **dict(tags or {})}
        return registry.register_version(model_dir, name, kind=kind, source_dir=local_dir, run_id=run_id,
                                         metrics=metrics, tags=all_tags, gate_metric=gate_metric,
                                         gate_mode=gate_mode, description=description)
