"""`pro data`: load preference sources, label them and write train/eval splits.

    pro data prepare --sources demo --output-dir runs/data
"""

from __future__ import annotations


def register(subparsers) -> None:
    from pro_lib import data
    from pro_lib.commands import add_stage

    p = subparsers.add_parser("data", help="prepare preference data (load, label, split)")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_stage(s, "prepare", data.DataConfig, data.prepare_data, "load sources and write train/eval splits")
