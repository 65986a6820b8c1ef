"""Tiny models for the MORLHF tests: a byte-level BPE tokenizer, a 2-layer Llama, a random-encoder
orchestrator, an in-process two-objective suite and a short training config (each test takes seconds)."""

from __future__ import annotations

import torch

from pro_lib.morlhf import MorlhfTrainConfig
from pro_lib.suite import RewardSuite


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "[CLS]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Human: how do I bake bread? Assistant: mix flour, water and yeast."] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", cls_token="[CLS]")


def make_policy(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg), tok


def make_orchestrator(objectives, seed: int = 0):
    """A tiny random-encoder orchestrator whose weights depend on the prompt."""
    from transformers import BertConfig, BertModel

    from pro_lib.orchestrator import PreferenceOrchestrator

    tok = make_tokenizer()
    torch.manual_seed(seed)
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=256, pad_token_id=tok.pad_token_id))
    orch = PreferenceOrchestrator(enc, tok, objectives)
    torch.nn.init.normal_(orch.head.weight, std=0.05)
    return orch


def length_score(prompts, responses):
    return [float(len(r)) for r in responses]


def a_score(prompts, responses):
    return [float(r.count("a")) for r in responses]


STATS = {"length": (1.0, 2.0), "a": (0.0, 1.0)}


def make_suite():
    return RewardSuite.from_functions({"length": length_score, "a": a_score}, stats=STATS)


def tiny_cfg(tmp_path, data, name="run", **kw) -> MorlhfTrainConfig:
    base = dict(policy="tiny", suite="in-process", data=[data], output_dir=str(tmp_path / name),
                weights="uniform", max_steps=4, save_steps=2, num_generations=4, batch_size=8,
                max_completion_length=6, learning_rate=1e-2, beta=0.05, max_prompts=16, seed=0)
    base.update(kw)
    return MorlhfTrainConfig(**base)
