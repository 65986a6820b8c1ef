"""The reward models as ``mlflow.genai`` scorers, and ``pro-endpoint``'s held-out evaluation through
``mlflow.genai.evaluate`` (``pro eval genai``): one trace per held-out prompt (the endpoint's
orchestrator / generation / scoring spans, :mod:`pro_lib.tracing`) with the scorers' assessments on
it, browsable per row in the MLflow UI (the run's Traces tab), and their means as the run's metrics.

    pro eval genai --endpoint models:/pro-endpoint@champion --data runs/data/eval.jsonl --max-prompts 32

Scorers (only code scorers: no LLM judge, so it runs offline; ``pro eval judge`` is the LLM judge):

- :func:`reward_scorer`: one objective of a :class:`pro_lib.suite.RewardSuite` -> a ``Scorer`` named
  after the objective; its ``Feedback`` is the reward of (``inputs["prompt"]``, ``outputs["response"]``),
  a z-score under the suite's normalisation stats when it has them (raw logit otherwise).
- :func:`weighted_reward_scorer`: ``pro_reward`` = sum_k w_k z_k with the weights the endpoint used
  for that row (``outputs["weight_<objective>"]``): PRO's own objective, per prompt.

``outputs`` is the endpoint's answer row (``weights_source``, ``weight_<objective>``, ``response``,
``score_<objective>``), so the scorers also work on rows logged from a served endpoint.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pro_lib.config import field
from pro_lib.errors import ConfigError, DataError

# reward models and fast tokenizers are not safe to call from several threads at once (genai.evaluate
# runs scorers in a thread pool): one scoring call at a time, the CPU is the limit anyway
_SCORING = threading.Lock()


@dataclass
class GenAIEvalConfig:
    """pro-endpoint on held-out prompts through mlflow.genai.evaluate: a trace per prompt with the reward
    models' assessments (per-row results in the MLflow UI), their means as the run's metrics."""

    endpoint: str = field("models:/pro-endpoint@champion",
                          help="the endpoint: models:/pro-endpoint@<alias>|/<version>, an MLflow model folder, "
                               "or a pro-endpoint folder (build_endpoint)")
    data: list[str] = field(default_factory=lambda: ["runs/data/eval.jsonl"],
                            help="held-out prompts (the eval split of `pro data prepare`)")
    max_prompts: int = field(32, help="held-out prompts to evaluate on (a sample stratified by source, seed --seed)")
    seed: int = field(0, help="seed of the prompt sample")
    suite: str | None = field(None, help="reward suite folder for the scorers (default: the endpoint's own)")
    max_new_tokens: int = field(48, help="max new tokens per answer (the endpoint's param)")
    run_name: str = field("eval_genai", help="the MLflow run's name")


# -- scorers ---------------------------------------------------------------------------------------

def _response(outputs: Any) -> str:
    if isinstance(outputs, Mapping):
        if "response" not in outputs:
            raise DataError(f"the scorer needs outputs['response']; got keys {sorted(outputs)}")
        return str(outputs["response"])
    return str(outputs)


def _prompt(inputs: Any) -> str:
    if isinstance(inputs, Mapping):
        if "prompt" not in inputs:
            raise DataError(f"the scorer needs inputs['prompt']; got keys {sorted(inputs)}")
        return str(inputs["prompt"])
    return str(inputs)


def _units(suite, name: str) -> str:
    if suite.stats is None:
        return "the raw reward-model score (the suite has no normalisation stats)"
    mean, std = suite.stats[name]
    return f"a z-score under the suite's stats (mean {mean:.4g}, std {std:.4g})"


def reward_scorer(suite, objective: str):
    """One objective of ``suite`` (a :class:`pro_lib.suite.RewardSuite`) as an ``mlflow.genai`` scorer named
    ``objective``: the reward of (``inputs["prompt"]``, ``outputs["response"]``), z-scored when the suite
    has normalisation stats. The scorer shares the suite's loaded model."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    if objective not in suite.names:
        raise ConfigError(f"no objective {objective!r} in the reward suite; it has {suite.names}")
    one = suite.subset([objective])  # shares the loaded model, not the endpoint's traced score()
    units = _units(suite, objective)

    def score(inputs, outputs) -> Feedback:
        with _SCORING:
            s = one.score([_prompt(inputs)], [_response(outputs)], normalize=one.stats is not None,
                          progress=False)
        return Feedback(value=float(s[0, 0]), rationale=f"{objective} reward: {units}")

    return scorer(score, name=objective, description=f"PRO's {objective} reward model: {units}")


