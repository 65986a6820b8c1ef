"""Pure logic behind the explorer: simplex rebalancing with locks, confidence, prompt files, refs, CLI."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from ui import batch
from ui.backend import ModelSpec, UIError, align_objectives, check_prompt, default_tracking_uri
from ui.cli import build_command, register
from ui.simplex import (WeightError, confidence, confidences, normalize, parse_weight_text, rebalance,
                        ternary_coords, uniform, weighted_score)


# -- simplex ----------------------------------------------------------------------------------

def test_rebalance_keeps_ratios_of_unlocked_others():
    w = rebalance([0.5, 0.3, 0.2], 0, 0.8)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.8)
    assert w[1] / w[2] == pytest.approx(0.3 / 0.2)  # the others keep their ratio


def test_rebalance_respects_locks_and_clamps_to_free_budget():
    w = rebalance([0.2, 0.5, 0.3], 0, 0.9, locked=[False, True, False])
    assert w[1] == pytest.approx(0.5)               # locked: unchanged
    assert w[0] == pytest.approx(0.5)               # clamped to 1 - 0.5 (locked)
    assert w[2] == pytest.approx(0.0)
    assert w.sum() == pytest.approx(1.0)


def test_rebalance_all_others_locked_cannot_move():
    w = rebalance([0.2, 0.5, 0.3], 0, 0.9, locked=[False, True, True])
    np.testing.assert_allclose(w, [0.2, 0.5, 0.3])


def test_rebalance_from_one_hot_shares_equally():
    w = rebalance([1.0, 0.0, 0.0, 0.0], 0, 0.4)
    np.testing.assert_allclose(w, [0.4, 0.2, 0.2, 0.2])


@pytest.mark.parametrize("seed", range(20))
def test_rebalance_random_moves_stay_on_simplex(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    w = rng.dirichlet(np.ones(k))
    for _ in range(30):
        locks = rng.random(k) < 0.3
        i = int(rng.integers(k))
        before = w.copy()
        w = rebalance(w, i, float(rng.uniform(-0.2, 1.2)), locks)
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
        locks[i] = False
        np.testing.assert_allclose(w[locks], before[locks], atol=1e-9)


def test_normalize_rejects_vectors_that_cannot_be_normalised():
    with pytest.raises(WeightError, match="sum to 0"):
        normalize([0, 0, 0])
    with pytest.raises(WeightError, match="'harmless' is negative"):
        normalize([0.5, -0.1, 0.6], ["helpful", "harmless", "humor"])
    with pytest.raises(WeightError, match="not a finite"):
        normalize([float("nan"), 1.0])
    with pytest.raises(WeightError, match="2 entries but there are 3 objectives"):
        normalize([1, 2], ["a", "b", "c"])


def test_confidence_is_one_minus_normalised_entropy():
    assert confidence([1 / 3] * 3) == pytest.approx(0.0, abs=1e-9)
    assert confidence([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    w = np.array([0.7, 0.2, 0.1])
    expected = 1 + (w * np.log(w)).sum() / math.log(3)
    assert confidence(w) == pytest.approx(expected)
    np.testing.assert_allclose(confidences(np.array([w, [1 / 3] * 3])), [expected, 0.0], atol=1e-9)


def test_parse_weight_text_named_positional_and_errors():
    names = ["helpful", "harmless", "humor"]
    np.testing.assert_allclose(parse_weight_text("helpful=2, humor=2", names), [0.5, 0, 0.5])
    np.testing.assert_allclose(parse_weight_text("1,1,2", names), [0.25, 0.25, 0.5])
    for text, msg in [("", "no weights"), ("0,0,0", "cannot be normalised"), ("1,2", "2 entries but there are 3"),
                      ("funny=1", "unknown objective 'funny'"), ("helpful=x", "not a number"),
                      ("helpful=1, 2", "mix of named")]:
        with pytest.raises(WeightError, match=msg):
            parse_weight_text(text, names)


def test_weighted_score_and_ternary():
    assert weighted_score([1.0, -1.0, 3.0], [0.5, 0.5, 0.0]) == pytest.approx(0.0)
    assert ternary_coords([1, 0, 0]) == pytest.approx((0.0, 0.0))
    assert ternary_coords([0, 0, 1]) == pytest.approx((0.5, math.sqrt(3) / 2))
    np.testing.assert_allclose(uniform(4), [0.25] * 4)


# -- prompt files & batch table ---------------------------------------------------------------

def test_read_prompts_formats():
    assert batch.read_prompts(b"a\n\n b \n", "p.txt") == ["a", "b"]
    jl = "\n".join(json.dumps(r) for r in [{"prompt": "x"}, {"question": "y"},
                                           {"chosen": "\n\nHuman: hi there\n\nAssistant: hello"}])
    assert batch.read_prompts(jl.encode(), "p.jsonl") == ["x", "y", "hi there"]
    assert batch.read_prompts(b'["p", {"text": "q"}]', "p.json") == ["p", "q"]
    assert batch.read_prompts(b"id,prompt\n1,hello\n2,world\n", "p.csv", limit=1) == ["hello"]


def test_read_prompts_errors_name_file_and_line():
    with pytest.raises(batch.PromptFileError, match=r"p.jsonl:2: not valid JSON"):
        batch.read_prompts(b'{"prompt": "a"}\n{oops\n', "p.jsonl")
    with pytest.raises(batch.PromptFileError, match=r"p.jsonl:1: no prompt field"):
        batch.read_prompts(b'{"foo": "a"}\n', "p.jsonl")
    with pytest.raises(batch.PromptFileError, match="no prompt column"):
        batch.read_prompts(b"a,b\n1,2\n", "p.csv")
    with pytest.raises(batch.PromptFileError, match="p.csv:3: empty"):
        batch.read_prompts(b"prompt\nok\n\"\"\n", "p.csv")
    with pytest.raises(batch.PromptFileError, match="not UTF-8"):
        batch.read_prompts(b"\xff\xfe\xfa", "p.txt")
    with pytest.raises(batch.PromptFileError, match="no prompts"):
        batch.read_prompts(b"\n\n", "p.txt")


def test_weights_table_filter_and_csv():
    names = ["a", "b", "c"]
    W = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    df = batch.weights_table(["p1", "p2", "p3"], W, names)
    assert list(df.columns) == ["prompt", "a", "b", "c", "dominant", "confidence"]
    assert list(df["dominant"]) == ["a", "c", "a"]
    assert df["confidence"].iloc[2] == pytest.approx(0.0, abs=1e-9)
    assert list(batch.filter_dominant(df, ["c"])["prompt"]) == ["p2"]
    assert len(batch.filter_dominant(df, [])) == 3
    csv = batch.to_csv(df).decode()
    assert csv.splitlines()[0] == "prompt,a,b,c,dominant,confidence" and len(csv.splitlines()) == 4


# -- references, prompts, objectives ----------------------------------------------------------

def test_model_spec_parse():
    assert ModelSpec.parse("models:/pro-orchestrator@challenger") == ModelSpec("registry", "pro-orchestrator", "challenger")
    assert ModelSpec.parse("models:/pro-policy-wic/3").uri == "models:/pro-policy-wic/3"
    assert ModelSpec.parse("models:/pro-orchestrator").selector == "champion"
    assert ModelSpec.parse("runs/orchestrator") == ModelSpec("local", "runs/orchestrator", "")
    with pytest.raises(UIError, match="bad registry reference"):
        ModelSpec.parse("models:/a/b/c")


def test_check_prompt():
    assert check_prompt("  hi ") == "hi"
    with pytest.raises(UIError, match="empty"):
        check_prompt("   ")
    with pytest.raises(UIError, match="limit is 4,000"):
        check_prompt("x" * 5000)


def test_align_objectives():
    assert align_objectives(["a", "b", "c"], ["c", "a", "b"], "suite") == [1, 2, 0]
    with pytest.raises(UIError, match="suite has 2 objectives"):
        align_objectives(["a", "b"], ["a", "c"], "suite")


# -- pro ui -----------------------------------------------------------------------------------

def _ui_args(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ui", *argv])


def test_pro_ui_defaults_to_the_platform_store(tmp_path, monkeypatch):
    cmd, env = build_command(_ui_args(), env={"PRO_HOME": str(tmp_path)})
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("ui/app.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PRO_HOME", str(tmp_path))
    assert default_tracking_uri() == env["MLFLOW_TRACKING_URI"]  # the page reads the same store


def test_pro_ui_flags_become_env(tmp_path):
    args = _ui_args("--port", "9999", "--orchestrator", "models:/pro-orchestrator@challenger",
                    "--policy", str(tmp_path), "--tracking-uri", "http://mlflow:5000")
    cmd, env = build_command(args, env={"MLFLOW_TRACKING_URI": "sqlite:///other.db"})
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["PRO_UI_ORCHESTRATOR"] == "models:/pro-orchestrator@challenger"
    assert env["PRO_UI_POLICY"] == str(tmp_path)
    assert cmd[cmd.index("--server.port") + 1] == "9999"
    cmd, env = build_command(_ui_args(), env={"MLFLOW_TRACKING_URI": "sqlite:///other.db"})
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///other.db"


def test_pro_ui_listens_where_streamlit_env_says(tmp_path):
    """The k8s Deployment runs plain `pro ui` with STREAMLIT_SERVER_ADDRESS=0.0.0.0: flags must not override it."""
    env = {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0", "STREAMLIT_SERVER_PORT": "8502", "PRO_HOME": str(tmp_path)}
    cmd, _ = build_command(_ui_args(), env=env)
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--server.port") + 1] == "8502"
    cmd, _ = build_command(_ui_args("--host", "127.0.0.1", "--port", "9000"), env=env)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "9000"


def test_pro_ui_is_a_pro_subcommand(capsys):
    from pro_lib.cli import main

    assert main(["ui", "--dry-run", "--port", "8600"]) == 0
    out = capsys.readouterr().out
    assert "streamlit run" in out and "--server.port 8600" in out and "MLFLOW_TRACKING_URI=" in out


def test_pro_ui_stopped_with_sigterm_stops_its_streamlit_child(tmp_path):
    """`kill <pro ui>` (or Kubernetes stopping the pod) must not leave Streamlit serving the port."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    pytest.importorskip("streamlit")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PRO_HOME": str(tmp_path / ".pro")}
    proc = subprocess.Popen([sys.executable, "-m", "pro_lib.cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_stcore/health"

    def serving() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not serving():
            assert proc.poll() is None and time.monotonic() < deadline, "pro ui did not start serving"
            time.sleep(0.5)
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert children, "pro ui runs Streamlit as a child process"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while serving() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not serving(), "Streamlit still serves the port after `pro ui` got SIGTERM"
        assert not any(_alive(c) for c in children)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc.poll() is None:
            proc.kill()


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
