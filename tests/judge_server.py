"""Real OpenAI-compatible servers on loopback for the judge tests and bench/bench_judge.py.

- :func:`transformers_serve`: transformers' own server (``transformers serve``) with a local model
  folder on 127.0.0.1 (the bundled SmolLM2 in tests).
- :class:`KeyCheckingProxy`: ``transformers serve`` checks no API key, so a wrong-key test needs a
  server that does: this tiny loopback proxy answers 401 with OpenAI's error body for any key but
  its own and forwards everything else to its upstream unchanged.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(model_dir: str | Path, *, startup_timeout: float = 180.0,
                       log_path: str | Path | None = None, extra_args: list[str] | None = None
                       ) -> Iterator[tuple[str, str]]:
    """``transformers serve <model_dir>`` on 127.0.0.1:<free port>, CPU; yields (base_url, model id)."""
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
           "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--log-level", "warning", *(extra_args or [])]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode} (log: {log_path})")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"transformers serve did not come up in {startup_timeout:.0f} s (log: {log_path})")
            time.sleep(0.5)
        yield f"{base}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()


class KeyCheckingProxy:
    """Loopback HTTP proxy that requires ``Authorization: Bearer <key>`` (401 with OpenAI's error body
    otherwise) and forwards the rest to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, key: str):
        self.upstream, self.key = upstream.rstrip("/"), key
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {proxy.key}":
                    given = auth.removeprefix("Bearer ")
                    msg = (f"Incorrect API key provided: {given[:4]}****. You can find your API key at "
                           "your provider's console.")
                    return self._reply(401, json.dumps({"error": {"message": msg, "type": "invalid_request_error",
                                                                  "param": None, "code": "invalid_api_key"}}).encode())
                req = urllib.request.Request(proxy.upstream + self.path, data=data, method=self.command,
                                             headers={"Content-Type": self.headers.get("Content-Type",
                                                                                       "application/json")})
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        return self._reply(r.status, r.read(), r.headers.get("Content-Type", "application/json"))
                except urllib.error.HTTPError as exc:
                    return self._reply(exc.code, exc.read())
                except OSError as exc:
                    return self._reply(502, json.dumps({"error": {"message": f"upstream: {exc}"}}).encode())

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KeyCheckingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedJudge:
    """A loopback OpenAI-compatible server whose replies come from ``reply(messages) -> str`` (the
    statistics tests need a judge with known behaviour: always the first answer, always the longer
    one, never a verdict). ``fail_first``: that many requests answered ``fail_status`` first."""

    def __init__(self, reply, *, model: str = "scripted-judge", fail_first: int = 0, fail_status: int = 503,
                 fail_body: str = "overloaded"):
        self.reply, self.model = reply, model
        self.fail_left, self.fail_status, self.fail_body = fail_first, fail_status, fail_body
        self.requests = 0
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": judge.model, "object": "model"}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with judge._lock:
                    judge.requests += 1
                    fail = judge.fail_left > 0
                    judge.fail_left -= fail
                if fail:
                    return self._send(judge.fail_status, {"error": {"message": judge.fail_body}})
                text = judge.reply(body["messages"])
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": judge.model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedJudge":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
