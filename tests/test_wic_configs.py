"""The wic package's configs: one per stage beside its trainer, the same options and fingerprints as before
the package (so runs made before it still resume), and the CLI/YAML/pipeline keys they generate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pro_lib.checkpoints import differences, fingerprint
from pro_lib.config import field, field_like
from pro_lib.wic.evaluation_config import WICEvalConfig
from pro_lib.wic.offline_config import RiCOfflineConfig, WICOfflineConfig
from pro_lib.wic.rounds_config import RiCOnlineConfig, WICOnlineConfig, WICOnlineLoopConfig, WICSampleConfig
from pro_lib.wic.sft_config import SFTOptions
from pro_lib.wic.soups_config import SoupsTrainConfig

FINGERPRINTS = Path(__file__).parent / "data" / "wic_config_fingerprints.json"
STAGE_CONFIGS = [WICOfflineConfig, WICSampleConfig, WICOnlineConfig, WICOnlineLoopConfig, WICEvalConfig,
                 SoupsTrainConfig]
PRESETS = {RiCOfflineConfig: WICOfflineConfig, RiCOnlineConfig: WICOnlineLoopConfig}


def _spec(cls, name):
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    factory = None if f.default_factory is dataclasses.MISSING else f.default_factory()
    return f.default, factory, dict(f.metadata), f.type


@pytest.mark.parametrize("cls", STAGE_CONFIGS + list(PRESETS), ids=lambda c: c.__name__)
def test_default_fingerprints_are_those_runs_were_made_with(cls):
    saved = json.loads(FINGERPRINTS.read_text())[cls.__name__]
    assert differences(saved, fingerprint(cls())) == [], (
        f"{cls.__name__}'s fields or defaults changed: runs made before no longer resume. If that is intended, "
        f"say so in the README and rewrite {FINGERPRINTS.name}")


def test_a_stage_config_extends_at_most_the_sft_options():
    for cls in STAGE_CONFIGS:
        assert cls.__bases__ in ((object,), (SFTOptions,)), f"{cls.__name__} inherits {cls.__bases__}"


def test_a_preset_only_changes_its_stage_configs_defaults():
    for preset, stage in PRESETS.items():
        assert preset.__bases__ == (stage,)
        assert [f.name for f in dataclasses.fields(preset)] == [f.name for f in dataclasses.fields(stage)]
        assert any(preset.__dataclass_fields__[n].default != stage.__dataclass_fields__[n].default
                   for n in stage.__dataclass_fields__)


def test_the_online_loop_offers_the_sampling_rounds_options():
    """`pro wic online` and `pro wic sample` take the same sampling options (one definition: WICSampleConfig),
    so the CLI loop and the KFP halves can be given the same settings."""
    own = {"policy", "round_index", "output_dir", "seed"}
    sampling = [f.name for f in dataclasses.fields(WICSampleConfig) if f.name not in own]
    loop = {f.name for f in dataclasses.fields(WICOnlineLoopConfig)}
    assert set(sampling) <= loop
    for name in sampling:
        assert _spec(WICOnlineLoopConfig, name) == _spec(WICSampleConfig, name), name


def test_field_like_copies_an_option_and_changes_what_it_is_told():
    @dataclasses.dataclass
    class Owner:
        names: list[str] = field(default_factory=lambda: ["a"], help="the names", choices=None)
        level: float = field(0.5, help="a level", range=((0, True), (1, True)))

    @dataclasses.dataclass
    class Other:
        names: list[str] = field_like(Owner, "names")
        level: float = field_like(Owner, "level", default=0.9)

    assert Other().names == ["a"] and Other().names is not Other().names
    assert _spec(Other, "names")[2] == {"help": "the names"}
    assert Other().level == 0.9 and _spec(Other, "level")[2] == _spec(Owner, "level")[2]
    with pytest.raises(TypeError, match="unknown change"):
        field_like(Owner, "level", defualt=1.0)
