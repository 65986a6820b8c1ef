"""The explorer's backend: everything the page needs from pro_lib and MLflow, behind one small class.

The Streamlit page (ui/app.py) only talks to :class:`Backend`; the real implementation calls
``pro_lib`` (orchestrator, reward suite, WIC policy, registry). Every failure a user can cause
(a model that is missing, a registry that is down, bad input) surfaces as :class:`UIError` with a
message that says what is wrong and how to fix it, so the page never shows a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pro_lib.registry import reward_model_name

# A registry that is down must fail fast on the page, not retry for minutes: registry look-ups run
# with these settings unless the user set them (model downloads keep MLflow's defaults).
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}

ALIASES = ("champion", "challenger")
# The suite picker's entry that assembles the suite from one registered reward model per objective
# (pro-reward-<objective>) at one alias, with the normalisation stats stored in the orchestrator.
PER_OBJECTIVE = f"{reward_model_name('<objective>')} (one per objective)"
PER_OBJECTIVE_PREFIX = "per-objective:"
# Models shipped with PRO that can be typed instead of a folder.
BUNDLED = {"smollm2": "bundled SmolLM2-135M-Instruct (a plain LM: not trained with weights in context)"}
MAX_PROMPT_CHARS = int(os.environ.get("PRO_UI_MAX_PROMPT_CHARS", "4000"))
# A served pro-endpoint (`mlflow models serve -m models:/pro-endpoint@champion`): the orchestrator's
# weights and the policy's answers come from <url>/invocations instead of models loaded in this process.
ENDPOINT_ENV = "PRO_UI_ENDPOINT"
# The MLflow UI the explorer links models and runs to (default: the tracking URI when it is http(s)).
MLFLOW_UI_ENV = "PRO_UI_MLFLOW_URL"
# A version's tags that name the run which trained it (when it was registered from another run).
SOURCE_RUN_TAGS = ("source_run", "pro.source_run")
ENDPOINT_PING_TIMEOUT = 5.0


def _endpoint_defaults() -> None:
    """With PRO_UI_ENDPOINT set, the orchestrator and policy A default to the served endpoint."""
    url = os.environ.get(ENDPOINT_ENV, "").strip()
    if url:
        os.environ.setdefault("PRO_UI_ORCHESTRATOR", url)
        os.environ.setdefault("PRO_UI_POLICY", url)


_endpoint_defaults()


def is_endpoint(ref: str) -> bool:
    return str(ref).strip().startswith(("http://", "https://"))


class UIError(Exception):
    """A problem the page shows as a message (never a traceback)."""


class NoLocalStore(UIError):
    """The default local MLflow store does not exist yet (nothing was trained here)."""


class RegistryUnreachable(UIError):
    """The MLflow tracking server does not answer (the page says so once, short, with the fix)."""


class EndpointUnreachable(UIError):
    """A served pro-endpoint does not answer (one banner naming the URL and the check, like the registry)."""

    def __init__(self, url: str, why: str):
        self.url = url
        super().__init__(f"The PRO endpoint at {url} is not reachable ({why}). Check it with "
                         f"`curl {url}/ping` (is `mlflow models serve` running? {ENDPOINT_ENV}), "
                         "then press ↻ Reload.")


def mlflow_ui_url(tracking_uri: str | None = None) -> str | None:
    """Base URL of the MLflow UI: ``$PRO_UI_MLFLOW_URL``, else the tracking URI when it is a server."""
    url = os.environ.get(MLFLOW_UI_ENV, "").strip()
    if not url and tracking_uri and str(tracking_uri).startswith(("http://", "https://")):
        url = str(tracking_uri)
    return url.rstrip("/") or None


def run_url(base: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """The MLflow UI page of a run (``#/experiments/<id>/runs/<run>``; ``#/runs/<run>`` also resolves)."""
    if not (base and run_id):
        return None
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"


def version_url(base: str | None, name: str, version: str | None) -> str | None:
    """The MLflow UI page of a registered model version."""
    if not (base and version):
        return None
    from urllib.parse import quote

    return f"{base}/#/models/{quote(name, safe='')}/versions/{version}"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the platform's local store ``sqlite:///$PRO_HOME/mlflow.db``."""
    from pro_lib.tracking import tracking_uri

    return tracking_uri(create=False)


def check_prompt(text: str | None) -> str:
    """The prompt stripped; a clear error when it is empty or longer than the limit."""
    prompt = (text or "").strip()
    if not prompt:
        raise UIError("The prompt is empty: type a prompt (or pick one from a dataset) first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UIError(f"The prompt is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}. "
                      "Shorten it (the orchestrator only reads its last few hundred tokens anyway) "
                      "or raise PRO_UI_MAX_PROMPT_CHARS.")
    return prompt


