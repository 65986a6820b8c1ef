"""The launcher: THE torchrun command of PRO and the process that watches its node agents.

:func:`torchrun_command` builds the command for in-pod data parallelism (``--nproc-per-node`` = the
pod's GPUs), for local "nodes" (``--nnodes 2`` with a c10d rendezvous on 127.0.0.1: tests, CI,
``pro pipeline run --local --set num_nodes=2``) and for a Kubeflow Trainer TrainJob's nodes
(:func:`node_main`, which reads the ``PET_*`` variables Trainer sets into a :class:`LaunchPlan`).
:func:`launch` starts the agents, copies their output, stops them all when one fails and raises
:class:`~pro_lib.distributed.DistributedError` naming the rank and the stage. What each rank runs
is in :mod:`pro_lib.distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from pro_lib.distributed import (NPROC_ENV, PEER_ERRORS, STAGE_ENV, STATUS_DIR_ENV, DistributedError, StageSpec,
                                 read_spec, run_worker)
from pro_lib.errors import ConfigError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the launch plan and the one torchrun command
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchPlan:
    """How many nodes and processes per node, and where they rendezvous."""

    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int | None = None        # None: the c10d rendezvous assigns it
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    rdzv_id: str = "pro"

    def __post_init__(self) -> None:
        if self.nnodes < 1 or self.nproc_per_node < 1:
            raise ConfigError(f"num_nodes and processes per node must be >= 1, got {self.nnodes} x "
                              f"{self.nproc_per_node}")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @classmethod
    def for_pod(cls, nnodes: int = 1, *, nproc_per_node: int | None = None, port: int | None = None) -> "LaunchPlan":
        """This machine's plan: one process per visible GPU (the GPUs the pod requested), else
        ``PRO_NPROC_PER_NODE`` (default 1) CPU processes; ``nnodes`` local "nodes"."""
        return cls(nnodes=int(nnodes), nproc_per_node=nproc_per_node or default_nproc_per_node(),
                   master_port=port or free_port())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LaunchPlan":
        """The plan Kubeflow Trainer's torch plugin hands each node (``PET_NNODES``, ``PET_NPROC_PER_NODE``,
        ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``)."""
        env = os.environ if env is None else env
        nproc = env.get("PET_NPROC_PER_NODE", "auto")
        return cls(nnodes=int(env.get("PET_NNODES", "1")),
                   nproc_per_node=default_nproc_per_node() if nproc in ("auto", "gpu", "cpu", "") else int(nproc),
                   node_rank=int(env["PET_NODE_RANK"]) if env.get("PET_NODE_RANK") else None,
                   master_addr=env.get("PET_MASTER_ADDR", "127.0.0.1"),
                   master_port=int(env.get("PET_MASTER_PORT", "29400")),
                   rdzv_id=env.get("PRO_RDZV_ID", "pro"))


def default_nproc_per_node() -> int:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return max(1, int(os.environ.get(NPROC_ENV, "1")))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(plan: LaunchPlan, entry: Sequence[str], *, python: str | None = None) -> list[str]:
    """THE torchrun command line of PRO (in-pod data parallelism, local "nodes", TrainJob nodes).

    ``entry``: the module and its arguments run on every rank (``["pro_lib.launcher", "worker", ...]``).
    One node: ``--standalone``. Several: a c10d rendezvous at ``master_addr:master_port``; with
    ``node_rank`` set (Kubeflow Trainer) the node ranks are fixed, else the rendezvous assigns them.
    No restarts: a failed rank fails the job, which is resumed by re-running it (checkpoints)."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run",
           "--nnodes", str(plan.nnodes), "--nproc-per-node", str(plan.nproc_per_node),
           "--max-restarts", "0", "--monitor-interval", "0.5"]
    if plan.nnodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{plan.master_addr}:{plan.master_port}",
                "--rdzv-id", plan.rdzv_id, "--rdzv-conf", "join_timeout=120"]
        if plan.node_rank is not None:
            cmd += ["--node-rank", str(plan.node_rank)]
    return [*cmd, "-m", *entry]


