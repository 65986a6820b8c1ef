"""PRO-WIC (weights in context) and the RiC baselines.

The policy reads the preference weights in its prompt: the user turn becomes
``prompt <W1> 0.70 <W2> 0.30`` (fixed decimals; ``<W1>``..``<WK>`` are special tokens added to the
tokenizer), and the policy's chat template, when it has one, wraps that user turn (HH transcripts
``\\n\\nHuman: ... \\n\\nAssistant:`` become chat messages first).

Stages (each a plain function of a config dataclass that writes its outputs atomically):

- ``train_wic_offline`` / ``wic_offline`` (paper Eq. 10): score each preferred response with the
  reward suite, w* = softmax(z / tau) (Eq. 7), SFT on the responses only (trl SFTTrainer,
  completion-only loss). ``conditioning: rewards`` is RiC offline: the tags hold the response's own
  (min-max scaled) rewards, and at inference a preference w maps to desired rewards (RiC's mapping).
- ``sample_online_round`` (one round of Eq. 11: weights from the orchestrator or random,
  N samples per prompt, score, rejection sampling) + ``train_wic_online`` (SFT on the kept samples);
  ``wic_online`` runs E rounds of both and logs acceptance rate, rewards and wall time per round.
- ``evaluate_wic`` / ``wic_eval``: weight-grid sweep on held-out prompts, Pareto fronts (CSV, PNG),
  the equal-weight table with an "orchestrator weights" row, hypervolume against a stated reference.

Inference: ``WICPolicy.from_pretrained(ref).generate(prompts, weights=None)`` (weights omitted: the
orchestrator's), ``pro generate "prompt" --weights helpful=0.7,harmless=0.3``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pro_lib import tracking
from pro_lib.checkpoints import (RESUME_HELP, digest_data, digest_model, digest_value, find_checkpoint,
                                  fingerprint, prepare_resume, train_or_restore)
from pro_lib.config import field, to_dict
from pro_lib.data import load_prompt_pool
from pro_lib.errors import CheckpointError, ConfigError, DataError, ProError
from pro_lib.io import atomic_dir, read_json, write_json, write_jsonl
from pro_lib.targets import check_objectives, parse_weights

log = logging.getLogger(__name__)

WIC_CONFIG = "wic.json"
CONDITIONINGS = ("weights", "rewards")
PREFERENCE_SOURCES = ("orchestrator", "dirichlet", "ric", "uniform", "orchestrator-shuffled", "orchestrator-mean")
REJECTION_RULES = ("quantile", "topk", "none")
OFFLINE_RESPONSES = ("chosen", "both")


# ---------------------------------------------------------------------------------------------
# prompts and weights
# ---------------------------------------------------------------------------------------------
def wic_tags(k: int) -> list[str]:
    """The special tokens ``<W1>`` .. ``<WK>``."""
    return [f"<W{i + 1}>" for i in range(k)]


def format_weight_suffix(values: Sequence[float], decimals: int = 2) -> str:
    return " ".join(f"{tag} {float(v):.{decimals}f}" for tag, v in zip(wic_tags(len(values)), values))


def format_wic_prompt(prompt: str, weights: Sequence[float], names: Sequence[str], decimals: int = 2) -> str:
    """``"prompt <W1> 0.70 <W2> 0.30"``: the weights (ordered as ``names``) appended to the prompt."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(names):
        raise ConfigError(f"{len(w)} weights for {len(names)} objectives {list(names)}")
    return f"{prompt.rstrip()} {format_weight_suffix(w, decimals)}"


def parse_user_weights(spec: Any, names: Sequence[str]) -> np.ndarray:
    """User weights -> (K,) float32 vector on the simplex, ordered as ``names``: the one parser,
    :func:`pro_lib.targets.parse_weights` (``"helpful=0.7,harmless=0.3"``, ``"0.7,0.3"``, a mapping,
    a sequence or an array; errors say what to write instead)."""
    return parse_weights(spec, list(names)).astype(np.float32)


def _weights_matrix(weights: Any, n: int, names: Sequence[str]) -> np.ndarray:
    """One weight row per prompt from a single spec or an (N, K) array / list of specs."""
    if isinstance(weights, np.ndarray) and weights.ndim == 2:
        rows = [parse_user_weights(r, names) for r in weights]
    elif isinstance(weights, (list, tuple)) and weights and not isinstance(weights[0], (int, float, np.floating)):
        rows = [parse_user_weights(r, names) for r in weights]
    else:
        rows = [parse_user_weights(weights, names)] * n
    if len(rows) != n:
        raise ConfigError(f"{len(rows)} weight vectors for {n} prompts; give one per prompt or one for all")
    return np.stack(rows).astype(np.float32)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def to_messages(prompt: str) -> list[dict]:
    """An HH transcript (``\\n\\nHuman: ...\\n\\nAssistant:``) -> chat messages; other text -> one user turn.

    The trailing empty ``Assistant:`` slot is dropped (the chat template's generation prompt takes
    its place).
    """
    parts = _HH_TURN.split("\n\n" + prompt.lstrip("\n") if prompt.startswith(("Human:", "\n")) else prompt)
    if len(parts) < 3:
        return [{"role": "user", "content": prompt.strip()}]
    msgs = []
    if parts[0].strip():
        msgs.append({"role": "user", "content": parts[0].strip()})
    for role, text in zip(parts[1::2], parts[2::2]):
        r = "user" if role == "Human" else "assistant"
        text = text.strip()
        if msgs and msgs[-1]["role"] == r:
            msgs[-1]["content"] += "\n" + text
        elif text or r == "user":
            msgs.append({"role": r, "content": text})
    while msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"]:
        msgs.pop()
    if not msgs or msgs[-1]["role"] != "user":
        msgs.append({"role": "user", "content": ""})
    return msgs


RIC_MAPPINGS = ("linf", "l2", "linear")


