"""LoRA policies kept as adapters: one base model, many small adapters (peft).

Training with ``--lora-r N`` (WIC / RiC offline and online, the Rewarded Soups experts, MORLHF)
wraps the policy in a peft LoRA adapter on every linear layer; the ``<Wk>`` tag rows train as peft
*trainable tokens* (``trainable_token_indices``: only those rows, not the embedding matrix), so the
saved policy is the adapter alone (bench/bench_adapters.py: its size against the merged model).

An adapter folder holds peft's ``adapter_config.json`` and ``adapter_model.safetensors``, the
tokenizer (with the tags), ``wic.json`` when it is a WIC policy, and ``pro_adapter.json``
(:class:`~pro_lib.artifacts.AdapterManifest`): its base by reference (``smollm2``, an absolute folder,
``models:/name/<version>``, pinned when an alias was given, or a hub name) and by content digest
(:func:`pro_lib.checkpoints.digest_model`). :func:`load_adapter_policy` resolves the base by that
reference (or the ``base`` passed instead), checks its digest, and stops with an error naming both
bases when they differ: a LoRA adapter is only meaningful on the exact weights it was trained on.

Serving (``pro-endpoint``, the pyfunc policies, the explorer): :func:`attach` loads each base once per
process and adds every further adapter of it to the same peft model (peft multi-adapter); an
:class:`AdapterView` is used as the model and activates its own adapter around each call, under the
base's lock, so two policies of one base cost one base of memory and a switch costs a flag.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from pro_lib.artifacts import AdapterManifest
from pro_lib.errors import CheckpointError, ConfigError, ProError

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name (SAFETENSORS_WEIGHTS_NAME)
TARGET_MODULES = "all-linear"                  # every linear layer but the output head


# -- what a model / folder is --------------------------------------------------------------------

def is_adapter(folder: str | Path | None) -> bool:
    """Whether ``folder`` is a PRO adapter folder (``pro_adapter.json``)."""
    return folder is not None and Path(folder).is_dir() and AdapterManifest.exists(folder)


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a peft model (training or holding adapters)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft comes with the train extra
        return False
    return isinstance(model, PeftModel)


def lora_config(r: int, alpha: int, *, token_ids: Sequence[int] | None = None):
    """The LoRA every PRO stage trains: rank ``r`` on every linear layer, and ``token_ids`` (the
    ``<Wk>`` tags) as trainable token rows of the input embeddings (tied output rows follow)."""
    from peft import LoraConfig

    if r <= 0:
        raise ConfigError(f"LoRA rank must be > 0, got {r}")
    return LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=TARGET_MODULES,
                      trainable_token_indices=sorted(set(int(i) for i in token_ids)) if token_ids else None)


def make_trainable(model) -> None:
    """Continue training a loaded adapter (an online round on top of an offline adapter): its LoRA
    matrices and token rows train, the base stays frozen."""
    model.set_adapter(model.active_adapter, inference_mode=False)
    expose_head_bias(model)


def wrap_for_training(model, config):
    """``model`` with a new LoRA adapter of ``config`` (:func:`lora_config`), ready for trl's trainers."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, config)
    expose_head_bias(peft_model)
    return peft_model


def expose_head_bias(model) -> None:
    """trl's fused LM head reads ``lm_head.weight`` and ``lm_head.bias``; peft's trainable-token wrapper
    of a tied output head answers ``weight`` (the merged rows) but not ``bias``: give it the wrapped
    layer's bias (None for Llama-style heads)."""
    try:
        from peft.utils.other import TrainableTokensWrapper
    except ImportError:  # pragma: no cover - older peft: no trainable tokens
        return
    for module in model.modules():
        if isinstance(module, TrainableTokensWrapper) and "bias" not in module.__dict__:
            module.__dict__["bias"] = getattr(module.token_adapter.base_layer, "bias", None)


# -- the base ------------------------------------------------------------------------------------

