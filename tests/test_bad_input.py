"""Bad input gets one clear line and exit 2, never a traceback or a silently wrong result (issue 11,
items 6-8): corrupt weights, non-UTF-8 prompts, missing model folders, no KFP endpoint, NaN settings,
repeated weight names, byte-order marks, misnamed columns, misspelt nested --set keys."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import one_line_error
from pro_lib.cli import main
from pro_lib.config import build_config
from pro_lib.data import load_pairs
from pro_lib.errors import ConfigError, DataError
from pro_lib.io import write_jsonl
from pro_lib.orchestrator import OrchestratorTrainConfig
from pro_lib.targets import parse_weights

NAMES = ["helpful", "harmless"]


def truncate(folder, fraction: float = 0.5) -> None:
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:int(len(data) * fraction)])


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q {i}", "chosen": "thanks please", "rejected": "no"}
                                                  for i in range(12)])


# -- item 6: tracebacks instead of errors ------------------------------------------------------------

def test_reward_model_cut_in_half(tmp_path, tiny_reward_dir, pairs_file, capsys):
    rm = tmp_path / "rm"
    shutil.copytree(tiny_reward_dir, rm)
    truncate(rm)
    assert main(["rewards", "score", "--data", str(pairs_file), "--objectives", f"helpful={rm}",
                 "--output-dir", str(tmp_path / "t")]) == 2
    line = one_line_error(capsys)
    assert str(rm / "model.safetensors") in line and "truncated" in line


def test_policy_cut_in_half(tmp_path, capsys):
    from pro_lib.testing import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "policy", NAMES)
    truncate(policy, 0.6)
    assert main(["generate", "hi", "--policy", str(policy), "--weights", "0.5,0.5"]) == 2
    line = one_line_error(capsys)
    assert str(policy / "model.safetensors") in line and "truncated" in line


def test_prompt_not_utf8(tmp_path, tiny_encoder_dir, capsys):
    from pro_lib.orchestrator import PreferenceOrchestrator

    orch = tmp_path / "orch"
    PreferenceOrchestrator.from_backbone(str(tiny_encoder_dir), NAMES, max_length=16).save_pretrained(orch)
    bad = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # how Python hands over such argv bytes
    assert main(["weights", "fine", bad, "--orchestrator", str(orch)]) == 2
    line = one_line_error(capsys)
    assert "prompts (value 2) is not valid UTF-8" in line and "0xe9" in line
    with pytest.raises(DataError, match="prompt 0 is not valid UTF-8"):
        PreferenceOrchestrator.from_pretrained(orch).predict([bad])
    # the same prompt in a data file: the file and line are named
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(b'{"prompt": "ok", "chosen": "a", "rejected": "b"}\n'
                     b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_pairs(data)


def test_base_model_missing_folder(tmp_path, pairs_file, capsys):
    missing = tmp_path / "models" / "encoder"
    assert main(["rewards", "train", "--objective", "x", "--data", str(pairs_file),
                 "--base-model", str(missing)]) == 2
    line = one_line_error(capsys)
    assert str(missing) in line and "does not exist" in line
    # a hub-shaped name that is neither a folder nor reachable: one line too
    assert main(["rewards", "train", "--objective", "x", "--data", str(pairs_file),
                 "--base-model", "no-such-org/no-such-model", "--output-dir", str(tmp_path / "o")]) == 2
    assert "cannot load base model 'no-such-org/no-such-model'" in one_line_error(capsys)


def test_submit_without_host_outside_a_cluster(tmp_path, monkeypatch, capsys):
    import kfp

    calls = []
    monkeypatch.setattr(kfp, "Client", lambda *a, **k: calls.append(k))
    for var in ("KFP_HOST", "KF_PIPELINES_ENDPOINT", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert main(["pipeline", "submit", "orchestrator"]) == 2
    assert "--host" in one_line_error(capsys) and not calls


# -- item 7: bad values accepted silently -------------------------------------------------------------

def test_nan_reference_refused(capsys):
    from pro_lib.wic.evaluation import WICEvalConfig

    assert main(["wic", "eval", "--policy", "p", "--reference", "nan,-2"]) == 2
    line = one_line_error(capsys)
    assert "'reference'" in line and "finite" in line
    with pytest.raises(ConfigError, match="finite"):
        build_config(WICEvalConfig, {"reference": [float("inf"), 0.0]})
    with pytest.raises(ConfigError, match="'learning_rate'.*finite"):
        build_config(OrchestratorTrainConfig, {"learning_rate": "nan"})


def test_duplicate_weight_names_refused():
    with pytest.raises(ConfigError, match="name 'helpful' twice"):
        parse_weights("helpful=0.9,helpful=0.1", NAMES)
    assert np.allclose(parse_weights("helpful=0.9,harmless=0.1", NAMES), [0.9, 0.1])


def test_csv_with_byte_order_mark(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_text("prompt,chosen,rejected\nhow are you,fine thanks,go away\n", encoding="utf-8-sig")
    assert f.read_bytes()[:3] == b"\xef\xbb\xbf"
    (pair,) = load_pairs(f)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("how are you", "fine thanks", "go away")
    j = tmp_path / "bom.jsonl"
    j.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', encoding="utf-8-sig")
    assert load_pairs(j)[0].prompt == "p"


def test_misnamed_column_names_the_right_flag(tmp_path, capsys):
    f = tmp_path / "cols.csv"
    f.write_text("prompt,good,bad\nq,a,b\n")
    assert main(["rewards", "train", "--objective", "x", "--data", str(f)]) == 2
    line = one_line_error(capsys)  # `pro rewards train` has no --chosen-column: point at the command that has
    assert "missing column(s) ['chosen', 'rejected']" in line and "pro data prepare" in line
    assert "Name the right columns with" not in line
    assert main(["data", "prepare", "--sources", str(f), "--output-dir", str(tmp_path / "d")]) == 2
    line = one_line_error(capsys)
    assert "Name the right columns with --prompt-column / --chosen-column / --rejected-column" in line


# -- item 8: nested --set keys checked before anything starts ---------------------------------------

def test_nested_set_keys_checked_before_submit_or_run(monkeypatch, capsys):
    import kfp

    from pipelines import cli as pcli

    calls = []
    monkeypatch.setattr(kfp, "Client", lambda *a, **k: calls.append("client"))
    monkeypatch.setattr(pcli, "run_local", lambda *a, **k: calls.append("run"))
    assert main(["pipeline", "submit", "orchestrator", "--host", "http://kfp:8080",
                 "--set", "reward_config.epoch=2"]) == 2
    line = one_line_error(capsys)
    assert "reward_config: unknown key 'epoch' for RewardTrainConfig (did you mean 'epochs'?)" in line
    assert main(["pipeline", "run", "--local", "pro_wic", "--set", "wic_offline_config.learning_rat=1e-4"]) == 2
    assert "did you mean 'learning_rate'?" in one_line_error(capsys)
    assert main(["pipeline", "run", "--local", "pro_morlhf", "--set", "morlhf_config.max_steps=many"]) == 2
    assert "morlhf_config" in one_line_error(capsys)
    assert main(["pipeline", "run", "--local", "orchestrator", "--set", "reward_config.epochs.x=1"]) == 2
    assert "is not a dict" in one_line_error(capsys)
    assert not calls
    from pipelines.orchestrator import orchestrator_pipeline
    from pipelines.params import check_stage_configs, stage_configs

    check_stage_configs({"reward_config": {"epochs": 2, "limit": "null"}, "gpu_node_selector": {"a": "b"}},
                        stage_configs(orchestrator_pipeline))