def ric_desired_rewards(weights: np.ndarray, mapping: str = "linf") -> np.ndarray:
    """RiC's preference-to-reward mapping, on rewards scaled to [0, 1] (0 = low end, 1 = high end).

    As ``map_rewards_from_preference`` in RiC's released code (YangRui2015/RiC, ric/utils.py):
    - ``linf`` (the paper's mapping and that function's default): the most-preferred objective asks
      for the maximum; every other objective k asks for ``min(K * w_k, 1)``;
    - ``l2``: ``w_k / ||w||_2`` (what RiC's released evaluation script passes);
    - ``linear``: ``w_k``.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n, k = w.shape
    if mapping == "linf":
        out = np.minimum(k * w, 1.0)
        out[np.arange(n), np.argmax(w, axis=1)] = 1.0
    elif mapping == "l2":
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        out = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
    elif mapping == "linear":
        out = w.copy()
    else:
        raise ConfigError(f"unknown RiC mapping {mapping!r}; choose one of {RIC_MAPPINGS}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the policy
# ---------------------------------------------------------------------------------------------
def add_wic_tokens(model, tokenizer, k: int) -> int:
    """Add ``<W1>..<WK>`` as special tokens and grow the embeddings; returns how many were new."""
    tags = wic_tags(k)
    vocab = tokenizer.get_vocab()
    new = [t for t in tags if t not in vocab]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    n_vocab = len(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < n_vocab:
        model.resize_token_embeddings(n_vocab, mean_resizing=False)
    return len(new)


class WICPolicy:
    """A causal LM conditioned on preference weights written into its prompt."""

    def __init__(self, model, tokenizer, objectives: Sequence[str], *, decimals: int = 2,
                 conditioning: str = "weights", use_chat_template: bool | None = None,
                 orchestrator: str | None = None, reward_range: Mapping[str, Sequence[float]] | None = None,
                 method: str | None = None, score_percentiles: Mapping[str, Sequence[float]] | None = None,
                 ric_mapping: str = "linf"):
        if conditioning not in CONDITIONINGS:
            raise ConfigError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if ric_mapping not in RIC_MAPPINGS:
            raise ConfigError(f"ric_mapping must be one of {RIC_MAPPINGS}, got {ric_mapping!r}")
        self.ric_mapping = ric_mapping
        self.model, self.tokenizer = model, tokenizer
        self.objectives = list(objectives)
        if not self.objectives:
            raise ConfigError("a WIC policy needs at least one objective")
        self.decimals = int(decimals)
        self.conditioning = conditioning
        self.use_chat_template = (bool(getattr(tokenizer, "chat_template", None))
                                  if use_chat_template is None else bool(use_chat_template))
        self.orchestrator = orchestrator
        self.reward_range = {k: [float(a), float(b)] for k, (a, b) in (reward_range or {}).items()}
        self.method = method
        self.score_percentiles = {k: [float(x) for x in v] for k, v in (score_percentiles or {}).items()}
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        add_wic_tokens(model, tokenizer, self.K)
        self._orch_cache: dict[str, Any] = {}

    @property
    def K(self) -> int:  # noqa: N802
        return len(self.objectives)

    # persistence ---------------------------------------------------------------------------
    def wic_config(self) -> dict:
        return {"objectives": self.objectives, "decimals": self.decimals, "conditioning": self.conditioning,
                "use_chat_template": self.use_chat_template, "tags": wic_tags(self.K),
                "orchestrator": self.orchestrator, "reward_range": self.reward_range or None,
                "method": self.method, "score_percentiles": self.score_percentiles or None,
                "ric_mapping": self.ric_mapping}

    def save_pretrained(self, path: str | Path) -> Path:
        """Model + tokenizer + ``wic.json`` (objectives, decimals, conditioning), written atomically."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            write_json(tmp / WIC_CONFIG, self.wic_config())
        return path

    @classmethod
    def from_pretrained(cls, ref: str | Path, *, objectives: Sequence[str] | None = None,
                        device: str | None = None, **overrides) -> "WICPolicy":
        """A saved WIC policy (folder with wic.json, models:/ ref), or any causal LM plus ``objectives``."""
        from pro_lib.policy import load_policy, resolve_policy

        where = Path(resolve_policy(ref))
        meta: dict = {}
        if (where / WIC_CONFIG).is_file():
            meta = read_json(where / WIC_CONFIG)
            if not isinstance(meta, dict) or not meta.get("objectives"):
                raise CheckpointError(f"{where / WIC_CONFIG} has no 'objectives' list; the file is corrupt")
        elif objectives is None:
            raise CheckpointError(f"{ref} is not a WIC policy (no {WIC_CONFIG}); train one with `pro wic offline`, "
                                  "or pass objectives=[...] to start from a plain causal LM")
        if objectives is not None and meta.get("objectives"):
            check_objectives(meta["objectives"], objectives, got_what=f"policy {ref}",
                             expected_what="the caller", fix="use the matching suite or policy")
        model, tok = load_policy(where, device=device)
        kwargs = {k: meta[k] for k in ("decimals", "conditioning", "use_chat_template", "orchestrator",
                                       "reward_range", "method", "score_percentiles", "ric_mapping")
                  if meta.get(k) is not None}
        kwargs.update(overrides)
        return cls(model, tok, objectives or meta["objectives"], **kwargs)

    # conditioning --------------------------------------------------------------------------
    def tag_values(self, weights: np.ndarray) -> np.ndarray:
        """What the tags hold for preference ``weights`` (N, K): the weights, or RiC's desired rewards."""
        w = np.atleast_2d(weights)
        return ric_desired_rewards(w, self.ric_mapping) if self.conditioning == "rewards" else w

    def render(self, prompt: str, values: Sequence[float]) -> str:
        """The exact model input text for one prompt and its tag values (chat template applied)."""
        suffix = format_weight_suffix(values, self.decimals)
        if not self.use_chat_template:
            return f"{prompt.rstrip()} {suffix}"
        msgs = to_messages(prompt)
        msgs[-1] = {**msgs[-1], "content": f"{msgs[-1]['content']} {suffix}".strip()}
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def render_plain(self, prompt: str) -> str:
        """The same prompt without any conditioning (for the baseline / benchmark)."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(to_messages(prompt), tokenize=False, add_generation_prompt=True)

    def condition(self, prompts: Sequence[str], weights: Any) -> list[str]:
        """Model inputs for ``prompts`` under ``weights`` (one spec for all, or one row per prompt)."""
        w = _weights_matrix(weights, len(prompts), self.objectives)
        vals = self.tag_values(w)
        return [self.render(p, v) for p, v in zip(prompts, vals)]

    def orchestrator_weights(self, prompts: Sequence[str], orchestrator: Any = None) -> np.ndarray:
        """The orchestrator's weights for ``prompts`` (an instance, a ref, or the policy's recorded one)."""
        from pro_lib.orchestrator import PreferenceOrchestrator

        orch = orchestrator if orchestrator is not None else self.orchestrator
        if orch is None:
            raise ConfigError("no weights given and no orchestrator: pass weights (e.g. "
                              + ",".join(f"{n}={1 / self.K:.2f}" for n in self.objectives)
                              + ") or an orchestrator (folder or models:/pro-orchestrator@champion)")
        if isinstance(orch, (str, Path)):
            key = str(orch)
            if key not in self._orch_cache:
                self._orch_cache[key] = PreferenceOrchestrator.from_pretrained(key)
            orch = self._orch_cache[key]
        orch.check_objectives(self.objectives, what="the policy")
        return np.asarray(orch.predict(list(prompts)), dtype=np.float32)

    # generation ----------------------------------------------------------------------------
    def _gen_kwargs(self, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                    top_p: float = 1.0, top_k: int | None = None, **extra) -> dict:
        kw = dict(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample),
                  pad_token_id=self.tokenizer.pad_token_id)
        if do_sample:
            kw.update(temperature=float(temperature), top_p=float(top_p))
            if top_k is not None:
                kw["top_k"] = int(top_k)
        kw.update(extra)
        return kw

    def generate_texts(self, texts: Sequence[str], *, batch_size: int = 8, num_return_sequences: int = 1,
                       progress: bool = False, seed: int | None = None, desc: str = "generate",
                       **gen_kwargs) -> list[str]:
        """Generate from already-rendered model inputs; returns len(texts) * num_return_sequences texts."""
        import torch
        from tqdm.auto import tqdm

        tok, model = self.tokenizer, self.model
        if seed is not None:
            torch.manual_seed(seed)
        kw = self._gen_kwargs(**gen_kwargs)
        add_special = not self.use_chat_template
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: list[list[str]] = [[] for _ in texts]
        device = next(model.parameters()).device
        side = tok.padding_side
        tok.padding_side = "left"
        was_training = model.training
        model.eval()
        try:
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress):
                idx = order[start:start + batch_size]
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                          add_special_tokens=add_special).to(device)
                with torch.inference_mode():
                    gen = model.generate(**enc, num_return_sequences=num_return_sequences, **kw)
                gen = gen[:, enc["input_ids"].shape[1]:]
                decoded = tok.batch_decode(gen, skip_special_tokens=True)
                for j, i in enumerate(idx):
                    out[i] = [d.strip() for d in decoded[j * num_return_sequences:(j + 1) * num_return_sequences]]
        finally:
            tok.padding_side = side
            model.train(was_training)
        return [r for rows in out for r in rows]

    def generate(self, prompts: Sequence[str] | str, weights: Any = None, orchestrator: Any = None,
                 **gen_kwargs) -> list[str]:
        """Responses to ``prompts`` under ``weights``; weights omitted means the orchestrator's.

        ``gen_kwargs``: max_new_tokens, do_sample, temperature, top_p, batch_size,
        num_return_sequences, seed, progress.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if weights is None:
            weights = self.orchestrator_weights(prompts, orchestrator)
        return self.generate_texts(self.condition(prompts, weights), **gen_kwargs)

    def stream(self, prompt: str, weights: Any = None, orchestrator: Any = None, **gen_kwargs) -> Iterator[str]:
        """Text chunks as they are generated (transformers' TextIteratorStreamer in a thread)."""
        import torch
        from transformers import TextIteratorStreamer

        if weights is None:
            weights = self.orchestrator_weights([prompt], orchestrator)
        text = self.condition([prompt], weights)[0]
        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=not self.use_chat_template)
        enc = enc.to(next(self.model.parameters()).device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kw = self._gen_kwargs(**gen_kwargs)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(**enc, streamer=streamer, **kw)
            except BaseException as exc:  # surfaced in the caller's thread
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for chunk in streamer:
            if chunk:
                yield chunk
        thread.join()
        if errors:
            raise errors[0]


def build_tiny_policy(path: str | Path, names: Sequence[str], *, seed: int = 0, family: str = "llama",
                      conditioning: str = "weights", hidden_size: int = 32, num_layers: int = 1,
                      max_positions: int = 256) -> Path:
    """A tiny random causal LM (Llama or GPT-2) with a small word-level tokenizer, saved as a WIC policy.

    For tests and demos only: it generates noise, fast (``hidden_size`` / ``num_layers`` make it slower).
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    words = ["<pad>", "<eos>", "<unk>"] + [w for w in (
        "the a an is are was be to of and in that it for on with as you i he she they we this not yes no "
        "what how why can do help harm safe good bad please thanks sorry human assistant tell me about "
        "0 1 2 3 4 5 6 7 8 9 . , ? ! : 0.00 0.10 0.20 0.30 0.40 0.50 0.60 0.70 0.80 0.90 1.00").split()]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if family == "gpt2":
        cfg = GPT2Config(vocab_size=len(vocab), n_positions=max_positions, n_embd=hidden_size, n_layer=num_layers,
                         n_head=2, bos_token_id=1, eos_token_id=1, pad_token_id=0)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                          num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2,
                          max_position_embeddings=max_positions,
                          bos_token_id=1, eos_token_id=1, pad_token_id=0, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    policy = WICPolicy(model, tok, list(names), conditioning=conditioning)
    # a random model would often emit only special tokens (decoded as ""): let it say words
    model.generation_config.suppress_tokens = sorted(set(tok.all_special_ids))
    return policy.save_pretrained(path)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
@dataclass
class SFTOptions:
    """SFT settings shared by the offline and online stages."""

    epochs: float = field(1.0, help="SFT epochs over the examples")
    max_steps: int = field(-1, help="stop after this many optimizer steps, overriding --epochs (-1: off; the paper: "
                                    "10,000 offline, 5,000 per online round)")
    learning_rate: float = field(2e-5, help="AdamW learning rate (full fine-tune; use ~1e-4 with LoRA)")
    batch_size: int = field(8, help="per-device SFT batch size")
    gradient_accumulation_steps: int = field(1, help="gradient accumulation steps")
    max_length: int = field(384, help="max tokens per SFT example (conditioned prompt + response)")
    max_prompt_tokens: int = field(256, help="prompts longer than this many tokens keep their last tokens")
    lora_r: int = field(0, help="LoRA rank; 0 = full fine-tune (the default for small models)")
    lora_alpha: int = field(32, help="LoRA alpha (with --lora-r > 0)")
    seed: int = field(0, help="random seed")
    device: str | None = field(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    bf16: bool = field(False, help="bf16 mixed precision: on a GPU, or autocast on a CPU with native bf16 "
                                   "(avx512_bf16 / AMX; elsewhere it falls back to fp32 with a warning)")
    padding_free: bool = field(False, help="concatenate each batch into one sequence without padding "
                                           "(attention stays within each example)")
    save_steps: int = field(200, help="checkpoint every this many steps (re-running resumes)")
    resume: str = field("auto", help=RESUME_HELP)


@dataclass
class WICOfflineConfig(SFTOptions):
    """Offline stage (paper Eq. 10): SFT on preferred responses with their target weights in the prompt.

    conditioning=weights is PRO-WIC (tags hold w* = softmax(z / tau)); conditioning=rewards is RiC
    offline (tags hold the response's own min-max scaled rewards).
    """

    policy: str = field("smollm2", help="base policy: 'smollm2' (bundled), a folder, a hub name or models:/ ref")
    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="preference pairs (load_pairs specs); the chosen responses are the SFT targets")
    suite: str | None = field(None, help="reward suite folder (RewardSuite.load); default: <targets>/suite")
    targets: str | None = field(None, help="a `pro rewards score` output folder: its suite (and targets.jsonl "
                                           "when its prompts match the data) are reused")
    output_dir: str = field("runs/wic_offline", help="output folder: the WIC policy, metrics.json, train_log.jsonl")
    conditioning: str = field("weights", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    tau: float | None = field(None, help="softmax temperature of w*; default: the tau --targets were built with "
                                         "(target_report.json), else 0.1 (paper)")
    decimals: int = field(2, help="decimals of the weights in the prompt")
    max_examples: int | None = field(None, help="use at most this many pairs (a random sample stratified by source, "
                                                "seed --seed)")
    responses: str = field("chosen", help="SFT on the chosen responses (PRO-WIC, paper Eq. 10) or on chosen and "
                                          "rejected, each tagged with its own scores (both: RiC's released code)",
                           choices=list(OFFLINE_RESPONSES))
    orchestrator: str | None = field(None, help="orchestrator recorded in the policy for generate(weights=None)")
    method: str = field("pro-wic", help="label recorded in the policy (pro-wic, ric-offline, ...)")
    ric_mapping: str = field("linf", help="conditioning=rewards only: how a preference w becomes desired rewards "
                                          "at inference (linf: RiC paper; l2: RiC's released eval script; linear)",
                             choices=list(RIC_MAPPINGS))


@dataclass
class SampleOptions:
    """Online sampling settings."""

    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="prompt sources (load_pairs specs); prompts are deduplicated")
    prompts_per_round: int = field(64, help="O: prompts per online round")
    samples_per_prompt: int = field(4, help="N: samples per prompt")
    preferences: str = field("orchestrator", help="where the weights come from: orchestrator (PRO-WIC), "
                             "dirichlet (RiC online, Dirichlet(1)), ric (uniform over the RiC weight grid), uniform; "
                             "controls: orchestrator-shuffled (the orchestrator's weights permuted across the round's "
                             "prompts), orchestrator-mean (their mean, the same for every prompt)",
                             choices=list(PREFERENCE_SOURCES))
    dirichlet_alpha: float = field(1.0, help="concentration of the Dirichlet preference sampler")
    rejection: str = field("quantile", help="quantile: keep samples at or above the per-objective quantile "
                           "(RiC); topk: keep each prompt's top-k by weighted reward; none: keep all",
                           choices=list(REJECTION_RULES))
    quantile: float = field(0.7, help="quantile of the rejection rule (RiC: 0.7)")
    thresholds: str = field("offline", help="where the quantile comes from: offline (the offline data's "
                            "per-objective score distribution, stored in the policy: a fixed bar, so acceptance "
                            "rates compare across preference sources) or round (this round's samples)",
                            choices=["offline", "round"])
    quantile_rule: str = field("weighted", help="weighted: weighted reward w.z at or above its quantile; "
                               "any/all: at or above the per-objective quantile on any/all objectives",
                               choices=["weighted", "any", "all"])
    top_k: int = field(1, help="samples kept per prompt with rejection=topk")
    max_new_tokens: int = field(48, help="max new tokens per sample")
    temperature: float = field(0.9, help="sampling temperature")
    top_p: float = field(0.95, help="nucleus sampling p")
    gen_batch_size: int = field(16, help="generation batch size (sequences)")
    orchestrator: str | None = field(None, help="orchestrator folder or models:/ ref (needed for preferences=orchestrator)")
    suite: str = field("runs/targets/suite", help="reward suite folder (with normalisation stats)")


@dataclass
class WICSampleConfig(SampleOptions):
    """One online round (Eq. 11): weights per prompt, N samples each, score, rejection sampling."""

    policy: str = field("runs/wic_offline", help="the current WIC policy (folder or models:/ ref)")
    round_index: int = field(1, help="round number (1-based); selects this round's prompts")
    output_dir: str = field("runs/wic_samples", help="folder for samples.jsonl (all), kept.jsonl, metrics.json")
    seed: int = field(0, help="random seed")


@dataclass
class WICOnlineConfig(SFTOptions):
    """Online round, second half: SFT the policy on the kept samples of a sampling round."""

    policy: str = field("runs/wic_offline", help="the WIC policy to fine-tune")
    samples: list[str] = field(default_factory=lambda: ["runs/wic_samples"],
                               help="sampling-round folders (or kept.jsonl files)")
    output_dir: str = field("runs/wic_online", help="output folder for the new WIC policy")


@dataclass
class WICOnlineLoopConfig(SampleOptions, SFTOptions):
    """Online stage: E rounds of (sample, score, reject, SFT), starting from an offline WIC policy."""

    policy: str = field("runs/wic_offline", help="the offline WIC policy to start from")
    rounds: int = field(2, help="E: online rounds")
    replay_offline: int = field(0, help="offline SFT examples (those clearing the round rule's quantile of the offline "
                                        "scores on any objective) mixed into each round's SFT set: 0 none, N at most "
                                        "N (seeded), -1 all (RiC's released code mixes up to 10,000)")
    replay_rounds: bool = field(False, help="also train each round on the kept samples of all earlier rounds "
                                            "(RiC's released code does)")
    output_dir: str = field("runs/wic_online", help="output folder: round-<e>/ samples and policy, policy/ "
                            "(final), rounds.jsonl (acceptance, rewards, wall time per round)")


@dataclass
class WICEvalConfig:
    """Pareto evaluation: sweep preference weights, generate on held-out prompts, score, fronts, HV."""

    policy: str | None = field(None, help="a WIC policy to evaluate (label = its method)")
    policies: list[str] = field(default_factory=list, help="label=folder,... to compare several policies (a "
                                                           "`pro soups train` folder is a Rewarded Soups policy)")
    suite: str = field("runs/targets/suite", help="reward suite folder (with normalisation stats)")
    data: list[str] = field(default_factory=lambda: ["runs/data/eval.jsonl"], help="held-out prompts")
    max_prompts: int = field(32, help="held-out prompts to evaluate on: a random sample stratified by source "
                                      "(seed --seed), so every source is represented in proportion")
    seed: int = field(0, help="seed of the held-out prompt sample")
    grid_step: float = field(0.1, help="weight grid step (K=2: 0.0..1.0; K=3: simplex grid)")
    orchestrator: str | None = field(None, help="orchestrator for the 'orchestrator weights' row "
                                                "(default: the one recorded in the policy, if any)")
    reference: list[float] = field(default_factory=list,
                                   help="hypervolume reference point in normalised reward units "
                                        "(default: -2 per objective)")
    max_new_tokens: int = field(48, help="max new tokens (greedy decoding)")
    gen_batch_size: int = field(16, help="generation batch size")
    max_prompt_tokens: int = field(256, help="prompts longer than this many tokens keep their last tokens")
    bootstrap: int = field(1000, help="bootstrap resamples over prompts for the confidence intervals of the "
                                      "hypervolumes, their differences and the weight response (0: none)")
    ric_mapping: str | None = field(None, help="override the preference-to-reward mapping of rewards-conditioned "
                                               "(RiC) policies: linf, l2 or linear (default: each policy's own)",
                                    choices=list(RIC_MAPPINGS))
    device: str | None = field(None, help="cpu or cuda (default: cuda when available)")
    output_dir: str = field("runs/wic_eval", help="output folder: eval.json, pareto.csv, pareto.png, eval_table.md")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _device(name: str | None) -> str:
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_suite(path: str | None, *, what: str):
    from pro_lib.suite import RewardSuite

    if not path:
        raise ConfigError(f"{what}: give --suite <folder> (a reward suite saved by `pro rewards score`)")
    if not (Path(path) / "suite.yaml").is_file() and (Path(path) / "suite" / "suite.yaml").is_file():
        path = str(Path(path) / "suite")
    return RewardSuite.load(path)


def _score(suite, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) scores; normalised = raw when the suite has no stats."""
    raw = np.asarray(suite.score(list(prompts), list(responses), progress=False), dtype=np.float64)
    z = suite.normalize(raw) if suite.stats is not None else raw
    return raw, np.asarray(z, dtype=np.float64)


def truncate_prompt(tokenizer, prompt: str, max_tokens: int) -> str:
    """Keep the last ``max_tokens`` tokens of a long prompt (the end holds the question)."""
    if max_tokens <= 0:
        return prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt
    return tokenizer.decode(ids[-max_tokens:], skip_special_tokens=True)


def load_prompts(specs: Sequence[str]) -> list[str]:
    """Unique prompts of ``specs`` in first-seen order (``pro_lib.data.load_prompt_pool`` also gives sources)."""
    return load_prompt_pool(specs)[0]


def sft_train(policy: WICPolicy, examples: Sequence[Mapping[str, str]], opts: SFTOptions, work_dir: Path,
              *, desc: str = "SFT") -> dict:
    """SFT ``policy.model`` in place on {prompt, completion} examples (loss on the completion only).

    Checkpoints go to ``work_dir``; re-running with the same work_dir resumes from the last one (the
    stage has checked with :func:`pro_lib.checkpoints.prepare_resume` that it was made with the same settings).
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise DataError(f"{desc}: no training examples (every sample was rejected?); lower the "
                        "rejection quantile or sample more")
    device = _device(opts.device)
    policy.model.to(device)
    policy.model.train()
    peft_config = None
    if opts.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules="all-linear", modules_to_save=["embed_tokens", "lm_head"])
    work_dir.mkdir(parents=True, exist_ok=True)
    from pro_lib.policy import fit_completions, resolve_bf16

    if opts.padding_free:  # trl enforces no max_length without packing: cut the completions here instead
        examples = fit_completions(policy.tokenizer, examples, opts.max_length)
    args = SFTConfig(
        output_dir=str(work_dir), num_train_epochs=opts.epochs, max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation_steps, learning_rate=opts.learning_rate,
        max_length=None if opts.padding_free else opts.max_length, padding_free=opts.padding_free,
        completion_only_loss=True, logging_steps=1, save_strategy="steps",
        save_steps=opts.save_steps, save_total_limit=1, report_to=[], seed=opts.seed,
        bf16=resolve_bf16(opts.bf16, device), use_cpu=device == "cpu", lr_scheduler_type="constant",
        gradient_checkpointing=device != "cpu",  # trl's default (on) costs CPU time a 135M model does not need
        warmup_steps=0, dataset_num_proc=None, disable_tqdm=False, eos_token=policy.tokenizer.eos_token)
    ds = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    trainer = SFTTrainer(model=policy.model, args=args, train_dataset=ds, processing_class=policy.tokenizer,
                         peft_config=peft_config, callbacks=[tracking.trainer_callback()])
    last = find_checkpoint(work_dir)
    t0 = time.time()
    result = train_or_restore(trainer, last)
    model = trainer.model
    if peft_config is not None:
        model = model.merge_and_unload()
    policy.model = model
    policy.model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    write_jsonl(work_dir / "train_log.jsonl", trainer.state.log_history)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"sft_examples": len(examples), "sft_steps": int(result.global_step),
            "sft_loss_first": float(losses[0]) if losses else math.nan,
            "sft_loss_last": float(losses[-1]) if losses else math.nan,
            "sft_seconds": time.time() - t0, "resumed_from": str(last) if last else None}


def _reward_range(z: np.ndarray, names: Sequence[str]) -> dict[str, list[float]]:
    """Per-objective [lo, hi] for RiC's min-max scaling (5th / 95th percentiles: robust to outliers)."""
    lo, hi = np.percentile(z, 5, axis=0), np.percentile(z, 95, axis=0)
    return {n: [float(a), float(max(b, a + 1e-6))] for n, a, b in zip(names, lo, hi)}


def scale_rewards(z: np.ndarray, reward_range: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    lo = np.array([reward_range[n][0] for n in names])
    hi = np.array([reward_range[n][1] for n in names])
    return np.clip((np.atleast_2d(z) - lo) / (hi - lo), 0.0, 1.0)


def _finish_policy(policy: WICPolicy, out: Path, scratch: Path) -> None:
    """Save the policy into ``out`` (atomically), keeping side files written in ``scratch``."""
    with atomic_dir(out) as tmp:
        policy.model.save_pretrained(tmp, safe_serialization=True)
        policy.tokenizer.save_pretrained(tmp)
        write_json(tmp / WIC_CONFIG, policy.wic_config())
        for f in scratch.glob("*.json*"):
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    shutil.rmtree(scratch, ignore_errors=True)


def _scratch_dir(out: Path) -> Path:
    """Checkpoints and logs of a stage live beside its output until it finishes (resumable)."""
    d = out.with_name(f".{out.name}.work")
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
# offline stage
# ---------------------------------------------------------------------------------------------
def build_offline_examples(cfg: WICOfflineConfig, suite, tokenizer) -> tuple[list[dict], dict]:
    """Pairs -> scored chosen responses -> (prompt, response, w*, z) records."""
    from pro_lib.data import load_pairs, source_mix, stratified_sample
    from pro_lib.targets import resolve_tau, target_weights

    pairs = []
    for spec in cfg.data:
        pairs.extend(load_pairs(spec))
    if cfg.max_examples is not None and cfg.max_examples < len(pairs):
        keep = stratified_sample(range(len(pairs)), cfg.max_examples, sources=[p.source for p in pairs],
                                 seed=cfg.seed)
        pairs = [pairs[i] for i in sorted(keep)]
    if cfg.responses not in OFFLINE_RESPONSES:
        raise ConfigError(f"--responses must be one of {OFFLINE_RESPONSES}, got {cfg.responses!r}")
    prompts = [truncate_prompt(tokenizer, p.prompt, cfg.max_prompt_tokens) for p in pairs]
    items = [(pr, p, p.chosen, "chosen") for pr, p in zip(prompts, pairs)]
    if cfg.responses == "both":  # RiC: rejected responses too, each with its own reward tags
        items += [(pr, p, p.rejected, "rejected") for pr, p in zip(prompts, pairs)]
    raw, z = _score(suite, [p.prompt for _, p, _, _ in items], [r for _, _, r, _ in items])
    tau = resolve_tau(cfg.tau, cfg.targets)  # the tau of the targets the orchestrator learned from
    w = target_weights(z, tau)
    recs = [{"prompt": pr, "response": r.strip(), "raw": raw[i], "z": z[i], "weights": w[i],
             "source": p.source, "side": side} for i, (pr, p, r, side) in enumerate(items)]
    info = {"n_pairs": len(pairs), "n_examples": len(recs), "responses": cfg.responses, "tau": tau,
            "source_mix": source_mix(p.source for p in pairs), "mean_target": w.mean(axis=0).tolist(),
            "argmax_share": (np.bincount(w.argmax(axis=1), minlength=suite.K) / len(recs)).tolist()}
    return recs, info


def train_wic_offline(cfg: WICOfflineConfig, *, suite=None, policy: WICPolicy | None = None) -> dict:
    """Offline stage (Eq. 10). Writes ``<output_dir>`` = the WIC policy (+ metrics.json, examples.jsonl).

    ``suite`` / ``policy`` may be passed in-process (tests, notebooks) instead of by path.
    """
    from pro_lib.policy import load_policy

    t0 = time.time()
    out = Path(cfg.output_dir)
    if suite is None:
        suite = _load_suite(cfg.suite or (str(Path(cfg.targets) / "suite") if cfg.targets else None),
                            what="wic offline")
    policy_digest = digest_model(cfg.policy, given=policy)
    if policy is None:
        model, tok = load_policy(cfg.policy)
        policy = WICPolicy(model, tok, suite.names, decimals=cfg.decimals, conditioning=cfg.conditioning,
                           orchestrator=cfg.orchestrator, method=cfg.method)
    else:
        check_objectives(policy.objectives, suite.names, got_what="the policy", expected_what="the reward suite")
    policy.conditioning, policy.method, policy.ric_mapping = cfg.conditioning, cfg.method, cfg.ric_mapping
    policy.orchestrator = cfg.orchestrator or policy.orchestrator
    recs, info = build_offline_examples(cfg, suite, policy.tokenizer)
    z = np.stack([r["z"] for r in recs])
    # the offline data's score distribution: fixed rejection bars for the online stage
    policy.score_percentiles = {n: np.percentile(z[:, k], np.arange(101)).tolist() for k, n in enumerate(suite.names)}
    if cfg.conditioning == "rewards":
        policy.reward_range = _reward_range(z, suite.names)
        values = scale_rewards(z, policy.reward_range, suite.names)
    else:
        values = np.stack([r["weights"] for r in recs])
    examples = [{"prompt": policy.render(r["prompt"], v), "completion": r["response"]} for r, v in zip(recs, values)]
    scratch = _scratch_dir(out)
    # the tau the tags were made with (cfg.tau None means the targets' tau), so a changed tau is named
    fp = fingerprint(dataclasses.replace(cfg, tau=info.get("tau", cfg.tau)),
                     {"examples_content": digest_value(examples), "policy_content": policy_digest})
    prepare_resume(scratch / "checkpoints", fp, cfg.resume, outputs=[out, scratch], what="WIC offline SFT")
    scratch.mkdir(parents=True, exist_ok=True)
    write_jsonl(scratch / "examples.jsonl", ({"prompt": e["prompt"], "completion": e["completion"],
                                              "weights": r["weights"], "z": r["z"], "side": r["side"]}
                                             for e, r in zip(examples, recs)))
    m = sft_train(policy, examples, cfg, scratch / "checkpoints", desc="WIC offline SFT")
    metrics = {"stage": "wic_offline", "method": cfg.method, "conditioning": cfg.conditioning,
               "objectives": suite.names, **info, **m, "wall_seconds": time.time() - t0}
    write_json(scratch / "metrics.json", metrics)
    write_json(scratch / "config.json.stage", to_dict(cfg))
    _finish_policy(policy, out, scratch)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


wic_offline = train_wic_offline


# ---------------------------------------------------------------------------------------------
# online stage
# ---------------------------------------------------------------------------------------------
def sample_preferences(source: str, prompts: Sequence[str], names: Sequence[str], rng: np.random.Generator, *,
                       orchestrator=None, policy: WICPolicy | None = None, alpha: float = 1.0) -> np.ndarray:
    """(O, K) weight vectors for a round's prompts from ``source``."""
    k = len(names)
    if source.startswith("orchestrator"):
        if orchestrator is None and (policy is None or policy.orchestrator is None):
            raise ConfigError(f"preferences={source} needs --orchestrator <folder or models:/ ref>")
        if policy is not None:
            w = policy.orchestrator_weights(prompts, orchestrator)
        else:
            orchestrator.check_objectives(names, what="the policy")
            w = np.asarray(orchestrator.predict(list(prompts)), dtype=np.float32)
        if source == "orchestrator-shuffled":  # control: the same weights, no prompt information
            return w[rng.permutation(len(w))]
        if source == "orchestrator-mean":  # control: one constant vector, the orchestrator's mean
            return np.tile(w.mean(axis=0, keepdims=True), (len(w), 1)).astype(np.float32)
        return w
    if source == "dirichlet":
        return rng.dirichlet(np.full(k, alpha), size=len(prompts)).astype(np.float32)
    if source == "ric":
        from pro_lib.pareto import weight_grid

        grid = weight_grid(k, 0.1)
        return grid[rng.integers(0, len(grid), size=len(prompts))]
    if source == "uniform":
        return np.full((len(prompts), k), 1.0 / k, dtype=np.float32)
    raise ConfigError(f"unknown preference source {source!r}; choose one of {PREFERENCE_SOURCES}")


def rejection_mask(z: np.ndarray, weights: np.ndarray, groups: np.ndarray, opts: SampleOptions,
                   thresholds: np.ndarray | None = None) -> np.ndarray:
    """Which samples to keep. ``z``: (M, K) normalised scores, ``weights``: (M, K), ``groups``: prompt ids.

    ``thresholds``: fixed per-objective bars (K,) for the quantile rule (else this batch's quantiles);
    the weighted rule then compares w.z with w.thresholds.
    """
    m = len(z)
    if opts.rejection == "none":
        return np.ones(m, dtype=bool)
    if opts.rejection == "topk":
        weighted = (z * weights).sum(axis=1)
        keep = np.zeros(m, dtype=bool)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            keep[idx[np.argsort(-weighted[idx], kind="stable")[:opts.top_k]]] = True
        return keep
    if not 0.0 <= opts.quantile < 1.0:
        raise ConfigError(f"quantile must be in [0, 1), got {opts.quantile}")
    if opts.quantile_rule == "weighted":
        weighted = (z * weights).sum(axis=1)
        if thresholds is not None:
            return weighted >= (weights * np.asarray(thresholds)[None]).sum(axis=1)
        return weighted >= np.quantile(weighted, opts.quantile)
    bar = np.asarray(thresholds)[None] if thresholds is not None else np.quantile(z, opts.quantile, axis=0)
    above = z >= bar
    return above.all(axis=1) if opts.quantile_rule == "all" else above.any(axis=1)


def _prompt_mix(chosen: Sequence[str], pool: Sequence[str], sources: Sequence[str | None] | None) -> dict[str, int]:
    """Per-source counts of the prompts a stage used (``pool``/``sources`` align)."""
    from pro_lib.data import source_mix

    by_prompt = dict(zip(pool, sources if sources is not None else [None] * len(pool)))
    return source_mix(by_prompt.get(p) for p in chosen)


def round_prompts(prompts: Sequence[str], round_index: int, count: int, seed: int,
                  sources: Sequence[str | None] | None = None) -> list[str]:
    """This round's O prompts: consecutive blocks (one per round, wrapping around) of a seeded order of
    the pool stratified by ``sources`` (``pro_lib.data.stratified_order``), so each round holds every
    source in proportion."""
    from pro_lib.data import stratified_order

    if not prompts:
        raise DataError("no prompts to sample from")
    order = stratified_order(sources if sources is not None else [None] * len(prompts), seed)
    start = (round_index - 1) * count
    return [prompts[order[(start + i) % len(prompts)]] for i in range(min(count, len(prompts)))]


def run_sampling_round(policy: WICPolicy, suite, prompts: Sequence[str], opts: SampleOptions, *,
                       round_index: int, seed: int, orchestrator=None) -> tuple[list[dict], dict]:
    """Sample, score and reject for one round; returns (all sample records, round metrics)."""
    t0 = time.time()
    rng = np.random.default_rng([seed, round_index])
    prompts = list(prompts)
    check_objectives(policy.objectives, suite.names, got_what="the policy", expected_what="the reward suite")
    w = sample_preferences(opts.preferences, prompts, suite.names, rng, orchestrator=orchestrator, policy=policy,
                           alpha=opts.dirichlet_alpha)
    texts = policy.condition(prompts, w)
    n = opts.samples_per_prompt
    t_gen = time.time()
    responses = policy.generate_texts(texts, batch_size=max(1, opts.gen_batch_size // n), num_return_sequences=n,
                                      max_new_tokens=opts.max_new_tokens, do_sample=True,
                                      temperature=opts.temperature, top_p=opts.top_p, seed=seed * 1000 + round_index,
                                      progress=True, desc=f"round {round_index}: sample")
    t_gen = time.time() - t_gen
    groups = np.repeat(np.arange(len(prompts)), n)
    sw = w[groups]
    sp = [prompts[g] for g in groups]
    t_score = time.time()
    raw, z = _score(suite, sp, responses)
    t_score = time.time() - t_score
    thresholds = None
    if opts.rejection == "quantile" and opts.thresholds == "offline":
        if not policy.score_percentiles:
            raise ConfigError("thresholds=offline needs the offline data's score distribution, which this policy "
                              "does not record (trained outside `pro wic offline`?); use --thresholds round")
        thresholds = np.array([np.interp(opts.quantile * 100, np.arange(101), policy.score_percentiles[n])
                               for n in suite.names])
    keep = rejection_mask(z, sw, groups, opts, thresholds)
    recs = [{"prompt": sp[i], "response": responses[i], "weights": sw[i], "raw": raw[i], "z": z[i],
             "kept": bool(keep[i]), "round": round_index} for i in range(len(sp))]
    weighted = (z * sw).sum(axis=1)
    metrics = {"round": round_index, "prompts": len(prompts), "samples": len(sp), "kept": int(keep.sum()),
               "acceptance_rate": float(keep.mean()),
               "mean_weighted_reward": float(weighted.mean()),
               "mean_weighted_reward_kept": float(weighted[keep].mean()) if keep.any() else math.nan,
               "generate_seconds": t_gen, "score_seconds": t_score, "sample_round_seconds": time.time() - t0,
               "empty_responses": int(sum(1 for r in responses if not r.strip())),
               "thresholds": None if thresholds is None else thresholds.tolist()}
    for k, name in enumerate(suite.names):
        metrics[f"mean_reward_{name}"] = float(z[:, k].mean())
        metrics[f"mean_weight_{name}"] = float(w[:, k].mean())
    return recs, metrics


def sample_online_round(cfg: WICSampleConfig, *, suite=None, policy: WICPolicy | None = None,
                        orchestrator=None) -> dict:
    """One round's sampling half. Writes samples.jsonl (all), kept.jsonl and metrics.json into output_dir."""
    suite = suite or _load_suite(cfg.suite, what="wic sample")
    policy = policy or WICPolicy.from_pretrained(cfg.policy, device=_device(None))
    if orchestrator is None and cfg.orchestrator and cfg.preferences.startswith("orchestrator"):
        orchestrator = cfg.orchestrator
    pool, sources = load_prompt_pool(cfg.data)
    chosen = round_prompts(pool, cfg.round_index, cfg.prompts_per_round, cfg.seed, sources=sources)
    prompts = [truncate_prompt(policy.tokenizer, p, 256) for p in chosen]
    recs, metrics = run_sampling_round(policy, suite, prompts, cfg, round_index=cfg.round_index, seed=cfg.seed,
                                       orchestrator=orchestrator)
    metrics["source_mix"] = _prompt_mix(chosen, pool, sources)
    with atomic_dir(cfg.output_dir) as tmp:
        write_jsonl(tmp / "samples.jsonl", recs)
        write_jsonl(tmp / "kept.jsonl", (r for r in recs if r["kept"]))
        write_json(tmp / "metrics.json", {**metrics, "objectives": suite.names, "preferences": cfg.preferences})
    return metrics


def _kept_examples(policy: WICPolicy, recs: Sequence[Mapping]) -> list[dict]:
    """SFT examples from kept samples: conditioned on the weights they were sampled with (PRO-WIC) or,
    for a rewards-conditioned policy (RiC), relabelled with the rewards they achieved."""
    out = []
    for r in recs:
        if not r.get("kept", True) or not str(r["response"]).strip():
            continue
        if policy.conditioning == "rewards":
            if not policy.reward_range:
                raise CheckpointError("a rewards-conditioned policy has no reward_range in its wic.json; "
                                      "retrain it with `pro ric offline`")
            values = scale_rewards(np.asarray(r["z"]), policy.reward_range, policy.objectives)[0]
        else:
            values = np.asarray(r["weights"], dtype=np.float64)
        out.append({"prompt": policy.render(r["prompt"], values), "completion": r["response"]})
    return out


def offline_replay(cfg: WICOnlineLoopConfig) -> list[dict]:
    """The offline SFT examples (``<cfg.policy>/examples.jsonl``, written by the offline stage) that clear
    ``cfg.quantile`` of the offline scores on any objective, at most ``cfg.replay_offline`` of them
    (seeded; -1: all): what RiC's released code mixes into every online round's SFT set."""
    if not cfg.replay_offline:
        return []
    path = Path(cfg.policy) / "examples.jsonl"
    if not path.is_file():
        raise DataError(f"--replay-offline needs the offline stage's examples at {path}; start the online stage "
                        "from a policy written by `pro wic offline` / `pro ric offline`, or pass --replay-offline 0")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    z = np.array([r["z"] for r in rows], dtype=np.float64)
    keep = np.flatnonzero((z >= np.quantile(z, cfg.quantile, axis=0)[None]).any(axis=1))
    if cfg.replay_offline > 0 and len(keep) > cfg.replay_offline:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(keep, cfg.replay_offline, replace=False))
    return [{"prompt": rows[i]["prompt"], "completion": rows[i]["completion"]} for i in keep]


def _read_kept(spec: str) -> list[dict]:
    p = Path(spec)
    if p.is_dir():
        p = p / "kept.jsonl"
    if not p.is_file():
        raise DataError(f"no kept samples at {spec}; run `pro wic sample` (a sampling round) first")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    _ = rec["prompt"], rec["response"], rec["weights"]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise DataError(f"{p}:{lineno}: bad sample record ({exc}); expected prompt, response, weights") from None
                rows.append(rec)
    return rows


def train_wic_online(cfg: WICOnlineConfig, *, policy: WICPolicy | None = None) -> dict:
    """One round's SFT half: fine-tune the policy on the kept samples; writes the new policy to output_dir."""
    out = Path(cfg.output_dir)
    policy_digest = digest_model(cfg.policy, given=policy)
    policy = policy or WICPolicy.from_pretrained(cfg.policy)
    recs = [r for spec in cfg.samples for r in _read_kept(spec)]
    examples = _kept_examples(policy, recs)
    scratch = _scratch_dir(out)
    fp = fingerprint(cfg, {"examples_content": digest_value(examples), "policy_content": policy_digest})
    prepare_resume(scratch / "checkpoints", fp, cfg.resume, outputs=[out, scratch], what="WIC online SFT")
    m = sft_train(policy, examples, cfg, scratch / "checkpoints", desc="WIC online SFT")
    write_json(scratch / "metrics.json", {"stage": "wic_online_sft", **m})
    _finish_policy(policy, out, scratch)
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def wic_online_round(cfg: WICOnlineLoopConfig, round_index: int, *, policy: WICPolicy, suite, pool: Sequence[str],
                     orchestrator=None, sources: Sequence[str | None] | None = None,
                     replay: Sequence[Mapping[str, str]] | None = None) -> tuple[WICPolicy, dict]:
    """One full online round in memory: sample + score + reject, then SFT; saves round-<e>/.

    ``sources``: each pool prompt's source; the round's prompts are stratified by it. ``replay``: offline
    SFT examples mixed into this round's SFT set (``offline_replay``); with ``cfg.replay_rounds`` the
    kept samples of earlier rounds join it too (RiC's released code does both)."""
    t0 = time.time()
    rdir = Path(cfg.output_dir) / f"round-{round_index}"
    chosen = round_prompts(pool, round_index, cfg.prompts_per_round, cfg.seed, sources=sources)
    prompts = [truncate_prompt(policy.tokenizer, p, cfg.max_prompt_tokens) for p in chosen]
    recs, metrics = run_sampling_round(policy, suite, prompts, cfg, round_index=round_index, seed=cfg.seed,
                                       orchestrator=orchestrator)
    metrics["source_mix"] = _prompt_mix(chosen, pool, sources)
    write_jsonl(rdir / "samples.jsonl", recs)
    sft_opts = dataclasses.replace(cfg, seed=cfg.seed + round_index)
    examples = _kept_examples(policy, recs)
    previous = []
    if cfg.replay_rounds:  # RiC: every earlier round's kept samples stay in the SFT set
        for e in range(1, round_index):
            previous += _kept_examples(policy, _read_kept(str(Path(cfg.output_dir) / f"round-{e}" / "samples.jsonl")))
    replay = list(replay or [])
    metrics.update({"sft_examples_new": len(examples), "sft_examples_previous_rounds": len(previous),
                    "sft_examples_offline": len(replay)})
    examples = examples + previous + replay
    work = Path(cfg.output_dir) / f".round-{round_index}.work"
    work.mkdir(parents=True, exist_ok=True)
    if examples:
        m = sft_train(policy, examples, sft_opts, work, desc=f"round {round_index}: SFT")
        metrics.update({k: v for k, v in m.items() if k != "resumed_from"})
    else:  # nothing cleared the bar: the policy is unchanged this round (the acceptance rate says so)
        log.warning("round %d: every sample was rejected; no SFT this round", round_index)
        metrics.update({"sft_examples": 0, "sft_steps": 0})
    metrics["round_seconds"] = time.time() - t0
    _finish_policy(policy, rdir / "policy", Path(cfg.output_dir) / f".round-{round_index}.work")
    write_json(rdir / "metrics.json", metrics)
    return policy, metrics


def _online_resume_check(cfg: WICOnlineLoopConfig, out: Path, *, suite, policy, orchestrator) -> None:
    """Finished rounds (and a killed round's checkpoints) are reused only when made with the same settings
    and inputs; ``rounds`` may grow (round e does not depend on how many follow)."""
    inputs = {"data_content": digest_data(cfg.data), "policy_content": digest_model(cfg.policy, given=policy),
              "suite_content": digest_model(cfg.suite, given=suite)}
    if cfg.preferences == "orchestrator":
        inputs["orchestrator_content"] = digest_model(cfg.orchestrator, given=orchestrator)
    state = sorted(out.glob("round-*/metrics.json")) + [c for w in sorted(out.glob(".round-*.work"))
                                                        if (c := find_checkpoint(w))]
    prepare_resume(out, fingerprint(cfg, inputs, ignore={"rounds"}), cfg.resume, found=state[0] if state else None,
                   what="WIC online stage")


def wic_online(cfg: WICOnlineLoopConfig, *, suite=None, policy: WICPolicy | None = None, orchestrator=None) -> dict:
    """Online stage (Eq. 11): E rounds. Finished rounds are skipped when re-run (resumable by round).

    Writes round-<e>/{samples.jsonl, policy/, metrics.json}, rounds.jsonl, policy/ (final), metrics.json.
    """
    out = Path(cfg.output_dir)
    _online_resume_check(cfg, out, suite=suite, policy=policy, orchestrator=orchestrator)
    out.mkdir(parents=True, exist_ok=True)
    suite = suite or _load_suite(cfg.suite, what="wic online")
    if cfg.preferences.startswith("orchestrator") and orchestrator is None:
        if not cfg.orchestrator and (policy is None or policy.orchestrator is None):
            raise ConfigError("preferences=orchestrator needs --orchestrator <folder or models:/ ref> "
                              "(or use --preferences dirichlet|ric for RiC online)")
        if cfg.orchestrator:
            from pro_lib.orchestrator import PreferenceOrchestrator

            orchestrator = PreferenceOrchestrator.from_pretrained(cfg.orchestrator)
    pool, sources = load_prompt_pool(cfg.data)
    replay = offline_replay(cfg)
    history = []
    start = 1
    for e in range(cfg.rounds, 0, -1):  # resume after the last finished round
        if (out / f"round-{e}" / "metrics.json").is_file() and (out / f"round-{e}" / "policy" / WIC_CONFIG).is_file():
            start = e + 1
            break
    for e in range(1, start):
        history.append(read_json(out / f"round-{e}" / "metrics.json"))
    if start > 1:
        log.info("resuming the online stage after round %d", start - 1)
        policy = WICPolicy.from_pretrained(out / f"round-{start - 1}" / "policy")
    elif policy is None:
        policy = WICPolicy.from_pretrained(cfg.policy)
    for e in range(start, cfg.rounds + 1):
        policy, m = wic_online_round(cfg, e, policy=policy, suite=suite, pool=pool, orchestrator=orchestrator,
                                     sources=sources, replay=replay)
        log.info("round %d: acceptance %.3f, weighted reward %.3f, %.0fs", e, m["acceptance_rate"],
                 m["mean_weighted_reward"], m["round_seconds"])
        history.append(m)
    write_jsonl(out / "rounds.jsonl", history)
    if history:
        src = out / f"round-{cfg.rounds}" / "policy"
        with atomic_dir(out / "policy") as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    metrics = {"rounds": len(history), "preferences": cfg.preferences,
               "acceptance_rate": float(np.mean([h["acceptance_rate"] for h in history])) if history else math.nan,
               "mean_weighted_reward": float(np.mean([h["mean_weighted_reward"] for h in history])) if history else math.nan,
               "wall_seconds": float(sum(h.get("round_seconds", 0.0) for h in history))}
    write_json(out / "metrics.json", {**metrics, "per_round": history})
    return metrics


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def _eval_policies(cfg: WICEvalConfig) -> list[tuple[str, str]]:
    items = []
    if cfg.policy:
        items.append((None, cfg.policy))
    for spec in cfg.policies:
        label, _, path = spec.partition("=")
        if not path:
            label, path = None, spec
        items.append((label, path))
    if not items:
        raise ConfigError("nothing to evaluate: give --policy <folder> or --policies label=folder,...")
    return items


def evaluate_policy_grid(policy: WICPolicy, suite, prompts: Sequence[str], grid: np.ndarray, *,
                         max_new_tokens: int, batch_size: int, orchestrator=None) -> dict:
    """Mean normalised score per objective for each grid weight (greedy), plus the orchestrator row."""
    n, k = len(prompts), suite.K
    all_texts, all_w = [], []
    for w in grid:
        all_texts += policy.condition(prompts, w)
        all_w.append(np.repeat(w[None], n, axis=0))
    orch_w = None
    if orchestrator is not None or policy.orchestrator is not None:
        try:
            orch_w = policy.orchestrator_weights(prompts, orchestrator)
        except (ProError, OSError) as exc:
            log.warning("no orchestrator row: %s", exc)
    if orch_w is not None:
        all_texts += policy.condition(prompts, orch_w)
    responses = policy.generate_texts(all_texts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      do_sample=False, progress=True, desc="eval generate")
    rep_prompts = list(prompts) * (len(grid) + (orch_w is not None))
    _, z = _score(suite, rep_prompts, responses)
    points = np.stack([z[i * n:(i + 1) * n].mean(axis=0) for i in range(len(grid))])
    sems = np.stack([z[i * n:(i + 1) * n].std(axis=0, ddof=1) / math.sqrt(max(n - 1, 1)) if n > 1 else np.zeros(k)
                     for i in range(len(grid))])
    res = {"points": points, "sem": sems, "responses": responses, "z": z}
    if orch_w is not None:
        oz = z[len(grid) * n:]
        res["orchestrator_point"] = oz.mean(axis=0)
        res["orchestrator_sem"] = oz.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(k)
        res["orchestrator_weights"] = orch_w
        res["orchestrator_weighted"] = float((oz * orch_w).sum(axis=1).mean())
    return res


def equal_weight_table(rows: Sequence[Mapping], names: Sequence[str]) -> str:
    """Markdown: one row per (method, weights) with mean ± s.e.m. normalised reward per objective."""
    head = "| method | weights | " + " | ".join(names) + " | mean |\n|---|---|" + "---|" * (len(names) + 1) + "\n"
    body = ""
    for r in rows:
        cells = " | ".join(f"{m:+.3f} ± {s:.3f}" for m, s in zip(r["mean"], r["sem"]))
        body += f"| {r['method']} | {r['weights']} | {cells} | {float(np.mean(r['mean'])):+.3f} |\n"
    return head + body


def _bootstrap_table(boot: Mapping, names: Sequence[str]) -> str:
    """Markdown: hypervolume CIs, differences to the best front, and the weight response per objective."""
    if not boot:
        return ""
    pct = f"{boot['level']:.0%}"
    kind = "paired bootstrap" if boot["paired"] else "bootstrap"
    head = (f"\n{pct} intervals from a {kind} over prompts ({boot['n_boot']} resamples). Weight response: "
            "mean score on an objective with all the weight on it, minus its mean with the weight on the "
            "others (> 0: the policy follows its weights).\n\n"
            f"| method | hypervolume {pct} CI | difference to {boot['best']} | "
            + " | ".join(f"weight response {n}" for n in names) + " |\n|---|---|---|" + "---|" * len(names) + "\n")

    def fmt(v, c):
        return "n/a" if v is None or c[0] is None else f"{v:+.3f} [{c[0]:+.3f}, {c[1]:+.3f}]"

    body = ""
    for lab, hv in boot["hypervolume"].items():
        lo, hi = boot["hypervolume_ci"][lab]
        diff = ("(best)" if lab == boot["best"] else fmt(boot["diff_to_best"][lab], boot["diff_to_best_ci"][lab]))
        resp = " | ".join(fmt(v, c) for v, c in zip(boot["weight_response"][lab], boot["weight_response_ci"][lab]))
        body += f"| {lab} | {hv:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | {resp} |\n"
    return head + body


def evaluate_wic(cfg: WICEvalConfig, *, suite=None, policies: Mapping[str, WICPolicy] | None = None,
                 orchestrator=None) -> dict:
    """Weight-grid evaluation of one or more WIC policies on held-out prompts.

    Writes eval.json, pareto.csv, pareto.png, eval_table.md, samples.jsonl into output_dir.
    Metrics: hypervolume (of the first policy), hypervolume_<label>, and the equal-weight means.
    """
    from pro_lib.data import format_source_mix, stratified_sample
    from pro_lib.pareto import (bootstrap_fronts, hypervolume, pareto_mask, plot_fronts, weight_grid,
                                weight_response, write_front_csv)

    t0 = time.time()
    suite = suite or _load_suite(cfg.suite, what="wic eval")
    k = suite.K
    ref = list(cfg.reference) or [-2.0] * k
    if len(ref) != k:
        raise ConfigError(f"--reference has {len(ref)} values for {k} objectives {suite.names}")
    grid = weight_grid(k, cfg.grid_step)
    if not any(np.allclose(g, 1.0 / k) for g in grid):
        grid = np.vstack([grid, np.full(k, 1.0 / k, dtype=np.float32)])
    equal_idx = int(np.argmin(np.abs(grid - 1.0 / k).sum(axis=1)))
    all_prompts, all_sources = load_prompt_pool(cfg.data)
    pool = stratified_sample(all_prompts, cfg.max_prompts, sources=all_sources, seed=cfg.seed)
    mix = _prompt_mix(pool, all_prompts, all_sources)
    loaded: dict[str, WICPolicy] = dict(policies or {})
    if not loaded:
        for label, path in _eval_policies(cfg):
            if (Path(path) / "soups.json").is_file():  # Rewarded Soups: experts interpolated per grid weight
                from pro_lib.soups import SoupPolicy

                pol = SoupPolicy.load(path, device=_device(cfg.device))
            else:
                pol = WICPolicy.from_pretrained(path, device=_device(cfg.device))
            loaded[label or pol.method or Path(path).name] = pol
    if cfg.ric_mapping:
        if cfg.ric_mapping not in RIC_MAPPINGS:
            raise ConfigError(f"--ric-mapping must be one of {RIC_MAPPINGS}, got {cfg.ric_mapping!r}")
        for pol in loaded.values():
            if pol.conditioning == "rewards":
                pol.ric_mapping = cfg.ric_mapping
    if orchestrator is None and cfg.orchestrator:
        from pro_lib.orchestrator import PreferenceOrchestrator

        orchestrator = PreferenceOrchestrator.from_pretrained(cfg.orchestrator)
    results, csv_rows, table_rows, samples = {}, [], [], []
    metrics: dict[str, float] = {}
    for i, (label, pol) in enumerate(loaded.items()):
        check_objectives(pol.objectives, suite.names, got_what=f"policy {label}", expected_what="the reward suite")
        prompts = [truncate_prompt(pol.tokenizer, p, cfg.max_prompt_tokens) for p in pool]
        grid_eval = getattr(pol, "evaluate_grid", None)  # a SoupPolicy evaluates itself
        res = (grid_eval(suite, prompts, grid, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size,
                         orchestrator=orchestrator) if grid_eval is not None else
               evaluate_policy_grid(pol, suite, prompts, grid, max_new_tokens=cfg.max_new_tokens,
                                    batch_size=cfg.gen_batch_size, orchestrator=orchestrator))
        hv = hypervolume(res["points"], ref)
        results[label] = res
        for w, p, s in zip(grid, res["points"], res["sem"]):
            csv_rows.append({"method": label, **{f"w_{n}": round(float(x), 4) for n, x in zip(suite.names, w)},
                             **{f"mean_{n}": float(x) for n, x in zip(suite.names, p)},
                             **{f"sem_{n}": float(x) for n, x in zip(suite.names, s)}})
        table_rows.append({"method": label, "weights": "equal", "mean": res["points"][equal_idx],
                           "sem": res["sem"][equal_idx]})
        if "orchestrator_point" in res:
            table_rows.append({"method": label, "weights": "orchestrator weights", "mean": res["orchestrator_point"],
                               "sem": res["orchestrator_sem"]})
        n = len(prompts)
        for g, w in enumerate(grid):
            for j in range(n):
                samples.append({"method": label, "prompt": prompts[j], "weights": w, "grid_point": g,
                                "response": res["responses"][g * n + j], "z": res["z"][g * n + j]})
        if "orchestrator_weights" in res:
            for j in range(n):
                samples.append({"method": label, "prompt": prompts[j], "weights": res["orchestrator_weights"][j],
                                "grid_point": None, "response": res["responses"][len(grid) * n + j],
                                "z": res["z"][len(grid) * n + j]})
        res["grid_z"] = np.asarray(res["z"][: len(grid) * n]).reshape(len(grid), n, k)
        res["weight_response"] = weight_response(res["grid_z"], grid)
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", label)
        if i == 0:
            metrics["hypervolume"] = hv
        metrics[f"hypervolume_{slug}"] = hv
        for kk, name in enumerate(suite.names):
            metrics[f"{slug}_equal_{name}"] = float(res["points"][equal_idx, kk])
        if "orchestrator_weighted" in res:
            metrics[f"{slug}_orchestrator_weighted_reward"] = res["orchestrator_weighted"]
        for kk, name in enumerate(suite.names):
            if np.isfinite(res["weight_response"][kk]):
                metrics[f"{slug}_weight_response_{name}"] = float(res["weight_response"][kk])
    boot = (bootstrap_fronts({lab: r["grid_z"] for lab, r in results.items()}, grid, ref, n_boot=cfg.bootstrap)
            if cfg.bootstrap > 0 else {})
    table = ("Mean normalised reward (z-score under the suite's stats) on "
             f"{len(pool)} held-out prompts (stratified random sample, seed {cfg.seed}: {format_source_mix(mix)}), "
             f"greedy decoding, max {cfg.max_new_tokens} new tokens.\n\n"
             + equal_weight_table(table_rows, suite.names)
             + f"\nHypervolume of each front (reference point {ref}, normalised reward units, grid step {cfg.grid_step}):\n\n"
             + "| method | hypervolume | grid points on the front |\n|---|---|---|\n"
             + "".join(f"| {lab} | {hypervolume(r['points'], ref):.4f} | "
                       f"{int(pareto_mask(r['points']).sum())}/{len(grid)} |\n"
                       for lab, r in results.items())
             + _bootstrap_table(boot, suite.names))
    out = Path(cfg.output_dir)
    with atomic_dir(out) as tmp:
        write_front_csv(tmp / "pareto.csv", csv_rows)
        (tmp / "eval_table.md").write_text(table)
        write_jsonl(tmp / "samples.jsonl", samples)
        write_json(tmp / "eval.json", {
            "objectives": suite.names, "grid": grid, "reference": ref, "n_prompts": len(pool), "source_mix": mix,
            "max_new_tokens": cfg.max_new_tokens, "metrics": metrics, "bootstrap": boot,
            "methods": {lab: {"points": r["points"], "sem": r["sem"], "hypervolume": hypervolume(r["points"], ref),
                              "orchestrator_point": r.get("orchestrator_point"),
                              "weight_response": [float(x) if np.isfinite(x) else None
                                                  for x in r["weight_response"]],
                              "orchestrator_mean_weights": (r["orchestrator_weights"].mean(axis=0)
                                                            if "orchestrator_weights" in r else None)}
                        for lab, r in results.items()}})
        if k >= 2:
            plot_fronts({lab: r["points"] for lab, r in results.items()}, suite.names, tmp / "pareto.png",
                        reference=ref,
                        labels={lab: [f"{w[0]:.1f}" for w in grid] for lab in results},
                        extra_points={lab: r["orchestrator_point"] for lab, r in results.items()
                                      if "orchestrator_point" in r},
                        errors={lab: r["sem"] for lab, r in results.items()},
                        title=f"Pareto fronts ({len(pool)} held-out prompts; labels: weight on {suite.names[0]})")
    metrics["eval_seconds"] = time.time() - t0
    return metrics


wic_eval = evaluate_wic


# ---------------------------------------------------------------------------------------------
# RiC baselines: the same stages with RiC's defaults
# ---------------------------------------------------------------------------------------------
@dataclass
class RiCOfflineConfig(WICOfflineConfig):
    """RiC offline: SFT on preferred responses with their own (min-max scaled) rewards in the prompt;
    at inference a preference w maps to desired rewards (RiC's mapping)."""

    conditioning: str = field("rewards", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    method: str = field("ric-offline", help="label recorded in the policy")
    output_dir: str = field("runs/ric_offline", help="output folder: the RiC policy, metrics.json")
    responses: str = field("both", help="both (RiC's released code: chosen and rejected, each tagged with its own "
                                        "rewards) or chosen (the same SFT set as PRO-WIC)",
                           choices=list(OFFLINE_RESPONSES))


@dataclass
class RiCOnlineConfig(WICOnlineLoopConfig):
    """RiC online: E rounds of random preferences (RiC's weight grid or Dirichlet), sampling,
    rejection sampling and SFT on the kept samples relabelled with their achieved rewards."""

    policy: str = field("runs/ric_offline", help="the RiC offline policy to start from")
    preferences: str = field("ric", help="ric (uniform over RiC's 0.1 weight grid) or dirichlet",
                             choices=list(PREFERENCE_SOURCES))
    replay_offline: int = field(-1, help="offline examples clearing the quantile on any objective mixed into each "
                                         "round's SFT set (RiC's released code: up to 10,000; -1 all, 0 none)")
    replay_rounds: bool = field(True, help="train each round on the kept samples of earlier rounds too (RiC's "
                                           "released code); --no-replay-rounds for fresh samples only")
    output_dir: str = field("runs/ric_online", help="output folder (as for `pro wic online`)")
