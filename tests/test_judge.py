"""LLM-as-judge protocol (pro_lib/judge.py), fast: loopback OpenAI-compatible servers with known behaviour
(tests/judge_server.py: ScriptedJudge, KeyCheckingProxy) drive the real `openai` client over HTTP.
The same paths against the real `transformers serve` with SmolLM2: tests/test_judge_serve.py (slow)."""

from __future__ import annotations

import json
import re
import socket
import time

import numpy as np
import pytest

from judge_server import KeyCheckingProxy, ScriptedJudge
from pro_lib import judge, judge_client
from pro_lib.errors import ConfigError, DataError

PROMPTS = ["What is the capital of France?", "Tell me a joke.", "How do I boil an egg?", "Name a prime.",
           "Why is the sky blue?", "Say hi."]
SHORT = ["Paris.", "No.", "Boil it.", "2", "Rayleigh.", "Hi"]
LONG = ["The capital of France is Paris, on the Seine.", "Why did the chicken cross the road? To get across.",
        "Put it in boiling water for nine minutes, then cool it.", "Seven is a prime number.",
        "Air scatters blue light more than red light (Rayleigh scattering).", "Hello there, nice to meet you!"]


def _answers_between(messages) -> tuple[str, str]:
    text = messages[-1]["content"]
    a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A", text, re.S).group(1)
    b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B", text, re.S).group(1)
    return a, b


def always_first(messages):
    if "Assistant A" in messages[-1]["content"]:
        return "Both are fine. [[A]]"
    return "Rating: [[7]]"


def prefers_longer(messages):
    if "Assistant A" not in messages[-1]["content"]:
        return f"Rating: [[{min(10, 1 + len(messages[-1]['content']) // 40)}]]"
    a, b = _answers_between(messages)
    return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"


def client_for(url, tmp_path=None, **kw) -> judge.JudgeClient:
    ep = judge.JudgeEndpoint.resolve(url, "scripted-judge", env={})
    return judge.JudgeClient(ep, cache_dir=(tmp_path / "cache") if tmp_path else None, **kw)


def test_verdict_and_rating_parsing():
    assert judge.parse_verdict("Assistant B explains more. [[B]]") == "B"
    assert judge.parse_verdict("[[ C ]]") == "C"
    assert judge.parse_verdict("I pick [[A]] ... final: [[A]]") == "A"
    assert judge.parse_verdict("[[A]] or maybe [[B]]") is None  # contradictory: malformed, not a guess
    assert judge.parse_verdict("A is better") is None
    assert judge.parse_rating("Rating: [[8]]") == 8.0
    assert judge.parse_rating("[[3]] then [[6.5]]") == 6.5
    assert judge.parse_rating("Rating: [[11]]") is None and judge.parse_rating("eight") is None


def test_length_controlled_win_rate_removes_a_pure_length_advantage():
    rng = np.random.default_rng(0)
    diff = rng.normal(100, 200, 400)  # the policy is usually longer
    wins_by_length = (diff > 0).astype(float)  # and wins exactly when it is longer
    raw = wins_by_length.mean()
    lc = judge.length_controlled_win_rate(wins_by_length, diff)
    assert raw > 0.6 and abs(lc - 0.5) < abs(raw - 0.5) / 2
    quality = (rng.random(400) < 0.8).astype(float)  # wins 80% whatever the length
    assert abs(judge.length_controlled_win_rate(quality, diff) - quality.mean()) < 0.05


def test_pairwise_both_orders_cancel_a_pure_position_bias(tmp_path):
    with ScriptedJudge(always_first) as srv:
        s, recs = judge.judge_pairwise(client_for(srv.url), PROMPTS, LONG, SHORT, n_boot=200)
    assert s["judgements"] == 2 * len(PROMPTS) == len(recs) == srv.requests
    assert s["malformed"] == 0 and s["win_rate"] == 0.5
    assert s["first_position_rate"] == 1.0 and s["order_consistency"] == 0.0
    assert s["wins"] == s["losses"] == len(PROMPTS) and s["ties"] == 0
    assert {r["policy_first"] for r in recs} == {True, False}


def test_pairwise_win_rate_and_length_control_with_a_length_loving_judge(tmp_path):
    with ScriptedJudge(prefers_longer) as srv:
        s, _ = judge.judge_pairwise(client_for(srv.url), PROMPTS, LONG, SHORT, n_boot=200)
    assert s["win_rate"] == 1.0 and s["first_position_rate"] == 0.5 and s["order_consistency"] == 1.0
    lo, hi = s["win_rate_ci"]
    assert lo == hi == 1.0
    assert s["lc_win_rate"] is not None and s["lc_win_rate"] < s["win_rate"]
    assert s["lc_win_rate_ci"][0] is not None


