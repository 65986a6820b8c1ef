"""Checks of what `pro pipeline run --local` prints (pipelines/progress.py)."""

from __future__ import annotations

import re
from pathlib import Path

MAX_LINES = 60


def check_report(shown: str, log: Path, stages: list[str]) -> None:
    """What a successful quiet run printed: a start and an end line per stage with its time, few lines; the
    log holds KFP's dumps and the stages' own output."""
    lines = shown.splitlines()
    assert len(lines) < MAX_LINES, shown
    for stage in stages:
        assert any(re.search(rf"> {re.escape(stage)}(?!\S).*started", ln) for ln in lines), (stage, shown)
        assert any(re.search(rf"= {re.escape(stage)}(?!\S).*done +\d+:\d\d", ln) for ln in lines), (stage, shown)
    assert "Executing task" not in shown and "Streamed logs" not in shown
    text = log.read_text()
    assert "Executing task" in text and "Streamed logs" in text and len(text.splitlines()) > 3 * len(lines)
