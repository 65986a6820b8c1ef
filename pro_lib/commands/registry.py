"""`pro registry`: list registered models and versions, gated promotion, download, register.

    pro registry list [NAME] [--json]
    pro registry promote NAME [--version V] [--force --reason WHY] [--json]
    pro registry download REF [--output DIR]
    pro registry register DIR --name NAME --metric NAME=VALUE [--gate-metric M --gate-mode max|min]

Building the parser imports no MLflow (tests/test_cli_light.py); the registry loads when a command runs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from pro_lib.errors import ConfigError


def _cmd_registry_list(args) -> None:
    from pro_lib import registry

    names = [args.name] if args.name else registry.list_models()
    if not names:
        if args.json:  # still JSON: a script reading it gets an empty list, not a sentence
            print("[]")
            return
        print("no registered models yet (run `pro pipeline run --local orchestrator`)")
    for n in names:
        versions = registry.list_versions(n)
        if args.json:
            print(json.dumps(versions, indent=2, default=str))
            continue
        print(n)
        for v in versions:
            gate = f"{v['gate_metric']}={v['gate_value']:.4g} ({v['gate_mode']})" if v["gate_value"] is not None else "-"
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created"] / 1000)) if v["created"] else ""
            legacy = "  [legacy folder]" if not v["tags"].get(registry.FORMAT_TAG) else ""
            print(f"  v{v['version']:<4} {','.join(v['aliases']) or '-':<20} {gate:<36} {created}  run {v['run_id']}"
                  f"{legacy}")
            if legacy:
                from pro_lib.packaging import legacy_message

                ref = f"models:/{n}/{v['version']}"
                print(f"        {legacy_message(ref)}")


def _cmd_registry_promote(args) -> None:
    from pro_lib import promotion

    result = promotion.promote(args.name, version=args.version, force=args.force, reason=args.reason)
    print(json.dumps(result.to_dict(), indent=2) if args.json else f"{args.name}: {result.message}")
    if not result.promoted and not result.message.endswith("nothing to do"):
        sys.exit(1)


def _cmd_registry_download(args) -> None:
    from pro_lib import registry

    if args.output:  # before the download: a file there, or a folder with other files, is refused
        from pro_lib.io import check_output_dir

        check_output_dir(args.output, what="registry download", allowed=(), flag="--output")
    path = registry.download_model(args.ref)
    if args.output:
        import shutil

        from pro_lib.io import atomic_dir

        with atomic_dir(args.output) as tmp:
            shutil.copytree(path, tmp, dirs_exist_ok=True)
        path = Path(args.output)
    print(path)


def _cmd_registry_register(args) -> None:
    from pro_lib import packaging

    metrics = {}
    for item in args.metric or []:
        k, _, v = item.partition("=")
        try:
            metrics[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"--metric {item!r}: expected name=<number>") from None
        if not k.strip() or not math.isfinite(metrics[k.strip()]):
            raise ConfigError(f"--metric {item!r}: expected name=<finite number> (NaN and infinity are not "
                              "metrics; leave the metric out instead)")
    version = packaging.register_model(args.path, args.name, metrics=metrics, gate_metric=args.gate_metric,
                                       gate_mode=args.gate_mode)
    print(f"registered models:/{args.name}/{version} (alias challenger)")


def register(subparsers) -> None:
    from pro_lib import registry

    p = subparsers.add_parser(
        "registry", help="MLflow model registry: list versions, gated promotion, download",
        description="Registered models: pro-orchestrator, pro-reward-<objective>, pro-policy-<method>. "
                    "A new version gets the alias 'challenger'; 'champion' moves only when the challenger "
                    "beats it on the gate metric (or with --force --reason). Uses MLFLOW_TRACKING_URI "
                    "(default: $PRO_HOME/mlflow.db).")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("list", help="registered models, versions, aliases and gate metrics")
    c.add_argument("name", nargs="?", help="one registered model (default: all)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_cmd_registry_list)

    c = sub.add_parser("promote", help="move 'champion' to the challenger if it beats the champion",
                       description="Gated promotion. Exit status 1 when refused (nothing changes).")
    c.add_argument("name", help="registered model, e.g. pro-orchestrator")
    c.add_argument("--version", help="promote this version instead of the one aliased 'challenger'")
    c.add_argument("--force", action="store_true", help="skip the gate (needs --reason, which is recorded)")
    c.add_argument("--reason", help="why (recorded as the version tag pro.promotion_reason)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_cmd_registry_promote)

    c = sub.add_parser("download", help="download models:/name@alias (or /version) and print the folder")
    c.add_argument("ref", help=f"{registry.model_ref(registry.ORCHESTRATOR_MODEL)} or "
                               f"models:/{registry.ORCHESTRATOR_MODEL}/3")
    c.add_argument("--output", help="copy the model folder here")
    c.set_defaults(func=_cmd_registry_download)

    c = sub.add_parser("register", help="register a saved model folder as a new version (alias challenger)")
    c.add_argument("path", help="model folder (save_pretrained)")
    c.add_argument("--name", required=True, help="registered name, e.g. pro-reward-helpful")
    c.add_argument("--metric", action="append", metavar="NAME=VALUE", help="evaluation metric (repeatable)")
    c.add_argument("--gate-metric", help="metric promotion compares (default by name family)")
    c.add_argument("--gate-mode", choices=["max", "min"], help="is higher or lower better")
    c.set_defaults(func=_cmd_registry_register)
