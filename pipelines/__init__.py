"""PRO's Kubeflow pipelines, one per file, each compiled to YAML beside it.

- ``orchestrator``: data -> reward models (one per objective, in parallel) -> targets ->
  orchestrator -> evaluation -> register (challenger) -> gated promotion (champion)
- ``pro_wic``: the orchestrator pipeline + WIC offline SFT + online rounds + Pareto evaluation
- ``pro_morlhf``: the orchestrator pipeline + PRO-MORLHF and uniform-weight MORLHF + evaluation

``pro pipeline compile|submit|run --local`` (pipelines/cli.py) drives them.
"""

PIPELINES = {
    "orchestrator": "pipelines.orchestrator:orchestrator_pipeline",
    "pro_wic": "pipelines.pro_wic:pro_wic_pipeline",
    "pro_morlhf": "pipelines.pro_morlhf:pro_morlhf_pipeline",
}


def load_pipeline(name: str, *, online_rounds: int | None = None):
    """The pipeline function registered as ``name`` (see PIPELINES); ``online_rounds`` builds
    pro_wic with that many online rounds."""
    import importlib

    from pro_lib.errors import ConfigError

    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of: {', '.join(PIPELINES)}")
    module, attr = PIPELINES[name].split(":")
    mod = importlib.import_module(module)
    if online_rounds is not None:
        if not hasattr(mod, "make_pipeline"):
            raise ConfigError(f"--online-rounds applies to pro_wic only, not {name}")
        return mod.make_pipeline(online_rounds)
    return getattr(mod, attr)
