"""The Rewarded Soups experts' config (:func:`pro_lib.wic.soups.train_soups`, ``pro soups train``)."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import field
from pro_lib.wic.sft_config import SFTOptions


@dataclass
class SoupsTrainConfig(SFTOptions):
    """Rewarded Soups: one expert per objective, SFT on the responses that objective scores higher."""

    policy: str = field("smollm2", help="base policy every expert starts from ('smollm2', a folder, a hub name)")
    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="preference pairs (load_pairs specs): both responses of each pair are candidates")
    suite: str = field("runs/targets/suite", help="reward suite folder (one objective per expert)")
    output_dir: str = field("runs/soups", help="output folder: soups.json and one expert policy per objective")
    max_examples: int | None = field(None, help="use at most this many pairs (a random sample stratified by source, "
                                                "seed --seed)")
    orchestrator: str | None = field(None, help="orchestrator recorded for the 'orchestrator weights' evaluation row")