# -- model references ---------------------------------------------------------------------------

_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?$")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a registered model at an alias/version, or a local folder."""

    source: str            # "registry" or "local"
    name: str              # registered model name, or folder path
    selector: str = "champion"   # alias ("champion", "challenger") or version number

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        """``models:/name@alias``, ``models:/name/3``, ``models:/name`` (champion) or a folder."""
        text = str(text).strip()
        if not text:
            raise UIError("empty model reference")
        m = _REF.match(text)
        if m:
            return cls("registry", m["name"], m["alias"] or m["version"] or "champion")
        if text.startswith("models:/"):
            raise UIError(f"bad registry reference {text!r}: write models:/<name>@<alias> or models:/<name>/<version>")
        return cls("local", text, "")

    @property
    def uri(self) -> str:
        if self.source == "local":
            return self.name
        if self.selector.isdigit():
            return f"models:/{self.name}/{self.selector}"
        return f"models:/{self.name}@{self.selector}"


@dataclass
class Provenance:
    """Which artifact a loaded model really is (shown in the sidebar)."""

    spec: ModelSpec
    load_ref: str                      # what from_pretrained gets: models:/name/<version> or a folder
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    run_name: str | None = None
    source_run: str | None = None      # the version's source_run tag: the training run, when registered elsewhere
    experiment_id: str | None = None   # of the training run

    @property
    def training_run(self) -> str | None:
        """The run that trained the model: its ``source_run`` tag, else the version's run."""
        return self.source_run or self.run_id

    def links(self, base: str | None) -> dict[str, str]:
        """MLflow UI links: ``version`` (the model version page) and ``run`` (the training run)."""
        out = {}
        if self.spec.source == "registry" and self.version and self.spec.name != PER_OBJECTIVE:
            out["version"] = version_url(base, self.spec.name, self.version)
        out["run"] = run_url(base, self.experiment_id, self.training_run)
        return {k: v for k, v in out.items() if v}

    def label(self) -> str:
        if self.load_ref in BUNDLED:
            return BUNDLED[self.load_ref]
        if self.spec.name == PER_OBJECTIVE:
            return f"`pro-reward-*` @{self.spec.selector}: {self.version}"
        if is_endpoint(self.load_ref):
            return f"served endpoint `{self.load_ref}`"
        if self.spec.source == "local":
            return f"local folder `{self.load_ref}`"
        alias = f" ({', '.join(self.aliases)})" if self.aliases else ""
        run = f", run `{self.training_run[:12]}`" if self.training_run else ""
        name = f" *{self.run_name}*" if self.run_name else ""
        return f"`{self.spec.name}` v{self.version}{alias}{run}{name}"


def versions_table(rows: Sequence[dict], mlflow_base: str | None = None):
    """Registry versions as a flat table: version, aliases, training run (a link into the MLflow UI when
    ``mlflow_base`` is known), gate (metric, mode, value), metrics."""
    import pandas as pd

    out = []
    for r in rows:
        tags = r.get("tags") or {}
        run = next((tags[t] for t in SOURCE_RUN_TAGS if tags.get(t)), None) or r.get("run_id")
        # the training run first: the table is wide and its last columns sit off-screen
        row = {"version": str(r.get("version")), "aliases": ", ".join(r.get("aliases") or []),
               "training run": run_url(mlflow_base, None, run) or run,
               "gate metric": r.get("gate_metric"), "gate mode": r.get("gate_mode"),
               "gate value": r.get("gate_value")}
        for k, v in sorted((r.get("metrics") or {}).items()):
            if k != r.get("gate_metric"):
                row[k] = v
        if tags.get("pro.promotion_reason"):
            row["promotion note"] = tags["pro.promotion_reason"]
        created = r.get("created")
        row["created"] = pd.to_datetime(created, unit="ms") if isinstance(created, (int, float)) else created
        out.append(row)
    return pd.DataFrame(out)


