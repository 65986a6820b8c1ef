"""The artifact contracts (pro_lib.artifacts): each manifest round-trips, old folders still load, and a
missing or invalid field is named with its file and the command that re-creates it. Fast, no models."""

from __future__ import annotations

import json

import pytest

from pro_lib.artifacts import (ARTIFACT_FILES, MANIFESTS, AdapterManifest, EndpointManifest, OrchestratorManifest,
                               RewardModelInfo, SoupsManifest, SuiteManifest, TargetsReport, WICPolicyManifest)
from pro_lib.errors import CheckpointError, ManifestError, ProError

EXAMPLES = [
    TargetsReport(objectives=["helpful", "harmless"], tau=0.2, n=3,
                  stats={"helpful": [0.1, 1.0], "harmless": [0.0, 2.0]}, mean_target=[0.6, 0.4],
                  argmax_share=[2 / 3, 1 / 3]),
    RewardModelInfo(objective="helpful", input_format="response", max_length=64, config={"epochs": 1}),
    SuiteManifest(objectives=[{"name": "helpful", "model": "rm_helpful", "input_format": "pair"},
                              {"name": "short", "function": "pkg.mod:short"}], stats={"helpful": [0.0, 1.0]}),
    OrchestratorManifest(objectives=["helpful", "harmless"], pooling="mean", max_length=128, tau=0.2,
                         backbone="minilm", encoder_type="bert", norm_stats={"helpful": [0.0, 1.0]}),
    WICPolicyManifest(objectives=["helpful", "harmless"], decimals=1, conditioning="rewards", use_chat_template=False,
                      tags=["<W1>", "<W2>"], reward_range={"helpful": [-1.0, 1.0]}, method="ric-offline",
                      ric_mapping="l2"),
    SoupsManifest(experts={"helpful": "helpful", "harmless": "harmless"}, objectives=["helpful", "harmless"],
                  orchestrator="runs/orchestrator", config={"seed": 0}),
    EndpointManifest(objectives=["helpful", "harmless"], conditioned=True, suite=True, orchestrator="o", policy="p",
                     policies=["ric"]),
    AdapterManifest(base="models:/pro-base-smollm2/1", base_digest="sha256:0123456789abcdef", vocab_size=49154,
                    rank=16, alpha=32, adapter_bytes=1234),
]


def test_every_kind_has_an_example_and_its_own_file():
    assert {type(m) for m in EXAMPLES} == set(MANIFESTS)
    assert len(set(ARTIFACT_FILES)) == len(ARTIFACT_FILES)


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(tmp_path, manifest):
    path = manifest.save(tmp_path)
    assert path == tmp_path / manifest.FILE and path.is_file()
    assert not [p for p in tmp_path.iterdir() if p != path]  # written atomically: no temporary file left
    assert type(manifest).load(tmp_path) == manifest
    assert type(manifest).load(path) == manifest  # the manifest file itself works too
    assert type(manifest).load_optional(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("cls, field_name, fix", [
    (OrchestratorManifest, "pooling", "pro orchestrator train"),
    (WICPolicyManifest, "objectives", "pro wic offline"),
    (SoupsManifest, "experts", "pro soups train"),
    (EndpointManifest, "objectives", "build_endpoint"),
    (TargetsReport, "objectives", "pro rewards score"),
    (AdapterManifest, "base_digest", "--lora-r"),
])
def test_a_missing_field_is_named_with_its_file_and_fix(tmp_path, cls, field_name, fix):
    data = next(m for m in EXAMPLES if isinstance(m, cls)).to_dict()
    del data[field_name]
    (tmp_path / cls.FILE).write_text(json.dumps(data))
    with pytest.raises(ManifestError) as err:
        cls.load(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / cls.FILE) in msg and f"'{field_name}' is missing" in msg and fix in msg
    assert isinstance(err.value, CheckpointError) and isinstance(err.value, ProError)


def test_a_field_of_the_wrong_type_or_empty_is_refused(tmp_path):
    (tmp_path / RewardModelInfo.FILE).write_text(json.dumps({"objective": "helpful", "max_length": "long"}))
    with pytest.raises(ManifestError, match=r"field 'max_length' must be int, got 'long'; re-run `pro rewards train`"):
        RewardModelInfo.load(tmp_path)
    (tmp_path / WICPolicyManifest.FILE).write_text(json.dumps({"objectives": []}))
    with pytest.raises(ManifestError, match="'objectives' must be a non-empty"):
        WICPolicyManifest.load(tmp_path)
    (tmp_path / SoupsManifest.FILE).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="expected a mapping of fields"):
        SoupsManifest.load(tmp_path)
    (tmp_path / EndpointManifest.FILE).write_text("{not json")
    with pytest.raises(ManifestError, match=r"not valid JSON.*build_endpoint"):
        EndpointManifest.load(tmp_path)


