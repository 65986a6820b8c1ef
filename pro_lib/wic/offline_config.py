"""The offline stage's config (:func:`pro_lib.wic.offline.train_wic_offline`) and its RiC preset."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import field
from pro_lib.wic.policy import CONDITIONINGS, RIC_MAPPINGS
from pro_lib.wic.sft_config import SFTOptions

OFFLINE_RESPONSES = ("chosen", "both")


@dataclass
class WICOfflineConfig(SFTOptions):
    """Offline stage (paper Eq. 10): SFT on preferred responses with their target weights in the prompt.

    conditioning=weights is PRO-WIC (tags hold w* = softmax(z / tau)); conditioning=rewards is RiC
    offline (tags hold the response's own min-max scaled rewards).
    """

    policy: str = field("smollm2", help="base policy: 'smollm2' (bundled), a folder, a hub name or models:/ ref")
    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="preference pairs (load_pairs specs); the chosen responses are the SFT targets")
    suite: str | None = field(None, help="reward suite folder (RewardSuite.load); default: <targets>/suite")
    targets: str | None = field(None, help="a `pro rewards score` output folder: its suite (and targets.jsonl "
                                           "when its prompts match the data) are reused")
    output_dir: str = field("runs/wic_offline", help="output folder: the WIC policy, metrics.json, train_log.jsonl")
    conditioning: str = field("weights", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    tau: float | None = field(None, help="softmax temperature of w*; default: the tau --targets were built with "
                                         "(target_report.json), else 0.1 (paper)")
    decimals: int = field(2, help="decimals of the weights in the prompt")
    system_prompt: str | None = field(None, help="the chat template's system turn, kept in the policy for every later "
                                                 "stage; default: the template's own (SmolLM2 adds a 21-token one); "
                                                 "'' an empty turn (the main job: about 16 fewer tokens per example)")
    max_examples: int | None = field(None, help="use at most this many pairs (a random sample stratified by source, "
                                                "seed --seed)")
    responses: str = field("chosen", help="SFT on the chosen responses (PRO-WIC, paper Eq. 10) or on chosen and "
                                          "rejected, each tagged with its own scores (both: RiC's released code)",
                           choices=list(OFFLINE_RESPONSES))
    orchestrator: str | None = field(None, help="orchestrator recorded in the policy for generate(weights=None)")
    method: str = field("pro-wic", help="label recorded in the policy (pro-wic, ric-offline, ...)")
    ric_mapping: str = field("linf", help="conditioning=rewards only: how a preference w becomes desired rewards "
                                          "at inference (linf: RiC paper; l2: RiC's released eval script; linear)",
                             choices=list(RIC_MAPPINGS))
    tag_max: float | None = field(None, help="conditioning=weights only: the tag value a corner of the simplex is "
                                             "written as at inference (weights shrink toward uniform to fit); default: "
                                             "the 95th percentile of the training tags' largest weight, so soft tags "
                                             "(tau 0.5) never meet an unseen 1.00; 1 keeps the weights as given (paper)")


# A preset of the offline stage (`pro ric offline`): RiC's defaults, no field of its own (the docstring is
# the command's description).
@dataclass
class RiCOfflineConfig(WICOfflineConfig):
    """RiC offline: SFT on preferred responses with their own (min-max scaled) rewards in the prompt;
    at inference a preference w maps to desired rewards (RiC's mapping)."""

    conditioning: str = field("rewards", help="weights (PRO-WIC) or rewards (RiC offline)",
                              choices=list(CONDITIONINGS))
    method: str = field("ric-offline", help="label recorded in the policy")
    output_dir: str = field("runs/ric_offline", help="output folder: the RiC policy, metrics.json")
    responses: str = field("both", help="both (RiC's released code: chosen and rejected, each tagged with its own "
                                        "rewards) or chosen (the same SFT set as PRO-WIC)",
                           choices=list(OFFLINE_RESPONSES))
