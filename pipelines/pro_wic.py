"""Pipeline `pro_wic`: the orchestrator pipeline, then PRO-WIC (weights in context).

    <orchestrator stages> -> wic_offline_sft (SFT on preferred responses with w* in the prompt)
      -> round 1..N: wic_online_sample (orchestrator weights -> policy samples -> reward models
                     score -> rejection sampling; never cached) -> wic_online_sft
      -> wic_evaluate (weight sweep, Pareto fronts, hypervolume)
      -> register pro-policy-pro-wic (challenger) -> gated promotion (champion)
      -> register pro-endpoint (orchestrator + policy + reward suite, one pyfunc model) -> promotion

The number of online rounds shapes the graph, so it is fixed when the pipeline is built
(``make_pipeline(online_rounds)``; ``pro pipeline compile|run|submit pro_wic --online-rounds N``).
"""

import posixpath

from kfp import dsl, kubernetes

from components.judge import judge_evaluate
from components.registry import promote_model, register_endpoint, register_model
from components.wic import wic_evaluate, wic_offline_sft, wic_online_sample, wic_online_sft
from pipelines.orchestrator import (DEFAULT_SCORE, add_orchestrator_stages, end_run_on_exit, pipeline_parameters,
                                    stage_config)
from pipelines.scheduling import POLICY_PLACEMENT_DEFAULTS as PLACE, Placement
from pro_lib.judge import SECRET_KEY_FILE
from pro_lib.registry import ENDPOINT_MODEL, policy_model_name

PIPELINE_NAME = "pro-wic"
# Defaults: the main job (`make demo`) on the shipped demo data with the bundled SmolLM2-135M on 2 CPU
# cores: targets at tau 0.5 (soft tags, not all corners; the orchestrator and the PRO-WIC tags follow
# the targets' tau), offline SFT of 1 epoch over 320 training pairs at lr 3e-4 (40 steps), one online
# round, the weight response on 32 held-out prompts at the corners of the simplex (24 new tokens: the
# style shows in the first sentence). fp32, full fine-tune, padding-free batches, an empty system turn
# (SmolLM2's template adds a 21-token default otherwise), trl's LM head on the completion positions only:
# the fastest SFT on a 2-core CPU (bench/bench_cpu_training.py). On a GPU pass bigger settings
# (--set wic_offline_config.bf16=true ...).
# Each online round's SFT set mixes in 40 of the offline SFT examples (`replay_offline`, as RiC's released code
# mixes its filtered offline data): the orchestrator never puts the most weight on helpful for a demo prompt,
# so a round's kept samples alone would teach "helpful-heavy tags -> another style". Why these numbers:
# docs/results_wic.md ("The online round and the offline replay", "The main job in 14 minutes").
DEFAULT_ONLINE_ROUNDS = 1
DEFAULT_WIC_SCORE = {**DEFAULT_SCORE, "tau": 0.5}
DEFAULT_WIC_OFFLINE = {"policy": "smollm2", "epochs": 1.0, "conditioning": "weights",
                       "max_examples": 320, "learning_rate": 3e-4, "batch_size": 8, "max_length": 256,
                       "max_prompt_tokens": 128, "padding_free": True, "system_prompt": ""}
DEFAULT_WIC_SAMPLE = {"prompts_per_round": 24, "samples_per_prompt": 2, "preferences": "orchestrator",
                      "max_new_tokens": 32, "gen_batch_size": 16, "max_prompt_tokens": 128}
DEFAULT_WIC_ONLINE = {"epochs": 1.0, "learning_rate": 5e-5, "batch_size": 8, "max_length": 256,
                      "max_prompt_tokens": 128, "padding_free": True, "replay_offline": 40}
DEFAULT_WIC_EVAL = {"max_prompts": 32, "grid_step": 1.0, "max_new_tokens": 24, "max_prompt_tokens": 128}
GATE_METRIC = "hypervolume"
# The optional LLM-judge stage (`--set judge=true --set judge_config.base_url=... --set judge_config.model=...`):
# the trained policy against the base SmolLM2 on the held-out prompts, per-objective rubrics beside the reward
# models and the judge's weight response; the key from the optional Secret pro-judge (docs/evaluation.md).
JUDGE_SECRET = "pro-judge"  # key `api-key`, mounted where pro_lib.judge reads it (SECRET_KEY_FILE)
JUDGE_SECRET_DIR = posixpath.dirname(SECRET_KEY_FILE)
DEFAULT_JUDGE = {"reference": "smollm2", "modes": ["pairwise", "single", "objectives"], "weight_response": True,
                 "max_prompts": 16, "max_new_tokens": 64}


