"""Components: PRO-MORLHF / MORLHF training and held-out policy evaluation."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def morlhf_train(config: dict, weights: str, data: Input[Dataset], suite: Input[Dataset], policy: Output[Model],
                 metrics: Output[Metrics], orchestrator: Input[Model] = None, defaults: dict = None,
                 experiment: str = "", num_nodes: int = 1):
    """Online RL against sum_k w_k(x) r_k - beta KL.

    ``weights``: ``orchestrator`` (PRO-MORLHF, per-prompt weights from ``orchestrator``), ``uniform``
    (MORLHF baseline) or a fixed vector. ``config``: MorlhfTrainConfig keys. ``data``: the prepared
    split; RL trains on the prompts of its train.jsonl. ``suite``: a targets folder (its ``suite/``)
    or a suite folder. ``policy``: the run folder (policy/ inside).
    """
    from components.runtime import run_stage, suite_dir

    overrides = {"suite": suite_dir(suite.path), "output_dir": policy.path, "weights": weights,
                 "data": [f"{data.path}/train.jsonl"], "split": "all"}
    if orchestrator is not None:
        overrides["orchestrator"] = orchestrator.path
    run_stage("morlhf_train", config, defaults=defaults, experiment=experiment, overrides=overrides,
              metrics=metrics, num_nodes=num_nodes)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def morlhf_evaluate(config: dict, data: Input[Dataset], pro_policy: Input[Model], baseline_policy: Input[Model],
                    metrics: Output[Metrics], report: Output[Markdown], plot: Output[HTML],
                    defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Held-out rewards per objective of PRO-MORLHF vs MORLHF (and the reference policy), curves plot.

    The held-out prompts are the prepared split's eval.jsonl (the orchestrator's held-out prompts too)."""
    from components.reports import morlhf_eval_plot, morlhf_eval_report
    from components.runtime import run_stage, scratch_dir

    run_stage("morlhf_evaluate", config, defaults=defaults, experiment=experiment, overrides={
        "runs": [pro_policy.path, baseline_policy.path], "data": [f"{data.path}/eval.jsonl"], "split": "all",
        "output_dir": str(scratch_dir("morlhf-eval"))},
        metrics=metrics, report=report, report_fn=morlhf_eval_report, html=plot, html_fn=morlhf_eval_plot)
