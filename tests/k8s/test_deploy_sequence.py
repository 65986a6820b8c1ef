"""docs/deploy.md's kind / minikube walk-through, applied offline.

Each `kubectl apply -k` of the documented sequence is rendered (KFP's remote bases stubbed, or the
real manifests with $PRO_KFP_MANIFESTS), and no later step may change a field the API server
treats as immutable in an object an earlier step created (`kubectl apply` is rejected otherwise:
the old walk-through applied overlays/kubeflow-pipelines over overlays/local and hit exactly that).
The commands that can run here run: the secrets script, the renders, the pipeline parameters
(parsed by `pro`'s own checks and compiled)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import (
    NON_SECRET_KEYS,
    PLACEHOLDER,
    REPO,
    _containers,
    _offline_kfp_copy,
    _pod_spec,
    _secret_values,
    _workloads,
)

DOCS = REPO / "docs" / "deploy.md"
TOOLS = ("kind", "minikube")


# --------------------------------------------------------------------------- the docs' commands

def _section() -> str:
    text = DOCS.read_text()
    start = text.index("### CPU only: kind or minikube")
    end = text.index("\n#", start + 10)
    return text[start:end]


def _blocks(section: str) -> list[tuple[str, list[str]]]:
    """(the line before the block, the block's command lines) for each ```bash block."""
    out = []
    for m in re.finditer(r"(?m)^([^\n]*)\n\n?[ ]*```bash\n(.*?)\n[ ]*```", section, re.S):
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in m.group(2).splitlines()]
        out.append((m.group(1).strip(), [line for line in lines if line]))
    return out


def _commands(tool: str) -> list[str]:
    """The commands a `tool` user types: the tool's own block, then the shared ones."""
    blocks = _blocks(_section())
    own = [cmds for before, cmds in blocks if before.rstrip(":") == tool]
    assert len(own) == 1, f"docs/deploy.md: no single block for {tool}"
    shared = [cmds for before, cmds in blocks if before.rstrip(":") not in TOOLS]
    return own[0] + [c for cmds in shared for c in cmds]


def _applied_folders(commands: list[str]) -> list[str]:
    return [c.split()[-1] for c in commands if re.match(r"kubectl apply -k \S+$", c)]


# --------------------------------------------------------------------------- immutable fields

def _get(obj, path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _storage(vct: dict) -> str | None:
    return _get(vct, ("spec", "resources", "requests", "storage"))


IMMUTABLE = {  # kind -> paths the API server refuses to change on update
    "StatefulSet": [("spec", "selector"), ("spec", "serviceName"), ("spec", "podManagementPolicy"),
                    ("spec", "volumeClaimTemplates")],
    "Deployment": [("spec", "selector")],
    "DaemonSet": [("spec", "selector")],
    "ReplicaSet": [("spec", "selector")],
    "Job": [("spec", "template"), ("spec", "selector"), ("spec", "completionMode")],
    "Service": [("spec", "clusterIP")],
    "PersistentVolumeClaim": [("spec", "accessModes"), ("spec", "storageClassName"), ("spec", "volumeName"),
                              ("spec", "selector")],
    "RoleBinding": [("roleRef",)],
    "ClusterRoleBinding": [("roleRef",)],
}


def _key(obj) -> tuple:
    return (obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else "", obj["kind"],
            obj["metadata"].get("namespace"), obj["metadata"]["name"])


def immutable_conflicts(steps: list[tuple[str, list[dict]]]) -> list[str]:
    """Every field a later step would change in an object an earlier step created (the last
    applied state of each object is what the next apply updates)."""
    live: dict[tuple, tuple[str, dict]] = {}
    conflicts = []
    for step, objs in steps:
        for obj in objs:
            key = _key(obj)
            if key in live:
                before_step, before = live[key]
                where = f"{step}: {obj['kind']} {key[2]}/{key[3]} (applied by {before_step})"
                for path in IMMUTABLE.get(obj["kind"], []):
                    old, new = _get(before, path), _get(obj, path)
                    if old is not None and old != new:
                        conflicts.append(f"{where}: {'.'.join(path)} {old!r} -> {new!r}")
                if obj["kind"] == "PersistentVolumeClaim":
                    old, new = _storage(before), _storage(obj)
                    if old and new and _quantity(new) < _quantity(old):
                        conflicts.append(f"{where}: storage shrinks {old} -> {new}")
                if obj["kind"] in ("Secret", "ConfigMap") and before.get("immutable") and \
                        (before.get("data"), before.get("stringData")) != (obj.get("data"), obj.get("stringData")):
                    conflicts.append(f"{where}: data of an immutable {obj['kind']}")
            live[key] = (step, obj)
    return conflicts


def _quantity(value) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([a-zA-Z]*)", str(value))
    units = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(m.group(1)) * units[m.group(2)]


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def offline_k8s(tmp_path_factory) -> Path:
    return _offline_kfp_copy(tmp_path_factory.mktemp("seq"))


def _render_steps(render, k8s: Path, folders: list[str]) -> list[tuple[str, list[dict]]]:
    return [(folder, render(k8s.parent / folder)[1]) for folder in folders]


@pytest.mark.parametrize("tool", TOOLS)
def test_documented_sequence_changes_no_immutable_field(tool, render, offline_k8s):
    commands = _commands(tool)
    folders = _applied_folders(commands)
    assert folders[0] == "k8s/namespace" and "k8s/overlays/local-kfp" in folders, folders
    assert folders.index("k8s/overlays/kubeflow-pipelines/crds") < folders.index("k8s/overlays/local-kfp")
    steps = _render_steps(render, offline_k8s, folders)
    assert immutable_conflicts(steps) == []
    final = steps[-1][1]
    # every Job / Deployment the docs wait for exists in what was applied before the wait
    applied = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for _, objs in steps for o in objs}
    kinds = {"job": "Job", "deploy": "Deployment"}
    for command in (c for c in commands if c.startswith("kubectl") and " wait " in c and "crd/" not in c):
        ns = shlex.split(command)[shlex.split(command).index("-n") + 1]
        for ref in re.findall(r"\b(job|deploy)/([\w-]+)", command):
            assert (kinds[ref[0]], ns, ref[1]) in applied, f"docs wait for {ref} that nothing applied"
    # the tool's block: a NetworkPolicy-enforcing CNI and every image the cluster runs, loaded
    own = " ".join(commands[:3])
    assert ("kind create cluster" in own) if tool == "kind" else ("--cni=calico" in own)
    images = {c["image"] for o in _workloads(final) for c in _containers(_pod_spec(o))
              if c["image"].startswith("ghcr.io/pro-align/")} | {"ghcr.io/pro-align/pro-components:0.1.0"}
    for image in images:
        name, tag = image.rsplit(":", 1)
        assert image in own or (f"{name.rsplit('/', 1)[0]}/$image:{tag}" in own
                                and name.rsplit("/", 1)[1] in own), f"{tool}: {image} not loaded"


