"""Data-parallel training: what a stage does on each rank (the launcher is :mod:`pro_lib.launcher`).

One code path (``pro_lib.launcher.torchrun_command``) builds the ``torchrun`` command for every way PRO
trains on more than one process:

- **in one pod / one machine**: ``--nproc-per-node`` = the GPUs the pod was given (on a CPU: the
  processes asked for, ``PRO_NPROC_PER_NODE``), ``--standalone``;
- **two "nodes" on one machine** (tests, CI, ``pro pipeline run --local --set num_nodes=2``):
  ``--nnodes 2 --nproc-per-node 1`` with a c10d rendezvous on 127.0.0.1 (gloo), each node an agent
  process started here (:func:`launch`);
- **a Kubeflow Trainer TrainJob** (``num_nodes`` > 1 on a cluster): the trainer container runs
  ``python -m pro_lib.launcher node --spec <uri>``; it reads the ``PET_*`` variables Trainer's
  torch plugin sets (nodes, processes per node, node rank, master address) into a ``LaunchPlan``
  and runs the same ``torchrun_command`` (``components/trainjob.py`` builds the TrainJob).

Every rank runs the stage function unchanged (:func:`run_worker`: the stage's config from a
:class:`StageSpec`). transformers / trl trainers handle DDP themselves (global batch split across
ranks: :func:`per_device_batch`, loss gathered across ranks in their logs); the orchestrator's own
loop uses :class:`torch.nn.parallel.DistributedDataParallel`. Rank 0 alone writes outputs, decides
resumes (:func:`main_first`: its answer, or its error, reaches every rank) and registers; the
others wait at barriers.

Faults: each rank writes ``rank-<r>.pid`` and, when it raises, ``rank-<r>.error.json`` into the
launch's status folder; when a rank exits non-zero the launcher stops the other node agents within
``grace`` seconds and raises :class:`DistributedError` naming the rank (the one that died without
an error file, i.e. killed, before those that only lost their peers) and the stage. Checkpoints are
the stage's own, so re-running the same command resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from pro_lib.errors import ConfigError, ProError

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_DIR_ENV = "PRO_DIST_STATUS_DIR"     # where ranks write rank-<r>.pid / rank-<r>.error.json
STAGE_ENV = "PRO_DIST_STAGE"               # the stage's name, for error messages
TIMEOUT_ENV = "PRO_DIST_TIMEOUT"           # seconds a collective may wait (process group timeout)
NPROC_ENV = "PRO_NPROC_PER_NODE"           # processes per node on a CPU (default 1)
DEFAULT_TIMEOUT = 600
# errors a rank raises only because a peer went away (not the root cause)
PEER_ERRORS = ("connection closed by peer", "connection reset", "broken pipe", "gloo", "nccl", "timed out",
               "socket", "rendezvous", "collective", "connection refused")


class DistributedError(ProError, RuntimeError):
    """A data-parallel job failed: the message names the stage, the failed rank and how to resume."""


# ---------------------------------------------------------------------------------------------
# where am I
# ---------------------------------------------------------------------------------------------
def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def init() -> bool:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPUs); True when distributed.

    The timeout (``PRO_DIST_TIMEOUT`` seconds, default 600) bounds how long a rank waits for a peer
    that died; the launcher normally stops the job much sooner."""
    if not is_distributed():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV,
                                                                                       DEFAULT_TIMEOUT))))
    return True


def barrier() -> None:
    if init():
        import torch.distributed as dist

        dist.barrier()


def main_first(fn: Callable[[], T], *, what: str = "") -> T:
    """Run ``fn`` on rank 0 only and give its result to every rank (pickled). When it raises on rank
    0, every rank raises the same error (instead of the others waiting for a result that never comes).
    Single-process: just ``fn()``."""
    if not init():
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        if is_main():
            raise value
        raise type(value)(*value.args) if isinstance(value, ProError) else DistributedError(
            f"{what or 'rank 0'} failed on rank 0: {value}")
    return value


