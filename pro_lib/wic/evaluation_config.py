"""The Pareto evaluation's config (:func:`pro_lib.wic.evaluation.evaluate_wic`; ``pro wic eval`` and
``pro soups eval``)."""

from __future__ import annotations

from dataclasses import dataclass

from pro_lib.config import field
from pro_lib.wic.common import max_prompt_tokens_field
from pro_lib.wic.policy import RIC_MAPPINGS


@dataclass
class WICEvalConfig:
    """Pareto evaluation: sweep preference weights, generate on held-out prompts, score, fronts, HV."""

    policy: str | None = field(None, help="a WIC policy to evaluate (label = its method)")
    policies: list[str] = field(default_factory=list, help="label=folder,... to compare several policies (a "
                                                           "`pro soups train` folder is a Rewarded Soups policy)")
    suite: str = field("runs/targets/suite", help="reward suite folder (with normalisation stats)")
    data: list[str] = field(default_factory=lambda: ["runs/data/eval.jsonl"], help="held-out prompts")
    max_prompts: int = field(32, help="held-out prompts to evaluate on: a random sample stratified by source "
                                      "(seed --seed), so every source is represented in proportion")
    seed: int = field(0, help="seed of the held-out prompt sample")
    grid_step: float = field(0.1, help="weight grid step (K=2: 0.0..1.0; K=3: simplex grid)")
    orchestrator: str | None = field(None, help="orchestrator for the 'orchestrator weights' row "
                                                "(default: the one recorded in the policy, if any)")
    reference: list[float] = field(default_factory=list,
                                   help="hypervolume reference point in normalised reward units "
                                        "(default: -2 per objective)")
    max_new_tokens: int = field(48, help="max new tokens (greedy decoding)")
    gen_batch_size: int = field(16, help="generation batch size")
    max_prompt_tokens: int = max_prompt_tokens_field()
    bootstrap: int = field(1000, help="bootstrap resamples over prompts for the confidence intervals of the "
                                      "hypervolumes, their differences and the weight response (0: none)")
    ric_mapping: str | None = field(None, help="override the preference-to-reward mapping of rewards-conditioned "
                                               "(RiC) policies: linf, l2 or linear (default: each policy's own)",
                                    choices=list(RIC_MAPPINGS))
    device: str | None = field(None, help="cpu or cuda (default: cuda when available)")
    output_dir: str = field("runs/wic_eval", help="output folder: eval.json, pareto.csv, pareto.png, eval_table.md")
