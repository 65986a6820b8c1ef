"""One contract per artifact folder: the manifest each PRO folder carries, as a typed dataclass.

Every manifest file name is defined here once; pro_lib, components, the registry and the explorer
read and write the manifests through these classes (``tests/test_architecture.py`` greps for
stray copies of the names). ``save(folder)`` writes atomically (``pro_lib.io``); ``load(folder)``
checks every field and raises :class:`ManifestError` naming the file, the field and how to
re-create it. Fields the writers of earlier versions left out have defaults, so old folders load;
keys this version does not know are ignored (a newer PRO may add some).

===================  =====================  ===================  ============================
folder               manifest               dataclass            written by
===================  =====================  ===================  ============================
targets              target_report.json     TargetsReport        ``pro rewards score``
reward model         pro_reward.json        RewardModelInfo      ``pro rewards train``
reward suite         suite.yaml             SuiteManifest        ``RewardSuite.save``
orchestrator         pro_orchestrator.json  OrchestratorManifest ``PreferenceOrchestrator.save_pretrained``
WIC / RiC policy     wic.json               WICPolicyManifest    ``WICPolicy.save_pretrained``
LoRA adapter policy  pro_adapter.json       AdapterManifest      ``pro_lib.adapters.save_adapter``
Rewarded Soups       soups.json             SoupsManifest        ``pro soups train``
pro-endpoint         pro_endpoint.json      EndpointManifest     ``serving.build_endpoint``
===================  =====================  ===================  ============================

Results files without a schema of their own: :data:`EVAL_FILE` (every evaluation stage),
:data:`DATA_REPORT` (``pro data prepare``); checkpoint folders: :data:`FINGERPRINT_FILE`
(``pro_lib.checkpoints``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pro_lib.errors import CheckpointError, ManifestError
from pro_lib.io import atomic_write_text, read_json, write_json

EVAL_FILE = "eval.json"
DATA_REPORT = "data_report.json"
FINGERPRINT_FILE = "fingerprint.json"


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON / YAML value fits a field's type hint (lists checked item by item)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


@dataclass(frozen=True)
class Manifest:
    """Base of the manifests: a JSON file of typed fields in an artifact folder."""

    FILE: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""  # what a folder with this manifest is ("PRO reward model")
    FIX: ClassVar[str] = ""   # how to re-create it ("re-run `pro rewards train`")
    NON_EMPTY: ClassVar[tuple[str, ...]] = ()  # list / dict fields that must hold something

    @classmethod
    def path(cls, folder: str | Path) -> Path:
        """The manifest of ``folder`` (or ``folder`` itself when it is the manifest)."""
        folder = Path(folder)
        return folder if folder.name == cls.FILE and folder.is_file() else folder / cls.FILE

    @classmethod
    def exists(cls, folder: str | Path) -> bool:
        return cls.path(folder).is_file()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write the manifest into ``folder`` atomically; returns its path."""
        return write_json(Path(folder) / self.FILE, self.to_dict())

    @classmethod
    def _read(cls, path: Path) -> Any:
        return read_json(path)

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """The manifest of ``folder``; :class:`ManifestError` when it is missing or a field is invalid."""
        path = cls.path(folder)
        if not path.is_file():
            raise ManifestError(f"no {cls.WHAT} at {folder}: {cls.FILE} is missing; {cls.FIX}")
        try:
            data = cls._read(path)
        except CheckpointError as exc:
            raise ManifestError(f"{exc}; {cls.FIX}") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def load_optional(cls, folder: str | Path) -> Self | None:
        """As :meth:`load`, or None when ``folder`` has no such manifest (a hub model, a plain LM)."""
        return cls.load(folder) if cls.exists(folder) else None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | Path = "<dict>") -> Self:
        """Check ``data`` field by field against the dataclass (unknown keys are ignored)."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a mapping of fields, got {type(data).__name__}; "
                                f"the file is corrupt, {cls.FIX}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in data:
                if required:
                    raise ManifestError(f"{source}: field '{f.name}' is missing ({_type_name(hints[f.name])}); "
                                        f"the file is incomplete, {cls.FIX}")
                continue
            value = data[f.name]
            if not _fits(value, hints[f.name]) or (f.name in cls.NON_EMPTY and not value):
                kind = ("a non-empty " if f.name in cls.NON_EMPTY else "") + _type_name(hints[f.name])
                raise ManifestError(f"{source}: field '{f.name}' must be {kind}, got {value!r:.80}; {cls.FIX}")
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class TargetsReport(Manifest):
    """``target_report.json`` beside ``targets.jsonl``: the targets' tau travels with them."""

    FILE: ClassVar[str] = "target_report.json"
    WHAT: ClassVar[str] = "targets folder"
    FIX: ClassVar[str] = "re-run `pro rewards score`"

    objectives: list[str]
    tau: float | None = None  # None only in reports written before tau was recorded
    n: int = 0
    stats: dict[str, list[float]] | None = None
    mean_target: list[float] = field(default_factory=list)
    argmax_share: list[float] = field(default_factory=list)

    @classmethod
    def path(cls, folder: str | Path) -> Path:
        folder = Path(folder)  # a targets folder or its targets.jsonl
        return (folder if folder.is_dir() or not folder.suffix else folder.parent) / cls.FILE