def pin_base(ref: str | Path) -> str:
    """A base reference that stays true: an alias (``models:/name@champion``) becomes the version it
    points at now, a relative folder an absolute one; bundled and hub names stay as they are."""
    text = str(ref).strip()
    if text.startswith("models:/"):
        from pro_lib import registry

        name, alias, version = registry.parse_ref(text)
        return f"models:/{name}/{registry.resolve_version(name, alias=alias, version=version)}"
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def base_of(model, base_ref: str | Path | None) -> str:
    """The base an adapter being saved was trained on: ``base_ref`` (what the stage loaded), else the
    folder transformers loaded the model from. An in-memory model has none: that is an error."""
    if base_ref:
        return pin_base(base_ref)
    inner = model.get_base_model() if is_peft(model) else model
    src = str(getattr(getattr(inner, "config", None), "_name_or_path", "") or "")
    if src and (Path(src) / "config.json").is_file():
        return pin_base(src)
    raise CheckpointError("cannot save a LoRA adapter whose base model has no reference (it was built in memory): "
                          "load the base from a folder, 'smollm2', a hub name or models:/name/<version>, or "
                          "train without --lora-r to save the full model")


def base_digest(ref: str) -> str:
    from pro_lib.checkpoints import digest_model

    return str(digest_model(ref))


def check_base(meta: AdapterManifest, folder: str | Path, base_ref: str) -> None:
    """Stop unless ``base_ref`` is the base ``meta`` recorded (same content digest); the error names
    both bases and how to fix it."""
    from pro_lib.models import looks_like_path

    fix = ("pass the base it was trained on (WICPolicy.from_pretrained(..., base=...), `pro generate --base`), "
           "or re-train the adapter on this base")
    remote = str(base_ref).startswith(("models:/", "s3://"))
    if not remote and looks_like_path(base_ref) and not Path(base_ref).expanduser().exists():
        raise CheckpointError(f"the adapter {folder} needs its base model {meta.base!r} (digest {meta.base_digest}), "
                              f"which is missing here ({base_ref} does not exist); {fix}")
    try:
        got = base_digest(base_ref)
    except ProError as exc:
        raise CheckpointError(f"the adapter {folder} needs its base model {meta.base!r} (digest {meta.base_digest}), "
                              f"which cannot be loaded: {exc}") from None
    if got != meta.base_digest:
        raise CheckpointError(f"the adapter {folder} was trained on the base {meta.base!r} (digest {meta.base_digest}), "
                              f"not on {base_ref!r} (digest {got}): a LoRA adapter only works on the exact weights "
                              f"it was trained on; {fix}")


TAG_INIT_SEED = 0  # the new <Wk> embedding rows are drawn from this seed (pro_lib.wic.add_wic_tokens)


def resize_embeddings(model, vocab_size: int) -> None:
    """Grow the embeddings to ``vocab_size`` rows, the new rows drawn from their own seeded generator
    (``TAG_INIT_SEED``), not from torch's global state: the same base always gets the same new rows."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TAG_INIT_SEED)
        model.resize_token_embeddings(vocab_size, mean_resizing=False)


def grow_vocab(model, vocab_size: int) -> None:
    """Give the base the adapter's embedding rows (its ``<Wk>`` tags), initialised as
    :func:`pro_lib.wic.add_wic_tokens` does (the adapter's token rows then replace the tag rows)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows > vocab_size:
        raise CheckpointError(f"the base has {rows} embedding rows, more than the adapter's {vocab_size}: it is not "
                              "the base the adapter was trained on")
    if rows < vocab_size:
        resize_embeddings(model, vocab_size)


# -- save / load ---------------------------------------------------------------------------------

def _vocab_size(model) -> int:
    return int(model.get_base_model().get_input_embeddings().weight.shape[0]) if is_peft(model) else \
        int(model.get_input_embeddings().weight.shape[0])


def save_adapter(model, folder: str | Path, *, base: str | Path | None) -> AdapterManifest:
    """Write the active adapter of a peft ``model`` into ``folder`` (peft's files + ``pro_adapter.json``);
    the base's embedding matrix is not saved (its tag rows are trainable token rows)."""
    folder = Path(folder)
    ref = base_of(model, base)
    name = model.active_adapter
    model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False,
                          selected_adapters=[name])
    if name != "default":  # peft writes a non-default adapter into a sub-folder of its name
        sub = folder / name
        for f in sub.iterdir():
            f.replace(folder / f.name)
        sub.rmdir()
    return record_base(model, folder, base=ref)


