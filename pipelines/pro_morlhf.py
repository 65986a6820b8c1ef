"""Pipeline `pro_morlhf`: the orchestrator pipeline, then PRO-MORLHF vs the MORLHF baseline.

    <orchestrator stages> -> morlhf_train(weights=orchestrator)  (PRO-MORLHF)
                          -> morlhf_train(weights=uniform)       (MORLHF baseline)
                          -> morlhf_evaluate (held-out rewards per objective, weighted rewards, curves)
                          -> register pro-policy-pro-morlhf / pro-policy-morlhf -> gated promotion

Both RL stages train on the prompts of the prepared split's train.jsonl and the evaluation uses its
eval.jsonl, so every stage sees the same split as the orchestrator. RL sampling is not
deterministic: the two training stages run with caching off.
"""

from kfp import dsl

from components.morlhf import morlhf_evaluate, morlhf_train
from components.registry import promote_model, register_endpoint, register_model
from pipelines.orchestrator import add_orchestrator_stages, end_run_on_exit, pipeline_parameters, stage_config
from pipelines.scheduling import POLICY_PLACEMENT_DEFAULTS as PLACE, Placement
from pro_lib.registry import ENDPOINT_MODEL, policy_model_name

PIPELINE_NAME = "pro-morlhf"
DEFAULT_MORLHF = {"policy": "smollm2", "algorithm": "rloo", "max_steps": 50, "batch_size": 8,
                  "num_generations": 4, "max_completion_length": 48, "beta": 0.05, "learning_rate": 1e-6}
DEFAULT_MORLHF_EVAL = {"max_prompts": 32, "batch_size": 8}


@dsl.pipeline(name=PIPELINE_NAME,
              description="PRO-MORLHF: orchestrator pipeline, then RL with prompt-aware weights vs uniform "
                          "weights (MORLHF), evaluation, policy registry")
@pipeline_parameters(stage_config("morlhf_config", "morlhf_train", DEFAULT_MORLHF),
                     stage_config("morlhf_eval_config", "morlhf_evaluate", DEFAULT_MORLHF_EVAL), placement=PLACE)
def pro_morlhf_pipeline(params: dict):
    """``morlhf_config``: MorlhfTrainConfig keys (`pro morlhf train --help`), shared by both methods."""
    promote = params["promote"]
    place = Placement.of(params, PIPELINE_NAME)
    with end_run_on_exit(params, place=place, pipeline=PIPELINE_NAME):
        t = add_orchestrator_stages(params, place=place)

        targets, data = t["targets"].outputs["targets"], t["data"].outputs["data"]
        pro = place(morlhf_train(**params.config("morlhf_config"), weights="orchestrator", data=data, suite=targets,
                                 orchestrator=t["orchestrator"].outputs["model"], num_nodes=params["num_nodes"])
                   .set_display_name("PRO-MORLHF"))
        base = place(morlhf_train(**params.config("morlhf_config"), weights="uniform", data=data, suite=targets,
                                  num_nodes=params["num_nodes"])
                     .set_display_name("MORLHF (uniform weights)"))
        ev = place(morlhf_evaluate(**params.config("morlhf_eval_config"), data=data, pro_policy=pro.outputs["policy"],
                                   baseline_policy=base.outputs["policy"]).set_display_name("evaluate policies"))
        regs = {}
        for method, task, gate in (("pro-morlhf", pro, "pro-morlhf/weighted_orchestrator"),
                                   ("morlhf", base, "morlhf/weighted_orchestrator")):
            reg = regs[method] = place(register_model(name=policy_model_name(method), model=task.outputs["policy"],
                                       metrics=ev.outputs["metrics"], gate_metric=gate, gate_mode="max",
                                       subdir="policy", **params.registry())
                        .set_display_name(f"register {method} policy"))
            place(promote_model(name=policy_model_name(method), version=reg.output, enabled=promote,
                                **params.registry())
                  .set_display_name(f"promote {method} policy"))
        ep = place(register_endpoint(orchestrator=t["orchestrator"].outputs["model"], policy=pro.outputs["policy"],
                                     policy_subdir="policy", targets=targets,
                                     reward_models=dsl.Collected(t["reward_models"].outputs["model"]),
                                     metrics=ev.outputs["metrics"], gate_metric="pro-morlhf/weighted_orchestrator",
                                     **params.registry())
                   .set_display_name("register PRO endpoint")
                   # it references the registered versions of its parts (pro_lib.endpoint_refs): after them
                   .after(t["register"], t["register_reward_models"], regs["pro-morlhf"]))
        place(promote_model(name=ENDPOINT_MODEL, version=ep.output, enabled=promote, **params.registry())
              .set_display_name("promote PRO endpoint"))
