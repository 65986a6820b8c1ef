"""The reward suite: K objectives, each a reward model or a Python scoring function.

``RewardSuite.score(prompts, responses)`` returns an (N, K) matrix. Scoring is batched, sorted by
length (so padding is small), and runs under ``torch.inference_mode``. Normalisation statistics
(per-objective mean and std of the raw scores) are computed once with ``fit_normalization`` and
saved with the suite, so every later stage normalises the same way.

A suite is saved as a folder holding ``suite.yaml``::

    objectives:
      - {name: helpful, model: runs/rewards/helpful, input_format: pair}
      - {name: brevity, function: mypkg.rewards:brevity}
    stats: {helpful: [0.12, 1.3], brevity: [-40.0, 12.0]}
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from pro_lib.artifacts import RewardModelInfo, SuiteManifest, TargetsReport
from pro_lib.config import field
from pro_lib.errors import ConfigError, DataError
from pro_lib.policy import resolve_device
from pro_lib.targets import DEFAULT_TAU

log = logging.getLogger(__name__)

INPUT_FORMATS = ("pair", "concat", "response", "chat")
ScoreFn = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class Objective:
    """One objective of the suite.

    ``input_format`` covers the quirks of known reward models:
    ``pair`` (tokenizer text pair: prompt, response; encoder RMs such as OpenAssistant's DeBERTa),
    ``concat`` (prompt + response as one string), ``response`` (response only) and ``chat`` (the
    tokenizer's chat template over a user/assistant exchange; decoder RMs). ``logit_index`` picks
    the output logit that is the reward (e.g. 1 for a two-class "good" logit).
    """

    name: str
    model: str | None = None
    function: str | None = None
    input_format: str = "pair"
    logit_index: int = 0
    max_length: int = 512

    def __post_init__(self) -> None:
        if not self.name or not str(self.name).strip():
            raise ConfigError("every objective needs a non-empty name")
        from pro_lib.targets import check_objective_name

        check_objective_name(self.name)
        if (self.model is None) == (self.function is None):
            raise ConfigError(f"objective '{self.name}': give exactly one of model= or function=")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"objective '{self.name}': input_format must be one of {INPUT_FORMATS}, "
                              f"got {self.input_format!r}")


def parse_objective(spec: str) -> Objective:
    """Parse ``name=model_ref`` or ``name=fn:package.module:function`` (CLI form)."""
    if "=" not in spec:
        raise ConfigError(f"objective {spec!r}: write name=<model folder, hub name or models:/...> "
                          "or name=fn:<module>:<function>")
    name, ref = spec.split("=", 1)
    if ref.startswith("fn:"):
        return Objective(name=name.strip(), function=ref[3:])
    return Objective(name=name.strip(), model=ref)


def reward_model_info(ref: str | Path) -> RewardModelInfo:
    """What a reward-model folder records about itself (its ``pro_reward.json``: objective, input
    format, max length, config); the defaults for a model without one (a hub reward model)."""
    from pro_lib.refs import localize

    local = localize(ref)
    info = RewardModelInfo.load_optional(local) if isinstance(local, Path) else None
    return info or RewardModelInfo()


def model_objective(name: str, ref: str, *, input_format: str | None = None,
                    max_length: int | None = None) -> Objective:
    """The objective of a reward model: its input format and max length are the ones it was trained
    with (:class:`pro_lib.artifacts.RewardModelInfo`) unless given, else ``pair`` / 512."""
    from pro_lib.refs import localize

    local = localize(ref)
    info = reward_model_info(local)
    return Objective(name=name, model=str(local), input_format=input_format or info.input_format,
                     max_length=int(max_length or info.max_length))


def _import_function(path: str, name: str) -> ScoreFn:
    if ":" not in path:
        raise ConfigError(f"objective '{name}': function must be 'package.module:function', got {path!r}")
    mod_name, fn_name = path.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"objective '{name}': cannot import {path}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"objective '{name}': {path} is not callable")
    return fn


def encode_for_reward(tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                      input_format: str = "pair", max_length: int = 512) -> dict:
    """Tokenise (prompt, response) pairs the way PRO's reward models see them (no padding).

    Long inputs keep the *end* of the prompt (the latest turns) and the *start* of the response.
    Reward training (``pro_lib.rewards``) and scoring both use this function, so they agree.
    Returns ``{"input_ids": [[...], ...]}``; token type ids are deliberately not used.
    """
    prompts, responses = list(prompts), list(responses)
    old_side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        if input_format == "response":
            tokenizer.truncation_side = "right"
            enc = tokenizer(responses, truncation=True, max_length=max_length)
        elif input_format == "concat":
            enc = tokenizer([p + r for p, r in zip(prompts, responses)], truncation=True,
                            max_length=max_length)
        elif input_format == "chat":
            texts = [tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
                for p, r in zip(prompts, responses)]
            enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=False)
        else:  # pair
            # Cap each response at 3/4 of the budget so the prompt always keeps some context.
            cap = max(8, (max_length * 3) // 4)
            resp_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
            responses = [r if len(ids) <= cap else tokenizer.decode(ids[:cap])
                         for r, ids in zip(responses, resp_ids)]
            enc = tokenizer(prompts, responses, truncation="only_first", max_length=max_length)
    finally:
        tokenizer.truncation_side = old_side
    return {"input_ids": enc["input_ids"]}


class _ModelScorer:
    """Loads one reward model lazily and scores batches with it."""

    def __init__(self, obj: Objective, device: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from pro_lib.models import LOAD_ERRORS, load_error, resolve_model

        self.obj = obj
        path = resolve_model(obj.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except LOAD_ERRORS as exc:
            raise load_error(obj.model, exc, what=f"the reward model of objective '{obj.name}'") from None
        n_logits = self.model.config.num_labels
        if not 0 <= obj.logit_index < n_logits:
            raise ConfigError(f"objective '{obj.name}': logit_index {obj.logit_index} but the model "
                              f"has {n_logits} output(s)")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval().requires_grad_(False)
        self.device = device

    def __call__(self, prompts: list[str], responses: list[str], batch_size: int,
                 progress: bool, sort_by_length: bool = True) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        enc = encode_for_reward(self.tokenizer, prompts, responses,
                                input_format=self.obj.input_format, max_length=self.obj.max_length)
        ids = enc["input_ids"]
        # Longest first: batches of similar length pad little, and an OOM shows up at once.
        order = (np.argsort([-len(x) for x in ids], kind="stable") if sort_by_length
                 else np.arange(len(ids)))
        out = np.empty(len(ids), dtype=np.float64)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in tqdm(range(0, len(ids), batch_size), desc=f"scoring {self.obj.name}",
                              disable=not progress, leave=False):
                idx = order[start:start + batch_size]
                batch = [ids[i] for i in idx]
                width = max(len(b) for b in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, b in enumerate(batch):
                    input_ids[row, :len(b)] = torch.tensor(b)
                    mask[row, :len(b)] = 1
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=mask.to(self.device)).logits
                out[idx] = logits[:, self.obj.logit_index].float().cpu().numpy()
        return out


class RewardSuite:
    """K objectives scored together into an (N, K) matrix."""

    def __init__(self, objectives: Sequence[Objective], stats: Mapping[str, Sequence[float]] | None = None,
                 *, device: str | None = None, functions: Mapping[str, ScoreFn] | None = None):
        objectives = list(objectives)
        if not objectives:
            raise ConfigError("a reward suite needs at least one objective")
        names = [o.name for o in objectives]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"objective names must be unique; repeated: {dupes}")
        self.objectives = objectives
        self._functions = dict(functions or {})
        self._scorers: dict[str, object] = {}
        self.device = device or resolve_device()
        self.stats: dict[str, tuple[float, float]] | None = None
        if stats is not None:
            self.set_stats(stats)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_functions(cls, functions: Mapping[str, ScoreFn], stats=None) -> "RewardSuite":
        """A suite of in-process callables ``fn(prompts, responses) -> scores`` (not saveable)."""
        objectives = [Objective(name=n, function=f"<in-process>:{n}") for n in functions]
        return cls(objectives, stats, functions=functions)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> "RewardSuite":
        from pro_lib.refs import localize

        local = localize(path)
        manifest, file = SuiteManifest.load(local), SuiteManifest.path(local)
        objs = []
        for i, raw in enumerate(manifest.objectives):
            unknown = set(raw) - {f.name for f in dataclasses.fields(Objective)}
            if unknown:
                raise ConfigError(f"{file}: objectives[{i}] has unknown key(s) {sorted(unknown)}")
            raw = dict(raw)
            if raw.get("model") and not str(raw["model"]).startswith(("models:/", "s3://")):
                rel = file.parent / raw["model"]
                if rel.exists():
                    raw["model"] = str(rel.resolve())
            objs.append(Objective(**raw))
        return cls(objs, manifest.stats, device=device)

    def save(self, path: str | Path) -> Path:
        if self._functions:
            raise ConfigError("a suite with in-process functions cannot be saved; use "
                              "Objective(function='package.module:function') instead")
        folder = Path(path)
        objs = []
        for o in self.objectives:
            d = {k: v for k, v in dataclasses.asdict(o).items() if v is not None}
            if o.model and Path(o.model).exists():
                d["model"] = str(Path(o.model).resolve())
            objs.append(d)
        stats = {k: [float(m), float(s)] for k, (m, s) in self.stats.items()} if self.stats else None
        SuiteManifest(objectives=objs, stats=stats).save(folder)
        return folder

    # -- properties ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def K(self) -> int:  # noqa: N802 (the paper's notation)
        return len(self.objectives)

    def _scorer(self, obj: Objective):
        if obj.name in self._functions:
            return self._functions[obj.name]
        if obj.name not in self._scorers:
            if obj.function:
                self._scorers[obj.name] = _import_function(obj.function, obj.name)
            else:
                self._scorers[obj.name] = _ModelScorer(obj, self.device)
        return self._scorers[obj.name]

    def load_all(self) -> "RewardSuite":
        """Load every reward model now (scoring loads them on first use): a server that says it is ready
        has them in memory."""
        for obj in self.objectives:
            self._scorer(obj)
        return self

    def subset(self, names: Sequence[str]) -> "RewardSuite":
        """These objectives (in this order) as a suite that shares this one's loaded models and its stats."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ConfigError(f"no objective(s) {missing} in this reward suite; it has {self.names}")
        objs = [self.objectives[self.names.index(n)] for n in names]
        sub = RewardSuite(objs, {n: self.stats[n] for n in names} if self.stats else None, device=self.device,
                          functions={n: f for n, f in self._functions.items() if n in names})
        sub._scorers = {o.name: self._scorer(o) for o in objs if o.name not in sub._functions}
        return sub

    # -- scoring ------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32,
              normalize: bool = False, progress: bool = True, sort_by_length: bool = True) -> np.ndarray:
        """Score each (prompt, response) with every objective: an (N, K) float32 matrix.

        ``sort_by_length=False`` keeps the input order in batches (only for benchmarking).
        """
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise DataError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.zeros((len(prompts), self.K), dtype=np.float64)
        if not prompts:
            return out.astype(np.float32)
        for k, obj in enumerate(self.objectives):
            scorer = self._scorer(obj)
            if isinstance(scorer, _ModelScorer):
                col = scorer(prompts, responses, batch_size, progress, sort_by_length)
            else:
                col = np.asarray(list(scorer(prompts, responses)), dtype=np.float64)
                if col.shape != (len(prompts),):
                    raise DataError(f"objective '{obj.name}': scoring function returned "
                                    f"{col.shape[0] if col.ndim else 'a scalar'} scores for {len(prompts)} inputs")
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                raise DataError(f"objective '{obj.name}' gave a NaN/infinite score for input {bad[0]} "
                                f"({bad.size} in all); check the reward model or function")
            out[:, k] = col
        return self.normalize(out) if normalize else out.astype(np.float32)

    # -- normalisation ------------------------------------------------------------------------
    def set_stats(self, stats: Mapping[str, Sequence[float]]) -> None:
        missing = [n for n in self.names if n not in stats]
        if missing:
            raise ConfigError(f"normalisation stats lack objective(s) {missing}; have {sorted(stats)}")
        clean = {}
        for n in self.names:
            mean, std = (float(v) for v in stats[n])
            if not np.isfinite(mean) or not np.isfinite(std) or std <= 0:
                raise ConfigError(f"bad normalisation stats for '{n}': mean={mean}, std={std}")
            clean[n] = (mean, std)
        self.stats = clean

    def fit_normalization(self, raw: np.ndarray) -> dict[str, tuple[float, float]]:
        """Compute per-objective (mean, std) from raw scores (N, K) and store them."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != self.K:
            raise DataError(f"expected scores of shape (N, {self.K}), got {raw.shape}")
        if raw.shape[0] < 2:
            raise DataError("need at least 2 scored examples to compute normalisation statistics")
        std = raw.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)  # a constant objective stays constant (z = 0)
        self.set_stats({n: (float(m), float(s)) for n, m, s in zip(self.names, raw.mean(axis=0), std)})
        return self.stats

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        if self.stats is None:
            raise ConfigError("this reward suite has no normalisation statistics; compute them with "
                              "fit_normalization (pro rewards score does) or load a saved suite")
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape[-1] != self.K:
            raise DataError(f"scores have {raw.shape[-1]} objectives but the suite has {self.K}")
        mean = np.array([self.stats[n][0] for n in self.names])
        std = np.array([self.stats[n][1] for n in self.names])
        return ((raw - mean) / std).astype(np.float32)


# -- stage: score preferred responses and build targets ---------------------------------------

@dataclass
class ScoreConfig:
    """Score the preferred responses with every objective, fit normalisation, build w* targets."""

    data: str = field("runs/data/train.jsonl", help="preference pairs to score (any load_pairs spec)")
    objectives: list[str] = field(default_factory=list,
                                  help="objectives as name=<model ref> or name=fn:<module>:<function>")
    suite: str | None = field(None, help="an existing suite folder (instead of --objectives)")
    output_dir: str = field("runs/targets", help="folder for targets.jsonl, the suite and a report")
    tau: float = field(DEFAULT_TAU, help="softmax temperature of the targets (paper: 0.1); recorded in "
                                         "target_report.json, which the orchestrator and PRO-WIC offline follow")
    batch_size: int = field(32, help="scoring batch size")
    max_length: int | None = field(None, help="max tokens per reward-model input (default: as each reward "
                                              f"model was trained, from its {RewardModelInfo.FILE}, else 512)")
    input_format: str | None = field(None, help="input format for model objectives (default: as each reward "
                                                "model was trained, else pair)", choices=list(INPUT_FORMATS))
    refit_stats: bool = field(True, help="recompute normalisation stats on this data (else reuse the suite's)")


def build_suite(cfg: ScoreConfig) -> RewardSuite:
    if cfg.suite:
        return RewardSuite.load(cfg.suite)
    if not cfg.objectives:
        raise ConfigError("give --objectives name=<model>,... or --suite <folder>")
    objs = []
    for spec in cfg.objectives:
        o = parse_objective(spec)
        objs.append(model_objective(o.name, o.model, input_format=cfg.input_format, max_length=cfg.max_length)
                    if o.model else o)
    return RewardSuite(objs)


def score_and_target(cfg: ScoreConfig) -> dict:
    """Score ``cfg.data``'s preferred responses, save normalisation stats and w* targets.

    Writes ``<output_dir>/suite/suite.yaml``, ``targets.jsonl`` (prompt, source, raw, z, weights)
    and ``target_report.json``.
    """
    from pro_lib.data import load_pairs
    from pro_lib.io import check_output_dir
    from pro_lib.targets import target_weights

    # an earlier scoring's files are replaced; another artifact's folder is refused, not merged into
    check_output_dir(cfg.output_dir, what="rewards score", allowed={"suite", "targets.jsonl", TargetsReport.FILE})
    suite = build_suite(cfg)
    pairs = load_pairs(cfg.data)
    raw = suite.score([p.prompt for p in pairs], [p.chosen for p in pairs], batch_size=cfg.batch_size)
    if cfg.refit_stats or suite.stats is None:
        suite.fit_normalization(raw)
    z = suite.normalize(raw)
    w = target_weights(z, cfg.tau)
    out = Path(cfg.output_dir)
    suite.save(out / "suite")
    from pro_lib.io import write_jsonl

    write_jsonl(out / "targets.jsonl", (
        {"prompt": p.prompt, "source": p.source, "raw": raw[i], "z": z[i], "weights": w[i]}
        for i, p in enumerate(pairs)))
    TargetsReport(objectives=suite.names, tau=float(cfg.tau), n=len(pairs),
                  stats={k: [float(m), float(s)] for k, (m, s) in suite.stats.items()},
                  mean_target=w.mean(axis=0).tolist(),
                  argmax_share=(np.bincount(w.argmax(axis=1), minlength=suite.K) / len(pairs)).tolist()).save(out)
    metrics = {"n_scored": len(pairs)}
    for k, n in enumerate(suite.names):
        metrics[f"mean_target_{n}"] = float(w[:, k].mean())
    return metrics


def load_targets(path: str | Path) -> tuple[list[str], np.ndarray, list[str | None]]:
    """Read ``targets.jsonl`` (or its folder): prompts, (N, K) target weights, sources."""
    p = Path(path)
    if p.is_dir():
        p = p / "targets.jsonl"
    if not p.is_file():
        raise DataError(f"no targets file at {path}; create it with `pro rewards score`")
    from pro_lib.io import read_jsonl

    rows = read_jsonl(p, required=("prompt", "weights"), what="target record")
    prompts, weights, sources = [r["prompt"] for r in rows], [r["weights"] for r in rows], [r.get("source") for r in rows]
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2:
        raise DataError(f"{p}: target weight vectors have different lengths")
    return prompts, w, sources
