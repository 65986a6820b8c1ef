"""Component: the pipeline's exit handler, which ends its MLflow parent run whatever the outcome."""

from kfp import dsl

from components import DEFAULT_IMAGE


# One input per parameter of PRO's pipelines (the union; a pipeline passes its own with **params, so
# a parameter missing here fails at compile time). They are separate typed inputs because KFP's
# runners do not all substitute pipeline parameters nested inside one dict input.
@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def finish_pipeline_run(
    status: dsl.PipelineTaskFinalStatus, pipeline: str = "",
    objectives: list = None, data_config: dict = None, reward_config: dict = None, score_config: dict = None,
    orchestrator_config: dict = None, eval_config: dict = None, wic_offline_config: dict = None,
    wic_sample_config: dict = None, wic_online_config: dict = None, wic_eval_config: dict = None,
    morlhf_config: dict = None, morlhf_eval_config: dict = None, judge: bool = None, judge_config: dict = None,
    promote: bool = None, image: str = None,
    gpu_count: int = None, gpu_node_selector: dict = None, gpu_cpu_request: str = None,
    gpu_memory_request: str = None, cpu_request: str = None, memory_request: str = None,
    num_nodes: int = None, experiment: str = None, registered_prefix: str = None,
) -> str:
    """End the parent MLflow run FINISHED (KFP state SUCCEEDED), FAILED or KILLED and record every
    pipeline parameter (defaults included) on it. Runs as ``dsl.ExitHandler``'s exit task."""
    from components.runtime import setup_logging, use_experiment
    from pro_lib import tracking

    setup_logging()
    use_experiment(experiment)
    params = {k: v for k, v in dict(
        objectives=objectives, data_config=data_config, reward_config=reward_config, score_config=score_config,
        orchestrator_config=orchestrator_config, eval_config=eval_config, wic_offline_config=wic_offline_config,
        wic_sample_config=wic_sample_config, wic_online_config=wic_online_config, wic_eval_config=wic_eval_config,
        morlhf_config=morlhf_config, morlhf_eval_config=morlhf_eval_config, promote=promote, image=image,
        gpu_count=gpu_count, gpu_node_selector=gpu_node_selector, gpu_cpu_request=gpu_cpu_request,
        gpu_memory_request=gpu_memory_request, cpu_request=cpu_request, memory_request=memory_request,
        num_nodes=num_nodes, experiment=experiment, registered_prefix=registered_prefix,
    ).items() if v is not None}
    error = getattr(status, "error_message", None) or None
    rid = tracking.finish_pipeline_run(status.state, params, error=error, pipeline=pipeline or None)
    print(f"pipeline {status.pipeline_job_resource_name}: {status.state}; MLflow parent run {rid}")
    return str(status.state)
