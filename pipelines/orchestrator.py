"""Pipeline `orchestrator`: reward models -> targets -> Preference Orchestrator -> eval -> register.

    prepare_data
      -> train_reward_model  (one per objective, in parallel; each registered as
                              pro-reward-<objective> and promoted when it beats the champion)
      -> score_targets       (all reward models; w* = softmax(z / tau))
      -> train_orchestrator -> evaluate_orchestrator
      -> register_model pro-orchestrator (alias challenger) -> promote_model (gated: champion)

Defaults run the shipped demo data on the bundled all-MiniLM-L6-v2 with small epochs, so
``pro pipeline run --local orchestrator`` finishes in minutes on 2 CPU cores. On a cluster, pass
bigger settings in the ``*_config`` dicts (keys = the stage's CLI flags, e.g. ``pro rewards train --help``).
"""

import inspect
from typing import Callable

from kfp import dsl

from components.data import prepare_data
from components.orchestrator import evaluate_orchestrator, train_orchestrator
from components.registry import promote_model, register_model
from components.rewards import score_targets, train_reward_model
from components.tracking import finish_pipeline_run
from pipelines.scheduling import PLACEMENT_DEFAULTS as PLACE, Placement
from pro_lib.registry import ORCHESTRATOR_MODEL, reward_model_name

PIPELINE_NAME = "pro-orchestrator"  # the KFP pipeline's name, not a registered model

DEFAULT_OBJECTIVES = ["helpful", "harmless", "humor"]
DEFAULT_DATA = {"sources": ["demo"], "eval_fraction": 0.2, "seed": 0}
DEFAULT_REWARD = {"base_model": "minilm", "epochs": 2.0, "batch_size": 16, "max_length": 128,
                  "learning_rate": 5e-5, "progress": False}
DEFAULT_SCORE = {"tau": 0.1, "batch_size": 32, "max_length": 128}
DEFAULT_ORCHESTRATOR = {"backbone": "minilm", "epochs": 3.0, "batch_size": 16, "max_length": 128,
                        "learning_rate": 5e-5, "progress": False}
DEFAULT_EVAL = {"batch_size": 32, "progress": False}
# the parameters of the orchestrator stages, which every pipeline starts with
ORCHESTRATOR_PARAMS = ("objectives", "data_config", "reward_config", "score_config", "orchestrator_config",
                       "eval_config", "promote")


class PipelineParams(dict):
    """A pipeline body's arguments by name (pipeline channels while KFP builds the graph), and
    ``defaults``: each parameter's default, the one definition in ``pipelines/*.py``."""

    def __init__(self, arguments: dict, defaults: dict):
        super().__init__(arguments)
        self.defaults = defaults

    def config(self, name: str) -> dict:
        """A stage-config parameter as a component's ``config`` and ``defaults`` inputs: KFP hands the
        component the submitted dict verbatim (a partial ``{"epochs": 1}`` from --params-file, the KFP UI
        or kfp.Client), and the component merges it over these defaults, which the compiled pipeline
        carries as a constant (components.runtime.merge_stage_config)."""
        return {"config": self[name], "defaults": self.defaults[name], "experiment": self["experiment"]}

    def registry(self) -> dict:
        """The per-run names of a registry task (register_model, register_endpoint, promote_model):
        ``registered_prefix`` before every registered name, and the MLflow ``experiment``."""
        return {"name_prefix": self["registered_prefix"], "experiment": self["experiment"]}


def stage_config(name: str, stage: str, default: dict) -> tuple[str, type, dict, str]:
    """A dict pipeline parameter that is ``stage``'s config (its keys: the stage's CLI flags, checked
    against its config class before a run: pipelines.params.check_stage_configs)."""
    return (name, dict, default, stage)


