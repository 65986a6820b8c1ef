"""Model registry and gated promotion against a real `mlflow server` (S3 artifact store on moto)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from helpers import require
from helpers.services import s3_keys, start_mlflow_server, stop_server
from pro_lib import packaging, promotion, registry
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.refs import localize


# the metadata file that makes a folder a PRO model of its kind (registration reads only that)
KIND_FILES = {"orchestrator": ("pro_orchestrator.json", '{"objectives": ["helpful", "harmless"], "pooling": "mean"}'),
              "reward": ("pro_reward.json", '{"objective": "helpful", "input_format": "pair"}'),
              "policy": ("wic.json", '{"objectives": ["helpful", "harmless"]}')}


def _model_dir(path, marker: str, kind: str = "orchestrator"):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert", "marker": "%s"}' % marker)
    (path / "model.safetensors").write_bytes(marker.encode() * 100)
    (path / KIND_FILES[kind][0]).write_text(KIND_FILES[kind][1])
    return path


def _snapshot(name):
    return [(v["version"], sorted(v["aliases"]), v["tags"]) for v in registry.list_versions(name)]


def _promotion_flow(tmp_path, name):
    """register -> first champion -> better challenger wins -> worse challenger refused, nothing changes."""
    v1 = packaging.register_model(_model_dir(tmp_path / "v1", "one"), name, metrics={"orchestrator_kl": 0.40},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    assert v1 == "1"
    assert registry.list_versions(name)[0]["aliases"] == ["challenger"]
    r = promotion.promote(name)
    assert r.promoted and r.champion == "1" and r.previous_champion is None

    v2 = packaging.register_model(_model_dir(tmp_path / "v2", "two"), name,
                                 metrics={"orchestrator_kl": 0.25, "n": 10},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    r = promotion.promote(name)
    assert r.promoted, r.message
    assert (r.candidate, r.previous_champion, r.candidate_value, r.champion_value) == (v2, "1", 0.25, 0.40)

    v3 = packaging.register_model(_model_dir(tmp_path / "v3", "three"), name, metrics={"orchestrator_kl": 0.31},
                                 gate_metric="orchestrator_kl", gate_mode="min")
    before = _snapshot(name)
    r = promotion.promote(name)
    assert not r.promoted and r.champion == v2 and "refused" in r.message and "0.31" in r.message
    assert _snapshot(name) == before  # a refused promotion changes nothing
    # loading by alias returns the champion's and the challenger's own files
    champ = registry.download_model(f"models:/{name}@champion")
    assert '"marker": "two"' in (champ / "config.json").read_text()
    chall = localize(f"models:/{name}@challenger")
    assert (chall / "model.safetensors").read_bytes() == b"three" * 100
    assert '"marker": "one"' in (registry.download_model(f"models:/{name}/1") / "config.json").read_text()
    return v3


def test_gated_promotion_on_real_server(mlflow_env, tmp_path):
    name = f"pro-orchestrator-{uuid.uuid4().hex[:6]}"
    v3 = _promotion_flow(tmp_path, name)

    with pytest.raises(ConfigError, match="--force needs --reason"):
        promotion.promote(name, force=True)
    r = promotion.promote(name, version=v3, force=True, reason="rollback drill: v3 fixes a tokenizer bug")
    assert r.promoted and r.forced and r.champion == v3
    info = {v["version"]: v for v in registry.list_versions(name)}
    assert info[v3]["aliases"] == ["champion"]
    assert info[v3]["tags"]["pro.promotion_reason"] == "rollback drill: v3 fixes a tokenizer bug"
    assert info[v3]["tags"]["pro.promotion_forced"] == "true"
    assert "pro.retired_at" in info["2"]["tags"]
    # artifacts really went to the S3 bucket behind the server
    keys = s3_keys()
    # each version an MLflow 3 LoggedModel (models/<model id>/artifacts), the source of the version
    sources = {registry.list_versions(name)[0]["source"].removeprefix("models:/")}
    assert any(f"models/{m}/artifacts/artifacts/" in k and k.endswith("/model.safetensors") for k in keys for m in sources)
    assert any(k.endswith(f"models/{m}/artifacts/MLmodel") for k in keys for m in sources)  # an MLflow model


def test_max_gate_and_ties_are_refused(mlflow_env, tmp_path):
    name = f"pro-reward-helpful-{uuid.uuid4().hex[:6]}"
    packaging.register_model(_model_dir(tmp_path / "a", "a", "reward"), name, metrics={"accuracy": 0.7})
    assert registry.list_versions(name)[0]["gate_metric"] == "accuracy"  # default gate for reward models
    assert promotion.promote(name).promoted
    packaging.register_model(_model_dir(tmp_path / "b", "b", "reward"), name, metrics={"accuracy": 0.7})
    assert not promotion.promote(name).promoted  # a tie does not beat the champion
    packaging.register_model(_model_dir(tmp_path / "c", "c", "reward"), name, metrics={"accuracy": 0.75})
    r = promotion.promote(name)
    assert r.promoted and r.champion == "3"
    assert promotion.promote(name, version=3).message.endswith("nothing to do")


def test_bad_refs_and_inputs(mlflow_env, tmp_path):
    with pytest.raises(ConfigError, match="expected models:/<name>@<alias>"):
        registry.download_model("models:/no-alias-or-version")
    with pytest.raises(CheckpointError, match="pro registry list"):
        registry.download_model(f"models:/pro-orchestrator-{uuid.uuid4().hex[:6]}@champion")
    with pytest.raises(CheckpointError, match="not a folder"):
        packaging.register_model(tmp_path / "missing", "pro-orchestrator")
    with pytest.raises(ConfigError, match="gate metric 'orchestrator_kl'"):
        packaging.register_model(_model_dir(tmp_path / "m", "m"), "pro-orchestrator", metrics={"mse": 1.0})


def test_local_sqlite_store_default(tmp_path, monkeypatch):
    """Without MLFLOW_TRACKING_URI everything lands in $PRO_HOME (SQLite + local artifacts)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = "pro-policy-wic"
    packaging.register_model(_model_dir(tmp_path / "p", "p", "policy"), name, metrics={"hypervolume": 0.5})
    assert promotion.promote(name).promoted
    assert (tmp_path / ".pro" / "mlflow.db").is_file()
    assert registry.download_model(f"models:/{name}@champion").is_relative_to(tmp_path / ".pro")


