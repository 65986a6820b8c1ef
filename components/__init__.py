"""PRO's Kubeflow Pipelines v2 components: one lightweight Python component per training stage.

Each component is a thin wrapper: it maps its typed KFP artifacts (Dataset, Model, Metrics,
Markdown, HTML) onto the path fields of the stage's pro_lib config and calls
:func:`components.runtime.run_stage`. Every stage takes its options as one ``config`` dict whose keys
are the stage's CLI flags / YAML keys (``pro <stage> --help``), so no config field is copied here.

All components run in one image, built from ``docker/components.Dockerfile``. ``DEFAULT_IMAGE`` is
only the compile-time default: pipelines set each task's image from their ``image`` parameter
(``PipelineTask.set_container_image``), so a run can pick another image or tag without recompiling.
"""

# This module must stay free of kfp imports: component bodies import components.runtime inside
# the KFP executor, where importing kfp.dsl again would be circular.
import os

from pro_lib import __version__

DEFAULT_IMAGE = os.environ.get("PRO_COMPONENT_IMAGE", f"ghcr.io/pro-align/pro-components:{__version__}")



def all_components() -> dict:
    """Every PRO component by its KFP name (imports kfp; component bodies never import this)."""
    from components.data import prepare_data
    from components.judge import judge_evaluate
    from components.morlhf import morlhf_evaluate, morlhf_train
    from components.orchestrator import evaluate_orchestrator, train_orchestrator
    from components.registry import promote_model, register_endpoint, register_model
    from components.rewards import score_targets, train_reward_model
    from components.tracking import finish_pipeline_run
    from components.wic import wic_evaluate, wic_offline_sft, wic_online_sample, wic_online_sft

    return {c.name: c for c in (prepare_data, train_reward_model, score_targets, train_orchestrator,
                                evaluate_orchestrator, register_model, promote_model, wic_offline_sft,
                                wic_online_sample, wic_online_sft, wic_evaluate, morlhf_train, morlhf_evaluate,
                                register_endpoint, finish_pipeline_run, judge_evaluate)}
