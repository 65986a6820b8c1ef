"""Components: train one reward model per objective; score preferred responses and build w* targets."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_reward_model(objective: str, config: dict, data: Input[Dataset], model: Output[Model],
                       metrics: Output[Metrics], report: Output[Markdown], defaults: dict = None,
                       experiment: str = "", num_nodes: int = 1):
    """Bradley-Terry reward model for ``objective`` (``name`` or ``name=<source filter>``).

    ``config``: RewardTrainConfig keys. Trains on data/train.jsonl, reports accuracy on data/eval.jsonl.
    Data-parallel over the pod's GPUs; ``num_nodes`` > 1: a Kubeflow Trainer TrainJob (components/trainjob.py).
    """
    from components.reports import reward_report
    from components.runtime import parse_objective_spec, run_stage
    from pro_lib.policy import share_cpu_threads

    share_cpu_threads()  # the one stage inside a ParallelFor: the local runner runs two of them at once
    name, source = parse_objective_spec(objective)
    model.metadata["objective"] = name
    run_stage("train_reward_model", config, defaults=defaults, experiment=experiment, overrides={
        "objective": name, "source": source, "data": [f"{data.path}/train.jsonl"],
        "eval_data": [f"{data.path}/eval.jsonl"], "output_dir": model.path},
        metrics=metrics, report=report, report_fn=reward_report, tags={"pro.objective": name}, num_nodes=num_nodes)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def score_targets(objectives: list, config: dict, data: Input[Dataset], reward_models: Input[List[Model]],
                  targets: Output[Dataset], metrics: Output[Metrics], report: Output[Markdown],
                  defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Score data/train.jsonl's preferred responses with every reward model; write w* targets.

    ``config``: ScoreConfig keys (tau, batch_size, ...). The suite's objective order is ``objectives``.
    """
    from components.reports import targets_report
    from components.runtime import reward_suite_specs, run_stage

    specs = reward_suite_specs(objectives, [m.path for m in reward_models])
    run_stage("score_targets", config, defaults=defaults, experiment=experiment, overrides={
        "data": f"{data.path}/train.jsonl", "objectives": specs, "suite": None, "output_dir": targets.path},
        metrics=metrics, report=report, report_fn=targets_report)