def record_base(model, folder: str | Path, *, base: str | Path | None) -> AdapterManifest:
    """Write ``pro_adapter.json`` beside an adapter peft (or a trainer) saved into ``folder``."""
    folder = Path(folder)
    ref = base_of(model, base)
    cfg = model.peft_config[model.active_adapter]
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {ADAPTER_WEIGHTS}: the adapter was not saved there")
    meta = AdapterManifest(base=ref, base_digest=base_digest(ref), vocab_size=_vocab_size(model),
                           rank=int(getattr(cfg, "r", 0) or 0), alpha=int(getattr(cfg, "lora_alpha", 0) or 0),
                           adapter_bytes=weights.stat().st_size)
    meta.save(folder)
    return meta


def save_model_files(model, folder: str | Path, *, base: str | Path | None = None) -> None:
    """A policy's weights into ``folder``: the adapter of a peft model (:func:`save_adapter`), else the
    full model (``save_pretrained``)."""
    if is_peft(model):
        save_adapter(model, folder, base=base)
    else:
        model.save_pretrained(folder, safe_serialization=True)


def _load_base(meta: AdapterManifest, folder: Path, base: str | Path | None, *, dtype=None):
    from pro_lib.policy import load_policy

    base_ref = str(base) if base else meta.base
    check_base(meta, folder, base_ref)
    model, _ = load_policy(base_ref, dtype=dtype)
    grow_vocab(model, meta.vocab_size)
    return model


def load_causal_lm(ref: str | Path, *, dtype=None, device: str | None = None, base: str | Path | None = None,
                   shared_base: bool = False, trainable: bool = False):
    """(model, tokenizer) of any policy reference: :func:`pro_lib.policy.load_policy` for a full model, a
    peft model on its base for a LoRA adapter folder (:func:`load_adapter_policy`: ``base``,
    ``shared_base``, ``trainable``)."""
    from pro_lib.policy import load_policy, resolve_policy

    where = resolve_policy(ref)
    if is_adapter(where):
        return load_adapter_policy(where, base=base, dtype=dtype, device=device, shared=shared_base,
                                   trainable=trainable)
    return load_policy(where, dtype=dtype, device=device)


def load_adapter_policy(folder: str | Path, *, base: str | Path | None = None, dtype=None,
                        device: str | None = None, shared: bool = False, trainable: bool = False):
    """(model, tokenizer) of an adapter folder on its base (checked, see :func:`check_base`).

    ``shared``: the base is loaded once per process and shared with every other adapter of it
    (:func:`attach`; for inference); otherwise the model is a peft model of its own (``trainable``:
    its adapter trains, as an online round continuing an offline adapter)."""
    from peft import PeftModel

    from pro_lib.policy import load_tokenizer

    folder = Path(folder)
    meta = AdapterManifest.load(folder)
    tokenizer = load_tokenizer(folder)
    if shared:
        return attach(folder, base=base, dtype=dtype, device=device, meta=meta), tokenizer
    model = PeftModel.from_pretrained(_load_base(meta, folder, base, dtype=dtype), str(folder),
                                      is_trainable=trainable)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if device:
        model.to(device)
    if not trainable:
        model.eval()
    return model, tokenizer


# -- one base, many adapters -----------------------------------------------------------------------

class SharedBase:
    """One base model in this process and the adapters loaded onto it (peft multi-adapter)."""

    def __init__(self, model):
        self.model = model
        self.lock = threading.RLock()
        self.adapters: dict[str, str] = {}  # adapter name -> folder


_POOL: dict[tuple, SharedBase] = {}
_POOL_LOCK = threading.Lock()


def _adapter_name(folder: Path) -> str:
    from pro_lib.checkpoints import digest_path

    return "a_" + digest_path(folder).split(":", 1)[1]  # content-named: the same adapter loads once