def test_malformed_replies_are_counted_and_reported(tmp_path):
    with ScriptedJudge(lambda m: "They are both quite good answers.") as srv:
        c = client_for(srv.url)
        s, recs = judge.judge_pairwise(c, PROMPTS, LONG, SHORT, n_boot=50)
        g, grecs, scores = judge.judge_single(c, PROMPTS, LONG, n_boot=50)
    assert s["malformed"] == s["judgements"] == 12 and s["win_rate"] is None and s["prompts_judged"] == 0
    assert all(r["malformed"] and r["reply"] for r in recs)
    assert g["malformed"] == 6 and g["mean_score"] is None and np.isnan(scores).all()


def test_single_answer_grades_with_interval(tmp_path):
    with ScriptedJudge(prefers_longer) as srv:
        s, recs, scores = judge.judge_single(client_for(srv.url), PROMPTS, LONG, n_boot=200)
    assert s["malformed"] == 0 and len(recs) == len(PROMPTS)
    assert s["mean_score"] == pytest.approx(scores.mean())
    lo, hi = s["mean_score_ci"]
    assert lo <= s["mean_score"] <= hi


def test_retries_transient_errors_with_backoff_and_names_a_refusal(tmp_path):
    with ScriptedJudge(always_first, fail_first=2, fail_status=503) as srv:
        c = client_for(srv.url, retries=3, backoff=0.01)
        reply, cached = c.complete(judge.single_messages("q", "a", "x"))
    assert reply == "Rating: [[7]]" and not cached and c.stats["retries"] == 2 and srv.requests == 3
    with ScriptedJudge(always_first, fail_first=1, fail_status=400, fail_body="unknown model 'gpt-9'") as srv:
        c = client_for(srv.url, retries=3, backoff=0.01)
        with pytest.raises(judge.JudgeError, match=r"HTTP 400\): unknown model 'gpt-9'"):
            c.complete(judge.single_messages("q", "a", "x"))
    assert srv.requests == 1  # a refusal is not retried
    with ScriptedJudge(always_first, fail_first=9, fail_status=503) as srv:
        c = client_for(srv.url, retries=1, backoff=0.01)
        with pytest.raises(judge.JudgeError, match="failed 2 times .*rerun to continue"):
            c.complete(judge.single_messages("q", "a", "x"))


def test_cache_makes_a_rerun_free_and_concurrency_keeps_the_order(tmp_path):
    with ScriptedJudge(prefers_longer) as srv:
        first, _ = judge.judge_pairwise(client_for(srv.url, tmp_path, concurrency=4), PROMPTS, LONG, SHORT, n_boot=50)
        n = srv.requests
        c = client_for(srv.url, tmp_path, concurrency=4)
        again, recs = judge.judge_pairwise(c, PROMPTS, LONG, SHORT, n_boot=50)
        assert srv.requests == n == 12 and c.stats == {"requests": 0, "cache_hits": 12, "retries": 0}
        assert all(r["cached"] for r in recs) and again == first
        # another rubric, judge model or answer is another key
        other = judge.JudgeClient(judge.JudgeEndpoint.resolve(srv.url, "other-judge", env={}),
                                  cache_dir=tmp_path / "cache")
        other.complete(judge.pairwise_messages(PROMPTS[0], LONG[0], SHORT[0], judge.DEFAULT_RUBRICS["general"]))
        c.complete(judge.pairwise_messages(PROMPTS[0], LONG[0], SHORT[0], judge.DEFAULT_RUBRICS["humor"]))
        assert srv.requests == n + 2


def test_unreachable_endpoint_fails_fast_naming_the_url():
    port = _closed_port()
    c = client_for(f"http://127.0.0.1:{port}/v1")
    t0 = time.time()
    with pytest.raises(judge.JudgeUnavailable, match=rf"http://127.0.0.1:{port}/v1 is not reachable"):
        c.check()
    assert time.time() - t0 < 15
    # a server that accepts the connection and never answers: the check's timeout, not the request's
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(8)
        url = f"http://127.0.0.1:{hang.getsockname()[1]}/v1"
        c = client_for(url, timeout=600)
        t0 = time.time()
        with pytest.raises(judge.JudgeUnavailable, match=re.escape(url)):
            c.check()
        assert time.time() - t0 < 15


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_key_names_the_endpoint_reply(tmp_path):
    with ScriptedJudge(always_first) as srv, KeyCheckingProxy(srv.url.removesuffix("/v1"), "sk-right") as proxy:
        bad = judge.JudgeClient(judge.JudgeEndpoint.resolve(proxy.url + "/v1", "scripted-judge",
                                                            env={judge.ENV_API_KEY: "sk-wrong"}))
        with pytest.raises(judge.JudgeError, match=r"refused the API key \(key from \$PRO_JUDGE_API_KEY; HTTP 401\): "
                                                   r"Incorrect API key provided: sk-w\*\*\*\*"):
            bad.check()
        good = judge.JudgeClient(judge.JudgeEndpoint.resolve(proxy.url + "/v1", "scripted-judge", api_key="sk-right"))
        good.check()
        assert good.complete(judge.single_messages("q", "a", "x"))[0] == "Rating: [[7]]"