def test_promotion_with_postgres_backend(s3_env, tmp_path, monkeypatch):
    """The deployment's stack: mlflow server on PostgreSQL with an S3 artifact store."""
    if not os.environ.get("PRO_TEST_POSTGRES_URI"):
        require("postgres", "PRO_TEST_POSTGRES_URI unset (scripts/ci_services.sh starts PostgreSQL and sets it)")
    proc, url = start_mlflow_server(os.environ["PRO_TEST_POSTGRES_URI"], s3_env, tmp_path, bucket="mlflow-pg")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        _promotion_flow(tmp_path, f"pro-orchestrator-pg-{uuid.uuid4().hex[:6]}")
    finally:
        stop_server(proc)


def test_registry_cli_list_promote_download(tmp_path, capsys):
    """`pro registry ...` on the default local store: refused promotion exits 1 and changes nothing."""
    from pro_lib.cli import main

    name = "pro-orchestrator"
    for marker, kl in (("a", "0.2"), ("b", "0.3")):
        assert main(["registry", "register", str(_model_dir(tmp_path / marker, marker)), "--name", name,
                     "--metric", f"orchestrator_kl={kl}"]) == 0
        if marker == "a":
            assert main(["registry", "promote", name]) == 0
    before = _snapshot(name)
    with pytest.raises(SystemExit) as exc:
        main(["registry", "promote", name])
    assert exc.value.code == 1 and _snapshot(name) == before
    assert "refused" in capsys.readouterr().out
    assert main(["registry", "promote", name, "--force"]) == 2   # ProError: --force needs --reason
    assert main(["registry", "promote", name, "--force", "--reason", "manual override for the demo"]) == 0
    capsys.readouterr()
    assert main(["registry", "list"]) == 0
    listing = capsys.readouterr().out
    assert "v2" in listing and "champion" in listing and "orchestrator_kl=0.3" in listing
    assert main(["registry", "download", f"models:/{name}@champion", "--output", str(tmp_path / "out")]) == 0
    assert '"marker": "b"' in (tmp_path / "out" / "config.json").read_text()


# -- issue 11: concurrency, stores, an MLflow that is away ----------------------------------------

def test_concurrent_promotions_on_real_server(mlflow_env, tmp_path):
    """Two gated promotions at once, both beating the champion: the better one ends as champion and
    the other is refused, every round and whichever thread starts first."""
    import threading

    name = f"pro-orchestrator-race-{uuid.uuid4().hex[:6]}"
    gate = {"gate_metric": "orchestrator_kl", "gate_mode": "min"}
    packaging.register_model(_model_dir(tmp_path / "v0", "v0"), name, metrics={"orchestrator_kl": 0.8}, **gate)
    assert promotion.promote(name).promoted
    champion_kl = 0.8
    for rnd in range(3):
        better, worse = champion_kl * 0.5, champion_kl * 0.8   # both beat the champion
        vb = packaging.register_model(_model_dir(tmp_path / f"b{rnd}", f"b{rnd}"), name,
                                     metrics={"orchestrator_kl": better}, **gate)
        vw = packaging.register_model(_model_dir(tmp_path / f"w{rnd}", f"w{rnd}"), name,
                                     metrics={"orchestrator_kl": worse}, **gate)
        order = [vb, vw] if rnd % 2 else [vw, vb]
        barrier, results, errors = threading.Barrier(2), {}, []

        def go(version):
            try:
                barrier.wait()
                results[version] = promotion.promote(name, version=version)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(v,)) for v in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert results[vb].promoted, results[vb].message
        assert not results[vw].promoted and "refused" in results[vw].message, results[vw].message
        info = {v["version"]: v for v in registry.list_versions(name)}
        assert info[vb]["aliases"] == ["champion"], (rnd, info)
        assert "champion" not in info[vw]["aliases"]
        assert not any(promotion.PENDING_TAG in v["tags"] for v in info.values())  # announcements cleared
        champion_kl = better
    assert name + registry.LOCK_SUFFIX not in registry.list_models()   # the lock is gone (and hidden)
    from mlflow import MlflowClient

    with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST|not found"):
        MlflowClient().get_registered_model(name + registry.LOCK_SUFFIX)