def align_objectives(reference: Sequence[str], other: Sequence[str], what: str) -> list[int]:
    """Column order that puts ``other``'s objectives in ``reference``'s order (error if they differ)."""
    from pro_lib.errors import ObjectiveMismatchError
    from pro_lib.targets import check_objectives

    reference, other = list(reference), list(other)
    if sorted(other) == sorted(reference):  # any order is fine here: the columns are reordered
        return [other.index(n) for n in reference]
    try:
        check_objectives(other, reference, got_what=what, expected_what="the orchestrator",
                         fix="load models trained on the same reward suite")
    except ObjectiveMismatchError as exc:
        raise UIError(str(exc)) from None


# -- the backend --------------------------------------------------------------------------------

class Backend:
    """Real implementation over pro_lib and MLflow."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()

    # registry ----------------------------------------------------------------------------------
    def _client(self):
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///"):])
            if not db.is_file():
                raise NoLocalStore(f"No MLflow store at {db} yet. Run `make demo` (or `pro pipeline run`) to "
                              "train and register models, set MLFLOW_TRACKING_URI to your registry, or "
                              "load models from local folders.")
        try:
            from mlflow import MlflowClient

            return MlflowClient(tracking_uri=uri, registry_uri=uri)
        except Exception as exc:  # bad URI scheme, missing driver...
            raise UIError(f"Cannot open the MLflow registry at {uri}: {_short(exc)}") from None

    def _registry_call(self, what: str, fn, *args, **kwargs):
        from pro_lib.errors import TrackingUnavailable
        from pro_lib.tracking import connection_problem, is_connection_failure

        try:
            with _fast_fail():
                return fn(*args, **kwargs)
        except UIError:
            raise
        except Exception as exc:
            text = _short(exc)
            if is_connection_failure(exc):
                why = "not answering" if isinstance(exc, TrackingUnavailable) else connection_problem(exc)
                m = re.search(r"\(([^()]*)\)\. Check it", str(exc))
                raise RegistryUnreachable(unreachable_text(self.tracking_uri, m[1] if m else why)) from None
            if "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower() or "does not exist" in text:
                raise UIError(f"{what}: not found in the registry at {self.tracking_uri} ({text}).") from None
            raise UIError(f"The MLflow registry at {self.tracking_uri} failed to {what} ({text}).") from None

    def registry_status(self) -> str:
        """A one-line description; raises UIError when the registry cannot be used."""
        client = self._client()
        models = self._registry_call("list registered models", client.search_registered_models)
        return f"{len(models)} registered model(s) at {self.tracking_uri}"

    def list_models(self, contains: str | None = None) -> list[str]:
        client = self._client()
        models = self._registry_call("list registered models", client.search_registered_models,
                                     max_results=1000)
        from pro_lib.registry import is_lock_name

        names = sorted(m.name for m in models if not is_lock_name(m.name))
        if contains:
            names = [n for n in names if contains in n]
        return names

    def list_versions(self, name: str) -> list[dict]:
        """Versions with aliases and gate metrics (pro_lib.registry.list_versions)."""
        self._client()
        from pro_lib import registry

        rows = self._registry_call(f"list the versions of {name}", registry.list_versions, name)
        return [dict(r) for r in rows]

    def overview(self) -> list[dict]:
        """One row per registered model: versions, champion and challenger with their gate values."""
        rows = []
        for name in self.list_models():
            versions = self.list_versions(name)
            by_alias = {a: v for v in versions for a in (v.get("aliases") or [])}
            champ, chall = by_alias.get("champion"), by_alias.get("challenger")
            ref = champ or chall or (versions[0] if versions else None)
            gate = f"{ref['gate_metric']} ({ref.get('gate_mode')})" if ref and ref.get("gate_metric") else None
            rows.append({
                "model": name, "versions": len(versions), "gate": gate,
                "champion": champ["version"] if champ else None,
                "champion value": champ.get("gate_value") if champ else None,
                "challenger": chall["version"] if chall else None,
                "challenger value": chall.get("gate_value") if chall else None,
            })
        return rows

    def selectors(self, name: str) -> list[str]:
        """Aliases in use, then versions (newest first): the choices of the sidebar's selector."""
        client = self._client()
        versions = self._registry_call(f"list the versions of {name}", client.search_model_versions,
                                       f"name='{name}'")
        # search results lack aliases on some stores: the registered model has them all
        model = self._registry_call(f"find {name}", client.get_registered_model, name)
        found = getattr(model, "aliases", None) or {}
        found = set(found.keys() if isinstance(found, dict) else found)
        aliases = sorted(found, key=lambda a: (a not in ALIASES, ALIASES.index(a) if a in ALIASES else 0, a))
        numbers = sorted((str(v.version) for v in versions), key=int, reverse=True)
        return aliases + numbers

    def promote(self, name: str, version: str | None = None, *, force: bool = False,
                reason: str | None = None) -> Any:
        """Gated promotion (pro_lib.promotion.promote); the result says whether it happened and why."""
        if force and not (reason or "").strip():
            raise UIError("A forced promotion needs a reason (it is recorded on the model version).")
        self._client()
        from pro_lib import promotion

        kwargs: dict[str, Any] = {"force": force}
        if version:
            kwargs["version"] = str(version)
        if reason:
            kwargs["reason"] = reason
        return self._registry_call(f"promote {name}", promotion.promote, name, **kwargs)

    def resolve(self, spec: ModelSpec) -> Provenance:
        """Pin an alias to the version it points at now (the cache key), with its run."""
        if spec.source == "local":
            if is_endpoint(spec.name):
                return Provenance(spec, spec.name.strip().rstrip("/"))
            if spec.name.strip().lower() in BUNDLED:
                return Provenance(spec, spec.name.strip().lower())
            path = Path(spec.name).expanduser()
            if not path.exists():
                raise UIError(f"Model folder {path} does not exist; check the path in the sidebar.")
            return Provenance(spec, str(path.resolve()), run_id=_local_run_id(path))
        client = self._client()
        if spec.selector.isdigit():
            mv = self._registry_call(f"find {spec.uri}", client.get_model_version, spec.name, spec.selector)
        else:
            mv = self._registry_call(f"find {spec.uri}", client.get_model_version_by_alias,
                                     spec.name, spec.selector)
        tags = dict(getattr(mv, "tags", None) or {})
        source_run = next((tags[t] for t in SOURCE_RUN_TAGS if tags.get(t)), None)
        run_name = experiment_id = None
        if source_run or mv.run_id:
            try:
                info = client.get_run(source_run or mv.run_id).info
                run_name, experiment_id = info.run_name, info.experiment_id
            except Exception:  # a deleted run still leaves a usable model version
                pass
        return Provenance(spec, f"models:/{spec.name}/{mv.version}", version=str(mv.version),
                          aliases=list(getattr(mv, "aliases", None) or []), run_id=mv.run_id,
                          run_name=run_name, source_run=source_run, experiment_id=experiment_id)

    def resolve_per_objective(self, selector: str, names: Sequence[str], stats: dict | None) -> Provenance:
        """A suite of ``pro-reward-<objective>`` models at ``selector``, one per orchestrator objective."""
        import json

        refs, versions = {}, []
        for n in names:
            prov = self.resolve(ModelSpec("registry", reward_model_name(n), selector))
            refs[n] = prov.load_ref
            versions.append(f"{n} v{prov.version}")
        load_ref = PER_OBJECTIVE_PREFIX + json.dumps({"objectives": refs, "stats": stats}, sort_keys=True)
        return Provenance(ModelSpec("registry", PER_OBJECTIVE, selector), load_ref, version=", ".join(versions))

    # loading (the page caches these by load_ref) ------------------------------------------------
    def load_orchestrator(self, load_ref: str):
        if is_endpoint(load_ref):
            return _load("orchestrator", load_ref, RemoteOrchestrator)
        from pro_lib.orchestrator import PreferenceOrchestrator

        return _load("orchestrator", load_ref, PreferenceOrchestrator.from_pretrained)

    def load_suite(self, load_ref: str):
        from pro_lib.suite import RewardSuite, model_objective

        if load_ref.startswith(PER_OBJECTIVE_PREFIX):
            import json

            data = json.loads(load_ref[len(PER_OBJECTIVE_PREFIX):])

            def build(_):
                # each model's input format and max length travel with it (pro_lib.suite.model_objective)
                objectives = [model_objective(n, ref) for n, ref in data["objectives"].items()]
                return RewardSuite(objectives, data.get("stats"))

            return _load("reward suite", "the registry's pro-reward-* models", build)
        return _load("reward suite", load_ref, RewardSuite.load)

    def load_policy(self, load_ref: str, objectives: Sequence[str] | None = None):
        """A WIC policy; ``objectives`` (the orchestrator's) are checked against the policy's own, and
        let a plain causal LM (e.g. the bundled ``smollm2``) be used with weights in its prompt."""
        try:
            from pro_lib.wic import WICPolicy
        except ImportError as exc:
            raise UIError(f"Policies need pro_lib.wic, which cannot be imported here ({exc}).") from None

        objs = list(objectives) if objectives else None
        if objs is None and load_ref in BUNDLED:
            raise UIError(f"{BUNDLED[load_ref]} takes the weights of the orchestrator's objectives in its "
                          "prompt: load an orchestrator first.")
        if is_endpoint(load_ref):
            return _load("policy", load_ref, RemotePolicy)
        # LoRA adapter policies of one base share that base in this process (pro_lib.adapters: the compare
        # tab's two sides cost one base of memory)
        return _load("policy", load_ref, lambda ref: WICPolicy.from_pretrained(ref, objectives=objs, shared_base=True))

    # inference ---------------------------------------------------------------------------------
    def predict(self, orchestrator, prompts: Sequence[str]) -> np.ndarray:
        try:
            return np.asarray(orchestrator.predict(list(prompts)), dtype=np.float64)
        except UIError:
            raise
        except Exception as exc:
            raise UIError(f"The orchestrator failed on this input: {_short(exc)}") from None

    def stream(self, policy, prompt: str, weights: np.ndarray, **gen_kwargs) -> Iterator[str]:
        """Text chunks as the policy generates them.

        When the consumer stops early (the page's Stop button interrupts the script, which closes
        this generator), generation in the policy's worker thread stops at its next token too.
        """
        stop = threading.Event()
        gen_kwargs.setdefault("stopping_criteria", _stopping_criteria(stop))
        try:
            yield from policy.stream(prompt, np.asarray(weights, dtype=np.float64), **gen_kwargs)
        except UIError:
            raise
        except Exception as exc:
            raise UIError(f"Generation failed: {_short(exc)}") from None
        finally:
            stop.set()

    def score(self, suite, prompt: str, responses: Sequence[str], names: Sequence[str],
              policy=None) -> tuple[np.ndarray, bool]:
        """Scores (N, K) in ``names`` order; z-scores when the suite has normalisation stats.

        A served endpoint's own answers (``policy`` a :class:`RemotePolicy` whose endpoint scored them)
        keep the endpoint's scores: the numbers its ``/invocations`` returned. Returns (scores, normalised?).
        """
        if isinstance(policy, RemotePolicy):
            got = [policy.answer_scores(prompt, r) for r in responses]
            if all(g is not None for g in got):
                order = align_objectives(names, policy.objectives, "the endpoint")
                return np.asarray([g[0] for g in got], dtype=np.float64)[:, order], bool(got[0][1])
        if suite is None:
            raise UIError("Load a reward suite in the sidebar to score outputs.")
        order = align_objectives(names, suite.names, "the reward suite")
        normalized = suite.stats is not None
        try:
            s = suite.score([prompt] * len(responses), list(responses), normalize=normalized,
                            progress=False)
        except Exception as exc:
            raise UIError(f"Scoring failed: {_short(exc)}") from None
        return np.asarray(s, dtype=np.float64)[:, order], normalized


    def judge_pair(self, prompt: str, answer_a: str, answer_b: str, *, base_url: str | None, model: str | None,
                   rubric: str = "general") -> dict:
        """An LLM judge's pairwise verdict on two answers, asked in both orders (position bias cancels):
        ``pro eval judge``'s protocol (pro_lib.judge_protocol) on one prompt, through any OpenAI-compatible
        endpoint. The key comes from $PRO_JUDGE_API_KEY, $PRO_JUDGE_API_KEY_FILE or the mounted Secret
        pro-judge, never from the page. Verdicts are cached under $PRO_HOME/judge-cache like the CLI's."""
        from pro_lib.errors import ProError
        from pro_lib.io import pro_home
        from pro_lib.judge_client import JudgeClient, JudgeEndpoint
        from pro_lib.judge_protocol import DEFAULT_RUBRICS, judge_pairwise

        if rubric not in DEFAULT_RUBRICS:
            raise UIError(f"unknown judge rubric {rubric!r}; known: {', '.join(DEFAULT_RUBRICS)}")
        try:
            endpoint = JudgeEndpoint.resolve(base_url or None, model or None)
            client = JudgeClient(endpoint, cache_dir=pro_home() / "judge-cache", concurrency=2, retries=1,
                                 timeout=60.0)
            client.check()
            summary, records = judge_pairwise(client, [prompt], [answer_a], [answer_b],
                                              rubric=DEFAULT_RUBRICS[rubric], label=rubric, n_boot=0)
        except ProError as exc:
            raise UIError(f"Judge: {exc}") from None
        by_order = {r["policy_first"]: r for r in records}
        outcomes = [by_order[o]["policy_outcome"] for o in (True, False)]  # A's outcome, A shown first / second
        if None in outcomes:
            verdict = "no verdict (the judge's reply had no [[A]] / [[B]] / [[C]])"
        elif outcomes[0] != outcomes[1]:
            verdict = "inconsistent: the verdict follows the position, not the answers"
        else:
            verdict = {1.0: "A is better", 0.0: "B is better", 0.5: "tie"}[outcomes[0]]
        return {"verdict": verdict, "rubric": rubric, "judge": f"{endpoint.model} at {endpoint.base_url}",
                "a_first": by_order[True]["verdict"], "b_first": by_order[False]["verdict"],
                "cached": all(r["cached"] for r in records), "replies": [by_order[True]["reply"],
                                                                          by_order[False]["reply"]]}