def test_endpoint_settings_flags_env_file_and_secret(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no judge endpoint: pass --base-url"):
        judge.JudgeEndpoint.resolve(None, "m", env={})
    with pytest.raises(ConfigError, match="no judge model"):
        judge.JudgeEndpoint.resolve("http://x/v1", None, env={})
    with pytest.raises(ConfigError, match="not an http"):
        judge.JudgeEndpoint.resolve("api.openai.com", "m", env={})
    env = {judge.ENV_BASE_URL: "http://h:1/v1/", judge.ENV_MODEL: "gpt-4o"}
    ep = judge.JudgeEndpoint.resolve(env=env)
    assert (ep.base_url, ep.model, ep.api_key) == ("http://h:1/v1", "gpt-4o", judge.NO_KEY)
    key = tmp_path / "api-key"
    key.write_text("sk-file\n")
    assert judge.JudgeEndpoint.resolve(env={**env, judge.ENV_API_KEY_FILE: str(key)}).api_key == "sk-file"
    both = {**env, judge.ENV_API_KEY_FILE: str(key), judge.ENV_API_KEY: "sk-env"}
    assert judge.JudgeEndpoint.resolve(env=both).api_key == "sk-env"
    assert judge.JudgeEndpoint.resolve(env=both, api_key="sk-flag").api_key == "sk-flag"
    assert "sk-" not in repr(judge.JudgeEndpoint.resolve(env=both))
    secret = tmp_path / "secret"
    secret.write_text("sk-secret")
    monkeypatch.setattr(judge_client, "SECRET_KEY_FILE", str(secret))
    assert judge.JudgeEndpoint.resolve(env=env).api_key == "sk-secret"
    with pytest.raises(ConfigError, match="does not exist"):
        judge.JudgeEndpoint.resolve(env={**env, judge.ENV_API_KEY_FILE: str(tmp_path / "nope")})


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_answer_and_prompt_files_name_the_bad_line(tmp_path):
    good = _write_jsonl(tmp_path / "a.jsonl", [{"instruction": p, "output": a} for p, a in zip(PROMPTS, LONG)])
    assert judge.load_answer_file(good, PROMPTS[::-1]) == LONG[::-1]
    with pytest.raises(DataError, match=r"no answer for 1 of the 7 prompts"):
        judge.load_answer_file(good, PROMPTS + ["new?"])
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        judge.load_answer_file(str(bad), ["a"])
    nofield = _write_jsonl(tmp_path / "c.jsonl", [{"prompt": "a", "text": "b"}])
    with pytest.raises(DataError, match=r"c.jsonl:1: no text field 'answer'"):
        judge.load_answer_file(nofield, ["a"])
    assert judge.load_prompt_file(_write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])) == PROMPTS


def test_judge_eval_writes_report_and_logs_to_mlflow(tmp_path):
    import mlflow

    from pro_lib import tracking
    from pro_lib.suite import RewardSuite

    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    pol = _write_jsonl(tmp_path / "pol.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, LONG)])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, SHORT)])
    suite = RewardSuite.from_functions({"helpful": lambda ps, rs: [float(len(r)) for r in rs],
                                        "humor": lambda ps, rs: [-float(len(r)) for r in rs]})
    with ScriptedJudge(prefers_longer) as srv:
        cfg = judge.JudgeConfig(policy=pol, reference=ref, prompts=prompts, base_url=srv.url, model="scripted-judge",
                                modes=["pairwise", "single", "objectives"], bootstrap=100,
                                cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
        with tracking.stage_run("eval_judge", {}) as run:
            m = judge.judge_eval(cfg, suite=suite)
    assert m["judge/win_rate"] == 1.0 and m["judge/requests"] == 12 + 12 + 2 * 12
    # the length-loving judge agrees with the length reward (helpful) and never with its opposite (humor)
    assert m["judge/helpful/agreement"] == 1.0 and m["judge/humor/agreement"] == 0.0
    out = tmp_path / "out"
    ev = json.loads((out / "eval.json").read_text())
    assert ev["pairwise"]["judgements"] == 12 and len(ev["single"]) == 2
    rows = [json.loads(x) for x in (out / "judgements.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and all(r["prompt"] in PROMPTS for r in rows)
    report = (out / "judge_report.md").read_text()
    assert "| 100.0% |" in report and "malformed" in report and "helpful" in report
    got = mlflow.get_run(run.info.run_id)
    assert got.data.metrics["judge/win_rate"] == 1.0
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "judge")}
    assert {"judge/judgements.json", "judge/judge_report.md"} <= arts


def test_cli_eval_judge(tmp_path, capsys):
    from pro_lib.cli import main

    pol = _write_jsonl(tmp_path / "pol.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, LONG)])
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, SHORT)])
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    with ScriptedJudge(always_first) as srv:
        main(["eval", "judge", "--policy", pol, "--reference", ref, "--prompts", prompts, "--base-url", srv.url,
              "--model", "scripted-judge", "--bootstrap", "50", "--output-dir", str(tmp_path / "out"),
              "--no-mlflow", "--api-key", "sk-never-logged"])
    out = capsys.readouterr().out
    assert "LLM-as-judge evaluation" in out and "| 50.0% |" in out and "1.00" in out  # first-position rate
    assert "sk-never-logged" not in (tmp_path / "out" / "eval.json").read_text()
    with pytest.raises(ConfigError, match="need --reference"):
        judge.judge_eval(judge.JudgeConfig(policy=pol, prompts=prompts, base_url=srv.url, model="m"))


