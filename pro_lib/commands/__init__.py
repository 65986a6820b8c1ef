"""`pro` subcommand modules; each exposes ``register(subparsers)``. Here: what they share to build their
subcommands (pro_lib.cli lists the modules and imports them by name; they never import pro_lib.cli)."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Callable

from pro_lib.config import add_dataclass_arguments, config_from_args


def print_metrics(metrics: dict) -> None:
    print(json.dumps(metrics, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def add_stage(sub, name: str, cls: type, fn: Callable[[object], dict] | str, help: str,
              after: Callable[[object, dict], None] | None = None) -> argparse.ArgumentParser:
    """A subcommand whose flags are generated from ``cls`` and which runs ``fn(config)``.

    ``fn`` may be ``"package.module:function"``, imported only when the command runs, so that
    building the parser (``--help``) never imports torch.
    """
    p = sub.add_parser(name, help=help, description=(cls.__doc__ or help).strip(),
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(p, cls)

    def run(args):
        cfg = config_from_args(cls, args)
        metrics = resolve_function(fn)(cfg)
        if after:
            after(cfg, metrics)
        else:
            print_metrics(metrics)

    p.set_defaults(func=run)
    return p


def resolve_function(fn: Callable | str) -> Callable:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)