def check_endpoint(url: str, timeout: float = ENDPOINT_PING_TIMEOUT) -> None:
    """Raise :class:`EndpointUnreachable` unless ``<url>/ping`` answers (the scoring server's health check)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as r:
            r.read()
    except urllib.error.HTTPError as exc:
        raise EndpointUnreachable(url, f"/ping answered HTTP {exc.code}") from None
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EndpointUnreachable(url, _short(reason if isinstance(reason, BaseException) else OSError(reason),
                                              120)) from None


class RemoteOrchestrator:
    """The orchestrator of a served pro-endpoint: ``predict`` asks ``<url>/invocations`` for weights.

    ``norm_stats`` are the endpoint's reward-suite statistics when its answer carries them
    (``suite_stats``), so a reward suite assembled next to it scores in the same z-score units as the
    endpoint and as a locally loaded orchestrator (whose ``norm_stats`` are the same numbers).
    """

    def __init__(self, url: str):
        from pro_lib.serving import EXAMPLE_PROMPTS, EndpointClient

        self.url = url
        check_endpoint(url)
        self.client = EndpointClient(url)
        probe = self._call(self.client.invoke, [EXAMPLE_PROMPTS[0]], max_new_tokens=1, score=False)
        self.objectives = [c[len("weight_"):] for c in probe.columns if c.startswith("weight_")]
        self.K = len(self.objectives)
        self.has_suite = "suite_stats" in probe.columns
        stats = _json_cell(probe["suite_stats"].iloc[0]) if self.has_suite else None
        self.norm_stats = {n: [float(v) for v in stats[n]] for n in self.objectives} if stats else None

    def _call(self, fn, *args, **kwargs):
        """``fn`` against the endpoint; an endpoint that stopped answering raises :class:`EndpointUnreachable`."""
        try:
            return fn(*args, **kwargs)
        except Exception:
            check_endpoint(self.url)  # down: says so (with the URL and the check) instead of blaming the input
            raise

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        return self._call(self.client.weights, list(prompts), self.objectives)


class RemotePolicy(RemoteOrchestrator):
    """The policy of a served pro-endpoint: the prompt and the (possibly overridden) weights go to
    ``<url>/invocations``; the answer arrives whole (the scoring server does not stream). When the
    endpoint bundles a reward suite, the answer's own scores are kept (:meth:`answer_scores`)."""

    GEN_PARAMS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed")

    def __init__(self, url: str):
        super().__init__(url)
        self._scores: dict[tuple[str, str], list[float]] = {}

    def stream(self, prompt: str, weights: np.ndarray, **gen_kwargs) -> Iterator[str]:
        params = {k: v for k, v in gen_kwargs.items() if k in self.GEN_PARAMS and v is not None}
        df = self._call(self.client.invoke, [prompt], [list(np.asarray(weights, dtype=np.float64))],
                        score=self.has_suite, **params)
        text = str(df["response"].iloc[0])
        cols = [f"score_{n}" for n in self.objectives]
        if all(c in df.columns for c in cols):
            if len(self._scores) > 256:
                self._scores.clear()
            self._scores[(prompt, text)] = [float(df[c].iloc[0]) for c in cols]
        yield text

    def answer_scores(self, prompt: str, text: str) -> tuple[list[float], bool] | None:
        """The endpoint's scores of its answer ``text`` (objectives' order) and whether they are z-scores."""
        s = self._scores.get((prompt, text))
        return None if s is None else (s, self.norm_stats is not None)


