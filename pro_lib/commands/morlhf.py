"""`pro morlhf`: PRO-MORLHF / MORLHF training, evaluation and multi-GPU launch.

    pro morlhf train --weights orchestrator --orchestrator runs/orchestrator --suite runs/targets/suite
    pro morlhf train --weights uniform --suite runs/targets/suite --output-dir runs/morlhf_uniform
    pro morlhf eval --runs runs/morlhf,runs/morlhf_uniform --output-dir runs/morlhf_eval
    pro morlhf launch --zero 2 --num-processes 8 -- --weights orchestrator ...   # DeepSpeed via accelerate
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pro_lib.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def accelerate_config_path(zero: int | None = None, path: str | None = None) -> Path:
    """The shipped ZeRO-2/ZeRO-3 accelerate config (``pro_lib/configs/accelerate/zero{2,3}.yaml``) or ``path``."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--accelerate-config {path} does not exist; pass an `accelerate config` YAML file")
        return p
    p = REPO_CONFIGS / f"zero{zero}.yaml"
    if not p.is_file():
        raise ConfigError(f"{p} not found (it ships inside the pro_lib package); pass --accelerate-config <file>")
    return p


def launch_command(train_args: list[str], *, zero: int = 2, num_processes: int | None = None,
                   accelerate_config: str | None = None, extra_accelerate_args: list[str] | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``pro morlhf train`` on every process."""
    cfg = accelerate_config_path(zero, accelerate_config)
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(cfg)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    cmd += list(extra_accelerate_args or [])
    cmd += ["-m", "pro_lib.cli", "morlhf", "train", *train_args]
    return cmd


def register(subparsers) -> None:
    from pro_lib import morlhf, morlhf_eval
    from pro_lib.commands import add_stage

    p = subparsers.add_parser(
        "morlhf", help="PRO-MORLHF / MORLHF: online RL (trl RLOO or GRPO) on orchestrator-weighted rewards",
        description=(morlhf.__doc__ or "").split("\n\n")[0])
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def show_train(cfg, m):
        from pro_lib.commands import print_metrics

        print_metrics(m)
        print(f"policy saved to {Path(cfg.output_dir) / 'policy'}")

    add_stage(s, "train", morlhf.MorlhfTrainConfig, morlhf.train_morlhf,
              "train a policy (single process; re-run to resume); GPU defaults: configs/morlhf_paper.yaml",
              after=show_train)

    def show_eval(cfg, m):
        from pro_lib.artifacts import EVAL_FILE

        print((Path(cfg.output_dir) / "eval_table.md").read_text().rstrip())
        print(f"curves: {Path(cfg.output_dir) / 'curves.png'}; numbers: {Path(cfg.output_dir) / EVAL_FILE}")

    add_stage(s, "eval", morlhf_eval.MorlhfEvalConfig, morlhf_eval.evaluate_morlhf,
              "held-out reward per objective and weighted reward; training curves (Figure 3)", after=show_eval)

    lp = s.add_parser(
        "launch", help="multi-GPU training: accelerate launch with the shipped DeepSpeed ZeRO-2/3 config",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run `pro morlhf train` on several processes/GPUs through `accelerate launch` and "
                    "DeepSpeed (pro_lib/configs/accelerate/zero2.yaml or zero3.yaml). Everything after `--` goes "
                    "to `pro morlhf train` unchanged. Needs the training extra: pip install 'pro-align[train]'.",
        epilog="example: pro morlhf launch --zero 3 --num-processes 8 -- --config configs/morlhf_hh.yaml")
    lp.add_argument("--zero", type=int, choices=[2, 3], default=2,
                    help="ZeRO stage: 2 shards optimizer state + gradients, 3 also shards the parameters")
    from pro_lib.config import number_type

    lp.add_argument("--num-processes", type=number_type(int, ((1, True), None)), default=None,
                    help="processes (GPUs) to start; default: the config's num_processes")
    lp.add_argument("--accelerate-config", default=None, help="your own `accelerate config` YAML instead")
    lp.add_argument("--cpu", action="store_true",
                    help="CPU smoke test: one process, no mixed precision (DeepSpeed over gloo)")
    lp.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    lp.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then `pro morlhf train` flags")

    def launch(args):
        train_args = list(args.train_args)
        if train_args[:1] == ["--"]:
            train_args = train_args[1:]
        # accelerate's own --cpu flag would switch DeepSpeed off; without a GPU, DeepSpeed runs on CPU (gloo)
        extra = ["--mixed_precision", "no"] if args.cpu else []
        nproc = 1 if args.cpu and args.num_processes is None else args.num_processes
        cmd = launch_command(train_args, zero=args.zero, num_processes=nproc,
                             accelerate_config=args.accelerate_config, extra_accelerate_args=extra)
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            return
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError("DeepSpeed is not installed; pip install 'pro-align[train]' (or use "
                              "`pro morlhf train` for a single process)") from None
        rc = subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if rc:
            sys.exit(rc)

    lp.set_defaults(func=launch)
