"""The ``pro`` command.

Library subcommands live in ``pro_lib/commands/`` (one module per command group, listed in
:data:`COMMAND_MODULES`); platform subcommands (``pipeline``, ``ui``) plug in through the
``pro.commands`` entry-point group so that pro_lib never imports kfp or streamlit. Every training
subcommand takes ``--config file.yaml`` whose keys are the flag names.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from importlib.metadata import entry_points

from pro_lib import __version__
from pro_lib.commands import add_stage, print_metrics as _print_metrics  # noqa: F401 (importable as before)
from pro_lib.errors import ProError

# Library command modules (pro_lib/commands/), in `pro --help` order: each has ``register(subparsers)``.
COMMAND_MODULES: list[str] = [
    "pro_lib.commands.data",
    "pro_lib.commands.rewards",
    "pro_lib.commands.orchestrator",
    "pro_lib.commands.weights",
    "pro_lib.commands.morlhf",
    "pro_lib.commands.wic",
    "pro_lib.commands.registry",
    "pro_lib.commands.eval",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pro",
        description="PRO: prompt-aware multi-objective alignment. Train reward models and the "
                    "Preference Orchestrator, align policies (PRO-WIC, PRO-MORLHF), run pipelines.",
        epilog="Run `pro <command> --help` for a command's options. Docs: README.md, docs/.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    for ep in entry_points(group="pro.commands"):
        if ep.name in sub.choices:  # a library command of that name wins (installed metadata from before
            continue                # `pro registry` moved into pro_lib/commands still names its plug-in)
        try:
            register = ep.load()
        except ImportError as exc:  # the platform/ui extras are optional for library users
            extra = {"pipeline": "platform", "ui": "ui"}.get(ep.name, ep.name)
            sub.add_parser(ep.name, help=f"(unavailable: pip install 'pro-align[{extra}]')").set_defaults(
                func=lambda a, exc=exc, extra=extra: sys.exit(
                    f"error: this command needs the '{extra}' extra ({exc}); pip install 'pro-align[{extra}]'"))
            continue
        register(sub)
    return parser


def attach_negative_values(argv: list[str]) -> list[str]:
    """``--reference -2,-2`` -> ``--reference=-2,-2``: argparse takes a value that starts with '-' and is
    not a plain number for an option; no PRO option name starts with '-' and a digit."""
    out: list[str] = []
    for tok in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1]
                and re.match(r"^-\.?\d", tok) and not re.fullmatch(r"-\d+(\.\d*)?", tok)):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def _uses_registry(args: argparse.Namespace) -> bool:
    """Does any option name a registry model (models:/...)?"""
    values = [v for value in vars(args).values() for v in (value if isinstance(value, list) else [value])]
    return any(isinstance(v, str) and v.startswith("models:/") for v in values)


def check_utf8_arguments(args: argparse.Namespace) -> None:
    """A command-line value that is not valid UTF-8 (a prompt, a path) stops here with its name."""
    from pro_lib.io import utf8_problem

    for name, value in vars(args).items():
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, str) and (why := utf8_problem(item)):
                label = name if name in ("prompts",) else "--" + name.replace("_", "-")
                index = f" (value {i + 1})" if isinstance(value, list) and len(value) > 1 else ""
                raise ProError(f"{label}{index} is not valid UTF-8 ({why}); pass UTF-8 text")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_negative_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from pro_lib.tracking import Terminated, interrupt_on_sigterm

    interrupt_on_sigterm()  # `kill` ends MLflow runs as KILLED, like Ctrl-C
    try:
        if _uses_registry(args):  # fail in a second, not after loading models, when MLflow is away
            from pro_lib.tracking import check_reachable

            check_reachable()
        check_utf8_arguments(args)
        args.func(args)
    except ProError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # MLflow went away during the command: one line, not a traceback
        from pro_lib.io import os_error_message
        from pro_lib.tracking import is_connection_failure, tracking_uri, unreachable_message

        if isinstance(exc, OSError) and exc.filename is not None and not args.verbose:
            # a read-only or full folder, a file where a folder should be: one line naming the path
            print(f"error: {os_error_message(exc)}", file=sys.stderr)
            return 2
        if "readonly database" in str(exc) and not args.verbose:
            print(f"error: the MLflow store {tracking_uri(create=False)} is read-only: point MLFLOW_TRACKING_URI (or "
                  "PRO_HOME) at a writable place", file=sys.stderr)
            return 2
        if not is_connection_failure(exc):
            raise
        print(f"error: {unreachable_message(tracking_uri(), 'the connection failed during the command')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; training commands resume from their last checkpoint when re-run",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
