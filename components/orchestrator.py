"""Components: train and evaluate the Preference Orchestrator."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_orchestrator(config: dict, targets: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
                       report: Output[Markdown], defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Train f(x) on the (prompt, w*) targets. ``config``: OrchestratorTrainConfig keys."""
    from components.reports import orchestrator_train_report
    from components.runtime import run_stage

    run_stage("train_orchestrator", config, defaults=defaults, experiment=experiment,
              overrides={"targets": targets.path, "output_dir": model.path}, metrics=metrics, report=report,
              report_fn=orchestrator_train_report, num_nodes=num_nodes)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate_orchestrator(config: dict, orchestrator: Input[Model], data: Input[Dataset],
                          targets: Input[Dataset], metrics: Output[Metrics], report: Output[Markdown],
                          plot: Output[HTML], defaults: dict = None, experiment: str = "", num_nodes: int = 1):
    """Held-out KL / MSE / argmax agreement vs uniform and best fixed weights (data/eval.jsonl).

    ``config``: OrchestratorEvalConfig keys.
    """
    from components.reports import orchestrator_eval_plot, orchestrator_eval_report
    from components.runtime import run_stage, scratch_dir

    run_stage("evaluate_orchestrator", config, defaults=defaults, experiment=experiment, overrides={
        "orchestrator": orchestrator.path, "data": f"{data.path}/eval.jsonl", "train_targets": targets.path,
        "output_dir": str(scratch_dir("orchestrator-eval"))},
        metrics=metrics, report=report, report_fn=orchestrator_eval_report, html=plot,
        html_fn=orchestrator_eval_plot)
