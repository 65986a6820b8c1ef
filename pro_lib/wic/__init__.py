"""PRO-WIC (weights in context): the prompt format, the policy, and the helpers its stages share.

The policy reads the preference weights in its prompt: the user turn becomes
``prompt <W1> 0.70 <W2> 0.30`` (fixed decimals; ``<W1>``..``<WK>`` are special tokens added to the
tokenizer), and the policy's chat template, when it has one, wraps that user turn (HH transcripts
``\\n\\nHuman: ... \\n\\nAssistant:`` become chat messages first).

One module per stage (each a plain function of its config dataclass that writes its outputs atomically):

- ``pro_lib.wic.offline``: ``train_wic_offline`` (paper Eq. 10): score each preferred response with
  the reward suite, w* = softmax(z / tau) (Eq. 7), SFT on the responses only (trl SFTTrainer,
  completion-only loss). ``conditioning: rewards`` is RiC offline: the tags hold the response's own
  (min-max scaled) rewards, and at inference a preference w maps to desired rewards (RiC's mapping).
- ``pro_lib.wic.rounds``: the online rounds (Eq. 11: weights from the orchestrator or random,
  N samples per prompt, score, rejection sampling, SFT on the kept samples): ``wic_online`` runs E
  rounds; ``sample_online_round`` + ``train_wic_online`` are a round's two halves (the KFP components).
- ``pro_lib.wic.evaluation``: ``evaluate_wic``: weight-grid sweep on held-out prompts, Pareto fronts
  (CSV, PNG), the equal-weight table with an "orchestrator weights" row, hypervolume against a stated
  reference.
- ``pro_lib.wic.soups``: the Rewarded Soups baseline (one expert per objective, interpolated).

``pro_lib.wic.policy`` holds the policy and its prompt format (re-exported here: ``from pro_lib.wic
import WICPolicy``); ``pro_lib.wic.common`` the helpers the stages share (suite, scores, scratch
folder -> finished policy).

Inference: ``WICPolicy.from_pretrained(ref).generate(prompts, weights=None)`` (weights omitted: the
orchestrator's), ``pro generate "prompt" --weights helpful=0.7,harmless=0.3``.
"""

from pro_lib.wic.policy import (CONDITIONINGS, RIC_MAPPINGS, TAG_INIT_SEED, WICPolicy, add_wic_tokens,
                                format_weight_suffix, format_wic_prompt, parse_user_weights, ric_desired_rewards,
                                shrink_to_tag_range, to_messages, wic_tags)

__all__ = ["CONDITIONINGS", "RIC_MAPPINGS", "TAG_INIT_SEED", "WICPolicy", "add_wic_tokens", "format_weight_suffix",
           "format_wic_prompt", "parse_user_weights", "ric_desired_rewards", "shrink_to_tag_range", "to_messages",
           "wic_tags"]