def test_the_check_catches_the_old_walk_through(render, offline_k8s):
    """The sequence docs/deploy.md documented before (overlays/local, then the default-sized
    kubeflow-pipelines overlay): the API server rejected its StatefulSets' volume sizes."""
    steps = _render_steps(render, offline_k8s, ["k8s/namespace", "k8s/overlays/local",
                                                "k8s/overlays/kubeflow-pipelines"])
    conflicts = immutable_conflicts(steps)
    for name, old, new in (("postgres", "1Gi", "10Gi"), ("minio", "5Gi", "50Gi")):
        assert any(f"StatefulSet pro/{name}" in c and "volumeClaimTemplates" in c and old in c and new in c
                   for c in conflicts), conflicts


def test_immutable_check_semantics():
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "n"},
           "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}
    changed = yaml.safe_load(yaml.safe_dump(job))
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    assert immutable_conflicts([("a", [job]), ("b", [job])]) == []
    assert len(immutable_conflicts([("a", [job]), ("b", [changed])])) == 1
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}
    grown = yaml.safe_load(yaml.safe_dump(pvc))
    grown["spec"]["resources"]["requests"]["storage"] = "6Gi"
    assert immutable_conflicts([("a", [pvc]), ("b", [grown])]) == []      # expansion is allowed
    assert immutable_conflicts([("a", [grown]), ("b", [pvc])])           # shrinking is not


