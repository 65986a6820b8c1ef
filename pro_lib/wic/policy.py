"""The WIC policy and its prompt format.

The policy reads the preference weights in its prompt: the user turn becomes
``prompt <W1> 0.70 <W2> 0.30`` (fixed decimals; ``<W1>``..``<WK>`` are special tokens added to the
tokenizer), and the policy's chat template, when it has one, wraps that user turn (HH transcripts
``\\n\\nHuman: ... \\n\\nAssistant:`` become chat messages first). A rewards-conditioned (RiC)
policy writes desired rewards into the same tags (:func:`ric_desired_rewards`).

Inference: ``WICPolicy.from_pretrained(ref).generate(prompts, weights=None)`` (weights omitted: the
orchestrator's), ``pro generate "prompt" --weights helpful=0.7,harmless=0.3``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pro_lib.adapters import TAG_INIT_SEED, resize_embeddings  # noqa: F401 (TAG_INIT_SEED public here too)
from pro_lib.artifacts import WICPolicyManifest
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_dir
from pro_lib.targets import check_objectives, parse_weights

CONDITIONINGS = ("weights", "rewards")


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


def shrink_to_tag_range(weights: np.ndarray, tag_max: float | None) -> np.ndarray:
    """Preference weights -> the tag values a PRO-WIC policy was trained with: an affine shrink toward the
    uniform vector, ``u + s (w - u)`` with ``s = (tag_max - 1/K) / (1 - 1/K)``, so that a corner of the
    simplex reads ``tag_max`` (the largest weight the offline SFT tags held) and every row stays on the
    simplex. ``tag_max`` None or >= 1 leaves the weights as they are (the paper's format).

    Why: a policy trained on soft tags (tau 0.5: at most ~0.98) has never seen ``1.00`` in a tag, and
    reads a corner as noise (docs/results_wic.md, second demo study).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if tag_max is None or tag_max >= 1.0:
        return w
    k = w.shape[1]
    u = 1.0 / k
    s = max(0.0, (float(tag_max) - u) / (1.0 - u))
    return u + s * (w - u)


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
    """Add ``<W1>..<WK>`` as special tokens and grow the embeddings; returns how many were new.

    The new embedding rows are drawn from their own seeded generator (``TAG_INIT_SEED``), not from
    torch's global state: the same base model and K always start with the same tag rows, so two runs
    of the same offline stage train the same policy."""
    tags = wic_tags(k)
    vocab = tokenizer.get_vocab()
    new = [t for t in tags if t not in vocab]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    n_vocab = len(tokenizer)
    if model.get_input_embeddings().weight.shape[0] < n_vocab:
        resize_embeddings(model, n_vocab)
    return len(new)


class WICPolicy:
    """A causal LM conditioned on preference weights written into its prompt."""

    def __init__(self, model, tokenizer, objectives: Sequence[str], *, decimals: int = 2,
                 conditioning: str = "weights", use_chat_template: bool | None = None,
                 orchestrator: str | None = None, reward_range: Mapping[str, Sequence[float]] | None = None,
                 method: str | None = None, score_percentiles: Mapping[str, Sequence[float]] | None = None,
                 ric_mapping: str = "linf", tag_max: float | None = None, system_prompt: str | None = None,
                 base_ref: str | None = None):
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
        self.tag_max = None if tag_max is None else float(tag_max)  # shrink_to_tag_range
        self.system_prompt = system_prompt  # None: the chat template's own default system turn
        # the full model a LoRA adapter of this policy is trained on / was trained on (pro_lib.adapters)
        self.base_ref = None if base_ref is None else str(base_ref)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        add_wic_tokens(model, tokenizer, self.K)
        self._orch_cache: dict[str, Any] = {}

    @property
    def K(self) -> int:  # noqa: N802
        return len(self.objectives)

    # persistence ---------------------------------------------------------------------------
    def wic_config(self) -> WICPolicyManifest:
        return WICPolicyManifest(
            objectives=self.objectives, decimals=self.decimals, conditioning=self.conditioning,
            use_chat_template=self.use_chat_template, tags=wic_tags(self.K), orchestrator=self.orchestrator,
            reward_range=self.reward_range or None, method=self.method,
            score_percentiles=self.score_percentiles or None, ric_mapping=self.ric_mapping, tag_max=self.tag_max,
            system_prompt=self.system_prompt)

    def save_pretrained(self, path: str | Path) -> Path:
        """Model + tokenizer + ``wic.json`` (objectives, decimals, conditioning), written atomically.
        A LoRA-trained policy saves its adapter and its base's reference (:mod:`pro_lib.adapters`)."""
        from pro_lib.adapters import save_model_files

        path = Path(path)
        with atomic_dir(path) as tmp:
            save_model_files(self.model, tmp, base=self.base_ref)
            self.tokenizer.save_pretrained(tmp)
            self.wic_config().save(tmp)
        return path

    @classmethod
    def from_pretrained(cls, ref: str | Path, *, objectives: Sequence[str] | None = None,
                        device: str | None = None, base: str | Path | None = None, shared_base: bool = False,
                        trainable: bool = False, **overrides) -> "WICPolicy":
        """A saved WIC policy (folder with wic.json, models:/ ref), or any causal LM plus ``objectives``.

        A LoRA adapter folder loads onto its recorded base (or ``base``, checked by content);
        ``shared_base`` shares that base with the process's other adapters of it (serving, the explorer);
        ``trainable`` lets the adapter train on (an online round)."""
        from pro_lib.adapters import load_causal_lm
        from pro_lib.artifacts import AdapterManifest
        from pro_lib.policy import resolve_policy

        where = Path(resolve_policy(ref))
        meta = WICPolicyManifest.load_optional(where)
        if meta is None and objectives is None:
            raise CheckpointError(f"{ref} is not a WIC policy (no {WICPolicyManifest.FILE}); train one with "
                                  "`pro wic offline`, or pass objectives=[...] to start from a plain causal LM")
        if objectives is not None and meta is not None:
            check_objectives(meta.objectives, objectives, got_what=f"policy {ref}",
                             expected_what="the caller", fix="use the matching suite or policy")
        model, tok = load_causal_lm(where, device=device, base=base, shared_base=shared_base, trainable=trainable)
        adapter = AdapterManifest.load_optional(where)
        overrides.setdefault("base_ref", str(base or adapter.base) if adapter is not None else str(ref))
        kwargs = {k: getattr(meta, k) for k in ("decimals", "conditioning", "use_chat_template", "orchestrator",
                                                "reward_range", "method", "score_percentiles", "ric_mapping",
                                                "tag_max", "system_prompt")
                  if meta is not None and getattr(meta, k) is not None}
        kwargs.update(overrides)
        return cls(model, tok, objectives or meta.objectives, **kwargs)

    # conditioning --------------------------------------------------------------------------
    def tag_values(self, weights: np.ndarray) -> np.ndarray:
        """What the tags hold for preference ``weights`` (N, K): the weights (shrunk into the range of the
        policy's training tags, :func:`shrink_to_tag_range`), or RiC's desired rewards."""
        w = np.atleast_2d(weights)
        if self.conditioning == "rewards":
            return ric_desired_rewards(w, self.ric_mapping)
        return shrink_to_tag_range(w, self.tag_max)

    def render(self, prompt: str, values: Sequence[float]) -> str:
        """The exact model input text for one prompt and its tag values (chat template applied)."""
        suffix = format_weight_suffix(values, self.decimals)
        if not self.use_chat_template:
            return f"{prompt.rstrip()} {suffix}"
        msgs = self._messages(prompt)
        msgs[-1] = {**msgs[-1], "content": f"{msgs[-1]['content']} {suffix}".strip()}
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def render_plain(self, prompt: str) -> str:
        """The same prompt without any conditioning (for the baseline / benchmark)."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(self._messages(prompt), tokenize=False, add_generation_prompt=True)

    def _messages(self, prompt: str) -> list[dict]:
        """The chat messages of ``prompt``, after this policy's system turn when it sets one (SmolLM2's
        template otherwise adds its own 21-token default)."""
        msgs = to_messages(prompt)
        return msgs if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}, *msgs]

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

        from pro_lib.policy import generate_batched

        if seed is not None:
            torch.manual_seed(seed)
        out = generate_batched(self.model, self.tokenizer, list(texts), batch_size=batch_size,
                               num_return_sequences=num_return_sequences,
                               add_special_tokens=not self.use_chat_template, progress=progress, desc=desc,
                               **self._gen_kwargs(**gen_kwargs))
        return [r.strip() for rows in out for r in rows]

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