def test_a_missing_manifest_names_the_folder_and_the_command(tmp_path):
    with pytest.raises(ManifestError, match=r"no PRO reward model at .*: pro_reward.json is missing; "
                                            r"re-run `pro rewards train`"):
        RewardModelInfo.load(tmp_path)
    with pytest.raises(ManifestError, match="no reward suite at"):
        SuiteManifest.load(tmp_path)


def test_old_folders_still_load(tmp_path):
    """Files written by earlier versions (fewer fields, extra keys) load with the old defaults."""
    (tmp_path / OrchestratorManifest.FILE).write_text(json.dumps({"objectives": ["a", "b"], "pooling": "cls",
                                                                  "format": "pro-orchestrator/1"}))
    orch = OrchestratorManifest.load(tmp_path)
    assert (orch.max_length, orch.tau, orch.backbone, orch.norm_stats) == (256, 0.1, "", None)
    (tmp_path / RewardModelInfo.FILE).write_text(json.dumps({"objective": "helpful", "a_newer_key": 1}))
    assert RewardModelInfo.load(tmp_path) == RewardModelInfo(objective="helpful", input_format="pair", max_length=512)
    (tmp_path / WICPolicyManifest.FILE).write_text(json.dumps({"objectives": ["a", "b"], "decimals": 2}))
    wic = WICPolicyManifest.load(tmp_path)
    assert (wic.conditioning, wic.ric_mapping, wic.use_chat_template) == ("weights", "linf", None)
    (tmp_path / TargetsReport.FILE).write_text(json.dumps({"objectives": ["a", "b"], "n": 2}))
    assert TargetsReport.load(tmp_path).tau is None


def test_targets_report_is_found_beside_targets_jsonl(tmp_path):
    from pro_lib.targets import recorded_tau, resolve_tau

    TargetsReport(objectives=["a", "b"], tau=0.25).save(tmp_path)
    (tmp_path / "targets.jsonl").write_text("")
    assert TargetsReport.load(tmp_path / "targets.jsonl").tau == 0.25
    assert recorded_tau(tmp_path / "targets.jsonl") == recorded_tau(tmp_path) == 0.25
    assert resolve_tau(None, tmp_path) == 0.25
    assert recorded_tau(tmp_path / "none") is None


def test_suite_folder_of_a_targets_folder(tmp_path):
    SuiteManifest(objectives=[{"name": "a", "function": "m:f"}]).save(tmp_path / "suite")
    assert SuiteManifest.folder(tmp_path) == tmp_path / "suite"
    assert SuiteManifest.folder(tmp_path / "suite") == tmp_path / "suite"
    assert SuiteManifest.folder("s3://bucket/suite") == "s3://bucket/suite"  # references pass through untouched
    renamed = tmp_path / "my_suite.yaml"
    (tmp_path / "suite" / SuiteManifest.FILE).rename(renamed)
    assert SuiteManifest.load(renamed).objectives == [{"name": "a", "function": "m:f"}]  # any YAML file name


def test_reward_model_info_travels_into_the_suite_objective(tmp_path):
    """A reward model is scored with the input format and max length it was trained with."""
    from pro_lib.suite import model_objective, reward_model_info

    RewardModelInfo(objective="helpful", input_format="response", max_length=40).save(tmp_path)
    o = model_objective("helpful", str(tmp_path))
    assert (o.input_format, o.max_length) == ("response", 40)
    assert model_objective("helpful", str(tmp_path), max_length=8).max_length == 8
    assert reward_model_info(tmp_path / "hub-model-without-info") == RewardModelInfo()