def weighted_reward_scorer(suite, name: str = "pro_reward"):
    """``sum_k w_k z_k``: the suite's (z-scored) rewards weighed by the weights the endpoint answered with
    (``outputs["weight_<objective>"]``), PRO's objective for that prompt."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    names = list(suite.names)
    suite = suite.subset(names)  # shares the loaded models; not the endpoint's traced suite (no stray traces)

    def score(inputs, outputs) -> Feedback:
        if not isinstance(outputs, Mapping) or any(f"weight_{n}" not in outputs for n in names):
            raise DataError(f"{name} needs the endpoint's weight_<objective> outputs for {names}")
        w = [float(outputs[f"weight_{n}"]) for n in names]
        with _SCORING:
            s = suite.score([_prompt(inputs)], [_response(outputs)], normalize=suite.stats is not None,
                            progress=False)[0]
        value = float(sum(wk * sk for wk, sk in zip(w, s)))
        return Feedback(value=value, rationale="sum of the weights the endpoint used times the rewards: "
                        + ", ".join(f"{n} {wk:.3f} x {sk:.3f}" for n, wk, sk in zip(names, w, s)))

    return scorer(score, name=name, description="the reward under the weights the endpoint chose (sum_k w_k z_k)")


def reward_scorers(suite) -> list:
    """A scorer per objective of ``suite`` plus :func:`weighted_reward_scorer`."""
    return [reward_scorer(suite, n) for n in suite.names] + [weighted_reward_scorer(suite)]


# -- the endpoint as predict_fn ----------------------------------------------------------------------

@dataclass
class LoadedEndpoint:
    predict: Callable  # (DataFrame, params) -> DataFrame, traced (pro_lib.tracing)
    suite: Any         # its RewardSuite, or None
    model_id: str | None = None  # the MLflow LoggedModel of a registered version


def load_endpoint(ref: str) -> LoadedEndpoint:
    """A ``pro-endpoint`` to evaluate: a registered version or MLflow model folder through
    ``mlflow.pyfunc.load_model`` (as ``mlflow models serve`` loads it), or a pro-endpoint folder."""
    from pro_lib.artifacts import EndpointManifest

    if Path(ref).is_dir() and EndpointManifest.exists(ref):
        from pro_lib.serving import Endpoint
        from pro_lib.tracing import instrument

        ep = instrument(Endpoint(ref))
        return LoadedEndpoint(predict=ep.predict, suite=ep.suite)
    import mlflow.pyfunc

    model_id = None
    if str(ref).startswith("models:/"):
        from pro_lib import registry, tracking

        name, alias, version = registry.parse_ref(ref)
        version = registry.resolve_version(name, alias=alias, version=version)
        source = str(tracking.client().get_model_version(name, version).source or "")
        if source.startswith("models:/m-"):  # registered from a LoggedModel (pro_lib.registry)
            model_id = source[len("models:/"):].rstrip("/")
        ref = f"models:/{name}/{version}"
    model = mlflow.pyfunc.load_model(ref)
    inner = model.unwrap_python_model()
    endpoint = getattr(inner, "endpoint", None)
    if endpoint is None:
        raise ConfigError(f"{ref} is not a pro-endpoint (its model is {type(inner).__name__}); "
                          "give models:/pro-endpoint@<alias> or a pro-endpoint folder")
    return LoadedEndpoint(predict=lambda df, params: model.predict(df, params=params), suite=endpoint.suite,
                          model_id=model_id)


def predict_fn(endpoint: LoadedEndpoint, params: Mapping[str, Any] | None = None) -> Callable[[str], dict]:
    """``predict_fn(prompt) -> the endpoint's answer row`` for ``mlflow.genai.evaluate`` (inputs ``{"prompt": ...}``)."""
    import pandas as pd

    lock = threading.Lock()

    def predict(prompt: str) -> dict:
        with lock:
            row = endpoint.predict(pd.DataFrame({"prompt": [prompt]}), dict(params or {})).iloc[0].to_dict()
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}

    return predict


@contextlib.contextmanager
def _eval_env() -> Iterator[None]:
    """Traces on; our predict_fn always traces (no trial call on the first row); one row at a time unless
    MLFLOW_GENAI_EVAL_MAX_WORKERS says otherwise (generation already uses every CPU thread)."""
    want = {"PRO_TRACING": "1", "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true"}
    if "MLFLOW_GENAI_EVAL_MAX_WORKERS" not in os.environ:
        want["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = "1"
    old = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate_endpoint(cfg: GenAIEvalConfig) -> dict:
    """Run ``cfg.endpoint`` on held-out prompts through ``mlflow.genai.evaluate`` with the reward scorers,
    in the active MLflow run (or a new one); returns the metrics, the run id and the number of rows."""
    import mlflow

    from pro_lib.data import load_split_prompts
    from pro_lib.suite import RewardSuite

    prompts, info = load_split_prompts(cfg.data, split="all", eval_fraction=0.0, split_seed=0,
                                       max_prompts=cfg.max_prompts, seed=cfg.seed)
    endpoint = load_endpoint(cfg.endpoint)
    suite = RewardSuite.load(cfg.suite) if cfg.suite else endpoint.suite
    if suite is None:
        raise ConfigError(f"{cfg.endpoint} has no reward suite to score with; give --suite <suite folder>")
    data = [{"inputs": {"prompt": p}} for p in prompts]
    with _eval_env():
        result = mlflow.genai.evaluate(data=data, scorers=reward_scorers(suite),
                                       predict_fn=predict_fn(endpoint, {"max_new_tokens": cfg.max_new_tokens}),
                                       model_id=endpoint.model_id)
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()}
    return {"run_id": result.run_id, "rows": len(prompts), "metrics": metrics, "model_id": endpoint.model_id,
            "source_mix": info.get("source_mix")}
