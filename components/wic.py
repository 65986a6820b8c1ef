"""Components: PRO-WIC (weights in context) offline SFT, online sampling rounds, online SFT, evaluation.

The stage functions and configs live in pro_lib.wic.offline, pro_lib.wic.rounds and pro_lib.wic.evaluation
(see components.runtime.STAGES).
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def wic_offline_sft(config: dict, data: Input[Dataset], targets: Input[Dataset], policy: Output[Model],
                    metrics: Output[Metrics], defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Offline stage: SFT on data/train.jsonl's preferred responses with their w* in the prompt.

    ``config``: WICOfflineConfig keys (``conditioning: rewards`` gives the RiC offline baseline).
    """
    from components.runtime import run_stage

    run_stage("wic_offline_sft", config, defaults=defaults, experiment=experiment, overrides={
        "data": [f"{data.path}/train.jsonl"], "targets": targets.path, "output_dir": policy.path}, metrics=metrics,
        num_nodes=num_nodes)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def wic_online_sample(config: dict, round_index: int, policy: Input[Model], orchestrator: Input[Model],
                      data: Input[Dataset], targets: Input[Dataset], samples: Output[Dataset],
                      metrics: Output[Metrics], defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Online round: orchestrator weights per prompt, policy samples, reward models score,
    rejection sampling keeps the good ones. Sampling: never cached."""
    from components.runtime import run_stage, suite_dir

    run_stage("wic_online_sample", config, defaults=defaults, experiment=experiment, overrides={
        "policy": policy.path, "orchestrator": orchestrator.path, "suite": suite_dir(targets.path),
        "data": [f"{data.path}/train.jsonl"], "round_index": round_index, "output_dir": samples.path},
        metrics=metrics)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def wic_online_sft(config: dict, policy: Input[Model], samples: Input[Dataset], offline_policy: Input[Model],
                   new_policy: Output[Model], metrics: Output[Metrics], defaults: dict = None, experiment: str = "",
                   num_nodes: int = 1):
    """Online round: SFT the policy on the kept samples (plus ``replay_offline`` of the offline policy's
    SFT examples)."""
    from components.runtime import run_stage

    run_stage("wic_online_sft", config, defaults=defaults, experiment=experiment, overrides={
        "policy": policy.path, "samples": [samples.path], "offline_policy": offline_policy.path,
        "output_dir": new_policy.path}, metrics=metrics, num_nodes=num_nodes)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def wic_evaluate(config: dict, policy: Input[Model], data: Input[Dataset], targets: Input[Dataset],
                 metrics: Output[Metrics], report: Output[Markdown], plot: Output[HTML],
                 defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Pareto evaluation: sweep weight vectors, score generations per objective, fronts + hypervolume."""
    from components.reports import morlhf_eval_report, pareto_plot
    from components.runtime import run_stage, scratch_dir, suite_dir

    run_stage("wic_evaluate", config, defaults=defaults, experiment=experiment, overrides={
        "policy": policy.path, "suite": suite_dir(targets.path), "data": [f"{data.path}/eval.jsonl"],
        "output_dir": str(scratch_dir("wic-eval"))},
        metrics=metrics, report=report, report_fn=morlhf_eval_report, html=plot, html_fn=pareto_plot)
