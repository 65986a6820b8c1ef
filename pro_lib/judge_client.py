"""The LLM judge's endpoint and client: settings from flags / environment / a mounted Secret, a
reachability check that fails fast, retries with backoff, ``concurrency`` requests at a time and an
on-disk cache of replies (keyed by the judge and the exact messages). The protocols: pro_lib.judge_protocol;
the stage: pro_lib.judge."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from pro_lib.errors import ConfigError, ProError

log = logging.getLogger(__name__)

ENV_BASE_URL = "PRO_JUDGE_BASE_URL"
ENV_MODEL = "PRO_JUDGE_MODEL"
ENV_API_KEY = "PRO_JUDGE_API_KEY"
ENV_API_KEY_FILE = "PRO_JUDGE_API_KEY_FILE"
# where k8s/ mounts the Secret `pro-judge` (key `api-key`) into the judge stage's pod
SECRET_KEY_FILE = "/var/run/secrets/pro-judge/api-key"
NO_KEY = "EMPTY"  # what local servers (vLLM, transformers serve) accept when none is configured
CHECK_TIMEOUT_S = 10.0  # the reachability check: an unreachable endpoint fails within this (+ a little)


class JudgeError(ProError):
    """The judge endpoint refused a request (wrong key, unknown model, bad request)."""


class JudgeUnavailable(JudgeError):
    """The judge endpoint cannot be reached."""


# -- endpoint settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeEndpoint:
    base_url: str
    model: str
    api_key: str = NO_KEY
    key_source: str = "none"

    def __repr__(self) -> str:  # never print the key
        return f"JudgeEndpoint(base_url={self.base_url!r}, model={self.model!r}, key from {self.key_source})"

    @classmethod
    def resolve(cls, base_url: str | None = None, model: str | None = None, *, api_key: str | None = None,
                api_key_file: str | None = None, env: Mapping[str, str] | None = None) -> "JudgeEndpoint":
        """Flags first, then the environment, then the mounted Secret; a missing URL or model is an error."""
        env = os.environ if env is None else env
        url = (base_url or env.get(ENV_BASE_URL) or "").strip()
        name = (model or env.get(ENV_MODEL) or "").strip()
        if not url:
            raise ConfigError(f"no judge endpoint: pass --base-url (e.g. http://127.0.0.1:8000/v1 for a local "
                              f"`transformers serve` or `vllm serve`, https://api.openai.com/v1) or set {ENV_BASE_URL}")
        if not re.match(r"^https?://", url):
            raise ConfigError(f"judge --base-url {url!r} is not an http(s):// URL (e.g. http://127.0.0.1:8000/v1)")
        if not name:
            raise ConfigError(f"no judge model: pass --model (the endpoint's model name, e.g. gpt-4o) or set {ENV_MODEL}")
        if api_key:
            return cls(url.rstrip("/"), name, api_key, "the --api-key flag")
        if env.get(ENV_API_KEY):
            return cls(url.rstrip("/"), name, env[ENV_API_KEY].strip(), f"${ENV_API_KEY}")
        path = api_key_file or env.get(ENV_API_KEY_FILE)
        if path:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"judge API key file {p} does not exist (from --api-key-file or {ENV_API_KEY_FILE}); "
                                  "mount the Secret pro-judge or point to a file holding the key")
            key = p.read_text(encoding="utf-8").strip()
            if not key:
                raise ConfigError(f"judge API key file {p} is empty")
            return cls(url.rstrip("/"), name, key, f"the file {p}")
        if Path(SECRET_KEY_FILE).is_file():
            key = Path(SECRET_KEY_FILE).read_text(encoding="utf-8").strip()
            if key:
                return cls(url.rstrip("/"), name, key, f"the Secret file {SECRET_KEY_FILE}")
        return cls(url.rstrip("/"), name, NO_KEY, "none (no key configured)")


def _reply_text(exc: Exception) -> str:
    """The endpoint's own words from an ``openai.APIStatusError``: its error message, else the body."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, Mapping) else err
        if msg:
            return str(msg)[:500]
    resp = getattr(exc, "response", None)
    text = getattr(resp, "text", "") if resp is not None else ""
    return (text or str(exc))[:500]


