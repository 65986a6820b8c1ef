"""LLM-as-judge evaluation against any OpenAI-compatible chat endpoint (the paper's Table 5 kind of result).

The policy under test is compared with a reference on a prompt set by a judge model behind an
OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenAI, a hosted provider, vLLM, ``transformers
serve``), through the ``openai`` client:

- **pairwise** (AlpacaEval 2 / Arena-Hard): every prompt is judged twice, the policy's answer first
  and then second, so position bias cancels in the win rate and is reported (the share of decisive
  verdicts that picked the first answer; 0.5 = none). Ties count half. The **length-controlled** win
  rate is AlpacaEval 2's: a logistic regression of the policy's outcome on ``tanh(length
  difference / its std)``; the LC win rate is its prediction at equal length, ``sigmoid(intercept)``.
- **single** (MT-Bench): each answer graded 1-10 on its own.
- **objectives** (PRO's angle): one rubric per objective (helpful, harmless, humor, ...). Pairwise
  verdicts per rubric set beside the reward models' (agreement rate), and, for a weights-in-context
  policy, the weight response measured by the judge (answers at each corner of the simplex graded
  per rubric; :func:`pro_lib.pareto.weight_response`) beside the reward models' own.

Every number has a 95% percentile-bootstrap interval over prompts (the helpers of
``pro_lib.evaluation`` and ``pro_lib.pareto``). Judge replies that do not hold a verdict in the asked
format are counted as malformed and reported (never dropped silently). Calls run ``concurrency`` at a
time, transient failures (connection, 429, 5xx) are retried with exponential backoff, and every reply
is cached on disk keyed by the judge model, its sampling settings and the exact messages (rubric,
prompt and both answers), so a rerun makes no calls.

Endpoint settings: ``--base-url`` / ``PRO_JUDGE_BASE_URL``, ``--model`` / ``PRO_JUDGE_MODEL``; the key
from ``PRO_JUDGE_API_KEY``, else the file ``--api-key-file`` / ``PRO_JUDGE_API_KEY_FILE`` / the mounted
Kubernetes Secret ``/var/run/secrets/pro-judge/api-key``, else none (local servers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pro_lib.config import field
from pro_lib.errors import ConfigError, DataError
from pro_lib.judge_client import (CHECK_TIMEOUT_S, ENV_API_KEY, ENV_API_KEY_FILE, ENV_BASE_URL, ENV_MODEL,  # noqa: F401
                                  NO_KEY, SECRET_KEY_FILE, JudgeClient, JudgeEndpoint, JudgeError,
                                  JudgeUnavailable)
from pro_lib.judge_protocol import (DEFAULT_RUBRICS, judge_pairwise, judge_single,  # noqa: F401
                                    length_controlled_win_rate, load_answer_file, load_prompt_file, load_rubrics,
                                    objective_agreement, pairwise_messages, parse_rating, parse_verdict,
                                    per_prompt_outcomes, rubric_text, single_messages, is_answer_file,
                                    wic_objectives, generate_answers)

log = logging.getLogger(__name__)

MODES = ("pairwise", "single", "objectives")
JUDGEMENTS_FILE = "judgements.jsonl"
REPORT_FILE = "judge_report.md"


# -- the stage ---------------------------------------------------------------------------------------
@dataclass
class JudgeConfig:
    """LLM-as-judge evaluation: a policy against a reference on a prompt set, judged by any
    OpenAI-compatible chat endpoint (pairwise win rate both orders + length-controlled, 1-10 grades,
    per-objective rubrics vs the reward models)."""

    policy: str | None = field(None, help="the policy under test: a JSONL of its answers ({prompt, answer}), a "
                                          "policy folder / models:/ ref / 'smollm2' (generated here), or a "
                                          "pro-endpoint URL (http://...)")
    reference: str | None = field(None, help="the reference: a JSONL of answers, or a policy as for --policy "
                                             "(needed for pairwise and objectives)")
    prompts: str | None = field(None, help="prompt set: a JSONL with a 'prompt' (or 'instruction') per line "
                                           "(default: the held-out split of --data)")
    data: list[str] = field(default_factory=lambda: ["demo"], help="preference data whose held-out split gives "
                                                                     "the prompts when --prompts is not given")
    split: str = field("eval", help="which side of --data's split holds the prompts: eval (held out) or all "
                                    "(--data is already a held-out file, as in the pipelines)", choices=["eval", "all"])
    eval_fraction: float = field(0.1, help="held-out fraction of --data (as `pro data prepare`)")
    split_seed: int = field(0, help="split seed of --data (as `pro data prepare`)")
    max_prompts: int | None = field(32, help="prompts to judge: a seeded sample stratified by source (none: all)")
    seed: int = field(0, help="seed of the prompt sample and of the bootstrap")
    base_url: str | None = field(None, help=f"judge endpoint, OpenAI-compatible (env {ENV_BASE_URL}), e.g. "
                                            "https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    model: str | None = field(None, help=f"judge model name at the endpoint (env {ENV_MODEL})")
    api_key_file: str | None = field(None, help=f"file holding the judge's API key (env {ENV_API_KEY_FILE}; "
                                                f"default: ${ENV_API_KEY}, else the mounted Secret {SECRET_KEY_FILE})")
    modes: list[str] = field(default_factory=lambda: ["pairwise", "single"],
                             help=f"what to run: {', '.join(MODES)}")
    objectives: list[str] = field(default_factory=list, help="objectives for per-objective judging (default: the "
                                                             "suite's, else the WIC policy's)")
    rubrics: str | None = field(None, help="YAML/JSON file: objective -> rubric text (adds to / replaces the "
                                           "built-in helpful, harmless, humor, general)")
    suite: str | None = field(None, help="reward suite folder: the reward models the per-objective verdicts are "
                                         "compared with (agreement) and the weight response's reward-model side")
    weight_response: bool = field(False, help="objectives mode with a WIC policy: grade its answers at each "
                                              "corner of the simplex per rubric (the judge's weight response)")
    weights: str | None = field(None, help="weights for a WIC policy's answers (default: its orchestrator's, "
                                           "else equal)")
    explain: bool = field(True, help="ask the judge for a short explanation before its verdict (off: verdict only, "
                                     "fewer tokens)")
    max_tokens: int = field(512, help="max tokens of a judge reply")
    temperature: float = field(0.0, help="judge sampling temperature", range=((0, True), None))  # 0: greedy
    concurrency: int = field(4, help="judge requests in flight at once")
    retries: int = field(3, help="retries of a failed request (connection errors, 429, 5xx), exponential backoff")
    backoff: float = field(1.0, help="first retry delay in seconds (doubles each retry)")
    request_timeout: float = field(120.0, help="seconds one judge request may take")
    cache_dir: str | None = field(None, help="judgement cache (default $PRO_HOME/judge-cache); a rerun asks "
                                             "nothing that is cached")
    max_new_tokens: int = field(128, help="max new tokens of generated answers (greedy)")
    gen_batch_size: int = field(8, help="generation batch size")
    bootstrap: int = field(1000, help="bootstrap resamples over prompts for the 95 percent intervals (0: none)")
    device: str | None = field(None, help="device for generating answers (default: cuda when available)")
    output_dir: str = field("runs/judge", help="output folder: eval.json, judge_report.md, judgements.jsonl, answers")


def _load_prompts(cfg: JudgeConfig) -> tuple[list[str], dict]:
    from pro_lib.data import load_split_prompts, source_mix, stratified_sample

    if cfg.prompts:
        prompts = load_prompt_file(cfg.prompts)
        if cfg.max_prompts:
            prompts = stratified_sample(prompts, cfg.max_prompts, sources=[None] * len(prompts), seed=cfg.seed)
        return prompts, {"prompts": cfg.prompts, "source_mix": source_mix([None] * len(prompts))}
    prompts, info = load_split_prompts(cfg.data, split=cfg.split, eval_fraction=cfg.eval_fraction,
                                       split_seed=cfg.split_seed, max_prompts=cfg.max_prompts, seed=cfg.seed)
    return prompts, {"data": list(cfg.data), "split": cfg.split, **info}


def _answers(spec: str, prompts: Sequence[str], cfg: JudgeConfig, **kw) -> list[str]:
    if is_answer_file(spec):
        return load_answer_file(spec, prompts)
    if spec.endswith((".jsonl", ".json")) and not Path(spec).exists():
        raise DataError(f"answer file {spec} does not exist")
    return generate_answers(spec, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size,
                            weights=cfg.weights, device=cfg.device, **kw)


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def _fmt_ci(ci, pct: bool = False) -> str:
    return f"[{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]" if ci and ci[0] is not None else "n/a"


def format_report(result: Mapping[str, Any]) -> str:
    """The Markdown report: every number with its 95% interval and the malformed-reply counts."""
    j = result["judge"]
    lines = [f"# LLM-as-judge evaluation\n",
             f"Judge: `{j['model']}` at {j['base_url']} (temperature {j['temperature']}, explanation "
             f"{'on' if j['explain'] else 'off'}). Policy: `{result['policy']}`; reference: "
             f"`{result.get('reference')}`; {result['n_prompts']} prompts. Intervals: 95% percentile bootstrap "
             f"over prompts ({result['bootstrap']} resamples). Judge calls: {j['requests']} "
             f"({j['cache_hits']} answered from the cache, {j['retries']} retries).\n"]
    pw = result.get("pairwise")
    if pw:
        lines += ["## Pairwise (both answer orders)\n",
                  "| win rate | 95% CI | LC win rate | 95% CI | wins / ties / losses | first-position rate "
                  "(0.5 = no bias) | order consistency | malformed |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {_fmt(pw['win_rate'], True)} | {_fmt_ci(pw['win_rate_ci'], True)} | "
                  f"{_fmt(pw['lc_win_rate'], True)} | {_fmt_ci(pw['lc_win_rate_ci'], True)} | "
                  f"{pw['wins']} / {pw['ties']} / {pw['losses']} | {_fmt(pw['first_position_rate'])} "
                  f"{_fmt_ci(pw['first_position_rate_ci'])} | {_fmt(pw['order_consistency'])} | "
                  f"{pw['malformed']}/{pw['judgements']} |",
                  f"\nMean answer length (characters): policy {_fmt(pw['mean_length_policy'])}, reference "
                  f"{_fmt(pw['mean_length_reference'])}.\n"]
    sg = result.get("single")
    if sg:
        lines += ["## Single-answer grades (1-10)\n", "| answers | mean | 95% CI | malformed |", "|---|---|---|---|"]
        lines += [f"| {s['answers']} | {_fmt(s['mean_score'])} | {_fmt_ci(s['mean_score_ci'])} | "
                  f"{s['malformed']}/{s['judgements']} |" for s in sg]
        lines.append("")
    ob = result.get("objectives")
    if ob:
        lines += ["## Per-objective judging (one rubric per objective)\n",
                  "| objective | judge win rate | 95% CI | agreement with the reward model | 95% CI | "
                  "decisive prompts | malformed |", "|---|---|---|---|---|---|---|"]
        for name, o in ob["per_objective"].items():
            ag = o.get("agreement") or {}
            lines.append(f"| {name} | {_fmt(o['win_rate'], True)} | {_fmt_ci(o['win_rate_ci'], True)} | "
                         f"{_fmt(ag.get('agreement'), True)} | {_fmt_ci(ag.get('agreement_ci'), True)} | "
                         f"{ag.get('decisive_prompts', 'n/a')} | {o['malformed']}/{o['judgements']} |")
        wr = ob.get("weight_response")
        if wr:
            lines += ["\n### Weight response (all the weight on an objective minus the weight elsewhere)\n",
                      "| objective | judge (1-10 points) | 95% CI | reward models (z) | 95% CI |", "|---|---|---|---|---|"]
            for k, name in enumerate(wr["objectives"]):
                rm = wr.get("reward_models") or {}
                lines.append(f"| {name} | {_fmt(wr['judge'][k])} | {_fmt_ci(wr['judge_ci'][k])} | "
                             f"{_fmt((rm.get('value') or [None] * (k + 1))[k])} | "
                             f"{_fmt_ci((rm.get('ci') or [None] * (k + 1))[k])} |")
            lines.append(f"\nPrompts with every corner graded: {wr['prompts_used']} of {wr['prompts']} "
                         f"(malformed grades: {wr['malformed']}/{wr['judgements']}).")
        lines.append("")
    return "\n".join(lines)


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """Flat numeric metrics (MLflow, KFP) of a :func:`judge_eval` result."""
    m: dict[str, float] = {"judge/prompts": result["n_prompts"], "judge/requests": result["judge"]["requests"],
                           "judge/cache_hits": result["judge"]["cache_hits"]}
    pw = result.get("pairwise")
    if pw:
        for key in ("win_rate", "lc_win_rate", "first_position_rate", "order_consistency", "malformed_rate"):
            if pw.get(key) is not None:
                m[f"judge/{key}"] = pw[key]
        for key in ("win_rate", "lc_win_rate"):
            if pw[f"{key}_ci"][0] is not None:
                m[f"judge/{key}_ci_low"], m[f"judge/{key}_ci_high"] = pw[f"{key}_ci"]
    for s in result.get("single") or []:
        if s["mean_score"] is not None:
            m[f"judge/score_{s['answers']}"] = s["mean_score"]
        m[f"judge/score_{s['answers']}_malformed_rate"] = s["malformed_rate"]
    ob = result.get("objectives")
    if ob:
        for name, o in ob["per_objective"].items():
            if o["win_rate"] is not None:
                m[f"judge/{name}/win_rate"] = o["win_rate"]
            if (o.get("agreement") or {}).get("agreement") is not None:
                m[f"judge/{name}/agreement"] = o["agreement"]["agreement"]
        wr = ob.get("weight_response")
        if wr:
            for k, name in enumerate(wr["objectives"]):
                if wr["judge"][k] is not None:
                    m[f"judge/{name}/weight_response"] = wr["judge"][k]
    return {k: float(v) for k, v in m.items()}


def judge_eval(cfg: JudgeConfig, *, api_key: str | None = None, client: JudgeClient | None = None,
               suite=None) -> dict:
    """The ``pro eval judge`` stage. Writes eval.json, judge_report.md, judgements.jsonl and the answers
    into ``output_dir``; logs metrics and the judgements table to the active MLflow run, if any.
    Returns flat metrics."""
    from pro_lib.artifacts import EVAL_FILE
    from pro_lib.io import atomic_dir, pro_home, write_json, write_jsonl

    modes = list(dict.fromkeys(cfg.modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"--modes {bad or modes}: choose from {', '.join(MODES)}")
    if not cfg.policy:
        raise ConfigError("no policy under test: pass --policy (answers JSONL, policy folder / models:/ ref, or URL)")
    if ("pairwise" in modes or "objectives" in modes) and not cfg.reference:
        raise ConfigError("pairwise and objectives judging need --reference (answers JSONL or a policy)")
    if cfg.weight_response and "objectives" not in modes:
        raise ConfigError("--weight-response is part of the objectives mode: add objectives to --modes")
    if client is None:
        endpoint = JudgeEndpoint.resolve(cfg.base_url, cfg.model, api_key=api_key, api_key_file=cfg.api_key_file)
        client = JudgeClient(endpoint, cache_dir=cfg.cache_dir or pro_home() / "judge-cache",
                             concurrency=cfg.concurrency, retries=cfg.retries, backoff=cfg.backoff,
                             timeout=cfg.request_timeout, max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    client.check()  # fail fast (unreachable, wrong key) before generating answers
    rubrics = load_rubrics(cfg.rubrics)
    prompts, prompt_info = _load_prompts(cfg)
    policy_answers = _answers(cfg.policy, prompts, cfg)
    ref_answers = _answers(cfg.reference, prompts, cfg) if cfg.reference else None
    t0 = time.time()
    n_boot = cfg.bootstrap
    records: list[dict] = []
    result: dict[str, Any] = {"policy": cfg.policy, "reference": cfg.reference, "n_prompts": len(prompts),
                              "prompt_info": prompt_info, "modes": modes, "bootstrap": n_boot}
    if "pairwise" in modes:
        s, recs = judge_pairwise(client, prompts, policy_answers, ref_answers, rubric=rubrics["general"],
                                 explain=cfg.explain, n_boot=n_boot, seed=cfg.seed)
        result["pairwise"], records = s, records + recs
    if "single" in modes:
        result["single"] = []
        for who, ans in (("policy", policy_answers), ("reference", ref_answers)):
            if ans is None:
                continue
            s, recs, _ = judge_single(client, prompts, ans, rubric=rubrics["general"], who=who,
                                      explain=cfg.explain, n_boot=n_boot, seed=cfg.seed)
            result["single"].append(s)
            records += recs
    if "objectives" in modes:
        result["objectives"] = _judge_objectives(cfg, client, rubrics, prompts, policy_answers, ref_answers,
                                                 records, suite=suite)
    judge_seconds = time.time() - t0
    result["judge"] = {"base_url": client.endpoint.base_url, "model": client.endpoint.model,
                       "temperature": client.temperature, "max_tokens": client.max_tokens, "explain": cfg.explain,
                       "concurrency": client.concurrency, "seconds": judge_seconds, **client.stats}
    for r in records:
        r["prompt"] = prompts[r["prompt_index"]]
    metrics = metrics_of(result)
    report = format_report(result)
    out = Path(cfg.output_dir)
    with atomic_dir(out) as tmp:
        write_json(tmp / EVAL_FILE, {**result, "metrics": metrics})
        write_jsonl(tmp / JUDGEMENTS_FILE, records)
        write_jsonl(tmp / "answers_policy.jsonl", ({"prompt": p, "answer": a} for p, a in zip(prompts, policy_answers)))
        if ref_answers is not None:
            write_jsonl(tmp / "answers_reference.jsonl", ({"prompt": p, "answer": a}
                                                          for p, a in zip(prompts, ref_answers)))
        (tmp / REPORT_FILE).write_text(report, encoding="utf-8")
    _log_to_mlflow(metrics, records, out)
    malformed = sum(r["malformed"] for r in records)
    if malformed:
        log.warning("%d of %d judge replies were malformed (no verdict in the asked format): counted in the "
                    "report, excluded from the rates", malformed, len(records))
    return metrics


def _judge_objectives(cfg: JudgeConfig, client: JudgeClient, rubrics: Mapping[str, str], prompts, policy_answers,
                      ref_answers, records: list[dict], *, suite=None) -> dict:
    from pro_lib.wic.common import load_suite

    if suite is None and cfg.suite:
        suite = load_suite(cfg.suite, what="eval judge")
    names = list(cfg.objectives) or (list(suite.names) if suite is not None else None) or wic_objectives(cfg.policy)
    if not names:
        raise ConfigError("objectives judging needs the objectives: pass --objectives helpful,harmless or --suite")
    if suite is not None:
        from pro_lib.targets import check_objectives

        missing = [n for n in names if n not in suite.names]
        if missing:
            check_objectives(names, suite.names, got_what="--objectives", expected_what="the reward suite",
                             fix="pass --objectives from the suite's objectives or leave it out")
    rm_diff = None
    if suite is not None:
        a = suite.score(prompts, policy_answers, progress=False)
        b = suite.score(prompts, ref_answers, progress=False)
        rm_diff = a - b
    out: dict[str, Any] = {"objectives": names, "per_objective": {}}
    n = len(prompts)
    for name in names:
        s, recs = judge_pairwise(client, prompts, policy_answers, ref_answers, rubric=rubric_text(name, rubrics),
                                 label=name, explain=cfg.explain, n_boot=cfg.bootstrap, seed=cfg.seed)
        records += recs
        if rm_diff is not None:
            s["agreement"] = objective_agreement(per_prompt_outcomes(recs, n), rm_diff[:, suite.names.index(name)],
                                                 n_boot=cfg.bootstrap, seed=cfg.seed)
        out["per_objective"][name] = s
    if cfg.weight_response:
        out["weight_response"] = _judge_weight_response(cfg, client, rubrics, prompts, names, records, suite=suite)
    return out


def _judge_weight_response(cfg: JudgeConfig, client: JudgeClient, rubrics, prompts, names, records, *,
                           suite=None) -> dict:
    """Answers of the WIC policy at each corner of the simplex, graded per rubric: J[g, i, k] is the
    judge's 1-10 grade on objective k of the answer to prompt i with all the weight on objective g."""
    from pro_lib.pareto import bootstrap_fronts

    pol_names = wic_objectives(cfg.policy)
    if pol_names is None:
        raise ConfigError(f"--weight-response needs a weights-in-context policy folder as --policy; {cfg.policy} "
                          "is not one")
    if list(names) != pol_names:
        from pro_lib.targets import check_objectives

        check_objectives(names, pol_names, got_what="the judged objectives", expected_what="the policy",
                         fix="leave --objectives out or list the policy's objectives in order")
    k, n = len(names), len(prompts)
    grid = np.eye(k)
    J = np.full((k, n, k), np.nan)
    corner_answers = []
    for g in range(k):
        answers = generate_answers(cfg.policy, prompts, max_new_tokens=cfg.max_new_tokens,
                                   batch_size=cfg.gen_batch_size, device=cfg.device, corner=g)
        corner_answers.append(answers)
        for j, name in enumerate(names):
            _, recs, scores = judge_single(client, prompts, answers, rubric=rubric_text(name, rubrics), label=name,
                                           who=f"corner_{names[g]}", explain=cfg.explain, n_boot=0)
            records += recs
            J[g, :, j] = scores
    ok = np.isfinite(J).all(axis=(0, 2))
    res: dict[str, Any] = {"objectives": names, "prompts": n, "prompts_used": int(ok.sum()),
                           "judgements": int(J.size), "malformed": int((~np.isfinite(J)).sum())}
    if ok.sum() >= 1:
        boot = bootstrap_fronts({"judge": J[:, ok]}, grid, [0.0] * k, n_boot=cfg.bootstrap if ok.sum() > 1 else 0,
                                seed=cfg.seed)
        res["judge"], res["judge_ci"] = boot["weight_response"]["judge"], boot["weight_response_ci"]["judge"]
    else:
        res["judge"], res["judge_ci"] = [None] * k, [[None, None]] * k
    if suite is not None and suite.stats:
        z = np.stack([suite.score(prompts, a, normalize=True, progress=False)[:, [suite.names.index(x) for x in names]]
                      for a in corner_answers])
        boot = bootstrap_fronts({"rm": z}, grid, [-10.0] * k, n_boot=cfg.bootstrap, seed=cfg.seed)
        res["reward_models"] = {"value": boot["weight_response"]["rm"], "ci": boot["weight_response_ci"]["rm"]}
    return res


def _log_to_mlflow(metrics: Mapping[str, float], records: Sequence[Mapping], out: Path) -> None:
    """Metrics, the judgements table (``mlflow.log_table``) and the report into the active run, if any."""
    try:
        import mlflow
    except ImportError:
        return
    if mlflow.active_run() is None:
        return
    import pandas as pd

    from pro_lib import tracking

    tracking.log_metrics(metrics)
    mlflow.log_table(pd.DataFrame([{k: v for k, v in r.items()} for r in records]),
                     artifact_file="judge/judgements.json")
    tracking.log_artifacts(out / REPORT_FILE, "judge")