def reduce_mean(values: Mapping[str, float], weight: float = 1.0) -> dict[str, float]:
    """Weighted mean of scalars across ranks (``weight``: e.g. this rank's examples); identity on one process."""
    if not init():
        return {k: float(v) for k, v in values.items()}
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) * weight for k in keys] + [float(weight)], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def per_device_batch(global_batch: int, *, flag: str = "--batch-size") -> int:
    """The per-process batch of a global batch split over the data-parallel ranks (same global batch,
    so the same hyper-parameters train the same model on 1 or N processes)."""
    n = world_size()
    if global_batch % n:
        raise ConfigError(f"{flag} {global_batch} does not split over {n} data-parallel processes; pass a "
                          f"multiple of {n} (e.g. {flag} {max(n, global_batch - global_batch % n)})")
    return global_batch // n


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round robin; all of them on one process)."""
    return list(items[rank()::world_size()])


# ---------------------------------------------------------------------------------------------
# what runs on each rank
# ---------------------------------------------------------------------------------------------
@dataclass
class StageSpec:
    """A stage run on every rank: ``module.function(config_class(**config))``. ``result``: where rank 0
    writes the returned metrics (JSON). ``inputs`` / ``outputs``: config fields holding s3:// URIs that a
    TrainJob node downloads before training / rank 0 uploads after (empty when paths are local)."""

    stage: str
    module: str
    function: str
    config_class: str
    config: dict[str, Any]
    result: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "StageSpec":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def load(self):
        import importlib

        mod = importlib.import_module(self.module)
        return getattr(mod, self.config_class), getattr(mod, self.function)


def _status_dir() -> Path | None:
    d = os.environ.get(STATUS_DIR_ENV)
    return Path(d) if d else None


def _record_start() -> None:
    d = _status_dir()
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank-{rank()}.pid").write_text(json.dumps({"pid": os.getpid(), "rank": rank(),
                                                          "local_rank": local_rank(),
                                                          "host": os.uname().nodename}))


def _record_error(exc: BaseException) -> None:
    d = _status_dir()
    if d is not None:
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank-{rank()}.error.json").write_text(json.dumps(
            {"rank": rank(), "type": type(exc).__name__, "message": str(exc)[:2000], "time": time.time()}))


def _run_guarded(fn: Callable[[], T]) -> T:
    _record_start()
    try:
        out = fn()
        d = _status_dir()
        if d is not None:
            (d / f"rank-{rank()}.done").write_text("ok")
        return out
    except BaseException as exc:
        _record_error(exc)
        raise
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def run_worker(spec: StageSpec) -> dict:
    """One rank of a stage: build the config, run the function (rank 0 writes ``spec.result``)."""
    from pro_lib.config import build_config

    for k, v in spec.env.items():
        os.environ.setdefault(k, str(v))
    os.environ.setdefault(STAGE_ENV, spec.stage)

    def body() -> dict:
        init()
        cls, fn = spec.load()
        cfg = build_config(cls, dict(spec.config), where=f"stage '{spec.stage}' config")
        if spec.mlflow_run_id and is_main():
            import mlflow

            from pro_lib import tracking

            tracking.configure()
            with mlflow.start_run(run_id=spec.mlflow_run_id):
                result = fn(cfg)
        else:
            result = fn(cfg)
        if is_main():
            for key, uri in spec.outputs.items():
                from pro_lib import storage

                storage.upload(getattr(cfg, key), uri)
            if spec.result:
                _write_result(spec.result, result)
        barrier()
        return result

    return _run_guarded(body)


def _write_result(where: str, result: Mapping[str, Any]) -> None:
    text = json.dumps(dict(result), default=_jsonable, sort_keys=True)
    if where.startswith("s3://"):
        from pro_lib import storage

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "result.json"
            p.write_text(text)
            storage.upload(p, where)
    else:
        from pro_lib.io import atomic_write_text

        atomic_write_text(Path(where), text)


def _jsonable(v):
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(v)


# ---------------------------------------------------------------------------------------------
# what the entry points (python -m pro_lib.launcher worker|node) read
# ---------------------------------------------------------------------------------------------
def read_spec(where: str) -> StageSpec:
    if where.startswith("s3://"):
        from pro_lib import storage

        return StageSpec.from_json(storage.download(where, refresh=True).read_text())
    if where.startswith("{"):
        return StageSpec.from_json(where)
    return StageSpec.from_json(Path(where).read_text())
