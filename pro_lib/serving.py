"""PRO's registered models as MLflow pyfunc models, the ``pro-endpoint`` composite, and its HTTP client.

Every version :func:`pro_lib.packaging.register_model` creates is an MLflow model (an ``MLmodel``
file, a signature, an input example, pinned pip requirements) wrapping the PRO folder it was given,
so ``mlflow.pyfunc.load_model("models:/<name>@champion")`` and ``mlflow models serve`` work from a
fresh process with nothing but mlflow:

=====================  ==========================================  ===========================================
kind (registered as)   input columns                               output columns
=====================  ==========================================  ===========================================
orchestrator           ``prompt``                                  one per objective (weights, rows sum to 1)
(pro-orchestrator)
reward                 ``prompt``, ``response``                    ``score`` (the raw reward-model logit)
(pro-reward-<obj>)
policy                 ``prompt``, optional ``weights``            ``response``, ``weight_<objective>``
(pro-policy-<method>)  (K floats in the objectives' order;
                       ``[]`` = none)
endpoint               ``prompt``, optional ``weights``            ``weights_source``, ``weight_<objective>``,
(pro-endpoint)                                                     ``response``, ``score_<objective>`` and
                                                                   ``suite_stats`` (suite: JSON mean/std per
                                                                   objective, ``null`` = raw scores)
=====================  ==========================================  ===========================================

Policies and the endpoint take generation params (``max_new_tokens``, ``do_sample``,
``temperature``, ``top_p``, ``seed``; the endpoint also ``score``, and ``policy``: which of its policies
answers, when it was built with more than one; LoRA adapters of one base share that base) through MLflow's
``params``; the endpoint's ``best_of_n`` (default 1) returns the best of N sampled answers under the
prompt's weights (:mod:`pro_lib.best_of_n`: ``best_of_n``, ``weighted_score``, ``candidate_weighted_scores``).

Layout of a version's artifacts: ``MLmodel``, ``python_env.yaml``, ``requirements.txt``,
``input_example.json``, ``code/pro_lib`` (this library, so the model loads without pro-align
installed: the code that wrote the weights travels with them) and ``artifacts/<folder>/`` (the PRO
folder as ``save_pretrained`` wrote it; written by :func:`pro_lib.packaging.save_pyfunc`).
:func:`pro_lib.registry.model_folder` maps a downloaded version to that
folder, which is what PRO's own loaders (``from_pretrained``, ``RewardSuite``) read, so
``models:/`` references in ``pro`` and the explorer work on both this format and the plain folders
registered before it.

The reward models score (prompt, response) the way they were trained (``input_format`` in
``pro_reward.json``; the default ``pair`` encodes them as a tokenizer *text pair*, ``[CLS] prompt
[SEP] response [SEP]``, prompt truncated from the left). trl's ``reward_funcs=<folder>`` would
instead feed ``prompt + completion`` as *one* text: give trl a function instead::

    rm = mlflow.pyfunc.load_model("models:/pro-reward-helpful@champion")
    def helpful(prompts, completions, **kw):
        return rm.predict(pd.DataFrame({"prompt": prompts, "response": completions}))["score"].tolist()
    GRPOTrainer(..., reward_funcs=[helpful])
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pro_lib.artifacts import (AdapterManifest, EndpointManifest, OrchestratorManifest, RewardModelInfo,
                               SuiteManifest, WICPolicyManifest)
from pro_lib.best_of_n import check_n, endpoint_best_of_n
# the HTTP client of a served endpoint lives beside it (importable from here as before)
from pro_lib.endpoint_client import EXAMPLE_PROMPTS, EndpointClient  # noqa: F401
from pro_lib.endpoint_refs import check_references, load_suite, part_folder
from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.policy import CGROUP_V1_QUOTA, container_cpu_limit, serving_threads, use_container_cpus  # noqa: F401
from pro_lib.registry import ARTIFACT_KEY

log = logging.getLogger(__name__)

ENDPOINT_FILE = EndpointManifest.FILE
GEN_PARAMS = {"max_new_tokens": ("long", 64), "do_sample": ("boolean", False), "temperature": ("double", 1.0),
              "top_p": ("double", 1.0), "seed": ("long", -1),
              # OpenAI-style alias of max_new_tokens (honoured; -1: not given)
              "max_tokens": ("long", -1)}
# the endpoint's own params: score the answer; which policy answers; best-of-N (pro_lib.best_of_n)
ENDPOINT_PARAMS = {"score": ("boolean", True), "policy": ("string", ""), "best_of_n": ("long", 1)}


# -- what a folder is ----------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}); the model folder is corrupt") from None


def detect_kind(folder: str | Path) -> str:
    """``orchestrator``, ``reward``, ``policy`` or ``endpoint`` from the files PRO writes into a folder."""
    folder = Path(folder)
    for kind, manifest in (("endpoint", EndpointManifest), ("orchestrator", OrchestratorManifest),
                           ("reward", RewardModelInfo), ("policy", WICPolicyManifest), ("policy", AdapterManifest)):
        if manifest.exists(folder):
            return kind
    if (folder / "config.json").is_file():
        archs = _read_json(folder / "config.json").get("architectures") or []
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            return "policy"
    raise CheckpointError(
        f"{folder} is not a PRO model folder: expected {OrchestratorManifest.FILE} (orchestrator, `pro "
        f"orchestrator train`), {RewardModelInfo.FILE} (reward model, `pro rewards train`), {WICPolicyManifest.FILE} "
        f"or a causal-LM config.json (policy), or {ENDPOINT_FILE} (endpoint, `pro_lib.serving.build_endpoint`)")


def describe(folder: str | Path, kind: str) -> dict:
    """What the signature needs: objectives (in order) and, for policies, whether weights steer them."""
    folder = Path(folder)
    if kind == "orchestrator":
        return {"objectives": list(OrchestratorManifest.load(folder).objectives)}
    if kind == "reward":
        info = RewardModelInfo.load(folder)
        return {"objective": info.objective, "input_format": info.input_format, "max_length": info.max_length,
                "objectives": [info.objective or "score"]}
    if kind == "policy":
        wic = WICPolicyManifest.load_optional(folder)
        info = ({"objectives": list(wic.objectives), "conditioned": True, "conditioning": wic.conditioning}
                if wic is not None else {"objectives": [], "conditioned": False})
        return {**info, **adapter_info(folder)}
    meta = EndpointManifest.load(folder)
    return {"objectives": list(meta.objectives), "conditioned": meta.conditioned, "suite": meta.suite}


def adapter_info(folder: str | Path) -> dict:
    """A LoRA adapter policy's base (reference and digest), rank and adapter size; {} for a full model."""
    meta = AdapterManifest.load_optional(folder)
    if meta is None:
        return {}
    return {"adapter_base": meta.base, "adapter_base_digest": meta.base_digest, "adapter_rank": meta.rank,
            "adapter_bytes": meta.adapter_bytes}


