"""Builders for tests, demos and benchmarks: tiny random models that run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pro_lib.wic import WICPolicy


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


def build_plain_lm(path: str | Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """A tiny causal LM that is not a WIC policy (a base for LoRA adapter tests: it holds one ``<W1>`` tag
    of its own, so a two-objective WIC policy over it adds one embedding row)."""
    from pro_lib.artifacts import WICPolicyManifest

    build_tiny_policy(path, ["other"], seed=seed, hidden_size=hidden_size)
    WICPolicyManifest.path(path).unlink()
    return Path(path)
