"""`pro --help` and every subcommand's --help stay light: no torch, transformers or mlflow import.

Building the parser only imports the config dataclasses; the stage functions (and their heavy
libraries) load when a command runs. Measured with ``python -X importtime``, which lists every
module the interpreter imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mlflow", "trl", "kfp", "streamlit")


def imported_modules(*argv: str) -> tuple[set[str], subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pro_lib.cli", *argv],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    mods = {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$",
                                            proc.stderr, re.M)}
    return mods, proc


def _platform_commands() -> list[tuple[str, ...]]:
    names = {ep.name for ep in entry_points(group="pro.commands")}
    out = [("pipeline", "compile", "--help")] if "pipeline" in names else []
    out += [("ui", "--help")] if "ui" in names else []
    return out


@pytest.mark.parametrize("argv", [
    ("--help",),
    ("orchestrator", "train", "--help"),
    ("rewards", "score", "--help"),
    ("wic", "offline", "--help"),
    ("morlhf", "train", "--help"),
    ("registry", "list", "--help"),
    ("weights", "--help"),
    ("eval", "genai", "--help"),
    *_platform_commands(),
], ids=" ".join)
def test_help_imports_no_heavy_library(argv):
    mods, proc = imported_modules(*argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: pro" in proc.stdout
    assert "pro_lib.config" in mods  # the importtime listing was read (cli.py runs as __main__; importlib
    # imports the command modules, which -X importtime does not list, and their own imports, which it does)
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"`pro {' '.join(argv)}` imported {heavy[:10]}"


def test_version():
    from pro_lib import __version__

    proc = subprocess.run([sys.executable, "-m", "pro_lib.cli", "--version"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"pro {__version__}"
