"""Component: LLM-as-judge evaluation of a pipeline's policy (optional stage, off by default).

The stage function and config live in pro_lib.judge (see components.runtime.STAGES). The judge's API
key never travels as a parameter: the pipeline mounts the optional Secret ``pro-judge`` (key
``api-key``) into this task only, at ``pro_lib.judge.SECRET_KEY_FILE``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def judge_evaluate(config: dict, policy: Input[Model], data: Input[Dataset], targets: Input[Dataset],
                   metrics: Output[Metrics], report: Output[Markdown], defaults: dict = None, experiment: str = ""):
    """The policy against ``config['reference']`` on data/eval.jsonl's prompts, judged by the
    OpenAI-compatible endpoint ``config['base_url']`` / ``config['model']``; per-objective verdicts
    beside the pipeline's reward models. ``config``: JudgeConfig keys (`pro eval judge --help`)."""
    from pathlib import Path

    from components.runtime import run_stage, scratch_dir, suite_dir

    def judge_report(cfg, _result):
        from pro_lib.judge import REPORT_FILE

        return (Path(cfg.output_dir) / REPORT_FILE).read_text()

    run_stage("judge_evaluate", config, defaults=defaults, experiment=experiment, overrides={
        "policy": policy.path, "data": [f"{data.path}/eval.jsonl"], "split": "all", "suite": suite_dir(targets.path),
        "output_dir": str(scratch_dir("judge"))}, metrics=metrics, report=report, report_fn=judge_report)
