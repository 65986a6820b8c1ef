"""Moved to tests/helpers/ui.py; this name stays importable for branches written before the move."""

from helpers.ui import (  # noqa: F401
    NAMES, REWARDS_MODULE, build_orchestrator, build_policy, build_reward_model, build_suite, tiny_models)
