import json

import pytest
import yaml

from pro_lib.cli import main
from pro_lib.config import build_config
from pro_lib.errors import ConfigError, DataError
from pro_lib.io import write_jsonl
from pro_lib.rewards import RewardTrainConfig, train_reward_model, wilson_interval


def _rm_data(path, n=60):
    rows = []
    for i in range(n):
        rows.append({"prompt": f"question {i}", "chosen": "thanks please safe answer", "rejected": "go away",
                     "source": "polite" if i % 3 else "other"})
    write_jsonl(path, rows)
    return path


def test_wilson_interval():
    lo, hi = wilson_interval(60, 100)
    assert 0.50 < lo < 0.51 and 0.69 < hi < 0.70
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_train_reward_model_tiny(tiny_encoder_dir, tmp_path):
    data = _rm_data(tmp_path / "d.jsonl")
    cfg = build_config(RewardTrainConfig, {
        "objective": "polite", "data": [str(data)], "source": "polite", "base_model": str(tiny_encoder_dir),
        "output_dir": str(tmp_path / "rm"), "max_length": 32, "epochs": 3, "batch_size": 8,
        "learning_rate": 1e-3, "eval_fraction": 0.25, "progress": False})
    m = train_reward_model(cfg)
    assert m["n_train"] + m["n_eval"] == 40  # only the 'polite' subset
    assert m["accuracy"] >= 0.9  # a trivially separable objective is learned
    assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
    meta = json.loads((tmp_path / "rm" / "pro_reward.json").read_text())
    assert meta["objective"] == "polite" and meta["input_format"] == "pair"
    assert (tmp_path / "rm" / "eval_metrics.json").is_file()
    assert list((tmp_path / "rm.checkpoints").glob("checkpoint-*"))


def test_reward_training_bad_inputs(tiny_encoder_dir, tmp_path):
    data = _rm_data(tmp_path / "d.jsonl")
    cfg = build_config(RewardTrainConfig, {"objective": "x", "data": [str(data)], "source": "nope",
                                           "base_model": str(tiny_encoder_dir)})
    with pytest.raises(DataError, match="no pairs with source 'nope'.*polite"):
        train_reward_model(cfg)
    with pytest.raises(ConfigError, match="missing required option.*--objective"):
        build_config(RewardTrainConfig, {})
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'"):
        build_config(RewardTrainConfig, {"objective": "x", "learning_rat": 1})
    with pytest.raises(ConfigError, match="key 'epochs' has a bad value"):
        build_config(RewardTrainConfig, {"objective": "x", "epochs": "many"})


def test_cli_help_for_every_command(capsys):
    for argv in (["--help"], ["rewards", "train", "--help"], ["rewards", "score", "--help"],
                 ["orchestrator", "train", "--help"], ["orchestrator", "eval", "--help"],
                 ["weights", "--help"], ["data", "prepare", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: pro" in out


def test_cli_config_file_and_flags(tmp_path, capsys, tiny_encoder_dir):
    data = _rm_data(tmp_path / "d.jsonl", n=30)
    cfg_file = tmp_path / "score.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": str(data), "output-dir": str(tmp_path / "wrong"),
                                        "objectives": ["polite=fn:scorers:polite_reward",
                                                       "long=fn:scorers:length_reward"]}))
    assert main(["rewards", "score", "--config", str(cfg_file), "--output-dir", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "targets.jsonl").is_file() and not (tmp_path / "wrong").exists()
    assert json.loads(capsys.readouterr().out)["n_scored"] == 30

    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nbatch_sise: 3\n")
    assert main(["rewards", "score", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "unknown key 'batch_sise'" in err

    assert main(["orchestrator", "train", "--targets", str(tmp_path / "t"), "--backbone", str(tiny_encoder_dir),
                 "--output-dir", str(tmp_path / "o"), "--epochs", "1", "--max-length", "16",
                 "--progress", "false"]) == 0
    capsys.readouterr()
    assert main(["weights", "--orchestrator", str(tmp_path / "o"), "question 1", "another prompt"]) == 0
    out = capsys.readouterr().out
    assert "polite" in out and "long" in out and "another prompt" in out
    assert main(["weights", "--orchestrator", str(tmp_path / "missing"), "hi"]) == 2
    assert "pro_orchestrator.json is missing" in capsys.readouterr().err
