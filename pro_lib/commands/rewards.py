"""`pro rewards`: train one Bradley-Terry reward model per objective; score data with the reward suite.

    pro rewards train --data runs/data/train.jsonl --objective helpful --output-dir runs/rm_helpful
    pro rewards score --data runs/data/train.jsonl --objectives helpful=runs/rm_helpful,... --output-dir runs/targets
"""

from __future__ import annotations


def register(subparsers) -> None:
    # config modules only: the parser must build without torch (the functions load when run)
    from pro_lib import rewards, suite
    from pro_lib.commands import add_stage

    p = subparsers.add_parser("rewards", help="train reward models and score data with the reward suite")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def show_rm(cfg, m):
        print(rewards.reward_eval_table([m]))
        print(f"saved to {cfg.output_dir}")

    add_stage(s, "train", rewards.RewardTrainConfig, rewards.train_reward_model,
              "train one Bradley-Terry reward model (trl RewardTrainer)", after=show_rm)
    add_stage(s, "score", suite.ScoreConfig, suite.score_and_target,
              "score preferred responses, fit normalisation stats, write w* targets")