def test_pro_wic_judge_stage_is_off_by_default_and_alone_gets_the_key_as_a_file():
    """The compiled pro_wic: the judge task runs only under `judge == true` (default false), and only it
    mounts the optional Secret pro-judge, as a file where pro_lib.judge reads it (never as env)."""
    import posixpath
    from pathlib import Path

    import yaml

    spec, platform = list(yaml.safe_load_all(
        (Path(__file__).resolve().parents[1] / "pipelines" / "pro_wic.yaml").read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["judge"]["defaultValue"] is False
    conds = [t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()
             if "judge-evaluate" in t.get("componentRef", {}).get("name", "")]
    assert len(conds) == 1
    parent = [t for c in [spec["root"], *spec["components"].values()] for t in c.get("dag", {}).get("tasks", {}).values()
              if t.get("triggerPolicy", {}).get("condition")]
    assert [t["triggerPolicy"]["condition"] for t in parent] == ["inputs.parameter_values['pipelinechannel--judge'] == true"]
    ex = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {k: v["secretAsVolume"] for k, v in ex.items() if "secretAsVolume" in v}
    assert list(mounted) == ["exec-judge-evaluate"]
    (vol,) = mounted["exec-judge-evaluate"]
    assert vol["secretName"] == "pro-judge" and vol["optional"] is True
    assert vol["mountPath"] == posixpath.dirname(judge.SECRET_KEY_FILE)
    assert all("pro-judge" not in json.dumps(v.get("secretAsEnv", [])) for v in ex.values())
    assert ex["exec-judge-evaluate"]["podMetadata"]["labels"]["pro.ai/judge"] == "true"


def test_weight_response_measured_by_the_judge_with_a_generating_wic_policy(tmp_path):
    """objectives + --weight-response: a tiny WIC policy answers at each corner of the simplex (generated
    here), every corner answer is graded per rubric, and the judge's weight response sits beside the reward
    models' (both via pareto.bootstrap_fronts)."""
    from pro_lib.suite import RewardSuite
    from pro_lib.testing import build_tiny_policy

    names = ["helpful", "humor"]
    policy = build_tiny_policy(tmp_path / "wic", names)
    ref = _write_jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, SHORT)])
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS[:4]])
    suite = RewardSuite.from_functions({"helpful": lambda ps, rs: [float(len(r)) for r in rs],
                                        "humor": lambda ps, rs: [float(r.count("a")) for r in rs]},
                                       stats={"helpful": (0.0, 10.0), "humor": (0.0, 1.0)})
    with ScriptedJudge(prefers_longer) as srv:
        cfg = judge.JudgeConfig(policy=str(policy), reference=ref, prompts=prompts, base_url=srv.url,
                                model="scripted-judge", modes=["objectives"], weight_response=True, bootstrap=50,
                                max_new_tokens=6, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"))
        m = judge.judge_eval(cfg, suite=suite)
    n, k = 4, len(names)
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    wr = ev["objectives"]["weight_response"]
    assert wr["objectives"] == names and wr["judgements"] == k * k * n and wr["malformed"] == 0
    assert wr["prompts_used"] == n and all(v is not None for v in wr["judge"])
    assert len(wr["reward_models"]["value"]) == k
    assert {f"judge/{x}/weight_response" for x in names} <= set(m)
    rows = [json.loads(x) for x in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert {r["answers"] for r in rows if r["kind"] == "single"} == {"corner_helpful", "corner_humor"}
    assert "Weight response" in (tmp_path / "out" / "judge_report.md").read_text()
    assert len((tmp_path / "out" / "answers_policy.jsonl").read_text().splitlines()) == n