@dataclass(frozen=True)
class RewardModelInfo(Manifest):
    """``pro_reward.json`` beside a reward model's weights: it is scored as it was trained."""

    FILE: ClassVar[str] = "pro_reward.json"
    WHAT: ClassVar[str] = "PRO reward model"
    FIX: ClassVar[str] = "re-run `pro rewards train`"

    objective: str | None = None
    input_format: str = "pair"
    max_length: int = 512
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class SuiteManifest(Manifest):
    """``suite.yaml``: the objectives (one mapping each, see ``pro_lib.suite.Objective``) and their
    normalisation stats (objective -> [mean, std])."""

    FILE: ClassVar[str] = "suite.yaml"
    WHAT: ClassVar[str] = "reward suite"
    FIX: ClassVar[str] = "create one with `pro rewards score` or RewardSuite.save"

    objectives: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, list[float]] | None = None

    @classmethod
    def path(cls, folder: str | Path) -> Path:
        folder = Path(folder)  # a suite folder, or the YAML file itself (any name)
        return folder if folder.is_file() else folder / cls.FILE

    @classmethod
    def _read(cls, path: Path) -> Any:
        import yaml

        try:
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path} is not valid YAML: {exc}") from None

    def save(self, folder: str | Path) -> Path:
        import yaml

        return atomic_write_text(Path(folder) / self.FILE, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def folder(cls, path: str | Path) -> str | Path:
        """The suite of ``path``: ``path`` itself (a suite folder or reference), or the ``suite/`` in it
        (a targets folder written by ``pro rewards score``)."""
        return Path(path) / "suite" if not cls.exists(path) and cls.exists(Path(path) / "suite") else path


@dataclass(frozen=True)
class OrchestratorManifest(Manifest):
    """``pro_orchestrator.json`` beside the orchestrator's weights and encoder config."""

    FILE: ClassVar[str] = "pro_orchestrator.json"
    WHAT: ClassVar[str] = "PRO orchestrator"
    FIX: ClassVar[str] = "train one with `pro orchestrator train` (or restore the folder)"
    NON_EMPTY: ClassVar[tuple[str, ...]] = ("objectives",)
    WEIGHTS: ClassVar[str] = "model.safetensors"
    ENCODER_CONFIG: ClassVar[str] = "encoder_config.json"

    objectives: list[str]
    pooling: str
    max_length: int = 256
    tau: float = 0.1
    backbone: str = ""
    encoder_type: str | None = None
    norm_stats: dict[str, Any] | None = None
    format: str = "pro-orchestrator/1"


@dataclass(frozen=True)
class WICPolicyManifest(Manifest):
    """``wic.json`` beside a WIC / RiC policy's weights: how its prompts carry the preferences."""

    FILE: ClassVar[str] = "wic.json"
    WHAT: ClassVar[str] = "WIC policy"
    FIX: ClassVar[str] = "train one with `pro wic offline` (or `pro ric offline`)"
    NON_EMPTY: ClassVar[tuple[str, ...]] = ("objectives",)

    objectives: list[str]
    decimals: int = 2
    conditioning: str = "weights"
    use_chat_template: bool | None = None
    tags: list[str] | None = None
    orchestrator: str | None = None
    reward_range: dict[str, list[float]] | None = None
    method: str | None = None
    score_percentiles: dict[str, list[float]] | None = None
    ric_mapping: str = "linf"
    tag_max: float | None = None  # the largest tag the offline SFT saw; corners read as it (shrink_to_tag_range)
    system_prompt: str | None = None  # the chat template's system turn; None: the template's own default


@dataclass(frozen=True)
class AdapterManifest(Manifest):
    """``pro_adapter.json`` beside a LoRA adapter (peft's ``adapter_config.json`` and
    ``adapter_model.safetensors``): the base it was trained on, by reference and content digest, so it
    is loaded onto that base only (``pro_lib.adapters``)."""

    FILE: ClassVar[str] = "pro_adapter.json"
    WHAT: ClassVar[str] = "PRO LoRA adapter"
    FIX: ClassVar[str] = "re-train the policy with --lora-r (or restore the folder)"

    base: str                 # 'smollm2', an absolute folder, models:/name/<version> (pinned) or a hub name
    base_digest: str          # pro_lib.checkpoints.digest_model of the base when the adapter was saved
    vocab_size: int           # the embedding rows the adapter expects (the base's plus the <Wk> tags)
    rank: int = 0
    alpha: int = 0
    adapter_bytes: int = 0    # size of the adapter's weight file
    format: str = "pro-adapter/1"


@dataclass(frozen=True)
class SoupsManifest(Manifest):
    """``soups.json``: the Rewarded Soups experts (objective -> sub-folder holding a WIC policy)."""

    FILE: ClassVar[str] = "soups.json"
    WHAT: ClassVar[str] = "Rewarded Soups folder"
    FIX: ClassVar[str] = "re-run `pro soups train`"
    NON_EMPTY: ClassVar[tuple[str, ...]] = ("experts",)

    experts: dict[str, str]
    objectives: list[str] = field(default_factory=list)
    method: str = "rewarded-soups"
    orchestrator: str | None = None
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class EndpointManifest(Manifest):
    """``pro_endpoint.json``: a pro-endpoint folder (``orchestrator/``, ``policy/``, optional ``suite/``, optional
    ``policies/<name>/``: more policies a request picks with the ``policy`` param)."""

    FILE: ClassVar[str] = "pro_endpoint.json"
    WHAT: ClassVar[str] = "pro-endpoint folder"
    FIX: ClassVar[str] = "build it with `pro_lib.serving.build_endpoint`"
    NON_EMPTY: ClassVar[tuple[str, ...]] = ("objectives",)

    objectives: list[str]
    conditioned: bool = False
    suite: bool = False
    orchestrator: str | None = None
    policy: str | None = None
    suite_source: str | None = None
    policies: list[str] = field(default_factory=list)  # further policies (policies/<name>/), picked per request
    # parts held by reference, not copied (pro_lib.endpoint_refs): part -> models:/<name>/<version>, and the
    # digest of the folder each was built from (checked when the endpoint loads)
    references: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


MANIFESTS: tuple[type[Manifest], ...] = (TargetsReport, RewardModelInfo, SuiteManifest, OrchestratorManifest,
                                         WICPolicyManifest, AdapterManifest, SoupsManifest, EndpointManifest)
# every artifact file name PRO gives a meaning to (the grep test's list)
ARTIFACT_FILES = tuple(m.FILE for m in MANIFESTS) + (OrchestratorManifest.ENCODER_CONFIG, EVAL_FILE,
                                                     DATA_REPORT, FINGERPRINT_FILE)

__all__ = ["ARTIFACT_FILES", "AdapterManifest", "DATA_REPORT", "EVAL_FILE", "EndpointManifest", "FINGERPRINT_FILE", "MANIFESTS",
           "Manifest", "ManifestError", "OrchestratorManifest", "RewardModelInfo", "SoupsManifest", "SuiteManifest",
           "TargetsReport", "WICPolicyManifest"]
