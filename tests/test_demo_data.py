"""The shipped demo preference set: schema, balance, no duplicates, held-out prompts, reproducible."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pro_lib" / "demo_data"
KEYS = {"prompt", "chosen", "rejected", "source"}
SOURCES = {"helpful", "harmless", "humor"}


def _rows() -> list[dict]:
    rows = []
    for lineno, line in enumerate((DEMO / "preferences.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"preferences.jsonl line {lineno} is blank"
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            pytest.fail(f"preferences.jsonl line {lineno} is not JSON: {exc}")
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return _rows()


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_file_parses_with_exact_keys_and_known_sources(rows):
    assert 500 <= len(rows) <= 600
    for i, r in enumerate(rows, 1):
        assert set(r) == KEYS, f"line {i}: keys {sorted(r)}"
        assert r["source"] in SOURCES, f"line {i}: source {r['source']!r}"
        for k in KEYS:
            assert isinstance(r[k], str) and r[k].strip(), f"line {i}: empty or non-string {k}"
            assert r[k] == r[k].strip(), f"line {i}: {k} has surrounding whitespace"


def test_sources_are_balanced(rows):
    counts = Counter(r["source"] for r in rows)
    assert set(counts) == SOURCES
    assert min(counts.values()) >= 90, counts
    assert max(counts.values()) - min(counts.values()) <= 0.15 * len(rows), counts


def test_no_duplicates_and_chosen_differs_from_rejected(rows):
    mod = _load_script()
    plain = mod.build_plain()  # the hand-written pairs: every prompt and reply once
    prompts = Counter(r["prompt"].strip().lower() for r in plain)
    assert [p for p, n in prompts.items() if n > 1] == []
    responses = Counter(t for r in plain for t in (r["chosen"], r["rejected"]))
    assert [t for t, n in responses.items() if n > 1] == []
    pairs = Counter((r["prompt"], r["chosen"], r["rejected"]) for r in rows)
    assert max(pairs.values()) == 1
    assert [r["prompt"] for r in rows if r["chosen"].strip() == r["rejected"].strip()] == []


def test_styles_open_every_preferred_reply_and_a_prompt_pairs_two_styles_at_most(rows):
    mod = _load_script()
    for i, r in enumerate(rows, 1):
        assert r["chosen"].startswith(mod.OPEN[r["source"]] + " "), f"line {i}: {r['chosen'][:40]!r}"
    by_prompt: dict[str, list[str]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], []).append(r["source"])
    assert max(len(v) for v in by_prompt.values()) == 2
    assert all(len(set(v)) == len(v) for v in by_prompt.values())  # a prompt's two pairs: two styles
    # the styles are predicted by the weights, not the prompt: each style has prompts of another objective
    two = [v for v in by_prompt.values() if len(v) == 2]
    assert {s for v in two for s in v} == SOURCES
    # a risky prompt never gets a compliant reply preferred: its one pair is the cautious one
    risky = {r["prompt"] for r in mod.build_plain() if r["source"] == "harmless"}
    assert all(by_prompt[p] == ["harmless"] for p in risky)


def test_responses_are_short(rows):
    # 1-4 sentences: far below the tokenizer limits used by the demo reward models.
    longest = max(len(t) for r in rows for t in (r["chosen"], r["rejected"]))
    assert longest < 500, longest
    assert max(len(r["prompt"]) for r in rows) < 200


def test_loads_through_pro_lib_demo_spec(rows):
    from pro_lib.data import demo_data_path, load_pairs

    assert demo_data_path().read_bytes() == (DEMO / "preferences.jsonl").read_bytes()
    pairs = load_pairs("demo")
    assert len(pairs) == len(rows)  # nothing skipped as chosen == rejected
    assert Counter(p.source for p in pairs) == Counter(r["source"] for r in rows)


def test_held_out_prompts_file():
    lines = (DEMO / "prompts.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30
    assert all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == 30
    train = {r["prompt"].lower() for r in _rows()}
    assert [p for p in lines if p.lower() in train] == []


def test_committed_file_matches_generator_and_is_deterministic(tmp_path):
    mod = _load_script()
    rows_a, rows_b = mod.build(), mod.build()
    assert rows_a == rows_b
    assert mod.render(rows_a) == (DEMO / "preferences.jsonl").read_text(encoding="utf-8"), \
        "preferences.jsonl is stale: run python scripts/make_demo_data.py"
    assert mod.main(["--check"]) == 0
    out = tmp_path / "p.jsonl"
    assert mod.main(["--out", str(out), "--seed", "7"]) == 0
    other = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["chosen"] for r in other) == sorted(r["chosen"] for r in rows_a)
    assert mod.main(["--out", str(out), "--check"]) == 1  # seed 7 output differs from the default


def test_generator_rejects_bad_blocks():
    mod = _load_script()
    with pytest.raises(ValueError, match="chosen == rejected"):
        mod._check_blocks({"helpful": [("q?", "same", "same")]})
    with pytest.raises(ValueError, match="duplicates"):
        mod._check_blocks({"helpful": [("Q?", "a", "b")], "humor": [("q?", "c", "d")]})
    with pytest.raises(ValueError, match="non-empty"):
        mod._check_blocks({"humor": [("q?", "", "d")]})