# -- helpers shared by the pyfunc models ----------------------------------------------------------

def _column(df: pd.DataFrame, name: str, *, what: str) -> list:
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    if name not in df.columns:
        raise DataError(f"{what}: the input has no '{name}' column (columns: {list(df.columns)})")
    return df[name].tolist()


def _prompts(df: pd.DataFrame) -> list[str]:
    prompts = _column(df, "prompt", what="prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"row {i}: 'prompt' must be non-empty text, got {p!r}")
    return prompts


def _row_weights(df: pd.DataFrame, k: int) -> list[np.ndarray | None]:
    """The optional ``weights`` column: one K-vector (normalised to sum 1) or None per row."""
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    if "weights" not in df.columns:
        return [None] * len(df)
    rows = []
    for i, w in enumerate(df["weights"].tolist()):
        if w is None or (isinstance(w, float) and np.isnan(w)):
            rows.append(None)
            continue
        arr = np.asarray(w, dtype=np.float64).reshape(-1)
        if arr.size == 0:  # [] = "no weights" (a JSON batch cannot mix rows with and without the key)
            rows.append(None)
            continue
        if arr.size != k or not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
            raise DataError(f"row {i}: 'weights' must be {k} non-negative numbers (not all 0), got {list(arr)}")
        rows.append(arr / arr.sum())
    return rows


def _gen_kwargs(params: Mapping[str, Any] | None) -> dict:
    p = {k: d for k, (_, d) in GEN_PARAMS.items()}
    given = {k: v for k, v in dict(params or {}).items() if v is not None}
    unknown = sorted(set(given) - set(GEN_PARAMS) - set(ENDPOINT_PARAMS))  # endpoint params, not generation ones
    if unknown:
        raise DataError(f"unknown generation parameter(s) {unknown}; PRO's are {sorted(GEN_PARAMS)}")
    p.update({k: v for k, v in given.items() if k in GEN_PARAMS})
    max_tokens = int(p.pop("max_tokens"))
    if max_tokens >= 0:
        # MLflow's scoring server fills every param of the signature with its default: only a
        # max_new_tokens other than its default is a second, different answer
        if int(given.get("max_new_tokens", GEN_PARAMS["max_new_tokens"][1])) not in (
                max_tokens, GEN_PARAMS["max_new_tokens"][1]):
            raise DataError(f"max_tokens={max_tokens} and max_new_tokens={given['max_new_tokens']} disagree; "
                            "give one of them")
        p["max_new_tokens"] = max_tokens
    if int(p["max_new_tokens"]) < 1:
        raise DataError(f"max_new_tokens must be >= 1, got {p['max_new_tokens']}")
    seed = int(p.pop("seed"))
    return {**p, "seed": seed if seed >= 0 else None}


class Generator:
    """A policy folder as a text generator: WIC policies get the weights in their prompt; plain causal
    LMs (MORLHF policies) were trained for one weighting and ignore them."""

    def __init__(self, folder: str | Path, objectives: Sequence[str] | None = None):
        from pro_lib.wic import WICPolicy

        folder = Path(folder)
        self.conditioned = WICPolicyManifest.exists(folder)
        names = list(objectives) if objectives else None
        # a LoRA adapter shares its base with every other adapter of it in this process (pro_lib.adapters)
        self.policy = WICPolicy.from_pretrained(folder, objectives=names if self.conditioned or names
                                                else ["objective"], shared_base=True)
        self.objectives = self.policy.objectives

    def generate(self, prompts: Sequence[str], weights: np.ndarray, *, batch_size: int = 8, **gen) -> list[str]:
        texts = (self.policy.condition(list(prompts), weights) if self.conditioned
                 else [self.policy.render_plain(p) for p in prompts])
        return self.policy.generate_texts(texts, batch_size=batch_size, **gen)


# -- serving: client errors, CPU threads ----------------------------------------------------------

def _bad_request(predict):
    """PRO's input errors (DataError / ConfigError: what is wrong and how to fix it) as MLflow's
    INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400 and the message, no stack trace."""
    import functools

    @functools.wraps(predict)
    def wrapper(self, context, model_input, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return predict(self, context, model_input, params)
        except (DataError, ConfigError) as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None

    return wrapper


# -- the pyfunc models ----------------------------------------------------------------------------

class OrchestratorModel(mlflow.pyfunc.PythonModel):
    """``prompt`` -> one weight column per objective."""

    def load_context(self, context):
        from pro_lib.orchestrator import PreferenceOrchestrator

        use_container_cpus()
        self.orchestrator = PreferenceOrchestrator.from_pretrained(context.artifacts[ARTIFACT_KEY])

    @_bad_request
    def predict(self, context, model_input, params=None):
        w = self.orchestrator.predict(_prompts(model_input))
        return pd.DataFrame(w.astype(np.float64), columns=self.orchestrator.objectives)


class RewardModel(mlflow.pyfunc.PythonModel):
    """(``prompt``, ``response``) -> ``score``, encoded as in training (``pro_reward.json``)."""

    def load_context(self, context):
        from pro_lib.suite import Objective, RewardSuite

        use_container_cpus()
        folder = Path(context.artifacts[ARTIFACT_KEY])
        info = describe(folder, "reward")
        self.suite = RewardSuite([Objective(name=info["objective"] or "score", model=str(folder),
                                            input_format=info["input_format"], max_length=info["max_length"])])
        self.suite.load_all()

    @_bad_request
    def predict(self, context, model_input, params=None):
        prompts = _prompts(model_input)
        responses = [str(r) for r in _column(model_input, "response", what="reward model")]
        scores = self.suite.score(prompts, responses, progress=False)
        return pd.DataFrame({"score": scores[:, 0].astype(np.float64)})


class PolicyModel(mlflow.pyfunc.PythonModel):
    """``prompt`` (+ optional ``weights``; uniform when absent) -> ``response`` and the weights used."""

    def load_context(self, context):
        use_container_cpus()
        self.generator = Generator(context.artifacts[ARTIFACT_KEY])

    @_bad_request
    def predict(self, context, model_input, params=None):
        prompts = _prompts(model_input)
        k = self.generator.policy.K
        rows = _row_weights(model_input, k)
        w = np.stack([r if r is not None else np.full(k, 1.0 / k) for r in rows])
        out = pd.DataFrame({"response": self.generator.generate(prompts, w, **_gen_kwargs(params))})
        if self.generator.conditioned:
            for j, n in enumerate(self.generator.objectives):
                out[f"weight_{n}"] = w[:, j]
        return out


class Endpoint:
    """The deployed PRO system in one process: the orchestrator picks each prompt's weights (unless
    given), the policy answers, the reward suite (optional) scores the answer per objective."""

    def __init__(self, folder: str | Path):
        from pro_lib.orchestrator import PreferenceOrchestrator
        from pro_lib.suite import RewardSuite

        folder = Path(folder)
        meta = EndpointManifest.load(folder)
        # each part: the folder's copy, or the registered version it references (pro_lib.endpoint_refs)
        self.orchestrator = PreferenceOrchestrator.from_pretrained(part_folder(folder, meta, "orchestrator"))
        self.objectives = self.orchestrator.objectives
        self.generator = Generator(part_folder(folder, meta, "policy"), self.objectives)
        # further policies, picked per request (params {"policy": name}); LoRA adapters of one base share it
        self.generators = {"": self.generator, **{
            name: Generator(part_folder(folder, meta, f"policies/{name}"), self.objectives) for name in meta.policies}}
        self.suite = load_suite(folder, meta) if meta.suite else None
        if self.suite is not None:
            self.orchestrator.check_objectives(self.suite.names)
            self.suite.load_all()  # /health turns ready with every model in memory, not on the first request

    def predict(self, model_input, params=None) -> pd.DataFrame:
        params = dict(params or {})
        prompts = _prompts(model_input)
        k = len(self.objectives)
        rows = _row_weights(model_input, k)
        missing = [i for i, r in enumerate(rows) if r is None]
        w = np.zeros((len(prompts), k))
        if missing:
            w[missing] = self.orchestrator.predict([prompts[i] for i in missing])
        for i, r in enumerate(rows):
            if r is not None:
                w[i] = r
        out = pd.DataFrame({"weights_source": ["given" if r is not None else "orchestrator" for r in rows]})
        for j, n in enumerate(self.objectives):
            out[f"weight_{n}"] = w[:, j]
        name = str(params.get("policy") or "")
        if name not in self.generators:
            raise DataError(f"no policy {name!r} in this endpoint; it serves "
                            f"{', '.join(repr(n) for n in self.generators if n) or 'only its default policy'} "
                            "(params.policy; '' is the default)")
        gen, n = _gen_kwargs(params), check_n(params.get("best_of_n"))
        picked = (endpoint_best_of_n(self.generators[name], self.suite, prompts, w, n, gen,
                                     score=params.get("score", True)) if n > 1 else None)
        responses = picked.responses if picked else self.generators[name].generate(prompts, w, **gen)
        out["response"] = responses
        if self.suite is not None:  # the units of score_<objective>: z-scores under these stats, raw when null
            stats = {n: [float(m), float(sd)] for n, (m, sd) in self.suite.stats.items()} if self.suite.stats else None
            out["suite_stats"] = json.dumps(stats)
        if self.suite is not None and params.get("score", True):
            s = picked.scores if picked else self.suite.score(prompts, responses, normalize=self.suite.stats is not None,
                                                              progress=False)
            for j, n in enumerate(self.objectives):
                out[f"score_{n}"] = s[:, j].astype(np.float64)
        return out.assign(**picked.columns()) if picked else out


class EndpointModel(mlflow.pyfunc.PythonModel):
    """:class:`Endpoint` as a pyfunc model (``pro-endpoint``)."""

    def load_context(self, context):
        from pro_lib.tracing import instrument

        use_container_cpus()
        # a trace per request: orchestrator, generation and scoring spans (pro_lib.tracing)
        self.endpoint = instrument(Endpoint(context.artifacts[ARTIFACT_KEY]))

    @_bad_request
    def predict(self, context, model_input, params=None):
        return self.endpoint.predict(model_input, params)


def build_endpoint(dest: str | Path, *, orchestrator: str | Path, policy: str | Path,
                   suite: str | Path | None = None, reward_models: Sequence[str | Path] = (),
                   policies: Mapping[str, str | Path] | None = None,
                   references: Mapping[str, str] | None = None) -> Path:
    """Assemble a ``pro-endpoint`` folder (atomically): ``orchestrator/``, ``policy/``, optional
    ``suite/`` (suite.yaml + a copy of each reward model, referenced relatively) and ``pro_endpoint.json``.

    ``suite``: a suite folder (suite.yaml). Its reward models are copied from their recorded paths,
    or from ``reward_models`` (folders with pro_reward.json, matched by objective) when given (on a
    cluster the recorded paths belong to another pod).

    ``policies``: further policies (name -> folder or ref) served beside ``policy`` and picked per request
    (``params={"policy": name}``); LoRA adapters of one base load that base once (:mod:`pro_lib.adapters`).

    ``references``: parts (``orchestrator``, ``policy``, ``policies/<name>``, ``suite/<objective>``) to hold as
    ``models:/<name>/<version>`` of the same folder instead of a copy (:mod:`pro_lib.endpoint_refs`).
    """
    from pro_lib.io import atomic_dir, digest_path
    from pro_lib.refs import localize
    from pro_lib.targets import check_objective_name, check_objectives

    orch_dir, pol_dir = Path(localize(orchestrator)), Path(localize(policy))
    if detect_kind(orch_dir) != "orchestrator":
        raise CheckpointError(f"{orch_dir} is not an orchestrator folder (no {OrchestratorManifest.FILE})")
    names = list(describe(orch_dir, "orchestrator")["objectives"])
    for n in names:  # each becomes a folder name (suite/<name>) below
        check_objective_name(n, where=str(orch_dir))
    if detect_kind(pol_dir) != "policy":
        raise CheckpointError(f"{pol_dir} is not a policy folder (no {WICPolicyManifest.FILE}, not a causal LM)")
    pol = describe(pol_dir, "policy")
    if pol["conditioned"]:
        check_objectives(pol["objectives"], names, got_what=f"the policy {pol_dir}",
                         expected_what=f"the orchestrator {orch_dir}", fix="use the matching pair")
    extra = {}
    for name, ref in dict(policies or {}).items():
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"endpoint policy name {name!r}: use letters, digits, '-' and '_'")
        extra[name] = Path(localize(ref))
        if detect_kind(extra[name]) != "policy":
            raise CheckpointError(f"{extra[name]} is not a policy folder (no {WICPolicyManifest.FILE}, not a causal LM)")
        info = describe(extra[name], "policy")
        if info["conditioned"]:
            check_objectives(info["objectives"], names, got_what=f"the policy {extra[name]}",
                             expected_what=f"the orchestrator {orch_dir}", fix="use the matching pair")
    refs, digests = check_references(references), {}

    def place(src: Path, part: str) -> None:  # a copy, or the reference and the digest it must match
        if part in refs:
            digests[part] = digest_path(src)
        else:
            shutil.copytree(src, tmp / part)

    with atomic_dir(Path(dest)) as tmp:
        place(orch_dir, "orchestrator")
        place(pol_dir, "policy")
        for name, src in extra.items():
            place(src, f"policies/{name}")
        if suite is not None:
            sfile = SuiteManifest.path(localize(suite))
            data = SuiteManifest.load(sfile)
            objs = [dict(o) for o in data.objectives]
            check_objectives([o.get("name") for o in objs], names, got_what=str(sfile),
                             expected_what="the orchestrator", fix="use the suite the orchestrator was trained with")
            by_obj = {RewardModelInfo.load(d).objective: Path(d) for d in reward_models}
            (tmp / "suite").mkdir()
            for o in objs:
                check_objective_name(o.get("name"), where=str(sfile))  # it becomes a folder name below
                if not o.get("model"):
                    raise ConfigError(f"{sfile}: objective '{o['name']}' is a function, not a model; an "
                                      "endpoint can only bundle model objectives")
                src = by_obj.get(o["name"]) or Path(localize(o["model"]))
                if not Path(src).is_absolute():
                    src = sfile.parent / src
                if not Path(src).is_dir():
                    raise CheckpointError(f"reward model for '{o['name']}' not found at {src}")
                place(Path(src), f"suite/{o['name']}")
                o["model"] = refs.get(f"suite/{o['name']}", o["name"])  # the reference, or relative to suite.yaml
            SuiteManifest(objectives=objs, stats=data.stats).save(tmp / "suite")
        if set(refs) - set(digests):
            raise ConfigError(f"references for parts this endpoint does not have: {sorted(set(refs) - set(digests))}")
        EndpointManifest(objectives=names, conditioned=pol["conditioned"], suite=suite is not None,
                         orchestrator=str(orchestrator), policy=str(policy),
                         suite_source=str(suite) if suite else None, policies=sorted(extra), references=refs,
                         digests=digests).save(tmp)
    return Path(dest)