def test_documented_secrets_command_runs_and_leaves_valid_secrets_in_every_step(render, tmp_path):
    """The docs' `python scripts/fill_secrets.py`, run as written on a copy of the repository:
    every placeholder of every step's Secrets is replaced by a value within MinIO's limits, a
    second run keeps them, and `--check` then passes."""
    commands = _commands("kind")
    (fill,) = [c for c in commands if "fill_secrets.py" in c]
    k8s = _offline_kfp_copy(tmp_path)
    (k8s.parent / "scripts").mkdir()
    (k8s.parent / "scripts" / "fill_secrets.py").write_text((REPO / "scripts" / "fill_secrets.py").read_text())
    argv = [sys.executable if w == "python" else w for w in shlex.split(fill)]
    first = subprocess.run(argv, cwd=k8s.parent, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "no placeholders left" in first.stdout, first.stdout + first.stderr
    snapshot = {p: p.read_text() for p in k8s.rglob("*.env")}
    assert not any(v in first.stdout for text in snapshot.values()
                   for v in re.findall(r"=(\S+)", text) if len(v) >= 16), "a value was printed"
    again = subprocess.run(argv, cwd=k8s.parent, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and {p: p.read_text() for p in snapshot} == snapshot  # idempotent
    check = subprocess.run([*argv, "--check"], cwd=k8s.parent, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout
    limits = {"MINIO_ROOT_USER": (3, 20), "AWS_ACCESS_KEY_ID": (3, 20), "accesskey": (3, 20),
              "MINIO_ROOT_PASSWORD": (8, 40), "AWS_SECRET_ACCESS_KEY": (8, 40), "secretkey": (8, 40)}
    for folder in _applied_folders(commands):
        for secret in (o for o in render(k8s.parent / folder)[1] if o["kind"] == "Secret"):
            for key, value in _secret_values(secret).items():
                where = f"{folder}: {secret['metadata']['name']}.{key}"
                assert not PLACEHOLDER.match(value), f"{where} still a placeholder"
                if key not in NON_SECRET_KEYS | {"username"}:
                    assert re.fullmatch(r"[a-z]*[0-9a-f]{12,}", value), f"{where}: {len(value)} chars"
                    low, high = limits.get(key, (8, 64))
                    assert low <= len(value) <= high, where


def test_fill_secrets_refuses_missing_files_and_reports_left_placeholders(tmp_path):
    script = REPO / "scripts" / "fill_secrets.py"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "nope.env")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    env = tmp_path / "a.env"
    env.write_text("# comment = CHANGE_ME\nUSER=alice\nPASSWORD=CHANGE_ME-x\n")
    check = subprocess.run([sys.executable, str(script), "--check", str(env)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 1 and f"{env}:3" in check.stdout
    subprocess.run([sys.executable, str(script), str(env)], check=True, capture_output=True, timeout=60)
    lines = env.read_text().splitlines()
    assert lines[:2] == ["# comment = CHANGE_ME", "USER=alice"] and re.fullmatch(r"PASSWORD=[0-9a-f]{32}", lines[2])


def _requests(objs, namespaces) -> tuple[float, float]:
    cpu = mem = 0.0
    for obj in _workloads(objs):
        if obj["metadata"]["namespace"] in namespaces and obj["kind"] in ("Deployment", "StatefulSet"):
            for c in _pod_spec(obj)["containers"]:
                req = c.get("resources", {}).get("requests", {})
                cpu += _quantity(req.get("cpu", 0))
                mem += _quantity(req.get("memory", 0))
    return cpu, mem


def test_documented_cluster_size_holds_the_platform_kfp_and_a_run(render, offline_k8s):
    """docs/deploy.md's numbers: the platform's requests as rendered, and 16 GB / 4 CPUs hold the
    platform, KFP (2.16.1's requests: about 0.7 CPU / 3 GiB) and the widest stage of a run."""
    section = _section()
    objs = render(offline_k8s / "overlays" / "local-kfp")[1]
    cpu, mem = _requests(objs, {"pro"})
    stated = re.search(r"the platform requests ([\d.]+) CPU and\s+([\d.]+) GiB", section)
    assert stated, "docs/deploy.md no longer states the platform's requests"
    assert abs(float(stated.group(1)) - cpu) < 0.05 and abs(float(stated.group(2)) - mem / 2**30) < 0.05
    params = yaml.safe_load((REPO / "k8s" / "overlays" / "local" / "pipeline-wic-cpu.yaml").read_text())
    kfp_cpu, kfp_mem = 0.7, 3 * 2**30
    widest_cpu = max(_quantity(params["gpu_cpu_request"]), 3 * _quantity(params["cpu_request"]))
    widest_mem = max(_quantity(params["gpu_memory_request"]), 3 * _quantity(params["memory_request"]))
    assert "--cpus=4 --memory=16g" in section and "4 CPUs and 16 GB" in section
    assert cpu + kfp_cpu + widest_cpu <= 4 - 0.5             # room for the node's own pods
    assert mem + kfp_mem + widest_mem <= 16 * 2**30 - 2 * 2**30


@pytest.mark.parametrize("pipeline,params", [("pro_wic", "pipeline-wic-cpu.yaml"),
                                             ("orchestrator", "pipeline-cpu.yaml")])
def test_documented_cpu_parameters_parse_and_compile(pipeline, params, tmp_path):
    """`pro pipeline submit ... --params-file k8s/overlays/local/<params> <pipeline>` of the docs:
    the CLI's own parameter checks accept the file, and the pipeline compiles with it."""
    commands = _commands("kind")
    assert any(f"--params-file k8s/overlays/local/{params} {pipeline}" in c for c in commands) or \
        f"--params-file k8s/overlays/local/{params} {pipeline}" in _section()
    from kfp import compiler

    from pipelines import load_pipeline
    from pipelines.params import pipeline_arguments

    path = REPO / "k8s" / "overlays" / "local" / params
    arguments = pipeline_arguments(pipeline, [], str(path))
    assert arguments["gpu_count"] == 0 and arguments["gpu_node_selector"] == {}
    out = tmp_path / f"{pipeline}.yaml"
    compiler.Compiler().compile(load_pipeline(pipeline), str(out), pipeline_parameters=arguments)
    spec = next(yaml.safe_load_all(out.read_text()))
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    for key, value in yaml.safe_load(path.read_text()).items():
        assert inputs[key]["defaultValue"] == value, key
    if pipeline == "pro_wic":  # ends with a registered (and promoted) pro-endpoint
        tasks = spec["root"]["dag"]["tasks"]
        names = {t["taskInfo"]["name"] for t in _all_tasks(spec)}
        assert {"register PRO endpoint", "promote PRO endpoint"} <= names, names
        assert tasks


def _all_tasks(spec):
    stack = [spec["root"]["dag"]]
    for comp in spec.get("components", {}).values():
        if "dag" in comp:
            stack.append(comp["dag"])
    for dag in stack:
        yield from dag.get("tasks", {}).values()
