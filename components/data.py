"""Component: prepare preference data (pro_lib.data.prepare_data)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare_data(config: dict, data: Output[Dataset], metrics: Output[Metrics], report: Output[Markdown],
                 defaults: dict = None, experiment: str = ""):
    """Load the sources in ``config`` (DataConfig keys), write train.jsonl / eval.jsonl into ``data``."""
    from components.reports import data_report
    from components.runtime import run_stage

    run_stage("prepare_data", config, defaults=defaults, experiment=experiment, overrides={"output_dir": data.path},
              metrics=metrics, report=report, report_fn=data_report)