def _json_cell(value):
    import json

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    return value


@contextlib.contextmanager
def _fast_fail():
    """Temporarily apply :data:`FAST_FAIL` (MLflow reads these at request time)."""
    added = [k for k in FAST_FAIL if k not in os.environ]
    for k in added:
        os.environ[k] = FAST_FAIL[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _stopping_criteria(event: threading.Event):
    """A transformers stopping criterion that ends generation once ``event`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnEvent()])


def _load(what: str, ref: str, loader):
    try:
        return loader(ref)
    except UIError:
        raise
    except Exception as exc:
        raise UIError(f"Cannot load the {what} from {ref}: {_short(exc)}") from None


def unreachable_text(uri: str, why: str) -> str:
    """The one short message the page shows while the registry is away."""
    return (f"MLflow at {uri} is not reachable ({why}). Check it with `curl {uri.rstrip('/')}/health`, "
            "start the tracking server or set MLFLOW_TRACKING_URI, then press ↻ Reload.")


def _short(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
    return text if len(text) <= limit else text[:limit] + "..."


def _local_run_id(path: Path) -> str | None:
    """Run id of an MLflow-logged folder (MLmodel file), if any."""
    for cand in (path / "MLmodel", path.parent / "MLmodel", path.parent.parent / "MLmodel"):  # .../artifacts/<folder>
        if cand.is_file():
            m = re.search(r"^run_id:\s*(\S+)", cand.read_text(), re.M)
            if m:
                return m.group(1)
    return None
