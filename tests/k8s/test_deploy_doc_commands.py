"""The commands docs/deploy.md tells an operator to run, run here where they can run without a cluster:
every `kubectl apply|delete -k <folder>` renders (what kubectl does client-side before it talks to the
API server), every `pro ...` command parses with pro's own argument parser (and `pro pipeline submit`
builds its pipeline arguments from the params file it names, without submitting), every script it names
exists and passes `bash -n`. (Replaces string searches of the page.)"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from .helpers import REPO

DOC = REPO / "docs" / "deploy.md"


def doc_commands(inline: bool = True) -> list[str]:
    """Command lines of the page: code-block lines (backslash continuations joined), and `inline` code."""
    text = DOC.read_text()
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    if inline:
        lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    out = []
    for line in lines:
        line = line.split(" # ", 1)[0].split("  #", 1)[0].strip()
        for part in re.split(r"\s*(?:&&|;)\s*", line):
            part = part.strip().rstrip("&").strip()
            if part:
                out.append(part)
    return out


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def kustomize_folders() -> list[str]:
    found = []
    for c in doc_commands():
        w = _words(c)
        if w[:1] == ["kubectl"] and "-k" in w and ("apply" in w or "delete" in w):
            folder = w[w.index("-k") + 1] if w.index("-k") + 1 < len(w) else ""
            if folder.startswith("k8s") and "<" not in folder:
                found.append(folder.rstrip("/"))
    return sorted(set(found))


def pro_commands() -> list[list[str]]:
    """Whole `pro` commands: those of code blocks (inline `pro pipeline submit` is a reference, not a command)."""
    found = []
    for c in doc_commands(inline=False):
        w = _words(c)
        if w and w[0] in ("pro", ".venv/bin/pro") and len(w) > 2 and not any("…" in x or "..." in x for x in w):
            found.append(w[1:])
    return found


def _pulls_remote(folder: Path) -> bool:
    """Whether a kustomization, or a local folder it includes, names a remote (network) resource."""
    k = folder / "kustomization.yaml"
    if not k.is_file():
        return False
    spec = yaml.safe_load(k.read_text()) or {}
    for e in list(spec.get("resources") or []) + list(spec.get("components") or []):
        if "://" in e or e.startswith("github.com/"):
            return True
        if (folder / e).is_dir() and _pulls_remote(folder / e):
            return True
    return False


def test_every_documented_kustomize_folder_renders(render):
    folders = kustomize_folders()
    assert len(folders) >= 5, folders   # the page documents the root, namespace, overlays, restore
    rendered = 0
    for folder in folders:
        assert (REPO / folder).is_dir(), f"docs/deploy.md applies {folder}, which does not exist"
        kustomization = yaml.safe_load((REPO / folder / "kustomization.yaml").read_text())
        entries = list(kustomization.get("resources") or []) + list(kustomization.get("components") or [])
        remote = [e for e in entries if "://" in e or e.startswith("github.com/")]
        if remote or _pulls_remote(REPO / folder):   # fetched from the network at apply time (none here): its
            for e in set(entries) - set(remote):     # local parts must exist (test_deploy_sequence renders it
                assert (REPO / folder / e).exists(), f"{folder}: {e} does not exist"   # with the remote stubbed)
            continue
        _, objects = render(REPO / folder)
        assert objects, f"{folder} renders to nothing"
        rendered += 1
    assert rendered >= 5, folders


def test_every_documented_pro_command_parses_and_builds_its_arguments(monkeypatch):
    from pipelines.params import pipeline_arguments
    from pro_lib.cli import attach_negative_values, build_parser

    monkeypatch.chdir(REPO)   # the page's paths are relative to the repository
    commands = pro_commands()
    assert any(c[:2] == ["pipeline", "submit"] for c in commands), commands
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(attach_negative_values(argv))
        except SystemExit:
            pytest.fail(f"docs/deploy.md: `pro {' '.join(argv)}` does not parse")
        if argv[:2] == ["pipeline", "submit"]:
            pipeline_arguments(args.name, args.set, args.params_file)   # params file and --set checked against the pipeline


def test_every_documented_script_exists_and_parses():
    scripts = sorted({m for c in doc_commands() for m in re.findall(r"(?:^|\s|bash )(scripts/[\w./-]+\.sh)", c)})
    assert scripts, "the page names no script"
    for script in scripts:
        path = REPO / script
        assert path.is_file(), f"docs/deploy.md runs {script}, which does not exist"
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, script
