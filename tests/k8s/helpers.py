"""Shared helpers of the k8s tests: rendering with kustomize, finding objects in a render,
pod specs and containers, Service URLs and flags, Secret values, and a NetworkPolicy evaluator.

The fixtures that render (once per test session and folder) live in conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import re
import shutil
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"

# overlay name -> kustomization folder; all of them render offline.
OVERLAYS = {
    "root": K8S,
    "local": K8S / "overlays" / "local",
    "gpu": K8S / "overlays" / "gpu",
    "existing-kfp": K8S / "overlays" / "existing-kfp",
}
# Folders applied besides an overlay: the namespace + backup volume (first, once) and the restore Job.
NAMESPACE_FOLDER = K8S / "namespace"
RESTORE_FOLDER = K8S / "restore"
# The namespace folder each overlay is applied with: the backup volume sized for its bucket.
NAMESPACE_FOLDERS = {"root": NAMESPACE_FOLDER, "existing-kfp": NAMESPACE_FOLDER,
                     "local": K8S / "overlays" / "local" / "namespace",
                     "gpu": K8S / "overlays" / "gpu" / "namespace"}
ALL_FOLDERS = {**OVERLAYS, "namespace": NAMESPACE_FOLDER, "restore": RESTORE_FOLDER,
               "namespace-local": NAMESPACE_FOLDERS["local"], "namespace-gpu": NAMESPACE_FOLDERS["gpu"]}
# The oldest Kubernetes minor the manifests promise to work on (docs/deploy.md).
MIN_K8S_VERSION = "1.30.0"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"}
PLACEHOLDER = re.compile(r"^CHANGE_ME[-_A-Za-z0-9]*$")
# Secret keys that are identifiers (user and database names), not credentials.
NON_SECRET_KEYS = {"POSTGRES_USER", "POSTGRES_DB", "PGUSER", "PGDATABASE", "MLFLOW_AUTH_DATABASE",
                   "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_TRACKING_USERNAME"}
GPU_RESOURCE = "nvidia.com/gpu"
# docs/ARCHITECTURE.md, "Cluster names"
CONTRACT_POOL_LABEL = ("pro.ai/pool", "gpu")
CONTRACT_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")


# --------------------------------------------------------------------------- tools & rendering

def _load_kubectl_helper():
    spec = importlib.util.spec_from_file_location("pro_kubectl_helper", REPO / "scripts" / "kubectl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kubectl_helper = _load_kubectl_helper()


def _kustomize(kubectl: Path, folder: Path) -> str:
    proc = subprocess.run([str(kubectl), "kustomize", str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize {folder} failed:\n{proc.stderr}"
    return proc.stdout


def _objects(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _find(objs, kind, name, namespace="pro"):
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name
            and o["metadata"].get("namespace") == namespace]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


def _pod_spec(obj) -> dict | None:
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    return None


def _pod_labels(obj) -> dict:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def _workloads(objs):
    return [o for o in objs if _pod_spec(o) is not None]


def _containers(spec):
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _ui_containers(objs) -> tuple[dict, dict]:
    """pro-ui's two containers: Streamlit (`ui`) and the login in front of it (`auth-proxy`)."""
    named = {c["name"]: c for c in _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"]}
    assert set(named) == {"ui", "auth-proxy"}, sorted(named)
    return named["ui"], named["auth-proxy"]


def _config(objs, namespace="pro") -> dict:
    return _find(objs, "ConfigMap", "pro-config", namespace)["data"]


def _copy_k8s(tmp_path: Path) -> Path:
    """A private copy of k8s/ (and pyproject.toml beside it) to render edited variants of."""
    root = tmp_path / "repo"
    shutil.copytree(K8S, root / "k8s")
    return root / "k8s"

def _validate_strict(validator, path: Path, version: str) -> tuple[int, str]:
    """`kubernetes-validate --strict --quiet -k VERSION PATH`, in this process (what the CLI
    runs, without a Python start per file): (exit status, messages)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = validator.utils.validate_file(str(path), version, True, True, False)
    return rc, out.getvalue()



def _port_of(service: dict, name_or_number) -> int:
    for p in service["spec"]["ports"]:
        if name_or_number in (p.get("name"), p["port"]):
            return p["port"]
    raise AssertionError(f"Service {service['metadata']['name']} has no port {name_or_number}")


def _service_url(service: dict, port_name: str, scheme="http") -> str:
    meta = service["metadata"]
    return f"{scheme}://{meta['name']}.{meta['namespace']}.svc.cluster.local:{_port_of(service, port_name)}"


def _flags(args: list[str]) -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        out[key] = value if sep else True
    return out



def _secret_values(secret) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values



# --------------------------------------------------------------------------- NetworkPolicies

def _matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics ({} matches everything)."""
    selector = selector or {}
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(hash=False, compare=False)
    ports: dict = field(hash=False, compare=False, default_factory=dict)  # name -> number


def _platform_pods(objs) -> list[Pod]:
    pods = []
    for obj in _workloads(objs):
        ports = {p.get("name", str(p["containerPort"])): p["containerPort"]
                 for c in _pod_spec(obj)["containers"] for p in c.get("ports", [])}
        pods.append(Pod(obj["metadata"]["name"], obj["metadata"]["namespace"], _pod_labels(obj), ports))
    return pods


# Pods that are not in the manifests: PRO pipeline pods (labelled by the pipeline compiler) in
# the namespaces they may run in, and strangers that must be kept out.
PIPELINE = {"pro.ai/role": "pipeline", "pipelines.kubeflow.org/v2_component": "true"}
SYNTHETIC = [
    Pod("pipeline@pro", "pro", PIPELINE),
    Pod("pipeline@kubeflow", "kubeflow", PIPELINE),
    Pod("pipeline-label@elsewhere", "elsewhere", PIPELINE),   # right label, wrong namespace
    Pod("stranger@pro", "pro", {"app": "debug-shell"}),        # unlabelled pod in our namespace
    Pod("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
]


def _namespace_labels(objs, namespace: str) -> dict:
    labels = {"kubernetes.io/metadata.name": namespace}  # set by the API server on every namespace
    for o in objs:
        if o["kind"] == "Namespace" and o["metadata"]["name"] == namespace:
            labels.update(o["metadata"].get("labels", {}))
    return labels


def _peer_matches(objs, peer: dict, policy_ns: str, src: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # only for traffic from outside the pod network
    if "namespaceSelector" in peer:
        ns_ok = _matches(peer["namespaceSelector"], _namespace_labels(objs, src.namespace))
    else:
        ns_ok = src.namespace == policy_ns
    return ns_ok and ("podSelector" not in peer or _matches(peer["podSelector"], src.labels))


def _port_matches(rule_ports, dst: Pod, port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            want = dst.ports.get(want)
        if want is not None and want <= port <= p.get("endPort", want):
            return True
    return False


def _policy_types(policy) -> set[str]:
    spec = policy["spec"]
    return set(spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else [])))


def _allowed(objs, src: Pod, dst: Pod, port: int) -> bool:
    """Is a TCP connection src -> dst:port allowed by the NetworkPolicies in objs?"""
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    ingress = [p for p in policies if p["metadata"]["namespace"] == dst.namespace
               and "Ingress" in _policy_types(p) and _matches(p["spec"]["podSelector"], dst.labels)]
    egress = [p for p in policies if p["metadata"]["namespace"] == src.namespace
              and "Egress" in _policy_types(p) and _matches(p["spec"]["podSelector"], src.labels)]

    def admits(policy, rules_key, peers_key, peer_pod, policy_ns):
        return any((not rule.get(peers_key) or any(_peer_matches(objs, peer, policy_ns, peer_pod)
                                                     for peer in rule[peers_key]))
                   and _port_matches(rule.get("ports"), dst, port)
                   for rule in policy["spec"].get(rules_key) or [])

    in_ok = not ingress or any(admits(p, "ingress", "from", src, p["metadata"]["namespace"])
                               for p in ingress)
    out_ok = not egress or any(admits(p, "egress", "to", dst, p["metadata"]["namespace"])
                               for p in egress)
    return in_ok and out_ok


def _allowed_paths(objs) -> set[tuple[str, str, int]]:
    platform = _platform_pods(objs)
    sources = platform + SYNTHETIC
    paths = set()
    for dst in platform:
        for port in sorted(set(dst.ports.values())):
            for src in sources:
                if src != dst and _allowed(objs, src, dst, port):
                    paths.add((src.name, dst.name, port))
    return paths


def _expected_paths(objs, pipeline_sources: set[str], s3_sources: set[str] = frozenset(),
                    ui_sources: set[str] = frozenset()):
    """The paths of k8s/base/networkpolicies.yaml's header (port-forward needs no rule)."""
    expected = {(s, "pro-ui", 8080) for s in ui_sources}   # its auth proxy: the ingress controller, if any
    expected |= {(s, "mlflow", 5000) for s in {"pro-ui", "pro-serving", "pro-mlflow-setup"}
                 | set(pipeline_sources)}
    expected |= {("pro-ui", "pro-serving", 5001)}
    expected |= {(s, "postgres", 5432) for s in ("mlflow", "pro-postgres-setup", "pro-backup")}
    expected |= {(s, "minio", 9000) for s in ("mlflow", "minio-setup", "pro-backup")}
    expected |= {(s, "minio", 9000) for s in s3_sources}
    return expected


def _write_scripts(objs, folder: Path) -> Path:
    """The files of ConfigMap pro-scripts (mounted at /scripts in the pods), written to folder
    with their references to /scripts/ pointed at it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _find(objs, "ConfigMap", "pro-scripts")["data"].items():
        (folder / name).write_text(text.replace("/scripts/", f"{folder}/"))
    return folder


def _container_env(container: dict, objs, secrets: dict, base: dict) -> dict:
    """The container's environment as the kubelet resolves it: Secrets from `secrets` (name ->
    values; the rendered placeholders otherwise), ConfigMaps from objs; `base` (PATH, and PGHOST/
    PGPORT of a local server) wins over the manifest."""
    def secret(name):
        return secrets.get(name) or _secret_values(_find(objs, "Secret", name))

    def config(name):
        return _find(objs, "ConfigMap", name)["data"]

    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("secretRef") or source["configMapRef"]
        if ref.get("optional") and "secretRef" in source and ref["name"] not in secrets and not [
                o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == ref["name"]]:
            continue   # an optional Secret nobody created: the kubelet skips it
        env.update(secret(ref["name"]) if "secretRef" in source else config(ref["name"]))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret(ref["name"])[ref["key"]]
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = config(ref["name"])[ref["key"]]
    return {**env, **base}


def _write_kustomization(folder: Path, body: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return folder



def _ui_container_env(objs, overrides: dict | None = None) -> tuple[list[str], dict]:
    """The UI container's command and environment, resolved as the kubelet would."""
    c, _ = _ui_containers(objs)
    env = {"PATH": os.environ["PATH"]}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_config(objs) if source["configMapRef"]["name"] == "pro-config" else {})
        else:
            env.update(_secret_values(_find(objs, "Secret", source["secretRef"]["name"])))
    env.update({e["name"]: e["value"] for e in c["env"]})
    env.update(overrides or {})
    pro = Path(sys.executable).parent / c["args"][0]
    if not pro.exists():
        pytest.skip(f"the `{c['args'][0]}` entry point is not installed next to {sys.executable}")
    return [str(pro), *c["args"][1:]], env


