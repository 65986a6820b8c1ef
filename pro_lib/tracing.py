"""MLflow 3 traces of ``pro-endpoint``: one trace per predict call, one span per stage.

=================  ===========  =====================================  ==========================================
span               type         inputs                                 outputs / attributes
=================  ===========  =====================================  ==========================================
``pro-endpoint``   CHAIN        ``prompt``, ``weights`` (given rows,   the answer's rows (weights, response,
(the root)                      ``null`` = the orchestrator's),        scores); ``pro.objectives``, ``pro.rows``
                                ``params``
``orchestrator``   AGENT        the prompts without given weights      ``weights``: one ``{objective: w}`` per
                                                                       prompt; ``pro.objectives``
``generation``     LLM          prompts, their weights, the            ``responses``; ``pro.policy`` (the
                                generation settings                    served policy's name), ``pro.conditioned``
``scoring``        EVALUATOR    prompts, responses, ``normalize``      ``scores``: one ``{objective: s}`` per row
                                (z-scores under the suite's stats)     (z or raw); ``pro.suite_stats``
=================  ===========  =====================================  ==========================================

The orchestrator span is there when some row came without weights (the orchestrator ran), the
scoring span when the endpoint has a reward suite and ``params.score`` is on.

:func:`instrument` adds the spans to a loaded :class:`pro_lib.serving.Endpoint` by wrapping its
parts' methods on the instances, so the endpoint's code stays as it is and an endpoint built
without it (the explorer's in-process one) records nothing. ``pro_lib.serving.EndpointModel`` (the
pyfunc model ``mlflow models serve`` runs) instruments its endpoint when it loads.

Where traces go: MLflow's tracking URI and the active experiment (``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` of the serving process); they are exported
asynchronously (``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING``), so a tracking server that is away costs a
warning, not a failed request. ``MLFLOW_TRACE_SAMPLING_RATIO`` keeps a fraction of them;
``PRO_TRACING=0`` turns PRO's spans off.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import numpy as np

TRACING_ENV = "PRO_TRACING"
ROOT_SPAN, ORCHESTRATOR_SPAN, GENERATION_SPAN, SCORING_SPAN = "pro-endpoint", "orchestrator", "generation", "scoring"
SPANS = (ROOT_SPAN, ORCHESTRATOR_SPAN, GENERATION_SPAN, SCORING_SPAN)
_INSTRUMENTED = "_pro_traced"


def enabled() -> bool:
    """PRO's spans are on unless ``PRO_TRACING`` is ``0`` / ``false`` / ``off``."""
    return os.environ.get(TRACING_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def _floats(a) -> list:
    return np.asarray(a, dtype=np.float64).round(6).tolist()


def _per_row(matrix, names) -> list[dict[str, float]]:
    return [dict(zip(names, row)) for row in _floats(matrix)]


def _traced(fn: Callable, name: str, span_type: str, *, inputs: Callable[..., Mapping[str, Any]],
            outputs: Callable[[Any], Any], attributes: Mapping[str, Any]) -> Callable:
    """``fn`` inside a span ``name``: its inputs / outputs as ``inputs(*args, **kwargs)`` / ``outputs(result)``."""
    import mlflow

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        if not enabled():
            return fn(*args, **kwargs)
        with mlflow.start_span(name, span_type=span_type) as span:
            span.set_inputs(dict(inputs(*args, **kwargs)))
            span.set_attributes(dict(attributes))
            result = fn(*args, **kwargs)
            span.set_outputs(outputs(result))
            return result

    setattr(traced, _INSTRUMENTED, True)
    return traced


def _wrap(obj, method: str, name: str, span_type: str, **how) -> None:
    fn = getattr(obj, method)
    if not getattr(fn, _INSTRUMENTED, False):
        setattr(obj, method, _traced(fn, name, span_type, **how))


def instrument(endpoint):
    """Give a loaded :class:`pro_lib.serving.Endpoint` its spans (see the module's table); returns it.

    Instrumenting twice is a no-op."""
    from mlflow.entities import SpanType

    names = list(endpoint.objectives)

    def root_inputs(model_input, params=None):
        import pandas as pd

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = {"prompt": [str(p) for p in df["prompt"].tolist()]} if "prompt" in df.columns else {}
        if "weights" in df.columns:
            rows["weights"] = [None if w is None or (isinstance(w, float) and np.isnan(w)) or len(w) == 0
                               else _floats(w) for w in df["weights"].tolist()]
        return {**rows, "params": {k: v for k, v in dict(params or {}).items() if v is not None}}

    _wrap(endpoint, "predict", ROOT_SPAN, SpanType.CHAIN, inputs=root_inputs,
          outputs=lambda df: df.to_dict(orient="records"),
          attributes={"pro.objectives": names, "pro.policies": sorted(n for n in endpoint.generators if n)})
    _wrap(endpoint.orchestrator, "predict", ORCHESTRATOR_SPAN, SpanType.AGENT,
          inputs=lambda prompts, *a, **k: {"prompts": list(prompts)},
          outputs=lambda w: {"weights": _per_row(w, names)}, attributes={"pro.objectives": names})
    seen = set()
    for policy, gen in endpoint.generators.items():
        if id(gen) in seen:
            continue
        seen.add(id(gen))
        _wrap(gen, "generate", GENERATION_SPAN, SpanType.LLM,
              inputs=lambda prompts, weights, **gen: {"prompts": list(prompts), "weights": _per_row(weights, names),
                                                      "generation": {k: v for k, v in gen.items()}},
              outputs=lambda responses: {"responses": list(responses)},
              attributes={"pro.policy": policy or "default", "pro.conditioned": bool(gen.conditioned),
                          "pro.objectives": names})
    if endpoint.suite is not None:
        suite = endpoint.suite
        stats = {n: [float(m), float(s)] for n, (m, s) in suite.stats.items()} if suite.stats else None
        _wrap(suite, "score", SCORING_SPAN, SpanType.EVALUATOR,
              inputs=lambda prompts, responses, **kw: {"prompts": list(prompts), "responses": list(responses),
                                                       "normalize": bool(kw.get("normalize", False))},
              outputs=lambda s: {"scores": _per_row(s, suite.names)},
              attributes={"pro.objectives": list(suite.names), "pro.suite_stats": stats})
    return endpoint