def pipeline_parameters(*stage_params: tuple, score_config: dict = DEFAULT_SCORE,
                        placement: dict = PLACE) -> Callable:
    """Decorator: give a pipeline body ``body(params: dict)`` the signature KFP builds the pipeline's
    inputs from, in one place for every pipeline: the orchestrator stages' parameters, then
    ``stage_params`` (``(name, type, default)`` or :func:`stage_config` of the pipeline's own stages), then
    ``promote``,
    ``experiment`` (the MLflow experiment of the run's stages; empty: ``$PRO_EXPERIMENT`` or ``pro``),
    ``registered_prefix`` (before every registered name: ``test-`` keeps a trial run off the production
    names and their aliases) and the
    scheduling parameters (``placement``: their defaults); ``score_config``: a pipeline's own default
    for that stage. KFP 2.17 reads the signature with
    ``inspect.signature`` and calls the function positionally; the body receives every argument by name
    (a :class:`PipelineParams`; stage tasks take ``**params.config("<stage>_config")``). The pipeline
    function's ``stage_configs`` (parameter -> stage) lists its stage-config parameters."""
    spec = [("objectives", list, DEFAULT_OBJECTIVES), stage_config("data_config", "prepare_data", DEFAULT_DATA),
            stage_config("reward_config", "train_reward_model", DEFAULT_REWARD),
            stage_config("score_config", "score_targets", score_config),
            stage_config("orchestrator_config", "train_orchestrator", DEFAULT_ORCHESTRATOR),
            stage_config("eval_config", "evaluate_orchestrator", DEFAULT_EVAL),
            *stage_params, ("promote", bool, True), ("experiment", str, ""), ("registered_prefix", str, ""),
            *((k, type(v), v) for k, v in placement.items())]
    stages = {p[0]: p[3] for p in spec if len(p) == 4}
    spec = [p[:3] for p in spec]
    sig = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
                             for n, t, d in spec])

    def decorate(body: Callable[[dict], None]) -> Callable:
        def pipeline_func(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return body(PipelineParams(bound.arguments, {n: d for n, _, d in spec}))

        pipeline_func.__signature__ = sig
        pipeline_func.stage_configs = stages
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(pipeline_func, attr, getattr(body, attr))
        return pipeline_func

    return decorate


def add_orchestrator_stages(params: dict, *, place: Placement):
    """The orchestrator stages inside a pipeline; returns the tasks later pipelines build on.

    ``params``: the pipeline's parameters (``dict(locals())``), of which the stages read
    :data:`ORCHESTRATOR_PARAMS`. ``place`` puts each task on the GPU or CPU pool, cached or not, as the
    stage table says."""
    objectives, promote = params["objectives"], params["promote"]
    data = place(prepare_data(**params.config("data_config")).set_display_name("prepare data"))
    with dsl.ParallelFor(objectives, name="objectives") as objective:
        rm = place(train_reward_model(objective=objective, **params.config("reward_config"), data=data.outputs["data"],
                                      num_nodes=params["num_nodes"])
                   .set_display_name("train reward model"))
        rm_reg = place(register_model(name=reward_model_name("{objective}"), objective=objective,
                                      model=rm.outputs["model"], metrics=rm.outputs["metrics"], **params.registry())
                       .set_display_name("register reward model"))
        place(promote_model(name=reward_model_name("{objective}"), objective=objective, version=rm_reg.output,
                            enabled=promote, **params.registry()).set_display_name("promote reward model"))
    targets = place(score_targets(objectives=objectives, **params.config("score_config"), data=data.outputs["data"],
                                  reward_models=dsl.Collected(rm.outputs["model"]))
                    .set_display_name("score rewards + build targets"))
    orch = place(train_orchestrator(**params.config("orchestrator_config"), targets=targets.outputs["targets"],
                                    num_nodes=params["num_nodes"])
                 .set_display_name("train orchestrator"))
    ev = place(evaluate_orchestrator(**params.config("eval_config"), orchestrator=orch.outputs["model"],
                                     data=data.outputs["data"], targets=targets.outputs["targets"])
               .set_display_name("evaluate orchestrator"))
    reg = place(register_model(name=ORCHESTRATOR_MODEL, model=orch.outputs["model"], metrics=ev.outputs["metrics"],
                               **params.registry())
                .set_display_name("register orchestrator"))
    prom = place(promote_model(name=ORCHESTRATOR_MODEL, version=reg.output, enabled=promote, **params.registry())
                 .set_display_name("promote orchestrator"))
    return {"data": data, "targets": targets, "orchestrator": orch, "evaluation": ev, "register": reg,
            "promote": prom, "reward_models": rm, "register_reward_models": rm_reg}


def end_run_on_exit(params: dict, *, place: Placement, pipeline: str) -> dsl.ExitHandler:
    """``with end_run_on_exit(...):`` around a pipeline's stages: whatever the outcome, the exit task
    ends the MLflow parent run (FINISHED / FAILED) and records every pipeline parameter on it
    (``params``: the pipeline function's arguments, ``dict(locals())`` at its top)."""
    from kfp.dsl import pipeline_channel

    # the pipeline's parameters are its channels (a closure variable such as online_rounds is not)
    params = {k: v for k, v in params.items() if isinstance(v, pipeline_channel.PipelineChannel)}
    task = place(finish_pipeline_run(**params, pipeline=pipeline).set_display_name("end MLflow run"))
    return dsl.ExitHandler(task, name="pipeline")


@dsl.pipeline(name=PIPELINE_NAME,
              description="PRO: reward models -> w* targets -> Preference Orchestrator -> evaluation -> "
                          "MLflow registry (challenger) -> gated promotion (champion)")
@pipeline_parameters()
def orchestrator_pipeline(params: dict):
    """objectives: ``name`` or ``name=<source filter>`` (``name=`` for no filter)."""
    place = Placement.of(params, PIPELINE_NAME)
    with end_run_on_exit(params, place=place, pipeline=PIPELINE_NAME):
        add_orchestrator_stages(params, place=place)
