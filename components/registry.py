"""Components: register a model version (alias challenger), the pro-endpoint, gated promotion to champion."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register_model(name: str, model: Input[Model], metrics: Input[Metrics], objective: str = "",
                   gate_metric: str = "", gate_mode: str = "", subdir: str = "", name_prefix: str = "",
                   experiment: str = "") -> str:
    """Register ``model`` (or its ``subdir``) as a new version of ``name_prefix + name`` (``{objective}``
    is filled in) with the numbers of ``metrics``. Returns the version, which gets the alias ``challenger``.
    """
    import os

    from components.runtime import register_stage

    return register_stage(name, os.path.join(model.path, subdir) if subdir else model.path, metrics,
                          objective=objective, gate_metric=gate_metric, gate_mode=gate_mode, name_prefix=name_prefix,
                          experiment=experiment)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register_endpoint(orchestrator: Input[Model], policy: Input[Model], targets: Input[Dataset],
                      reward_models: Input[List[Model]], metrics: Input[Metrics], policy_subdir: str = "",
                      gate_metric: str = "", gate_mode: str = "max", name: str = "pro-endpoint",
                      name_prefix: str = "", experiment: str = "") -> str:
    """Bundle orchestrator + policy (its ``policy_subdir``) + the reward suite of ``targets`` (with a copy
    of each reward model) into one pyfunc model and register it as ``name`` (alias challenger).
    Serve it with ``mlflow models serve -m models:/pro-endpoint@champion``."""
    import os

    from components.runtime import register_endpoint_stage

    return register_endpoint_stage(
        name, orchestrator.path, os.path.join(policy.path, policy_subdir) if policy_subdir else policy.path,
        targets.path, [m.path for m in reward_models], metrics, gate_metric=gate_metric, gate_mode=gate_mode,
        name_prefix=name_prefix, experiment=experiment)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def promote_model(name: str, version: str, objective: str = "", enabled: bool = True, force: bool = False,
                  reason: str = "", name_prefix: str = "", experiment: str = "") -> str:
    """Move ``champion`` to ``version`` only if it beats the champion on the gate metric.

    A refused promotion is not a failure: nothing changes and the reason is returned and logged.
    ``enabled=False`` skips promotion (the version stays challenger). ``name_prefix``: as register_model's.
    """
    from components.runtime import promote_stage

    if not enabled:
        print(f"promotion of {name} version {version} skipped (promote=False)")
        return "skipped"
    return promote_stage(name, version, objective=objective, force=force, reason=reason, name_prefix=name_prefix,
                         experiment=experiment)
