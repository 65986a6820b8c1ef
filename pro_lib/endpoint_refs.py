"""A ``pro-endpoint`` that references the registered versions it composes instead of holding a copy.

:func:`pro_lib.serving.build_endpoint` takes ``references={part: "models:/<name>/<version>"}``; a part
named there is not copied into the endpoint folder: ``pro_endpoint.json`` records its reference
(``references``) and the digest of the folder the endpoint was built from (``digests``). Parts:
``orchestrator``, ``policy``, ``policies/<name>`` and ``suite/<objective>`` (a reward model; the
endpoint's ``suite/suite.yaml`` then names the reference as that objective's model). Parts not
referenced are copied as before, so a folder built from local models alone still serves offline.

At load (:class:`pro_lib.serving.Endpoint`) each reference is downloaded from the registry the serving
process points at (``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``; :func:`pro_lib.registry.download_model`,
cached under ``$PRO_HOME/models``) and its digest compared with the recorded one: a store recreated at the
same URI, whose version 3 is other weights, is an error rather than a different model served under the
endpoint's version. References name versions, never aliases (an alias moves, and the endpoint's version
would change under it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pro_lib.errors import CheckpointError, ConfigError

REF_TAG_PREFIX = "pro.ref."  # version tags of a referencing endpoint: pro.ref.<part> = models:/<name>/<version>


def is_part(part: str) -> bool:
    head, _, name = part.partition("/")
    return part in ("orchestrator", "policy") or (head in ("policies", "suite") and bool(name) and "/" not in name)


def check_references(references: Mapping[str, str] | None) -> dict[str, str]:
    """``references`` checked: known parts, ``models:/<name>/<version>`` (a version, not an alias)."""
    from pro_lib.registry import parse_ref

    out = {}
    for part, ref in dict(references or {}).items():
        if not is_part(part):
            raise ConfigError(f"endpoint reference for {part!r}: parts are orchestrator, policy, policies/<name> "
                              "and suite/<objective>")
        name, alias, version = parse_ref(ref)
        if version is None:
            raise ConfigError(f"endpoint reference {part}={ref}: name a version (models:/{name}/<version>), not "
                              "an alias: an alias moves, and the endpoint would change under its version")
        out[part] = f"models:/{name}/{version}"
    return out


def resolve(part: str, ref: str, digest: str | None) -> Path:
    """The local folder of a referenced part (downloaded, cached), checked against the recorded digest."""
    from pro_lib.io import digest_path
    from pro_lib.refs import localize

    folder = Path(localize(ref))
    if digest and digest_path(folder) != digest:
        raise CheckpointError(f"the endpoint's {part} is {ref}, but that version now holds other files "
                              f"({digest_path(folder)}, built with {digest}): the registry was changed or "
                              "recreated; rebuild and register the endpoint from the versions you mean")
    return folder


def part_folder(folder: str | Path, meta, part: str) -> Path:
    """``folder/<part>`` when the endpoint holds a copy, else the resolved reference of ``meta`` (its manifest)."""
    local = Path(folder) / part
    ref = (meta.references or {}).get(part)
    if ref is None:
        return local
    return resolve(part, ref, (meta.digests or {}).get(part))


def load_suite(folder: str | Path, meta):
    """The endpoint's reward suite, each referenced reward model resolved (and checked) first."""
    from pro_lib.suite import RewardSuite

    suite = RewardSuite.load(Path(folder) / "suite")
    for obj in suite.objectives:
        part = f"suite/{obj.name}"
        if part in (meta.references or {}):
            obj.model = str(part_folder(folder, meta, part))
    return suite


def version_tags(folder: str | Path) -> dict[str, str]:
    """``pro.ref.<part>`` tags of a referencing endpoint folder (empty for a folder that holds copies)."""
    from pro_lib.artifacts import EndpointManifest

    meta = EndpointManifest.load_optional(folder)
    return {f"{REF_TAG_PREFIX}{part}": ref for part, ref in sorted((meta.references or {}).items())} if meta else {}
