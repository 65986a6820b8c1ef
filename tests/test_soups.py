"""Rewarded Soups: one expert per objective, parameters interpolated with the preference vector,
evaluated on the same grid / fronts / hypervolume as WIC policies. Tiny policies (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pro_lib import testing, wic
from pro_lib.wic import soups, evaluation as wic_eval
from pro_lib.errors import ConfigError
from helpers.wic import NAMES, StandInOrchestrator, make_suite

SFT = dict(epochs=1.0, batch_size=8, learning_rate=1e-3, max_length=64, save_steps=1000)


@pytest.fixture()
def pairs(tmp_path):
    rows = []
    for i in range(8):  # the chosen side wins "helpful", the rejected side wins "harmless"
        rows.append({"prompt": f"\n\nHuman: question {i} ?\n\nAssistant:", "chosen": "help help you",
                     "rejected": "safe safe ok"})
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_soups_train_interpolate_and_evaluate_beside_wic(tmp_path, pairs):
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    cfg = soups.SoupsTrainConfig(policy=str(base), data=[str(pairs)], output_dir=str(tmp_path / "soup"), **SFT)
    m = soups.train_soups(cfg, suite=make_suite())
    assert m["helpful_rejected_share"] == 0.0 and m["harmless_rejected_share"] == 1.0
    assert json.loads((tmp_path / "soup" / "soups.json").read_text())["objectives"] == NAMES
    assert soups.train_soups(cfg, suite=make_suite())["helpful_skipped"] == 1  # finished experts are kept

    soup = soups.SoupPolicy.load(tmp_path / "soup")
    experts = [wic.WICPolicy.from_pretrained(tmp_path / "soup" / n) for n in NAMES]
    sds = [e.model.state_dict() for e in experts]
    key = next(k for k, v in sds[0].items() if v.is_floating_point() and not np.allclose(v, sds[1][k]))
    soup.set_weights([1.0, 0.0])
    assert np.allclose(soup.policy.model.state_dict()[key], sds[0][key])
    soup.set_weights([0.25, 0.75])
    assert np.allclose(soup.policy.model.state_dict()[key], 0.25 * sds[0][key] + 0.75 * sds[1][key], atol=1e-6)
    with pytest.raises(ConfigError, match="summing to 1"):
        soup.set_weights([0.5, 0.2])

    ev = wic_eval.WICEvalConfig(policies=[f"Soups={tmp_path / 'soup'}", f"WIC={base}"], data=[str(pairs)],
                                max_prompts=4, grid_step=0.5, max_new_tokens=3, bootstrap=50,
                                output_dir=str(tmp_path / "eval"), reference=[-5.0, -5.0])
    em = wic_eval.evaluate_wic(ev, suite=make_suite(), orchestrator=StandInOrchestrator())
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(report["methods"]) == {"Soups", "WIC"} and "hypervolume_Soups" in em
    assert set(report["bootstrap"]["hypervolume_ci"]) == {"Soups", "WIC"}
    assert len(report["methods"]["Soups"]["points"]) == 3 and report["methods"]["Soups"]["orchestrator_point"]
    table = (tmp_path / "eval" / "eval_table.md").read_text()
    assert "| Soups | equal |" in table and "| Soups | orchestrator weights |" in table
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert sum(r["method"] == "Soups" for r in rows) == 4 * (3 + 1)


def test_soups_cli_help(capsys):
    from pro_lib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["soups", "train", "--help"])
    assert exc.value.code == 0
    assert "--max-examples" in capsys.readouterr().out
