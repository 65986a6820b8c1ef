"""The judge protocol against a REAL OpenAI-compatible server: `transformers serve` with the bundled
SmolLM2-135M on 127.0.0.1 (started once for the module). A 135M judge gives poor verdicts: these tests
check the protocol (both orders, counts, malformed replies, intervals, cache, key errors), not the verdicts.
Slow: converting SmolLM2 and starting the server take about a minute on 2 cores."""

from __future__ import annotations

import json
import os

import pytest

from judge_server import KeyCheckingProxy, transformers_serve
from pro_lib import judge

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Tell me a joke about cats.", "How do I boil an egg?"]
POLICY = ["The capital of France is Paris.", "Why did the cat sit on the computer? To keep an eye on the mouse.",
          "Put the egg in boiling water for nine minutes."]
REFERENCE = ["Paris.", "Cats are animals.", "Boil it."]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    """(base_url, model id) of `transformers serve` with the bundled SmolLM2 (converted once for the module)."""
    home = tmp_path_factory.mktemp("pro-home")
    old = os.environ.get("PRO_HOME")
    os.environ["PRO_HOME"] = str(home)
    try:
        from pro_lib.policy import bundled_smollm2_path

        folder = bundled_smollm2_path()
    finally:
        if old is None:
            os.environ.pop("PRO_HOME", None)
        else:
            os.environ["PRO_HOME"] = old
    with transformers_serve(folder, log_path=home / "serve.log") as (url, model):
        yield url, model


def _files(tmp_path):
    def write(name, rows):
        p = tmp_path / name
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(p)

    return (write("prompts.jsonl", [{"prompt": p} for p in PROMPTS]),
            write("policy.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, POLICY)]),
            write("reference.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, REFERENCE)]))


def test_pairwise_length_controlled_single_and_cache(smollm2_server, tmp_path):
    url, model = smollm2_server
    prompts, pol, ref = _files(tmp_path)
    cfg = judge.JudgeConfig(policy=pol, reference=ref, prompts=prompts, base_url=url, model=model,
                            modes=["pairwise", "single"], explain=False, max_tokens=8, concurrency=2,
                            bootstrap=200, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
    m = judge.judge_eval(cfg)
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    n = len(PROMPTS)
    pw = ev["pairwise"]
    assert m["judge/requests"] == 2 * n + 2 * n and m["judge/cache_hits"] == 0
    assert pw["judgements"] == 2 * n
    valid = pw["wins"] + pw["ties"] + pw["losses"]
    assert valid + pw["malformed"] == 2 * n  # every reply is a verdict or counted as malformed
    rows = [json.loads(x) for x in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * n and all(isinstance(r["reply"], str) for r in rows)
    assert any(r["reply"].strip() for r in rows)  # the server generated text
    assert sum(r["policy_first"] for r in rows if r["kind"] == "pairwise") == n  # both orders of every prompt
    if valid:
        assert 0.0 <= pw["win_rate"] <= 1.0 and 0.0 < pw["lc_win_rate"] < 1.0
    else:
        assert pw["win_rate"] is None
    single = {s["answers"]: s for s in ev["single"]}
    assert set(single) == {"policy", "reference"}
    for s in single.values():
        assert s["judgements"] == n and 0 <= s["malformed"] <= n
        assert s["mean_score"] is None or 1.0 <= s["mean_score"] <= 10.0
    assert f"{pw['malformed']}/{2 * n}" in (tmp_path / "out" / "judge_report.md").read_text()
    # a rerun costs nothing: every reply from the cache, the same numbers
    cfg.output_dir = str(tmp_path / "out2")
    again = judge.judge_eval(cfg)
    assert again["judge/requests"] == 0 and again["judge/cache_hits"] == 4 * n
    ev2 = json.loads((tmp_path / "out2" / "eval.json").read_text())
    assert ev2["pairwise"] == pw and ev2["single"] == ev["single"]


def test_per_objective_rubrics_through_a_key_checking_proxy(smollm2_server, tmp_path):
    """transformers serve checks no key: a loopback proxy that does fronts it (tests/judge_server.py)."""
    from pro_lib.suite import RewardSuite

    url, model = smollm2_server
    prompts, pol, ref = _files(tmp_path)
    with KeyCheckingProxy(url.removesuffix("/v1"), "sk-right") as proxy:
        base = proxy.url + "/v1"
        cfg = judge.JudgeConfig(policy=pol, reference=ref, prompts=prompts, base_url=base, model=model,
                                modes=["objectives"], objectives=["helpful", "humor"], explain=False, max_tokens=8,
                                bootstrap=100, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
        with pytest.raises(judge.JudgeError, match=rf"{base} refused the API key .*HTTP 401\): Incorrect API key"):
            judge.judge_eval(cfg, api_key="sk-wrong")
        suite = RewardSuite.from_functions({"helpful": lambda ps, rs: [float(len(r)) for r in rs],
                                            "humor": lambda ps, rs: [float("cat" in r) for r in rs]})
        judge.judge_eval(cfg, api_key="sk-right", suite=suite)
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    per = ev["objectives"]["per_objective"]
    assert set(per) == {"helpful", "humor"}
    for name, s in per.items():
        assert s["rubric"] == name and s["judgements"] == 2 * len(PROMPTS)
        ag = s["agreement"]
        assert ag["prompts"] == len(PROMPTS) and 0 <= ag["decisive_prompts"] <= len(PROMPTS)
        assert ag["agreement"] is None or 0.0 <= ag["agreement"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert {r["rubric"] for r in rows} == {"helpful", "humor"}
