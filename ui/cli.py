"""``pro ui``: start the Streamlit preference explorer.

Registered through the ``pro.commands`` entry-point group (pyproject.toml), so ``pro_lib`` never
imports Streamlit. This module stays light: Streamlit is only imported by the server it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"


def default_tracking_uri(env: dict | None = None) -> str:
    """The platform's local store: ``sqlite:///$PRO_HOME/mlflow.db`` (PRO_HOME defaults to ./.pro)."""
    from pro_lib.tracking import tracking_uri

    return tracking_uri(env, create=False)


def build_command(args: argparse.Namespace, env: dict | None = None) -> tuple[list[str], dict]:
    """The ``streamlit run`` command line and its environment for parsed ``pro ui`` arguments."""
    env = dict(os.environ if env is None else env)
    env["MLFLOW_TRACKING_URI"] = args.tracking_uri or default_tracking_uri(env)
    for flag, var in (("orchestrator", "PRO_UI_ORCHESTRATOR"), ("suite", "PRO_UI_SUITE"),
                      ("policy", "PRO_UI_POLICY"), ("policy_b", "PRO_UI_POLICY_B")):
        value = getattr(args, flag, None)
        if value:
            env[var] = value
    if args.datasets:
        env["PRO_UI_DATASETS"] = args.datasets
    # the page imports `ui` as a package; make sure the repository root is importable
    root = str(APP.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # explicit flags, else Streamlit's own env vars (the k8s Deployment sets them), else loopback
    host = args.host or env.get("STREAMLIT_SERVER_ADDRESS") or "127.0.0.1"
    port = args.port or int(env.get("STREAMLIT_SERVER_PORT") or 8501)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP),
           "--server.address", host, "--server.port", str(port),
           "--server.headless", "true" if args.headless else "false",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
           "--server.fileWatcherType", "none"]
    return cmd, env


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ui", help="start the Streamlit preference explorer",
        description="Start the PRO preference explorer: inferred weights per prompt, weight overrides, "
                    "side-by-side generations with reward scores, batch view, and the model registry "
                    "with gated promotion. Models come from the MLflow registry (by name and alias or "
                    "version) or from local folders; with no flags it uses the local store the main job "
                    "leaves (sqlite:///$PRO_HOME/mlflow.db) and the registered pro-* models.")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: $STREAMLIT_SERVER_ADDRESS, else 127.0.0.1, loopback "
                        "only; 0.0.0.0 serves other machines, as in the k8s Deployment)")
    p.add_argument("--port", type=int, default=None,
                   help="port to listen on (default: $STREAMLIT_SERVER_PORT, else 8501)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///$PRO_HOME/mlflow.db)")
    p.add_argument("--orchestrator", default=None,
                   help="start-up orchestrator: models:/name@alias, models:/name/<version> or a folder "
                        "(default: pro-orchestrator at its champion alias)")
    p.add_argument("--suite", default=None, help="start-up reward suite (registry ref or folder with suite.yaml)")
    p.add_argument("--policy", default=None, help="start-up WIC policy (registry ref or folder)")
    p.add_argument("--policy-b", default=None, help="second policy for the Compare view")
    p.add_argument("--datasets", default=None,
                   help="comma-separated extra prompt sources for the batch view (any `load_pairs` spec)")
    p.add_argument("--no-headless", dest="headless", action="store_false",
                   help="let Streamlit open a browser window")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("streamlit") is None:
        sys.exit("error: `pro ui` needs Streamlit: pip install 'pro-align[ui]'")
    cmd, env = build_command(args)
    if args.dry_run:
        print(f"MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']} " + " ".join(cmd))
        return
    host, port = cmd[cmd.index("--server.address") + 1], cmd[cmd.index("--server.port") + 1]
    print(f"PRO explorer on http://{host}:{port} (MLflow: {env['MLFLOW_TRACKING_URI']}); Ctrl+C stops it",
          file=sys.stderr)
    rc = serve(cmd, env)
    if rc:
        sys.exit(rc)


def serve(cmd: list[str], env: dict, stop_timeout: float = 15.0) -> int:
    """Run the Streamlit server as a child and stop it with us.

    SIGTERM (``kill``, Kubernetes stopping the pod) and SIGHUP are passed on to the child; Ctrl+C
    reaches it through the terminal. Either way we wait for it to exit (killing it after
    ``stop_timeout`` seconds), so the port is free when ``pro ui`` returns.
    """
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in handled}
    interrupted, rc = False, 0
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT; wait for it below
        interrupted = True
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted or rc in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP):
        return 0
    return rc
