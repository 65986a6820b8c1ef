"""Pipeline parameters on the command line: ``--set`` (one key of a dict parameter too), ``--params-file``,
and the checks that run before a pipeline is submitted or run. Each pipeline declares its own parameters
in its file (``pipelines.orchestrator.pipeline_parameters``): name, type, default and, for a stage-config
dict, the stage whose config keys it holds."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import yaml

from pro_lib.errors import ConfigError

NULL = "null"  # KFP parameters cannot carry None; stage configs read the string "null" as None


def _python_func(fn):
    return fn.pipeline_func if hasattr(fn, "pipeline_func") else fn


def pipeline_defaults(fn) -> dict[str, Any]:
    """The pipeline's parameters and their defaults (from the Python signature)."""
    sig = inspect.signature(_python_func(fn))
    return {n: copy.deepcopy(p.default) for n, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty}


def stage_configs(fn) -> dict[str, str]:
    """The pipeline's stage-config dict parameters (keys = that stage's CLI flags): parameter -> stage,
    as its file declares them."""
    return dict(getattr(_python_func(fn), "stage_configs", {}))


def parse_sets(sets: list[str], defaults: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` (value parsed as YAML) and ``config.key=value`` (one key of a dict parameter,
    merged into its default) -> the arguments that differ from the defaults."""
    args: dict[str, Any] = dict(base or {})
    for item in sets:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set reward_config.epochs=2)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        top, dot, sub = key.partition(".")
        if top not in defaults:
            raise ConfigError(f"--set {item!r}: unknown pipeline parameter '{top}'; parameters: "
                              f"{', '.join(defaults)}")
        if dot:
            current = args.get(top, copy.deepcopy(defaults[top]))
            if not isinstance(current, dict):
                raise ConfigError(f"--set {item!r}: parameter '{top}' is not a dict; use --set {top}=<value>")
            node = current
            parts = sub.split(".")
            for i, p in enumerate(parts[:-1]):
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"--set {item!r}: '{top}.{'.'.join(parts[:i + 1])}' is not a dict; "
                                      f"use --set {top}.{'.'.join(parts[:i + 1])}=<value>")
            node[parts[-1]] = NULL if value is None else value
            args[top] = current
        else:
            args[top] = value
    return args


def check_stage_configs(arguments: dict[str, Any], configs: dict[str, str]) -> None:
    """Every key (and value) of a stage-config parameter (``configs``: parameter -> stage, from
    :func:`stage_configs`) against the stage's config class, before anything starts: a typo is a one-line
    error with a suggestion here, not a failed pod later."""
    import typing

    from components.runtime import STAGES
    from pro_lib.config import coerce_value, unknown_key_message
    from pro_lib.targets import check_objective_name

    for item in arguments.get("objectives") or []:  # `name` or `name=<source filter>`
        check_objective_name(str(item).partition("=")[0].strip(), where="pipeline parameter objectives")
    for param, stage in configs.items():
        values = arguments.get(param)
        if not isinstance(values, dict):
            continue
        cls, _ = STAGES[stage].load()
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{param}: {unknown_key_message(key, fields, what=cls.__name__)}")
            if isinstance(value, dict) and typing.get_origin(hints[name]) is not dict and hints[name] is not dict:
                raise ConfigError(f"{param}.{key} is not a dict option; set it with --set {param}.{key}=<value>")
            coerce_value(cls, name, None if value == NULL else value, where=f"pipeline parameter {param}")


def load_params_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--params-file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"--params-file {p}: expected a mapping of pipeline parameters")
    return data


def pipeline_arguments(name: str, sets: list[str] | None, params_file: str | None) -> dict[str, Any]:
    """The arguments of a run of pipeline ``name`` from ``--params-file`` and ``--set`` (``--set`` wins), checked:
    stage-config keys and values first, then the parameter names."""
    from pipelines import load_pipeline

    sets = list(sets or [])
    base = load_params_file(params_file)
    fn = load_pipeline(name)
    configs, defaults = stage_configs(fn), pipeline_defaults(fn)
    check_stage_configs(parse_sets([s for s in sets if s.partition("=")[0].strip().partition(".")[0] in configs],
                                   {p: {} for p in configs}, {k: v for k, v in base.items() if k in configs}),
                        configs)
    for k in base:
        if k not in defaults:
            raise ConfigError(f"{params_file}: unknown pipeline parameter '{k}'; parameters: {', '.join(defaults)}")
    return parse_sets(sets, defaults, base)
