"""The explorer's login: pro-ui's auth-proxy sidecar, independent of any ingress controller.

Streamlit listens on the pod's loopback only; every Service port and Ingress backend of the explorer
reaches the nginx sidecar, whose configuration (ConfigMap pro-ui-auth-proxy, rendered by kustomize)
asks for a user of Secret pro-ui-basic-auth. The live tests run that very configuration with the
local nginx binary (apt package `nginx`; scripts/ci_services.sh installs it in CI), laid out as the
pod mounts it, in front of a stand-in for Streamlit on a loopback port (and, once, the real
`pro ui`). They skip with the reason where nginx is missing (fail under PRO_CI_REQUIRE=nginx)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import require

from .helpers import (
    K8S,
    OVERLAYS,
    _find,
    _free_port,
    _ui_container_running,
    _ui_containers,
    _write_kustomization,
)

STREAMLIT = "127.0.0.1:8501"   # where the Deployment puts Streamlit and the proxy forwards to
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------- the manifests

def _proxy_layout(objs) -> dict:
    """What the sidecar runs: its nginx arguments, config text, and where the Secret lands (if any)."""
    spec = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]
    (proxy,) = [c for c in spec["containers"] if c["name"] == "auth-proxy"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    cmd = proxy["command"]
    assert cmd[0] == "nginx"
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    mounts = {m["mountPath"]: m for m in proxy["volumeMounts"]}
    conf_mount = mounts[flags["-c"]]
    conf_volume = volumes[conf_mount["name"]]["configMap"]["name"]
    conf = _find(objs, "ConfigMap", conf_volume)["data"][conf_mount["subPath"]]
    users = [m for m in proxy["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert len(users) <= 1
    users = users[0] if users else None
    secret = volumes[users["name"]]["secret"] if users else None
    return {"flags": flags, "conf": conf, "conf_volume": conf_volume, "users": users,
            "secret": secret, "proxy": proxy, "mounts": mounts, "volumes": volumes}


def _unauthenticated_locations(conf: str) -> set[str]:
    """The `location` blocks that switch basic auth off (exact-match paths)."""
    found = set()
    for m in re.finditer(r"location\s+=\s+(\S+)\s*\{([^}]*)\}", conf):
        if re.search(r"^\s*auth_basic\s+off;", m.group(2), re.M):
            found.add(m.group(1))
    return found


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_way_into_the_explorer_meets_the_login(overlay, rendered):
    objs = rendered[overlay]
    ui, proxy = _ui_containers(objs)
    layout = _proxy_layout(objs)
    env = {e["name"]: e.get("value") for e in ui["env"]}
    # Streamlit: loopback only, no declared port (nothing outside the pod reaches it)
    assert env["STREAMLIT_SERVER_ADDRESS"] == "127.0.0.1" and "ports" not in ui
    assert f"proxy_pass http://{STREAMLIT};" in layout["conf"]
    assert f"{env['STREAMLIT_SERVER_ADDRESS']}:{env['STREAMLIT_SERVER_PORT']}" == STREAMLIT
    proxy_ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert re.search(rf"^\s*listen {proxy_ports['http']};", layout["conf"], re.M)
    # every Service port selecting the explorer targets the proxy
    labels = _find(objs, "Deployment", "pro-ui")["spec"]["template"]["metadata"]["labels"]
    services = [s for s in objs if s["kind"] == "Service" and s["spec"].get("selector")
                and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    assert [s["metadata"]["name"] for s in services] == ["pro-ui"]
    for port in services[0]["spec"]["ports"]:
        assert port["targetPort"] in proxy_ports or port["targetPort"] in proxy_ports.values()
    # Ingresses (only where the overlay publishes the explorer) route to that Service only, with
    # TLS; the login is not an annotation of one controller
    ingresses = [o for o in objs if o["kind"] == "Ingress"]
    assert bool(ingresses) == (overlay == "gpu")
    for ing in ingresses:
        where = f"{overlay}: Ingress {ing['metadata']['name']}"
        backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
        assert backends and {b["name"] for b in backends} == {"pro-ui"}, where
        tls_hosts = {h for t in ing["spec"].get("tls", []) if t.get("secretName") for h in t["hosts"]}
        hosts = {r.get("host") for r in ing["spec"]["rules"]}
        assert hosts and hosts <= tls_hosts, f"{where}: hosts {hosts - tls_hosts} without TLS"
        assert not [k for k in ing["metadata"].get("annotations", {}) if "/auth-" in k], where
    # the login's users: Secret pro-ui-basic-auth (created by you, so in no build), mounted where
    # the config's relative `auth_basic_user_file` points, not optional (no Secret: no pod)
    assert layout["secret"]["secretName"] == "pro-ui-basic-auth"
    assert not layout["secret"].get("optional")
    assert not [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == "pro-ui-basic-auth"]
    user_file = re.search(r"auth_basic_user_file\s+(\S+);", layout["conf"]).group(1)
    conf_dir = os.path.dirname(layout["flags"]["-c"])
    assert os.path.normpath(os.path.join(conf_dir, user_file)) == layout["users"]["mountPath"] + "/auth"
    # everything nginx writes goes to the emptyDir at the prefix (read-only root filesystem)
    assert layout["flags"]["-p"] == "/tmp/" and "emptyDir" in layout["volumes"][
        layout["mounts"]["/tmp"]["name"]]
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_only_the_probe_paths_skip_the_login(overlay, rendered):
    """The kubelet cannot send a password and cannot reach Streamlit's loopback port, so the
    probes need unauthenticated paths: Streamlit's /_stcore/health through the proxy (the UI
    container's probes) and the proxy's own /-/proxy-alive. Nothing else skips the login."""
    objs = rendered[overlay]
    ui, proxy = _ui_containers(objs)
    conf = _proxy_layout(objs)["conf"]
    proxy_port = proxy["ports"][0]["containerPort"]
    probes = {(c["name"], kind): c[kind]["httpGet"] for c in (ui, proxy)
              for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in c}
    assert {(p["path"], p["port"]) for (name, _), p in probes.items() if name == "ui"} == {
        ("/_stcore/health", proxy_port)}
    assert {p["path"] for (name, _), p in probes.items() if name == "auth-proxy"} == {"/-/proxy-alive"}
    assert _unauthenticated_locations(conf) == {p["path"] for p in probes.values()}
    # the one catch-all location asks for the login
    catch_all = re.search(r"location\s+/\s*\{([^}]*)\}", conf).group(1)
    assert re.search(r'^\s*auth_basic\s+"[^"]+";', catch_all, re.M)


# --------------------------------------------------------------------------- live: local nginx

def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        require("nginx", "nginx not installed (apt-get install -y nginx; CI: scripts/ci_services.sh)")
    return found


def _htpasswd_lines(users: dict[str, str]) -> str:
    """An htpasswd file as docs/deploy.md makes it: bcrypt (`htpasswd -nbB`) when apache2-utils is
    there, and always an apr1 line (`openssl passwd -apr1`, the documented fallback)."""
    lines = []
    for i, (user, password) in enumerate(users.items()):
        if i % 2 == 0 and shutil.which("htpasswd"):
            out = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
        else:
            out = user + ":" + subprocess.run(["openssl", "passwd", "-apr1", password], capture_output=True,
                                              text=True, timeout=30, check=True).stdout
        lines.append(out.strip())
    return "\n".join(lines) + "\n"


class _Backend(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def _stand_in_for_streamlit(port: int):
    """Answers like Streamlit where the proxy cares: /_stcore/health -> ok; /_stcore/stream with
    a websocket upgrade -> 101 and then echoes the bytes; anything else -> its request as JSON.
    Records every request's path and headers."""
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
            if self.path == "/_stcore/health":
                body = b"ok"
            elif self.path == "/_stcore/stream" and self.headers.get("Upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1(
                    (self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                self.connection.settimeout(10)
                while True:   # echo until the client closes
                    data = self.connection.recv(4096)
                    if not data:
                        break
                    self.connection.sendall(data)
                self.close_connection = True
                return
            else:
                body = json.dumps(seen[-1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Backend(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@contextlib.contextmanager
def _run_proxy(objs, users: str | None, upstream_port: int, moved: dict[str, str] | None = None):
    """The rendered sidecar config, run by the local nginx exactly as the pod starts it (same
    arguments; a private prefix for /tmp, the config's folder with the Secret at users/auth),
    listening on a free loopback port and forwarding to `upstream_port` instead of 8501. Runs as
    an unprivileged user (as in the pod) when this process is root."""
    nginx = _nginx()
    layout = _proxy_layout(objs)
    port = _free_port()
    conf = layout["conf"]
    listen = re.search(r"^\s*listen (\d+);", conf, re.M)
    assert listen and conf.count(STREAMLIT) >= 2, "the config no longer has the shape this test runs"
    conf = conf.replace(listen.group(0), f"        listen 127.0.0.1:{port};")
    conf = conf.replace(STREAMLIT, f"127.0.0.1:{upstream_port}")
    for old, new in (moved or {}).items():   # other loopback peers (oauth2-proxy) on free ports
        assert old in conf, old
        conf = conf.replace(old, new)
    root = Path(tempfile.mkdtemp(prefix="pro-ui-auth-"))
    try:
        os.chmod(root, 0o755)
        conf_file = root / layout["flags"]["-c"].lstrip("/")
        users_dir = root / (layout["users"]["mountPath"] if layout["users"] else "/etc/no-users").lstrip("/")
        prefix = root / layout["flags"]["-p"].lstrip("/")
        users_dir.mkdir(parents=True)
        conf_file.parent.mkdir(parents=True, exist_ok=True)
        prefix.mkdir(parents=True, exist_ok=True)
        conf_file.write_text(conf)
        if users is not None:
            (users_dir / "auth").write_text(users)
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        prefix.chmod(0o777)
        log = root / "nginx.log"
        log.touch()
        log.chmod(0o666)   # the worker reopens /dev/stdout as the unprivileged user
        flags = layout["flags"]
        cmd = [nginx, "-p", f"{prefix}/", "-c", str(conf_file), "-e", flags["-e"]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/proxy-alive", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("nginx did not start:\n" + log.read_text()[-3000:])
                time.sleep(0.1)
        try:
            yield url, log
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _websocket(url: str, auth: tuple[str, str] | None) -> tuple[bytes, socket.socket]:
    """Open Streamlit's session stream the way a browser does; returns (response head, socket)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    head = [f"GET /_stcore/stream HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
            f"Origin: http://{host}:{port}"]
    if auth:
        head.append("Authorization: Basic " + base64.b64encode(":".join(auth).encode()).decode())
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n")[0], sock


@pytest.fixture(scope="module")
def proxied(rendered):
    """The root render's proxy in front of the stand-in, with two users (bcrypt and apr1)."""
    _nginx()
    users = {"alice": "alice-" + os.urandom(4).hex(), "bob": "bob-" + os.urandom(4).hex()}
    backend_port = _free_port()
    server, seen = _stand_in_for_streamlit(backend_port)
    try:
        with _run_proxy(rendered["root"], _htpasswd_lines(users), backend_port) as (url, log):
            yield url, users, seen, log
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_refuses_requests_without_the_right_password(proxied):
    url, users, seen, _ = proxied
    before = len(seen)
    status, headers, _ = _get(f"{url}/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
    assert _get(f"{url}/", ("alice", "wrong-password"))[0] == 401
    assert _get(f"{url}/", ("mallory", users["alice"]))[0] == 401
    assert _get(f"{url}/", ("bob", users["alice"]))[0] == 401   # another user's password
    for path in ("/_stcore/host-config", "/_stcore/health/../stream", "/static/js/main.js",
                 "/_stcore/upload_file/x", "/-/proxy-alive/x"):
        assert _get(f"{url}{path}")[0] == 401, path
    assert len(seen) == before, "a refused request reached Streamlit"


def test_proxy_passes_the_right_password_to_streamlit_without_forwarding_it(proxied):
    url, users, seen, _ = proxied
    for user in users:   # bcrypt (`htpasswd -B`, when installed) and apr1 (`openssl passwd -apr1`)
        status, _, body = _get(f"{url}/?page=registry", (user, users[user]))
        assert status == 200, (user, body)
        request = json.loads(body)
        assert request["path"] == "/?page=registry"
        assert "authorization" not in request["headers"]   # the password stays in the proxy
        assert request["headers"]["x-forwarded-user"] == user


def test_proxy_carries_streamlits_websocket_for_a_logged_in_user_only(proxied):
    url, users, seen, _ = proxied
    head, sock = _websocket(url, None)
    sock.close()
    assert head.startswith(b"HTTP/1.1 401"), head
    head, sock = _websocket(url, ("alice", users["alice"]))
    with sock:
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"upgrade: websocket" in head.lower()
        request = [s for s in seen if s["path"] == "/_stcore/stream"][-1]["headers"]
        assert request["upgrade"] == "websocket" and request["connection"].lower() == "upgrade"
        assert "sec-websocket-key" in request and "authorization" not in request
        sock.sendall(b"\x81\x05hello")          # bytes both ways through the tunnel
        echoed = b""
        while len(echoed) < 7:
            echoed += sock.recv(64)
        assert echoed == b"\x81\x05hello"


def test_probe_paths_answer_without_a_password(proxied):
    url, _, seen, _ = proxied
    status, _, body = _get(f"{url}/_stcore/health")
    assert (status, body) == (200, b"ok")
    assert "authorization" not in seen[-1]["headers"]
    status, _, body = _get(f"{url}/-/proxy-alive")
    assert (status, body.strip()) == (200, b"ok")


def test_proxy_without_its_users_file_lets_nobody_in(rendered):
    """The Secret's file missing (or empty): every request but the probes' is refused."""
    backend_port = _free_port()
    server, seen = _stand_in_for_streamlit(backend_port)
    try:
        for users in (None, ""):
            with _run_proxy(rendered["root"], users, backend_port) as (url, _):
                assert _get(f"{url}/")[0] == 401
                assert _get(f"{url}/", ("alice", "anything"))[0] in (401, 403, 500)
                assert _get(f"{url}/_stcore/health")[0] == 200
        assert [s["path"] for s in seen] == ["/_stcore/health", "/_stcore/health"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_real_explorer_behind_the_rendered_proxy(rendered, tmp_path):
    """`pro ui` started as the container starts it (port moved to a free one) behind the rendered
    proxy: the kubelet's probe path answers, the page needs the login, and Streamlit itself accepts
    the proxied websocket upgrade."""
    pytest.importorskip("streamlit", reason="the ui extra is not installed")
    _nginx()
    objs = rendered["root"]
    with _ui_container_running(objs, tmp_path) as (port, probe):
        users = {"alice": "alice-" + os.urandom(4).hex()}
        with _run_proxy(objs, _htpasswd_lines(users), port) as (url, _):
            assert _get(f"{url}{probe}")[:3:2] == (200, b"ok")       # what the kubelet asks
            assert _get(f"{url}/")[0] == 401
            status, _, page = _get(f"{url}/", ("alice", users["alice"]))
            assert status == 200 and b"<noscript>" in page, page[:300]
            head, sock = _websocket(url, ("alice", users["alice"]))
            sock.close()
            assert head.startswith(b"HTTP/1.1 101"), head
            head, sock = _websocket(url, None)
            sock.close()
            assert head.startswith(b"HTTP/1.1 401"), head


# --------------------------------------------------------------------------- components/ui-oidc

OAUTH2_PROXY = "127.0.0.1:4180"


@pytest.fixture(scope="module")
def oidc_objs(render, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc")
    rel = os.path.relpath(K8S, folder)
    return render(_write_kustomization(folder, {"resources": [f"{rel}/base"],
                                                "components": [f"{rel}/components/ui-oidc"]}))[1]


def test_oidc_component_swaps_the_password_file_for_oauth2_proxy(oidc_objs):
    spec = _find(oidc_objs, "Deployment", "pro-ui")["spec"]["template"]["spec"]
    named = {c["name"]: c for c in spec["containers"]}
    assert set(named) == {"ui", "auth-proxy", "oauth2-proxy"}
    oauth = named["oauth2-proxy"]
    assert f"--http-address={OAUTH2_PROXY}" in oauth["args"] and "ports" not in oauth   # loopback
    assert "--upstream=static://202" in oauth["args"] and "--set-xauthrequest=true" in oauth["args"]
    assert {"secretRef": {"name": "pro-ui-oidc"}} in oauth["envFrom"]
    assert not [v for v in spec["volumes"] if "secret" in v]   # no htpasswd Secret needed
    layout = _proxy_layout(oidc_objs)
    assert layout["users"] is None and "auth_basic" not in layout["conf"]
    assert f"http://{OAUTH2_PROXY}" in layout["conf"] and "auth_request /oauth2/auth;" in layout["conf"]
    # its probes reach it through nginx's loopback forward
    proxy_port = named["auth-proxy"]["ports"][0]["containerPort"]
    for kind in ("readinessProbe", "livenessProbe"):
        assert oauth[kind]["httpGet"] == {"path": "/-/oauth2-proxy-ping", "port": proxy_port}
    assert re.search(r"location = /-/oauth2-proxy-ping \{[^}]*proxy_pass http://127\.0\.0\.1:4180/ping;",
                     layout["conf"])
    # the identity provider is reached over HTTPS from the explorer's pod only
    (egress,) = [o for o in oidc_objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "ui-oidc-egress"]
    assert egress["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "pro-ui"}}
    assert [p["port"] for r in egress["spec"]["egress"] for p in r["ports"]] == [443]


def _stand_in_for_oauth2_proxy(port: int):
    """oauth2-proxy's nginx contract: /oauth2/auth 202 (+ X-Auth-Request-Email) for a signed-in
    session cookie, else 401; /oauth2/start redirects to the identity provider; /ping."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            headers = {}
            if self.path == "/oauth2/auth":
                ok = "_oauth2_proxy=signed-in" in self.headers.get("Cookie", "")
                status = 202 if ok else 401
                if ok:
                    headers["X-Auth-Request-Email"] = "alice@example.com"
            elif self.path.startswith("/oauth2/start"):
                status, headers["Location"] = 302, "https://idp.example.com/authorize?state=x"
            elif self.path == "/ping":
                status = 200
            else:
                status = 404
            body = b"OK" if status in (200, 202) else b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Backend(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _request(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request, redirects not followed."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_oidc_proxy_sends_strangers_to_sign_in_and_lets_sessions_through(oidc_objs):
    _nginx()
    backend_port, oauth_port = _free_port(), _free_port()
    backend, seen = _stand_in_for_streamlit(backend_port)
    oauth, asked = _stand_in_for_oauth2_proxy(oauth_port)
    signed_in = {"Cookie": "_oauth2_proxy=signed-in"}
    try:
        with _run_proxy(oidc_objs, None, backend_port, {OAUTH2_PROXY: f"127.0.0.1:{oauth_port}"}) as (url, _):
            status, headers, _ = _request(url, "/?page=registry")
            assert status == 302 and headers["Location"].endswith("/oauth2/start?rd=/?page=registry")
            assert _request(url, "/", {"Cookie": "_oauth2_proxy=forged"})[0] == 302
            status, headers, _ = _request(url, "/oauth2/start?rd=/")   # oauth2-proxy's own pages
            assert status == 302 and headers["Location"].startswith("https://idp.example.com/")
            assert _request(url, "/oauth2/auth", signed_in)[0] == 404  # nginx's internal check only
            assert seen == [], "a stranger reached Streamlit"
            status, _, body = _request(url, "/?page=registry", signed_in)
            assert status == 200
            request = json.loads(body)
            assert request["headers"]["x-forwarded-user"] == "alice@example.com"
            assert "authorization" not in request["headers"]
            head, sock = _websocket(url, None)
            sock.close()
            assert head.startswith(b"HTTP/1.1 302"), head
            host, port = url.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)), timeout=10)
            with sock:
                sock.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\nCookie: _oauth2_proxy=signed-in\r\n\r\n").encode())
                assert sock.recv(4096).startswith(b"HTTP/1.1 101")
            # the probes' paths, without a session
            assert _request(url, "/_stcore/health")[:3:2] == (200, b"ok")
            assert _request(url, "/-/oauth2-proxy-ping")[0] == 200 and "/ping" in asked
    finally:
        for server in (backend, oauth):
            server.shutdown()
            server.server_close()