def make_pipeline(online_rounds: int = DEFAULT_ONLINE_ROUNDS):
    """The pro_wic pipeline with ``online_rounds`` sampling + SFT rounds."""
    if online_rounds < 0:
        raise ValueError(f"online_rounds must be >= 0, got {online_rounds}")

    @dsl.pipeline(name=PIPELINE_NAME,
                  description=f"PRO-WIC: orchestrator pipeline, offline SFT with weights in context, "
                              f"{online_rounds} online rejection-sampling rounds, Pareto evaluation, policy registry")
    @pipeline_parameters(stage_config("wic_offline_config", "wic_offline_sft", DEFAULT_WIC_OFFLINE),
                         stage_config("wic_sample_config", "wic_online_sample", DEFAULT_WIC_SAMPLE),
                         stage_config("wic_online_config", "wic_online_sft", DEFAULT_WIC_ONLINE),
                         stage_config("wic_eval_config", "wic_evaluate", DEFAULT_WIC_EVAL),
                         ("judge", bool, False), stage_config("judge_config", "judge_evaluate", DEFAULT_JUDGE),
                         score_config=DEFAULT_WIC_SCORE, placement=PLACE)
    def pro_wic_pipeline(params: dict):
        """``wic_*_config``: the pro_lib.wic stage configs' keys (`pro wic ... --help`)."""
        promote = params["promote"]
        place = Placement.of(params, PIPELINE_NAME)
        with end_run_on_exit(params, place=place, pipeline=PIPELINE_NAME):
            t = add_orchestrator_stages(params, place=place)

            targets, data = t["targets"].outputs["targets"], t["data"].outputs["data"]
            offline = policy = place(wic_offline_sft(**params.config("wic_offline_config"), data=data, targets=targets,
                                                     num_nodes=params["num_nodes"])
                                     .set_display_name("WIC offline SFT")).outputs["policy"]
            for r in range(1, online_rounds + 1):
                samples = place(wic_online_sample(**params.config("wic_sample_config"), round_index=r, policy=policy,
                                                  orchestrator=t["orchestrator"].outputs["model"], data=data,
                                                  targets=targets)
                                .set_display_name(f"online round {r}: sample + reject"))
                policy = place(wic_online_sft(**params.config("wic_online_config"), policy=policy,
                                              samples=samples.outputs["samples"], offline_policy=offline,
                                              num_nodes=params["num_nodes"])
                               .set_display_name(f"online round {r}: SFT")).outputs["new_policy"]
            ev = place(wic_evaluate(**params.config("wic_eval_config"), policy=policy, data=data, targets=targets)
                       .set_display_name("Pareto evaluation"))
            with dsl.If(params["judge"] == True, name="llm-judge"):  # noqa: E712 (a KFP condition, not a bool)
                judge = place(judge_evaluate(**params.config("judge_config"), policy=policy, data=data, targets=targets)
                              .set_display_name("LLM judge")).after(ev)
                # the key as a file in this task only (never a parameter, never in other pods); optional:
                # a local judge without a key needs no Secret
                kubernetes.use_secret_as_volume(judge, secret_name=JUDGE_SECRET, mount_path=JUDGE_SECRET_DIR,
                                                optional=True)
                kubernetes.add_pod_label(judge, "pro.ai/judge", "true")  # k8s/components/pipeline-judge: egress
            reg = place(register_model(name=policy_model_name("pro-wic"), model=policy,
                                       metrics=ev.outputs["metrics"], gate_metric=GATE_METRIC, gate_mode="max",
                                       **params.registry())
                        .set_display_name("register PRO-WIC policy"))
            place(promote_model(name=policy_model_name("pro-wic"), version=reg.output, enabled=promote,
                                **params.registry())
                  .set_display_name("promote PRO-WIC policy"))
            ep = place(register_endpoint(orchestrator=t["orchestrator"].outputs["model"], policy=policy,
                                         targets=targets,
                                         reward_models=dsl.Collected(t["reward_models"].outputs["model"]),
                                         metrics=ev.outputs["metrics"], gate_metric=GATE_METRIC, **params.registry())
                       .set_display_name("register PRO endpoint")
                       # it references the registered versions of its parts (pro_lib.endpoint_refs): after them
                       .after(t["register"], t["register_reward_models"], reg))
            place(promote_model(name=ENDPOINT_MODEL, version=ep.output, enabled=promote, **params.registry())
                  .set_display_name("promote PRO endpoint"))

    return pro_wic_pipeline


pro_wic_pipeline = make_pipeline()
