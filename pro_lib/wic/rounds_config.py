"""The configs of the online stages (:mod:`pro_lib.wic.rounds`): a sampling round
(:class:`WICSampleConfig`, which owns the sampling options), a round's SFT half (:class:`WICOnlineConfig`),
E rounds in one call (:class:`WICOnlineLoopConfig`) and its RiC preset."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import field, field_like
from pro_lib.wic.common import max_prompt_tokens_field
from pro_lib.wic.sft_config import SFTOptions

PREFERENCE_SOURCES = ("orchestrator", "dirichlet", "ric", "uniform", "orchestrator-shuffled", "orchestrator-mean")
REJECTION_RULES = ("quantile", "topk", "none")


# It owns the sampling options; the online loop (WICOnlineLoopConfig) offers the same ones (field_like).
# A config's docstring is its command's description.
@dataclass
class WICSampleConfig:
    """One online round (Eq. 11): weights per prompt, N samples each, score, rejection sampling."""

    data: list[str] = field(default_factory=lambda: ["runs/data/train.jsonl"],
                            help="prompt sources (load_pairs specs); prompts are deduplicated")
    prompts_per_round: int = field(64, help="O: prompts per online round")
    samples_per_prompt: int = field(4, help="N: samples per prompt")
    preferences: str = field("orchestrator", help="where the weights come from: orchestrator (PRO-WIC), "
                             "dirichlet (RiC online, Dirichlet(1)), ric (uniform over the RiC weight grid), uniform; "
                             "controls: orchestrator-shuffled (the orchestrator's weights permuted across the round's "
                             "prompts), orchestrator-mean (their mean, the same for every prompt)",
                             choices=list(PREFERENCE_SOURCES))
    dirichlet_alpha: float = field(1.0, help="concentration of the Dirichlet preference sampler")
    rejection: str = field("quantile", help="quantile: keep samples at or above the per-objective quantile "
                           "(RiC); topk: keep each prompt's top-k by weighted reward; none: keep all",
                           choices=list(REJECTION_RULES))
    quantile: float = field(0.7, help="quantile of the rejection rule (RiC: 0.7)")
    thresholds: str = field("offline", help="where the quantile comes from: offline (the offline data's "
                            "per-objective score distribution, stored in the policy: a fixed bar, so acceptance "
                            "rates compare across preference sources) or round (this round's samples)",
                            choices=["offline", "round"])
    quantile_rule: str = field("weighted", help="weighted: weighted reward w.z at or above its quantile; "
                               "any/all: at or above the per-objective quantile on any/all objectives",
                               choices=["weighted", "any", "all"])
    top_k: int = field(1, help="samples kept per prompt with rejection=topk")
    max_new_tokens: int = field(48, help="max new tokens per sample")
    temperature: float = field(0.9, help="sampling temperature")
    top_p: float = field(0.95, help="nucleus sampling p")
    gen_batch_size: int = field(16, help="generation batch size (sequences)")
    max_prompt_tokens: int = max_prompt_tokens_field()
    orchestrator: str | None = field(None, help="orchestrator folder or models:/ ref (needed for preferences=orchestrator)")
    suite: str = field("runs/targets/suite", help="reward suite folder (with normalisation stats)")
    policy: str = field("runs/wic_offline", help="the current WIC policy (folder or models:/ ref)")
    round_index: int = field(1, help="round number (1-based); selects this round's prompts")
    output_dir: str = field("runs/wic_samples", help="folder for samples.jsonl (all), kept.jsonl, metrics.json")
    seed: int = field(0, help="random seed")


@dataclass
class WICOnlineConfig(SFTOptions):
    """Online round, second half: SFT the policy on the kept samples of a sampling round (plus
    --replay-offline of the offline stage's examples, as the main job does)."""

    policy: str = field("runs/wic_offline", help="the WIC policy to fine-tune")
    samples: list[str] = field(default_factory=lambda: ["runs/wic_samples"],
                               help="sampling-round folders (or kept.jsonl files)")
    output_dir: str = field("runs/wic_online", help="output folder for the new WIC policy")
    replay_offline: int = field(0, help="offline SFT examples mixed into this round's SFT set, as `pro wic online "
                                        "--replay-offline`: those clearing --replay-quantile of the offline scores "
                                        "on any objective, at most N (seeded; -1 all, 0 none)")
    replay_quantile: float = field(WICSampleConfig.quantile, help="the quantile the replayed offline examples clear "
                                                                "(the sampling half's --quantile)")
    offline_policy: str | None = field(None, help="the offline WIC policy whose examples.jsonl the replay draws "
                                                  "from (default: --policy, which is the offline policy in round 1)")


# The SFT options, then the sampling options of WICSampleConfig (defined there), then its own.
@dataclass
class WICOnlineLoopConfig(SFTOptions):
    """Online stage: E rounds of (sample, score, reject, SFT), starting from an offline WIC policy."""

    data: list[str] = field_like(WICSampleConfig, "data")
    prompts_per_round: int = field_like(WICSampleConfig, "prompts_per_round")
    samples_per_prompt: int = field_like(WICSampleConfig, "samples_per_prompt")
    preferences: str = field_like(WICSampleConfig, "preferences")
    dirichlet_alpha: float = field_like(WICSampleConfig, "dirichlet_alpha")
    rejection: str = field_like(WICSampleConfig, "rejection")
    quantile: float = field_like(WICSampleConfig, "quantile")
    thresholds: str = field_like(WICSampleConfig, "thresholds")
    quantile_rule: str = field_like(WICSampleConfig, "quantile_rule")
    top_k: int = field_like(WICSampleConfig, "top_k")
    max_new_tokens: int = field_like(WICSampleConfig, "max_new_tokens")
    temperature: float = field_like(WICSampleConfig, "temperature")
    top_p: float = field_like(WICSampleConfig, "top_p")
    gen_batch_size: int = field_like(WICSampleConfig, "gen_batch_size")
    orchestrator: str | None = field_like(WICSampleConfig, "orchestrator")
    suite: str = field_like(WICSampleConfig, "suite")
    policy: str = field("runs/wic_offline", help="the offline WIC policy to start from")
    rounds: int = field(2, help="E: online rounds")
    replay_offline: int = field(0, help="offline SFT examples (those clearing the round rule's quantile of the offline "
                                        "scores on any objective) mixed into each round's SFT set: 0 none, N at most "
                                        "N (seeded), -1 all (RiC's released code mixes up to 10,000)")
    replay_rounds: bool = field(False, help="also train each round on the kept samples of all earlier rounds "
                                            "(RiC's released code does)")
    output_dir: str = field("runs/wic_online", help="output folder: round-<e>/ samples and policy, policy/ "
                            "(final), rounds.jsonl (acceptance, rewards, wall time per round)")


# A preset of the online stage (`pro ric online`): RiC's defaults, no field of its own.
@dataclass
class RiCOnlineConfig(WICOnlineLoopConfig):
    """RiC online: E rounds of random preferences (RiC's weight grid or Dirichlet), sampling,
    rejection sampling and SFT on the kept samples relabelled with their achieved rewards."""

    policy: str = field("runs/ric_offline", help="the RiC offline policy to start from")
    preferences: str = field("ric", help="ric (uniform over RiC's 0.1 weight grid) or dirichlet",
                             choices=list(PREFERENCE_SOURCES))
    replay_offline: int = field(-1, help="offline examples clearing the quantile on any objective mixed into each "
                                         "round's SFT set (RiC's released code: up to 10,000; -1 all, 0 none)")
    replay_rounds: bool = field(True, help="train each round on the kept samples of earlier rounds too (RiC's "
                                           "released code); --no-replay-rounds for fresh samples only")
    output_dir: str = field("runs/ric_online", help="output folder (as for `pro wic online`)")


# What the sampling functions of pro_lib.wic.rounds read: a sampling round's config or the online loop's
# (the same sampling options).
SamplingOptions = WICSampleConfig | WICOnlineLoopConfig
