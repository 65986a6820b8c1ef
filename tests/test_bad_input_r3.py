"""Bad input, round three (issue 23, items 2 and 4-7): output folders that are files, read-only or
hold another artifact; objective names that are paths; a tracking URI that answers but is not MLflow;
numeric flags out of range (refused at parse time, naming the flag); and the smaller items."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import one_line_error
from pro_lib.cli import main
from pro_lib.config import build_config
from pro_lib.errors import ConfigError
from pro_lib.io import write_jsonl


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q {i}", "chosen": "thanks please", "rejected": "no"}
                                                  for i in range(12)])


SCORE = ["--objectives", "polite=fn:scorers:polite_reward,long=fn:scorers:length_reward"]


# -- item 2: output folders ------------------------------------------------------------------------------

def test_output_dir_that_is_a_file_is_refused_and_kept(tmp_path, pairs_file, capsys):
    f = tmp_path / "out"
    f.write_text("precious")
    for argv in (["rewards", "score", "--data", str(pairs_file), *SCORE, "--output-dir", str(f)],
                 ["data", "prepare", "--sources", str(pairs_file), "--output-dir", str(f)],
                 ["wic", "offline", "--data", str(pairs_file), "--output-dir", str(f)]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        line = one_line_error(capsys)
        assert str(f) in line and "is a file" in line, line
    assert f.read_text() == "precious" and not (tmp_path / ".out.old").exists()


def test_atomic_dir_never_renames_a_file_away(tmp_path):
    from pro_lib.io import atomic_dir

    f = tmp_path / "eval"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        with atomic_dir(f) as tmp:
            (tmp / "a").write_text("y")
    assert f.read_text() == "x"


def test_read_only_output_and_pro_home_are_one_line(tmp_path, pairs_file, monkeypatch, capsys):
    ro = Path("/sys/pro-test-output")  # read-only even for root (a chmod-ed folder is not, for root)
    if os.access("/sys", os.W_OK) and ro.parent.is_dir():
        try:
            ro.mkdir()
            ro.rmdir()
            pytest.skip("/sys is writable here")
        except OSError:
            pass
    assert main(["data", "prepare", "--sources", str(pairs_file), "--output-dir", str(ro)]) == 2
    line = one_line_error(capsys)
    assert str(ro) in line, line
    monkeypatch.setenv("PRO_HOME", str(ro))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert main(["registry", "list"]) == 2
    assert str(ro) in one_line_error(capsys)


def test_rewards_score_into_another_artifact_is_refused(tmp_path, pairs_file, capsys):
    other = tmp_path / "policy"
    other.mkdir()
    (other / "wic.json").write_text("{}")
    assert main(["rewards", "score", "--data", str(pairs_file), *SCORE, "--output-dir", str(other)]) == 2
    line = one_line_error(capsys)
    assert "wic.json" in line and str(other) in line
    assert not (other / "targets.jsonl").exists()
    # an earlier scoring's folder is replaced as before
    out = tmp_path / "targets"
    assert main(["rewards", "score", "--data", str(pairs_file), *SCORE, "--output-dir", str(out)]) == 0
    assert main(["rewards", "score", "--data", str(pairs_file), *SCORE, "--output-dir", str(out)]) == 0


def test_registry_download_output_checked_before_download(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    assert main(["registry", "download", "models:/pro-orchestrator/1", "--output", str(full)]) == 2
    line = one_line_error(capsys)
    assert "mine.txt" in line and "--output" in line
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["registry", "download", "models:/pro-orchestrator/1", "--output", str(f)]) == 2
    assert "is a file" in one_line_error(capsys)


# -- item 4: one objective-name rule ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../evil", "a/b", ".hidden", "with space", "a\\\\b", ""])
def test_objective_names_that_are_paths_are_refused_everywhere(bad, tmp_path, pairs_file, capsys):
    from pro_lib.suite import Objective, RewardSuite, parse_objective
    from pro_lib.targets import check_objective_name

    with pytest.raises(ConfigError):
        check_objective_name(bad)
    # the CLI (rewards score, which rewards train already refused)
    out = tmp_path / "t"
    assert main(["rewards", "score", "--data", str(pairs_file), "--objectives",
                 f"{bad}=fn:scorers:polite_reward", "--output-dir", str(out)]) == 2
    assert "objective" in one_line_error(capsys)
    assert not out.exists()
    with pytest.raises(ConfigError):
        parse_objective(f"{bad}=fn:scorers:polite_reward")
    # a suite file
    good = RewardSuite([Objective(name="ok", function="scorers:polite_reward")]).save(tmp_path / "suite")
    text = (good / "suite.yaml").read_text().replace("name: ok", f"name: {json.dumps(bad)}")
    (good / "suite.yaml").write_text(text)
    with pytest.raises(ConfigError, match="objective"):
        RewardSuite.load(good)


def test_pipeline_objectives_parameter_is_checked_before_a_run():
    pytest.importorskip("kfp")
    from pipelines.cli import check_stage_configs

    check_stage_configs({"objectives": ["helpful=helpful", "harmless"]})
    with pytest.raises(ConfigError, match="pipeline parameter objectives"):
        check_stage_configs({"objectives": ["helpful", "../../evil=x"]})


def test_endpoint_never_copies_outside_its_folder(tmp_path, tiny_encoder_dir):
    from pro_lib import serving
    from pro_lib.artifacts import OrchestratorManifest
    from pro_lib.orchestrator import PreferenceOrchestrator
    from pro_lib.testing import build_tiny_policy

    orch = PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), ["ok", "evil"], max_length=16)
    orch_dir = orch.save_pretrained(tmp_path / "orch")
    manifest = OrchestratorManifest.path(orch_dir)
    manifest.write_text(manifest.read_text().replace('"evil"', '"../../evil"'))  # a hand-edited manifest
    policy = build_tiny_policy(tmp_path / "policy", ["ok", "../../evil"])
    with pytest.raises(ConfigError, match="objective"):
        serving.build_endpoint(tmp_path / "ep" / "endpoint", orchestrator=orch_dir, policy=policy)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "ep" / "endpoint").exists()


# -- item 5: a tracking URI that answers but is not MLflow ---------------------------------------------------

@pytest.fixture
def not_mlflow(monkeypatch):
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><head><title>Grafana</title></head><body>not found</body></html>"
            self.send_response(404 if self.path == "/health" else 200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield uri
    server.shutdown()


def test_tracking_uri_that_is_not_mlflow_is_named(not_mlflow, tmp_path, capsys):
    import time

    from pro_lib.testing import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", ["a", "b"])
    for argv in (["registry", "list"], ["registry", "promote", "pro-orchestrator"], ["weights", "hello"],
                 ["registry", "register", str(policy), "--name", "pro-policy-test", "--metric", "hv=1",
                  "--gate-metric", "hv", "--gate-mode", "max"]):
        capsys.readouterr()
        t0 = time.monotonic()
        assert main(argv) == 2, argv
        assert time.monotonic() - t0 < 15
        line = one_line_error(capsys)
        assert not_mlflow in line and "not as an MLflow tracking server" in line and "HTTP 404" in line, line
        assert "alias" not in line and "does not exist" not in line


# -- item 6: numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,flag,valid", [
    (["wic", "online", "--max-new-tokens", "0"], "--max-new-tokens", ">= 1"),
    (["wic", "online", "--max-new-tokens", "-1"], "--max-new-tokens", ">= 1"),
    (["wic", "online", "--temperature", "0"], "--temperature", "> 0"),
    (["wic", "online", "--temperature", "nan"], "--temperature", "finite"),
    (["wic", "offline", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["wic", "offline", "--epochs", "0"], "--epochs", "> 0"),
    (["rewards", "train", "--objective", "x", "--epochs", "0"], "--epochs", "> 0"),
    (["orchestrator", "train", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["morlhf", "train", "--max-steps", "0"], "--max-steps", ">= 1"),
    (["wic", "online", "--top-p", "1.5"], "--top-p", "<= 1"),
    (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens", ">= 1"),
    (["generate", "hi", "--sample", "--temperature", "-1"], "--temperature", "> 0"),
])
def test_numeric_flags_out_of_range_stop_at_parse_time(argv, flag, valid, capsys, monkeypatch):
    import pro_lib.policy

    monkeypatch.setattr(pro_lib.policy, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and valid in err, err


def test_yaml_and_python_configs_are_range_checked_too(tmp_path):
    from pro_lib.wic_offline import WICOfflineConfig
    from pro_lib.wic_rounds import WICOnlineLoopConfig

    with pytest.raises(ConfigError, match="key 'batch_size'.*>= 1"):
        build_config(WICOfflineConfig, {"batch_size": 0})
    with pytest.raises(ConfigError, match="key 'quantile'.*< 1"):
        build_config(WICOnlineLoopConfig, {"quantile": 1.0})
    assert build_config(WICOfflineConfig, {"max_steps": -1}).max_steps == -1  # -1: off, as documented


def test_morlhf_bad_weights_stop_before_loading_and_leave_nothing(tmp_path, monkeypatch, capsys):
    import pro_lib.morlhf

    monkeypatch.setattr(pro_lib.morlhf, "load_policy", lambda *a, **k: pytest.fail("the policy was loaded"))
    out = tmp_path / "m"
    for weights in ("0.5,abc", "helpful=-1,harmless=2", "0,0", "nan,1"):
        assert main(["morlhf", "train", "--weights", weights, "--output-dir", str(out)]) == 2, weights
        line = one_line_error(capsys)
        assert "--weights" in line, line
    assert not out.exists() and not list(tmp_path.glob(".m*"))


def test_metric_nan_is_named(tmp_path, capsys):
    assert main(["registry", "register", str(tmp_path), "--name", "pro-orchestrator", "--metric", "kl=nan"]) == 2
    line = one_line_error(capsys)
    assert "--metric 'kl=nan'" in line and "finite" in line


# -- item 7: smaller -----------------------------------------------------------------------------------------

def test_registry_list_json_on_an_empty_store_is_json(capsys):
    assert main(["registry", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_unknown_only_prompt_warns_and_huge_prompt_is_cut_first(tiny_encoder_dir, caplog):
    from pro_lib.orchestrator import PreferenceOrchestrator

    orch = PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), ["a", "b"], max_length=16)
    calls = []
    real = orch.tokenizer.__class__.__call__

    def spy(self, text, *a, **k):
        calls.append(sum(len(t) for t in (text if isinstance(text, list) else [text])))
        return real(self, text, *a, **k)

    with caplog.at_level(logging.WARNING, logger="pro_lib.orchestrator"):
        orch.tokenizer.__class__.__call__ = spy
        try:
            enc = orch.tokenize(["\U0001F600\U0001F680", "word " * 6_000_000])
        finally:
            orch.tokenizer.__class__.__call__ = real
    assert enc["input_ids"].shape[1] <= 16
    assert max(calls) < 10_000, "the 30 MB prompt reached the tokenizer whole"
    warned = [r.getMessage() for r in caplog.records if "unknown tokens" in r.getMessage()]
    assert len(warned) == 1 and "\U0001F600" in warned[0]


def test_truncate_prompt_cuts_before_tokenising(tmp_path):
    from pro_lib.policy import truncate_prompt
    from pro_lib.testing import build_tiny_policy
    from pro_lib.wic import WICPolicy

    tok = WICPolicy.from_pretrained(build_tiny_policy(tmp_path / "p", ["a", "b"])).tokenizer
    seen = []
    real = tok.__class__.__call__
    tok.__class__.__call__ = lambda self, text, *a, **k: (seen.append(len(text)), real(self, text, *a, **k))[1]
    try:
        out = truncate_prompt(tok, "help me " * 4_000_000, 8)
    finally:
        tok.__class__.__call__ = real
    assert max(seen) < 10_000 and out.split() == ["help", "me"] * 4


def test_resume_compares_paths_by_their_resolved_form(tmp_path, monkeypatch):
    from pro_lib.checkpoints import differences

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "d.jsonl").write_text("x")
    monkeypatch.chdir(tmp_path)
    saved = {"data": ["runs/d.jsonl"], "policy": "runs", "lr": 1.0}
    assert differences(saved, {"data": [str(tmp_path / "runs" / "d.jsonl")], "policy": "./runs/", "lr": 1.0}) == []
    assert differences(saved, {"data": ["runs/other.jsonl"], "policy": "runs", "lr": 1.0})


def test_artifacts_honour_the_umask(tmp_path):
    from pro_lib.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        f = write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_stale_promotion_lock_of_a_dead_process_is_named(caplog):
    import socket

    from pro_lib import promotion, tracking

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    owner = f"{socket.gethostname()}:{pid}:abc"
    tracking.client().create_registered_model(f"pro-orchestrator{promotion.LOCK_SUFFIX}",
                                              tags={promotion.LOCK_OWNER_TAG: owner})
    with caplog.at_level(logging.WARNING, logger="pro_lib.promotion"):
        with promotion.promotion_lock("pro-orchestrator", wait_s=5, stale_s=60):
            pass  # taken at once, not after 60 s
    stale = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert stale and owner in stale[0], caplog.text


def test_corrupt_download_cache_is_fetched_again(tmp_path, caplog):
    from pro_lib import packaging, registry
    from pro_lib.testing import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", ["a", "b"])
    packaging.register_model(policy, "pro-policy-test", metrics={"hv": 1.0}, gate_metric="hv", gate_mode="max")
    folder = registry.download_model("models:/pro-policy-test/1")
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:len(good) // 2])  # a download cut short, a disk error
    with caplog.at_level(logging.WARNING, logger="pro_lib.registry"):
        again = registry.download_model("models:/pro-policy-test/1")
    assert (again / "model.safetensors").read_bytes() == good
    assert any("downloading it again" in r.getMessage() for r in caplog.records)


_SLOW_UPLOAD = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
def slow(self, model_id, local_dir):  # the upload is under way when the test sends SIGTERM
    Path(sys.argv[1]).write_text(model_id)
    time.sleep(120)
MlflowClient.log_model_artifacts = slow
from pro_lib.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_killed_registry_register_leaves_no_running_run(tmp_path):
    """Item 7: `kill` during `pro registry register`'s upload ends its run KILLED and its LoggedModel FAILED
    (not RUNNING / PENDING forever), registers nothing, and a rerun registers version 1."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from pro_lib import registry

    model = tmp_path / "orch"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"x" * 1000)
    (model / "pro_orchestrator.json").write_text('{"objectives": ["helpful", "harmless"], "pooling": "mean"}')
    argv = ["registry", "register", str(model), "--name", "pro-orchestrator", "--metric", "orchestrator_kl=0.2"]
    started = tmp_path / "upload-started"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_UPLOAD, str(started), *argv],
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.time() + 120
        while not started.exists():
            assert proc.poll() is None, f"register ended before its upload: {proc.stderr.read()}"
            assert time.time() < deadline, "the upload never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err, err

    c = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the store the subprocess used (not a cached one)
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]
    assert [r.info.status for r in runs] == ["KILLED"], [(r.info.run_name, r.info.status) for r in runs]
    assert str(c.get_logged_model(started.read_text()).status).endswith("FAILED")
    assert "pro-orchestrator" not in registry.list_models()  # no version, not even an empty name

    assert main(argv) == 0  # nothing half-done in the way of a rerun
    assert [v["version"] for v in registry.list_versions("pro-orchestrator")] == ["1"]