# -- the client: retries, concurrency, cache ---------------------------------------------------------
class JudgeClient:
    """Chat completions from one judge endpoint, ``concurrency`` at a time, retried, cached on disk."""

    RETRYABLE_STATUS = (408, 409, 429, 500, 502, 503, 504)

    def __init__(self, endpoint: JudgeEndpoint, *, cache_dir: str | Path | None = None, concurrency: int = 4,
                 retries: int = 3, backoff: float = 1.0, timeout: float = 120.0, max_tokens: int = 512,
                 temperature: float = 0.0):
        try:
            import openai
        except ImportError:
            raise ConfigError("the LLM judge needs the openai client: pip install 'pro-align[judge]'") from None
        if concurrency < 1:
            raise ConfigError(f"judge --concurrency must be >= 1, got {concurrency}")
        if retries < 0:
            raise ConfigError(f"judge --retries must be >= 0, got {retries}")
        self.endpoint = endpoint
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # retries are ours (counted, logged, with the endpoint named); the client's own are off
        self._client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0,
                                     timeout=timeout)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    # the cache key: the judge (model + sampling settings) and the exact messages it is sent
    def cache_key(self, messages: Sequence[Mapping[str, str]]) -> str:
        blob = json.dumps({"model": self.endpoint.model, "temperature": self.temperature,
                           "max_tokens": self.max_tokens, "messages": list(messages)},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def check(self) -> None:
        """Reach the endpoint once (``GET /models``) with a short timeout: an unreachable endpoint fails
        in about :data:`CHECK_TIMEOUT_S` s naming the URL, a refused key names the endpoint's reply."""
        import openai

        url = self.endpoint.base_url
        probe = self._client.with_options(timeout=CHECK_TIMEOUT_S, max_retries=0)
        try:
            models = [m.id for m in probe.models.list()]
        except openai.APITimeoutError:
            raise JudgeUnavailable(f"the judge endpoint {url} did not answer within {CHECK_TIMEOUT_S:.0f} s; "
                                   f"check --base-url / {ENV_BASE_URL} and that the server is up "
                                   f"(curl {url}/models)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise JudgeUnavailable(f"the judge endpoint {url} is not reachable ({type(cause).__name__}: {cause}); "
                                   f"check --base-url / {ENV_BASE_URL} and that the server is up "
                                   f"(curl {url}/models)") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise JudgeError(f"the judge endpoint {url} refused the API key (key from {self.endpoint.key_source}; "
                             f"HTTP {exc.status_code}): {_reply_text(exc)}") from None
        except openai.NotFoundError:
            return  # no /models route: the first judgement tells
        except openai.APIStatusError as exc:
            raise JudgeError(f"the judge endpoint {url} answered GET /models with HTTP {exc.status_code}: "
                             f"{_reply_text(exc)}") from None
        if models and self.endpoint.model not in models:
            log.warning("the judge endpoint %s does not list the model %r (it lists %s)", url, self.endpoint.model,
                        ", ".join(models[:10]))

    def complete(self, messages: Sequence[Mapping[str, str]]) -> tuple[str, bool]:
        """(reply text, from the cache?) for one conversation."""
        key = self.cache_key(messages)
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                reply = json.loads(path.read_text(encoding="utf-8"))["reply"]
                with self._lock:
                    self.stats["cache_hits"] += 1
                return reply, True
            except (ValueError, KeyError, OSError):
                log.warning("unreadable judge cache entry %s: asking the judge again", path)
        reply = self._request(messages)
        if path is not None:
            from pro_lib.io import atomic_write_text

            atomic_write_text(path, json.dumps({"model": self.endpoint.model, "reply": reply,
                                                "created": time.time()}, ensure_ascii=False))
        return reply, False

    def _request(self, messages: Sequence[Mapping[str, str]]) -> str:
        import openai

        url = self.endpoint.base_url
        for attempt in range(self.retries + 1):
            try:
                with self._lock:
                    self.stats["requests"] += 1
                resp = self._client.chat.completions.create(
                    model=self.endpoint.model, messages=list(messages), max_tokens=self.max_tokens,
                    temperature=self.temperature)
                content = resp.choices[0].message.content if resp.choices else None
                return content or ""
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise JudgeError(f"the judge endpoint {url} refused the API key (key from "
                                 f"{self.endpoint.key_source}; HTTP {exc.status_code}): {_reply_text(exc)}") from None
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                transient = status is None or status in self.RETRYABLE_STATUS
                if not transient:
                    raise JudgeError(f"the judge endpoint {url} refused the request for model "
                                     f"{self.endpoint.model!r} (HTTP {status}): {_reply_text(exc)}") from None
                if attempt >= self.retries:
                    what = f"HTTP {status}: {_reply_text(exc)}" if status else f"{type(exc).__name__}: {exc}"
                    cls = JudgeUnavailable if status is None else JudgeError
                    raise cls(f"the judge endpoint {url} failed {self.retries + 1} times ({what}); finished "
                              "judgements are cached, rerun to continue") from None
                delay = self.backoff * 2 ** attempt * (0.5 + random.random())
                with self._lock:
                    self.stats["retries"] += 1
                log.warning("judge endpoint %s: %s; retry %d/%d in %.1f s", url, status or type(exc).__name__,
                            attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def map(self, conversations: Sequence[Sequence[Mapping[str, str]]],
            progress: Callable[[int], None] | None = None) -> list[tuple[str, bool]]:
        """Replies to every conversation, in order, ``concurrency`` requests at a time."""
        if self.concurrency == 1 or len(conversations) <= 1:
            return [self.complete(c) for c in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            return list(pool.map(self.complete, conversations))