@contextlib.contextmanager
def _ui_container_running(objs, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`pro ui` started as the UI container starts it (its port moved to a free one), until its readiness
    probe answers; yields (port, probe path). Stopped as the kubelet stops it: SIGTERM to its process group
    (`pro ui` starts Streamlit as a child; tini -g does this in the image), SIGKILL after 20 s."""
    import signal
    import time

    port = _free_port()
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro"),
                                        "STREAMLIT_SERVER_PORT": str(port)})
    ui, _ = _ui_containers(objs)
    probe = ui["readinessProbe"]["httpGet"]["path"]
    log = tmp_path / "ui.log"
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}{probe}", 120, proc, log)
        yield port, probe
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        time.sleep(0.5)


# --------------------------------------------------------------------------- live MLflow check

def _free_port() -> int:
    from helpers import free_port

    return free_port()


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    """Wait until ``url`` answers 200 (helpers.services.wait_http, argument order of the k8s tests)."""
    from helpers.services import wait_http

    wait_http(url, proc, log, timeout=timeout)


# --------------------------------------------------------------------------- KFP (remote base)

# The pinned remote bases of k8s/overlays/kubeflow-pipelines (CI has no network).
KFP_REMOTE = re.compile(r"^(https://)?github\.com/kubeflow/pipelines/manifests/kustomize/"
                        r"(?P<path>[\w/-]+)\?ref=(?P<ref>[^&\s]+)$")
KFP_FOLDERS = [K8S / "overlays" / "kubeflow-pipelines" / "upstream",
               K8S / "overlays" / "kubeflow-pipelines" / "crds"]


def _kfp_stub_objects() -> dict[str, list[dict]]:
    """Stand-ins for the upstream objects PRO's KFP hardening patches or fences, shaped as in KFP
    2.16.1 (names, labels, the container environment the patches test), per remote path."""
    label = {"application-crd-id": "kubeflow-pipelines"}

    def deployment(name, env=(), labels=None):
        labels = {**(labels or {"app": name}), **label}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "kubeflow", "labels": labels},
                "spec": {"selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": name, "image": f"{name}:stub",
                                                               "env": list(env)}]}}}}

    def secret(name, data):
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "kubeflow", "labels": label}, "stringData": data}

    def pvc(name):
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "kubeflow", "labels": label},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}

    db = [{"name": "DBCONFIG_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "mysql-secret", "key": "password"}}}]
    return {
        "env/platform-agnostic": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "kfp-launcher", "namespace": "kubeflow"}, "data": {}},
            secret("mlpipeline-minio-artifact", {"accesskey": "minio", "secretkey": "minio123"}),
            secret("mysql-secret", {"username": "root", "password": ""}),
            deployment("mysql", [{"name": "MYSQL_ALLOW_EMPTY_PASSWORD", "value": "true"}]),
            deployment("ml-pipeline", db), deployment("ml-pipeline-ui"), deployment("seaweedfs"),
            deployment("cache-deployer-deployment", labels={"app": "cache-deployer"}),
            pvc("mysql-pv-claim"), pvc("seaweedfs-pvc"),
        ],
        "cluster-scoped-resources": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "kubeflow-pipelines-cache-deployer-clusterrole"},
             "rules": [{"apiGroups": ["admissionregistration.k8s.io"],
                        "resources": ["mutatingwebhookconfigurations"], "verbs": ["create", "patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "kubeflow-pipelines-cache-deployer-clusterrolebinding"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "kubeflow-pipelines-cache-deployer-clusterrole"},
             "subjects": [{"kind": "ServiceAccount", "name": "kubeflow-pipelines-cache-deployer-sa",
                           "namespace": "kubeflow"}]},
        ],
    }


def _offline_kfp_copy(tmp_path: Path) -> Path:
    """A copy of k8s/ whose KFP remote bases point at local folders: the real KFP manifests when
    $PRO_KFP_MANIFESTS names a checkout's `manifests/kustomize` (with its own remotes made local),
    else the stand-ins of _kfp_stub_objects. Returns the copy's k8s folder."""
    import os

    k8s = _copy_k8s(tmp_path)
    real = os.environ.get("PRO_KFP_MANIFESTS")
    for folder in KFP_FOLDERS:
        path = k8s / folder.relative_to(K8S) / "kustomization.yaml"
        body = yaml.safe_load(path.read_text())
        resources = []
        for res in body["resources"]:
            m = KFP_REMOTE.match(res)
            if not m:
                resources.append(res)
                continue
            if real:
                target = Path(real) / m["path"]
            else:
                target = tmp_path / "kfp-stub" / m["path"]
                _write_kustomization(target, {"resources": ["objects.yaml"]})
                (target / "objects.yaml").write_text(yaml.safe_dump_all(_kfp_stub_objects()[m["path"]]))
            resources.append(os.path.relpath(target, path.parent))
        body["resources"] = resources
        path.write_text(yaml.safe_dump(body, sort_keys=False))
    return k8s


# --------------------------------------------------------------------------- secrets in argv

def _run_tracing_argv(cmd: list[str], env: dict, trace: Path):
    """Run cmd; with strace on this machine, also the argv of every process it (and its shell
    scripts, through their expansions) started. Returns (process, [argv string, ...] or None)."""
    strace = shutil.which("strace")
    if strace:
        probe = subprocess.run([strace, "-f", "-qq", "-e", "trace=execve", "-o", os.devnull, "true"],
                               capture_output=True, timeout=30)
        strace = strace if probe.returncode == 0 else None   # ptrace may be forbidden
    if not strace:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120), None
    proc = subprocess.run([strace, "-f", "-qq", "-s", "65536", "-e", "trace=execve", "-o", str(trace), *cmd],
                          env=env, capture_output=True, text=True, timeout=120)
    argvs = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert argvs, "strace recorded no execve"
    return proc, argvs


def _assert_no_secret_in_argv(argvs, secrets, where):
    if argvs is None:
        return  # no strace here: the stub's own call log is checked instead
    for secret in secrets:
        assert len(secret) >= 8
        hits = [line for line in argvs if secret in line.split("], ")[0]]  # argv, not the environment
        assert not hits, f"{where}: a secret is in the arguments of {hits[0][:200]}"