# ---------------------------------------------------------------------------------------------
# the launcher: start the node agents, watch them, stop them all when one fails
# ---------------------------------------------------------------------------------------------
@dataclass
class LaunchResult:
    returncode: int
    failed_rank: int | None = None
    reason: str = ""
    seconds: float = 0.0


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def diagnose(status_dir: Path, world: int, stage: str) -> tuple[int | None, str]:
    """Which rank caused a failure and why, from the ranks' status files: a rank that started and
    left no error file died from outside (killed, out of memory); else the first error that is not
    only a lost peer; else the first error."""
    started = {int(p.name.split("-")[1].split(".")[0]) for p in status_dir.glob("rank-*.pid")}
    errors = {}
    for p in status_dir.glob("rank-*.error.json"):
        try:
            e = json.loads(p.read_text())
            errors[int(e["rank"])] = e
        except (ValueError, KeyError):
            continue
    silent = sorted(r for r in started if r not in errors)
    done = {int(p.name.split("-")[1].split(".")[0]) for p in status_dir.glob("rank-*.done")}
    silent = [r for r in silent if r not in done]
    if errors and not silent:
        own = [e for e in errors.values() if not any(s in e["message"].lower() for s in PEER_ERRORS)]
        first = min(own or errors.values(), key=lambda e: e.get("time", 0.0))
        return int(first["rank"]), f"raised {first['type']}: {first['message']}"
    if silent:
        return silent[0], "died without an error (killed by a signal or out of memory)"
    missing = sorted(set(range(world)) - started)
    if missing:
        return missing[0], "never started (rendezvous or start-up failed)"
    return None, "failed"


def launch(plan: LaunchPlan, entry: Sequence[str], *, stage: str, local_nodes: bool | None = None,
           status_dir: str | Path | None = None, env: Mapping[str, str] | None = None,
           grace: float = 15.0, timeout: float | None = None, stream=None, check: bool = True) -> LaunchResult:
    """Run ``entry`` on every rank of ``plan`` through :func:`torchrun_command`.

    ``local_nodes`` (default: when ``plan.nnodes > 1`` and no node rank is fixed): start every node's
    agent here (the 2-"node" run on 127.0.0.1); else start this node's agent only (a TrainJob pod).
    When an agent fails, the others are stopped after ``grace`` seconds (SIGTERM, then SIGKILL), so a
    dead rank fails the job in bounded time. ``check``: raise :class:`DistributedError` on failure,
    naming the rank and the stage."""
    status = Path(status_dir) if status_dir else Path(tempfile.mkdtemp(prefix="pro-dist-"))
    status.mkdir(parents=True, exist_ok=True)
    for old in list(status.glob("rank-*")):
        old.unlink()
    if local_nodes is None:
        local_nodes = plan.nnodes > 1 and plan.node_rank is None
    n_agents = plan.nnodes if local_nodes else 1
    run_env = {**os.environ, **dict(env or {}), STATUS_DIR_ENV: str(status), STAGE_ENV: stage,
               "PYTHONUNBUFFERED": "1"}
    run_env.setdefault("OMP_NUM_THREADS", run_env.get("OMP_NUM_THREADS", "1"))
    cmd = torchrun_command(plan, entry)
    out = stream if stream is not None else sys.stdout
    log.info("%s: %d node(s) x %d process(es): %s", stage, plan.nnodes, plan.nproc_per_node, " ".join(cmd))
    t0 = time.time()
    procs: list[subprocess.Popen] = []
    pumps = []
    lock = threading.Lock()

    def pump(i: int, p: subprocess.Popen) -> None:
        prefix = f"[node {i}] " if n_agents > 1 else ""
        for line in p.stdout:
            with lock:
                out.write(prefix + line)
                out.flush()

    for i in range(n_agents):
        p = subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        procs.append(p)
        t = threading.Thread(target=pump, args=(i, p), daemon=True)
        t.start()
        pumps.append(t)

    failed_at = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.time()
            if failed_at is not None and time.time() - failed_at > grace:
                _stop(procs)
            if timeout is not None and time.time() - t0 > timeout:
                _stop(procs)
                failed_at = failed_at or time.time()
            time.sleep(0.2)
    except BaseException:
        _stop(procs)
        raise
    for t in pumps:
        t.join(timeout=5)
    codes = [p.returncode for p in procs]
    seconds = time.time() - t0
    rc = next((c for c in codes if c != 0), 0)
    if rc == 0:
        return LaunchResult(0, seconds=seconds)
    failed, why = diagnose(status, plan.world_size, stage)
    where = f"rank {failed} of {plan.world_size}" if failed is not None else f"one of {plan.world_size} ranks"
    if failed is not None:
        where += f" (node {failed // plan.nproc_per_node}, local rank {failed % plan.nproc_per_node})"
    reason = (f"stage '{stage}' failed after {seconds:.0f} s: {where} {why}; every rank was stopped "
              f"(agents: {', '.join(_signal_name(c) if c else 'ok' for c in codes)}). Re-run the same command "
              "to resume from the stage's last checkpoint (--resume auto).")
    if check:
        raise DistributedError(reason)
    return LaunchResult(rc, failed, reason, seconds)


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while time.time() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)


