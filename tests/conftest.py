"""Shared fixtures: tiny models built from configs (seconds on a CPU), the shared data folder, and the
fixtures of tests/helpers (services, the explorer's tiny models, the browser) for every test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import REPO, SHARED_DATA, require  # noqa: F401 (REPO, SHARED_DATA: importable as before)
from helpers.browser import browser  # noqa: F401 (fixture)
from helpers.services import mlflow_env, mlflow_server, s3_endpoint, s3_env  # noqa: F401 (fixtures)
from helpers.ui import tiny_models  # noqa: F401 (fixture)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")



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
        require("shared-data", f"shared data not found at {SHARED_DATA} (only present in the project workspace)")
    return SHARED_DATA

