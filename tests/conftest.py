"""Shared fixtures: tiny models built from configs (seconds on a CPU), the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_pro_home(tmp_path, monkeypatch):
    """Each test gets its own PRO_HOME and MLflow store, and few threads."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("PRO_HOME", str(tmp_path / ".pro"))
    if "MLFLOW_TRACKING_URI" not in os.environ or os.environ.get("PRO_TEST_KEEP_MLFLOW_URI") != "1":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / '.pro' / 'mlflow.db'}")


def _tiny_tokenizer():
    from transformers import AutoTokenizer

    from pro_lib.models import bundled_minilm_path

    return AutoTokenizer.from_pretrained(str(bundled_minilm_path()))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the MiniLM tokenizer, saved as a normal model folder."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tok = _tiny_tokenizer()
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    path = tmp_path_factory.mktemp("tiny_encoder")
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory) -> Path:
    """A tiny BERT sequence classifier with one logit (an untrained reward model)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tok = _tiny_tokenizer()
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    path = tmp_path_factory.mktemp("tiny_reward")
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present in the project workspace)")
    return SHARED_DATA

