"""Tiny real models for the explorer's tests (test_ui_app.py, test_browser_ui.py; fixture registered in conftest).

Everything is built from configs in seconds: a tiny BERT Preference Orchestrator saved with
``save_pretrained``, a reward suite of importable scoring functions saved with ``RewardSuite.save``,
and a tiny random causal LM saved as a WIC policy. No test functions live here.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

NAMES = ["helpful", "harmless", "humor"]

REWARDS_MODULE = "pro_ui_test_rewards"
REWARDS_SOURCE = textwrap.dedent('''
    """Deterministic scoring functions for the explorer's tests."""

    def helpful(prompts, responses):
        return [min(len(r.split()), 50) / 10.0 for r in responses]

    def harmless(prompts, responses):
        bad = ("kill", "hurt", "steal")
        return [-float(sum(r.lower().count(b) for b in bad)) for r in responses]

    def humor(prompts, responses):
        return [float(r.lower().count("ha")) + 0.1 * r.count("!") for r in responses]
''')


def build_orchestrator(path: Path, names=NAMES, seed: int = 0) -> Path:
    """A tiny BERT orchestrator with a random (non-uniform) head, saved with save_pretrained."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pro_lib.models import bundled_minilm_path
    from pro_lib.orchestrator import PreferenceOrchestrator

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    orch = PreferenceOrchestrator(BertModel(cfg), tok, list(names), max_length=64)
    with torch.no_grad():
        torch.nn.init.normal_(orch.head.weight, std=1.5)
        orch.head.bias.copy_(torch.linspace(0.8, -0.8, len(names)))
    orch.save_pretrained(path)
    return path


def build_reward_model(path: Path, seed: int = 0) -> Path:
    """A tiny BERT sequence classifier with one logit (an untrained reward model)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pro_lib.models import bundled_minilm_path

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # what `pro rewards train` records next to the weights
    (path / "pro_reward.json").write_text('{"input_format": "concat", "max_length": 64}')
    return path


def build_suite(path: Path, module_dir: Path, names=NAMES) -> Path:
    """A saved reward suite whose objectives are functions in an importable module."""
    from pro_lib.suite import Objective, RewardSuite

    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / f"{REWARDS_MODULE}.py").write_text(REWARDS_SOURCE)
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
    suite = RewardSuite([Objective(name=n, function=f"{REWARDS_MODULE}:{n}") for n in names],
                        stats={n: (0.0, 1.0) for n in names})
    suite.save(path)
    return path


def build_policy(path: Path, names=NAMES, seed: int = 0, conditioning: str = "weights") -> Path:
    """A tiny random causal LM saved as a WIC policy (``weights``: PRO-WIC, ``rewards``: RiC)."""
    from pro_lib.testing import build_tiny_policy

    return build_tiny_policy(path, list(names), seed=seed, conditioning=conditioning)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Folders of a tiny orchestrator, a reward suite and two tiny WIC policies (PRO-WIC and RiC)."""
    import torch

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("ui_models")
    out = {"root": root, "module_dir": root / "modules"}
    out["orchestrator"] = build_orchestrator(root / "orchestrator")
    out["suite"] = build_suite(root / "suite", out["module_dir"])
    out["policy"] = build_policy(root / "policy", seed=0)                           # PRO-WIC
    out["policy_b"] = build_policy(root / "policy_b", seed=1, conditioning="rewards")  # RiC
    return out