def attach(folder: str | Path, *, base: str | Path | None = None, dtype=None, device: str | None = None,
           meta: AdapterManifest | None = None) -> "AdapterView":
    """The adapter of ``folder`` on its base, loaded once per process and shared (see the module doc)."""
    import torch
    from peft import PeftModel

    folder = Path(folder)
    meta = meta or AdapterManifest.load(folder)
    dev = device or "cpu"
    key = (meta.base_digest, meta.vocab_size, dev, str(dtype or torch.float32))
    name = _adapter_name(folder)
    with _POOL_LOCK:
        shared = _POOL.get(key)
        if shared is None:
            model = PeftModel.from_pretrained(_load_base(meta, folder, base, dtype=dtype), str(folder),
                                              adapter_name=name)
            model.to(dev)
            model.eval()
            shared = _POOL[key] = SharedBase(model)
            shared.adapters[name] = str(folder)
            log.info("loaded base %s once for its adapters (first: %s)", meta.base, folder)
        elif name not in shared.adapters:
            with shared.lock:
                shared.model.load_adapter(str(folder), adapter_name=name)
                shared.model.to(dev)
                shared.model.eval()
            shared.adapters[name] = str(folder)
    return AdapterView(shared, name)


def clear_shared() -> None:
    """Forget every shared base (tests, the benchmark)."""
    with _POOL_LOCK:
        _POOL.clear()


def shared_bases() -> int:
    """How many bases this process holds for adapters."""
    return len(_POOL)


class AdapterView:
    """One adapter of a shared base, used as the policy's model: each forward / generate call
    activates this adapter first, under the base's lock (calls on one base are serialised)."""

    def __init__(self, shared: SharedBase, name: str):
        self.__dict__["_shared"], self.__dict__["adapter_name"] = shared, name

    def _active(self):
        model = self._shared.model
        if model.active_adapter != self.adapter_name:
            model.set_adapter(self.adapter_name)
        return model

    def generate(self, *args, **kwargs):
        with self._shared.lock:
            return self._active().generate(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        with self._shared.lock:
            return self._active()(*args, **kwargs)

    def to(self, *args, **kwargs):
        with self._shared.lock:
            self._shared.model.to(*args, **kwargs)
        return self

    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise ConfigError("a shared adapter is for inference; load the policy with shared_base=False to train it")
        return self

    def __getattr__(self, item):
        return getattr(self._shared.model, item)

    def __setattr__(self, key, value):
        setattr(self._shared.model, key, value)


# -- Rewarded Soups over adapters -------------------------------------------------------------------

def adapter_state(folder: str | Path) -> dict:
    """The adapter's tensors as saved (peft's key names, no adapter name)."""
    from safetensors.torch import load_file

    path = Path(folder) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {ADAPTER_WEIGHTS}; the adapter folder is incomplete, re-train it")
    return load_file(str(path))


def check_same_base(folders: Sequence[str | Path]) -> list[AdapterManifest]:
    """Adapters to be interpolated must share their base and their shape (rank, targets)."""
    metas = [AdapterManifest.load(f) for f in folders]
    first = metas[0]
    for f, m in zip(folders[1:], metas[1:]):
        if (m.base_digest, m.vocab_size, m.rank) != (first.base_digest, first.vocab_size, first.rank):
            raise CheckpointError(f"the adapters {folders[0]} and {f} cannot be interpolated: base {first.base!r} "
                                  f"({first.base_digest}), rank {first.rank} vs base {m.base!r} ({m.base_digest}), "
                                  f"rank {m.rank}; train every expert from the same base with the same --lora-r")
    return metas


def set_adapter_state(model, state: Mapping[str, Any]) -> None:
    """Load adapter tensors (as :func:`adapter_state` returns them) into ``model``'s active adapter."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, dict(state), adapter_name=model.active_adapter)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"adapter tensors the model has no place for: {unexpected[:3]}")


__all__ = ["ADAPTER_WEIGHTS", "TAG_INIT_SEED", "load_causal_lm", "resize_embeddings", "AdapterView", "SharedBase", "adapter_state", "attach", "base_of", "check_base",
           "check_same_base", "clear_shared", "grow_vocab", "is_adapter", "is_peft", "load_adapter_policy",
           "lora_config", "make_trainable", "wrap_for_training", "expose_head_bias", "pin_base", "record_base", "save_adapter", "save_model_files", "set_adapter_state",
           "shared_bases"]
