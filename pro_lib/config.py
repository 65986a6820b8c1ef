"""Configs are dataclasses; CLI flags and YAML keys are generated from them (one source of truth).

A field ``learning_rate`` is the flag ``--learning-rate`` and the YAML key ``learning_rate`` (a YAML
key may also be spelled ``learning-rate``). Help text comes from ``field(metadata={"help": ...})``.
Precedence: dataclass default < ``--config file.yaml`` < explicit command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pro_lib.errors import ConfigError

# The --resume flag of every resumable stage (pro_lib.checkpoints implements it; the text lives here so
# that configs can name it without importing the checkpoint code).
RESUME_HELP = ("auto: continue from the last checkpoint when it was made with the same settings and inputs "
               "(else stop and name what differs); never: start over (an earlier run's checkpoints and "
               "output are moved to <name>.prev-<time>, nothing is deleted)")

T = TypeVar("T")

# Valid ranges of numeric options, by field name: one table for every config (a field of that name means
# the same thing in every stage), checked when a flag is parsed (before any model loads), when a YAML
# key or pipeline parameter is read, and when a config is built in Python. A field may override its
# entry with field(..., range=(low, high)). Each bound is (value, inclusive?); None: unbounded.
_POS = ((0, False), None)           # > 0
_ONE = ((1, True), None)            # >= 1
_NONNEG = ((0, True), None)         # >= 0
RANGES: dict[str, tuple] = {
    **{name: _POS for name in ("epochs", "learning_rate", "head_learning_rate", "temperature", "tau",
                               "dirichlet_alpha", "grid_step")},
    **{name: _ONE for name in ("batch_size", "gen_batch_size", "reward_batch_size", "gradient_accumulation_steps",
                               "max_new_tokens", "max_completion_length", "max_length", "max_prompt_tokens",
                               "prompts_per_round", "samples_per_prompt", "rounds", "round_index", "save_steps",
                               "save_total_limit", "logging_steps", "top_k", "max_examples", "limit",
                               "limit_per_source", "max_prompts", "bootstrap", "lora_alpha")},
    **{name: _NONNEG for name in ("seed", "split_seed", "beta", "weight_decay", "lora_r", "trainable_layers", "decimals")},
    "max_steps": ((-1, True), None),            # -1: off (epochs decide)
    "replay_offline": ((-1, True), None),       # -1: all
    "num_generations": ((2, True), None),       # a group needs two samples to compare
    "top_p": ((0, False), (1, True)),
    "quantile": ((0, True), (1, False)),
    "replay_quantile": ((0, True), (1, False)),
    "eval_fraction": ((0, True), (1, False)),
    "warmup_ratio": ((0, True), (1, True)),
    "tag_max": ((0, False), (1, True)),
    "best_of_n": ((1, True), (64, True)),      # answers sampled per prompt (a served request's memory: <= 64)
}


def _range_text(rng: tuple) -> str:
    (lo, hi) = rng
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo[1] else '>'} {lo[0]:g}")
    if hi is not None:
        parts.append(f"{'<=' if hi[1] else '<'} {hi[0]:g}")
    return " and ".join(parts)


def field_range(cls: type, name: str) -> tuple | None:
    """The valid range of ``cls``'s field ``name`` (its ``range`` metadata, else :data:`RANGES`)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("range", RANGES.get(name))
    return RANGES.get(name)


def range_problem(rng: tuple | None, value: Any) -> str | None:
    """Why ``value`` is outside ``rng`` (e.g. ``must be >= 1``), None when it is inside (or not a number)."""
    if rng is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (NaN and infinity are not accepted)"
    lo, hi = rng
    bad = (lo is not None and (value < lo[0] or (value == lo[0] and not lo[1]))) or \
          (hi is not None and (value > hi[0] or (value == hi[0] and not hi[1])))
    return f"must be {_range_text(rng)}, got {value:g}" if bad else None


def check_ranges(cfg: Any) -> None:
    """Every numeric field of a config inside its range; the error names the flag and the YAML key."""
    for f in dataclasses.fields(cfg):
        why = range_problem(f.metadata.get("range", RANGES.get(f.name)), getattr(cfg, f.name, None))
        if why:
            raise ConfigError(f"--{f.name.replace('_', '-')} (YAML key {f.name}) {why}")


