"""`pro wic|ric|generate` on tiny random policies (in-process CLI calls)."""

from __future__ import annotations

import json

import pytest
import yaml

from pro_lib import testing
from pro_lib.wic import evaluation as wic_eval, offline as wic_offline, rounds as wic_rounds
from pro_lib.cli import main

NAMES = ["helpful", "harmless"]


def test_generate_with_weights_json(tmp_path, capsys):
    pol = testing.build_tiny_policy(tmp_path / "p", NAMES)
    rc = main(["generate", "can you help me ?", "--policy", str(pol), "--weights", "helpful=3,harmless=1",
               "--max-new-tokens", "3", "--json"])
    assert rc == 0
    text = capsys.readouterr().out
    out = json.loads(text[text.index("[\n"):])  # DeepSpeed may log a line to stdout on first import
    assert out[0]["weights"] == {"helpful": 0.75, "harmless": 0.25} and isinstance(out[0]["response"], str)


@pytest.mark.parametrize("weights, message", [
    ("helpful=0.5,harmless=0.3,humor=0.2", "unknown objective 'humor'"),
    ("0.2,0.3,0.5", "3 entries but there are 2"), ("helpful=-1,harmless=2", "non-negative")])
def test_generate_bad_weights_clear_error(tmp_path, capsys, weights, message):
    pol = testing.build_tiny_policy(tmp_path / "p", NAMES)
    rc = main(["generate", "hi", "--policy", str(pol), "--weights", weights, "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "helpful=0.50,harmless=0.50" in err


def test_generate_without_orchestrator_or_policy(tmp_path, capsys):
    rc = main(["generate", "hi", "--policy", str(tmp_path / "missing")])
    assert rc == 2 and "error:" in capsys.readouterr().err


def test_help_lists_stages(capsys):
    for argv in (["wic", "--help"], ["ric", "--help"], ["wic", "online", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("offline", "online", "eval", "--preferences", "--samples-per-prompt", "--quantile"):
        assert word in out


def test_shipped_configs_build():
    from pathlib import Path

    from pro_lib.config import build_config

    repo = Path(__file__).resolve().parents[1]
    files = sorted((repo / "configs").glob("wic*.yaml"))
    assert files, "configs/wic*.yaml are missing"
    from pro_lib.wic.soups import SoupsTrainConfig

    classes = {"offline": wic_offline.WICOfflineConfig, "ric_offline": wic_offline.RiCOfflineConfig,
               "soups": SoupsTrainConfig, "online": wic_rounds.WICOnlineLoopConfig,
               "ric_online": wic_rounds.RiCOnlineConfig, "eval": wic_eval.WICEvalConfig,
               "base": wic_offline.WICOfflineConfig}  # wic_hh_budget.yaml: base + budgets (changes to base)
    for f in files:
        data = yaml.safe_load(f.read_text())
        for section, values in data.items():
            if section == "budgets":
                assert values, f"{f.name}: no budgets"
                for name, change in values.items():
                    build_config(wic_offline.WICOfflineConfig, {**data.get("base", {}), **(change or {})},
                                 where=f"{f.name}:budgets.{name}")
                continue
            build_config(classes[section], values, where=f"{f.name}:{section}")


def test_negative_list_values_after_an_option():
    """`--reference -2,-2` (a value starting with '-') parses like `--reference=-2,-2`."""
    from pro_lib.cli import attach_negative_values, build_parser

    assert attach_negative_values(["wic", "eval", "--reference", "-2,-1.5", "--max-prompts", "3"]) == \
        ["wic", "eval", "--reference=-2,-1.5", "--max-prompts", "3"]
    assert attach_negative_values(["--seed", "-1"]) == ["--seed", "-1"]  # plain numbers: argparse handles them
    args = build_parser().parse_args(attach_negative_values(["wic", "eval", "--reference", "-2,-1.5"]))
    assert args.reference == [-2.0, -1.5]
