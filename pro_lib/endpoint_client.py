"""The HTTP client of a served ``pro-endpoint`` (``mlflow models serve``; :mod:`pro_lib.serving` builds and
loads the endpoint itself), and the example prompts its probes and the registered models' input examples use."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pro_lib.errors import CheckpointError

EXAMPLE_PROMPTS = ["How do I bake bread at home?", "Tell me a joke about computers."]


class EndpointClient:
    """Talks to ``mlflow models serve`` of a ``pro-endpoint`` (``POST <url>/invocations``)."""

    def __init__(self, url: str, *, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def invoke(self, prompts: Sequence[str], weights: Sequence[Sequence[float] | None] | None = None,
               **params) -> pd.DataFrame:
        import urllib.error
        import urllib.request

        records = []
        for i, p in enumerate(prompts):
            rec: dict[str, Any] = {"prompt": p}
            if weights is not None:  # [] for a row without weights: the orchestrator's
                rec["weights"] = [] if weights[i] is None else [float(x) for x in weights[i]]
            records.append(rec)
        body: dict[str, Any] = {"dataframe_records": records}
        if params:
            body["params"] = params
        req = urllib.request.Request(f"{self.url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise CheckpointError(f"the endpoint {self.url} refused the request ({exc.code}): "
                                  f"{_server_error(exc.read())}") from None
        except OSError as exc:
            raise CheckpointError(f"the endpoint {self.url} is not reachable ({exc}); check PRO_UI_ENDPOINT "
                                  "and that `mlflow models serve` is running") from None
        preds = payload.get("predictions", payload)
        return pd.DataFrame(preds)

    def weights(self, prompts: Sequence[str], objectives: Sequence[str]) -> np.ndarray:
        """The orchestrator's weights (no generation, no scoring: ``max_new_tokens=1``)."""
        df = self.invoke(prompts, max_new_tokens=1, score=False)
        return df[[f"weight_{n}" for n in objectives]].to_numpy(dtype=np.float64)

    def objectives(self) -> list[str]:
        df = self.invoke([EXAMPLE_PROMPTS[0]], max_new_tokens=1, score=False)
        return [c[len("weight_"):] for c in df.columns if c.startswith("weight_")]


def _server_error(body: bytes) -> str:
    """The scoring server's error: its message, plus the model's own exception (last traceback line)."""
    try:
        err = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    trace = [line for line in str(err.get("stack_trace") or "").splitlines() if line.strip()]
    cause = f" ({trace[-1].strip()})" if trace else ""
    return f"{err.get('message', '')}{cause}"[:1000]