def test_stale_promotion_lock_is_broken(mlflow_env, tmp_path):
    """A lock left by a crashed promotion does not block promotion forever."""
    from pro_lib.tracking import client

    name = f"pro-orchestrator-stale-{uuid.uuid4().hex[:6]}"
    packaging.register_model(_model_dir(tmp_path / "v1", "one"), name, metrics={"orchestrator_kl": 0.5})
    client().create_registered_model(name + registry.LOCK_SUFFIX, tags={promotion.LOCK_OWNER_TAG: "crashed:1"})
    with promotion.promotion_lock(name, stale_s=1.0, wait_s=30):
        owner = client().get_registered_model(name + registry.LOCK_SUFFIX).tags[promotion.LOCK_OWNER_TAG]
        assert owner != "crashed:1"
    with pytest.raises(promotion.RegistryBusy, match="holds the lock"):
        client().create_registered_model(name + registry.LOCK_SUFFIX, tags={promotion.LOCK_OWNER_TAG: "busy:2"})
        with promotion.promotion_lock(name, stale_s=60, wait_s=1.0):
            pass


def test_download_cache_is_per_store(tmp_path, monkeypatch):
    """models:/name/1 of store B is not store A's cached version 1 (same PRO_HOME)."""
    stores = {}
    for label in ("a", "b"):
        uri = f"sqlite:///{tmp_path / label / 'mlflow.db'}"
        (tmp_path / label).mkdir()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert packaging.register_model(_model_dir(tmp_path / f"m_{label}", f"store-{label}"), "pro-orchestrator",
                                       metrics={"orchestrator_kl": 0.5}) == "1"
        stores[label] = uri
    for label in ("a", "b", "a"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stores[label])
        folder = registry.download_model("models:/pro-orchestrator/1")
        assert f'"marker": "store-{label}"' in (folder / "config.json").read_text(), label


def test_unreachable_server_fails_fast_naming_the_uri(tmp_path, capsys, monkeypatch):
    """MLflow away: one message naming the URI and how to check it, exit 2; no minutes of retries."""
    import subprocess
    import sys
    import time

    from pro_lib.cli import main

    uri = "http://127.0.0.1:9"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    for argv in (["registry", "list"], ["pipeline", "run", "--local", "orchestrator"]):
        t0 = time.monotonic()
        # (before the fix these took about 4 minutes: the timeout is not a speed claim)
        proc = subprocess.run([sys.executable, "-m", "pro_lib.cli", *argv], env=env, capture_output=True,
                              text=True, timeout=90)
        seconds = time.monotonic() - t0
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        err = proc.stderr.strip()
        assert f"MLflow tracking server at {uri} is not reachable" in err and f"curl {uri}/health" in err, err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        print(f"{' '.join(argv)}: {seconds:.1f} s")
    # in-process: the commands that used to blame a missing alias
    for argv in (["weights", "hello"], ["registry", "promote", "pro-orchestrator"],
                 ["registry", "download", "models:/pro-orchestrator@champion"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"MLflow tracking server at {uri} is not reachable" in err and "alias" not in err, (argv, err)


def test_help_does_not_touch_mlflow():
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom pro_lib.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print('mlflow' in sys.modules)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", (out.stdout, out.stderr[-2000:])


def test_missing_alias_is_not_an_outage(mlflow_env, tmp_path, capsys):
    """On a running server a missing alias keeps its own message."""
    from pro_lib.cli import main

    name = f"pro-orchestrator-noalias-{uuid.uuid4().hex[:6]}"
    packaging.register_model(_model_dir(tmp_path / "v1", "one"), name, metrics={"orchestrator_kl": 0.5})
    assert main(["registry", "download", f"models:/{name}@champion"]) == 2
    err = capsys.readouterr().err
    assert f"models:/{name}@champion does not exist" in err and "not reachable" not in err, err


def test_server_that_drops_mid_command_is_one_line(monkeypatch, capsys):
    """The probe passes, then every API call loses its connection: one message, exit 2, no traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Flaky(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                self.close_connection = True  # drop it without an answer

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from pro_lib.cli import main

    try:
        assert main(["registry", "list"]) == 2
    finally:
        server.shutdown()
    err = capsys.readouterr().err.strip()
    assert f"MLflow tracking server at {uri} is not reachable" in err and len(err.splitlines()) == 1, err