def run_stage_distributed(spec: StageSpec, plan: LaunchPlan, *, work_dir: str | Path | None = None,
                          **launch_kwargs) -> dict:
    """Run a stage on every rank of ``plan`` (here: local processes / local nodes) and return rank 0's
    metrics. One process: the function runs in this process, no torchrun."""
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"pro-{spec.stage}-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = dataclasses.replace(spec, result=str(work / "result.json"))
    spec_file = work / "spec.json"
    spec_file.write_text(spec.to_json())
    launch(plan, ["pro_lib.launcher", "worker", "--spec", str(spec_file)], stage=spec.stage,
           status_dir=work / "status", **launch_kwargs)
    return json.loads(Path(spec.result).read_text())


def localize_inputs(spec: StageSpec) -> StageSpec:
    """A TrainJob node: download the spec's s3:// inputs once (before its ranks start) and point the
    config at the local copies; outputs get a local folder that rank 0 uploads after training."""
    from pro_lib import storage

    config = dict(spec.config)
    for key, uri in spec.inputs.items():
        if isinstance(uri, list):
            config[key] = [str(storage.download(u)) if str(u).startswith("s3://") else u for u in uri]
        else:
            config[key] = str(storage.download(uri)) if str(uri).startswith("s3://") else uri
    for key in spec.outputs:
        config[key] = tempfile.mkdtemp(prefix=f"pro-{key}-")
    return dataclasses.replace(spec, config=config)


def node_main(spec_where: str, *, plan: LaunchPlan | None = None) -> int:
    """One node of a TrainJob: fetch the stage spec and inputs, run torchrun with this node's share of
    the plan (from ``PET_*``), exit non-zero naming the rank when a rank fails."""
    from pro_lib.io import pro_home

    spec = localize_inputs(read_spec(spec_where))
    plan = plan or LaunchPlan.from_env()
    work = Path(tempfile.mkdtemp(prefix="pro-node-", dir=str(pro_home()) if pro_home().exists() else None))
    local_spec = work / "spec.json"
    local_spec.write_text(spec.to_json())
    res = launch(plan, ["pro_lib.launcher", "worker", "--spec", str(local_spec)], stage=spec.stage,
                 status_dir=work / "status", local_nodes=False, check=False)
    if res.returncode:
        print(f"PRO_FAILURE {res.reason}", flush=True)
    return res.returncode


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m pro_lib.launcher",
                                 description="PRO's data-parallel entry points (see the module's docstring)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="one rank of a stage (started by torchrun)")
    w.add_argument("--spec", required=True, help="StageSpec JSON file, s3:// URI or inline JSON")
    n = sub.add_parser("node", help="one node of a TrainJob: torchrun over this node's processes")
    n.add_argument("--spec", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "worker":
        run_worker(read_spec(a.spec))
        return 0
    return node_main(a.spec)


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in the tests
    logging.basicConfig(level=os.environ.get("PRO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