def field(default: Any = dataclasses.MISSING, *, help: str = "", choices: list | None = None,
          default_factory: Any = dataclasses.MISSING, range: tuple | None = None) -> Any:
    """A dataclass field with help text (and optional choices, or a valid ``range`` overriding
    :data:`RANGES`) for the generated CLI."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = list(choices)
    if range is not None:
        meta["range"] = range
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_like(cls: type, name: str, **changes: Any) -> Any:
    """A new field with the default, help, choices and range of ``cls``'s field ``name``; ``changes``
    (``default=``, ``help=``, ``choices=``, ``range=``) sets what differs. An option that several stage
    configs offer is defined once, in the stage that owns it, and each config still lists all its fields."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    unknown = set(changes) - {"default", "help", "choices", "range"}
    if unknown:
        raise TypeError(f"field_like: unknown change(s) {sorted(unknown)}")
    kwargs = {k: changes.get(k, f.metadata.get(k)) for k in ("choices", "range")}
    kwargs["help"] = changes.get("help", f.metadata.get("help", ""))
    if "default" in changes:
        kwargs["default"] = changes["default"]
    elif f.default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = f.default_factory
    else:
        kwargs["default"] = f.default
    return field(**kwargs)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, optional?) for X | None annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def coerce_value(cls: type, name: str, value: Any, where: str) -> Any:
    """Coerce a YAML value to the field's type, with an error that names the key."""
    hints = typing.get_type_hints(cls)
    tp, optional = _base_type(hints[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: key '{name}' must not be null")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            return value if isinstance(value, bool) else _parse_bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
            value = _finite(tp(value))
            why = range_problem(field_range(cls, name), value)
            if why:
                raise ValueError(why)
            return value
        if origin in (list, tuple):
            (inner,) = typing.get_args(tp)[:1] or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return [_finite(inner(v)) if inner in (int, float, str) else v for v in value]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return dict(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{where}: key '{name}' has a bad value {value!r}: {exc}") from None
    return value


def _finite(value: Any) -> Any:
    """NaN or infinity is never a meaningful setting: refuse it instead of carrying it into results."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (NaN and infinity are not accepted)")
    return value


def unknown_key_message(key: str, known: Any, *, what: str) -> str:
    """``unknown key 'epoch' for X (did you mean 'epochs'?); known keys: ...`` (difflib's closest match)."""
    known = sorted(known)
    close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}' for {what}{hint}; known keys: {', '.join(known)}"


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per dataclass field, plus ``--config`` for a YAML file."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument(
            "--config", type=Path, default=None,
            help="YAML file whose keys are these flags' names (dashes or underscores); "
                 "flags given on the command line win over the file.")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"(default: {default!r})"
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
        elif origin in (list, tuple):
            inner = (typing.get_args(tp) or (str,))[0]
            kwargs.update(type=lambda s, inner=inner: [inner(v) for v in s.split(",") if v.strip()],
                          metavar="A,B,...")
        elif origin is dict or tp is dict:
            kwargs.update(type=yaml.safe_load, metavar="YAML")
        elif tp in (int, float):
            kwargs["type"] = number_type(tp, f.metadata.get("range", RANGES.get(f.name)))
        else:
            kwargs["type"] = str
        group.add_argument(flag, **kwargs)


def number_type(tp: type, rng: tuple | None):
    """argparse ``type=`` for a numeric flag: parsed, finite and inside its range, so a bad value stops
    at parse time (``argument --batch-size: must be >= 1, got 0``), before anything loads."""

    def parse(text: str):
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if tp is int else 'a number'}, "
                                             f"got {text!r}") from None
        why = range_problem(rng, value)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    parse.__name__ = tp.__name__  # argparse names the type in its own messages
    return parse


def load_yaml_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return data


def build_config(cls: type[T], values: dict | None = None, *, where: str = "config") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys with a message that names them."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: {unknown_key_message(key, known, what=cls.__name__)}")
        kwargs[name] = coerce_value(cls, name, value, where)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required option(s): "
                          + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    check_ranges(cfg)
    return cfg


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Merge ``--config`` YAML (if any) with explicitly given flags and build ``cls``."""
    values: dict[str, Any] = {}
    where = "command line"
    cfg_path = getattr(args, "config", None)
    if cfg_path is not None:
        values.update({str(k).replace("-", "_"): v for k, v in load_yaml_config(cfg_path).items()})
        where = f"{cfg_path} / command line"
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for name, value in vars(args).items():
        if name in known:
            values[name] = value
    return build_config(cls, values, where=where)


def to_dict(cfg: Any) -> dict:
    """A config as a plain dict (for logging as MLflow params or writing YAML)."""
    return dataclasses.asdict(cfg)
