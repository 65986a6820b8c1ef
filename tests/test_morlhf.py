"""PRO-MORLHF / MORLHF: weighted reward, weight resolution, training, resume, evaluation, CLI.

Everything runs on tiny random Llama policies with a byte-level BPE tokenizer built here, and
in-process reward functions (RewardSuite.from_functions), so each test takes seconds on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.morlhf import (MorlhfTrainConfig, WeightedReward, build_prompt_dataset, last_checkpoint,
                            resolve_weights, train_morlhf)
from pro_lib.morlhf_eval import MorlhfEvalConfig, evaluate_morlhf
from pro_lib.suite import RewardSuite

from helpers.morlhf import (STATS, a_score, length_score, make_orchestrator, make_policy,  # noqa: F401
                            make_suite, make_tokenizer, tiny_cfg)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo_data(tmp_path):
    rows = [{"prompt": f"Human: question number {i} about bread? Assistant:",
             "chosen": " yes", "rejected": " no"} for i in range(40)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the weighted reward -----------------------------------------------------------------------

def test_weighted_reward_combines_per_prompt_weights_by_hand():
    reward = WeightedReward(make_suite())
    logged: dict[str, list] = {}
    out = reward(prompts=["p1", "p2", "p3"], completions=["aaa", "bb", "a"],
                 weights=[[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]],
                 log_metric=lambda k, v: logged.setdefault(k, []).append(v))
    # z_length = (len - 1) / 2, z_a = count("a"):  aaa -> (1, 3); bb -> (0.5, 0); a -> (0, 1)
    assert out == pytest.approx([0.25 * 1 + 0.75 * 3, 1.0 * 0.5, 0.5 * 0 + 0.5 * 1])
    assert logged["objectives/length"] == [pytest.approx((1 + 0.5 + 0) / 3)]
    assert logged["objectives/a"] == [pytest.approx((3 + 0 + 1) / 3)]
    assert logged["weighted_reward"] == [pytest.approx((2.5 + 0.5 + 0.5) / 3)]
    assert logged["weights/length"] == [pytest.approx((0.25 + 1 + 0.5) / 3)]


def test_weighted_reward_accepts_chat_completions_and_named_weights():
    reward = WeightedReward(make_suite())
    out = reward(prompts=[[{"role": "user", "content": "hi"}]],
                 completions=[[{"role": "assistant", "content": "aaa"}]],
                 weights=[{"a": 1.0, "length": 0.0}])
    assert out == pytest.approx([3.0])


def test_missing_weight_column_is_a_clear_error():
    reward = WeightedReward(make_suite())
    with pytest.raises(DataError, match="no 'weights' column.*build_prompt_dataset"):
        reward(prompts=["p"], completions=["a"], source=["x"])


@pytest.mark.parametrize("rows, message", [
    ([[0.2, 0.3, 0.5]], "K mismatch: 'weights' column row 0 has 3 weights but the reward suite has 2"),
    ([[0.5, 0.5], [1.0]], "row 1 has 1 weights"),
    ([[0.7, 0.7]], "sums to 1.4000, not 1"),
    ([[-0.5, 1.5]], "non-negative"),
    ([None], "row 0 has no weights"),
    ([{"helpful": 1.0}], "has objectives"),
])
def test_bad_weight_rows_are_clear_errors(rows, message):
    reward = WeightedReward(make_suite())
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reward(prompts=["p"] * len(rows), completions=["a"] * len(rows), weights=rows)


def test_suite_without_stats_is_refused():
    with pytest.raises(ConfigError, match="no normalisation statistics"):
        WeightedReward(RewardSuite.from_functions({"length": length_score, "a": a_score}))


# -- weight resolution -------------------------------------------------------------------------

def test_fixed_and_uniform_weights_resolve_to_morlhf():
    names = ["length", "a"]
    w, method = resolve_weights("uniform", ["x", "y", "z"], names)
    assert method == "morlhf" and w.shape == (3, 2) and np.allclose(w, 0.5)
    w1, _ = resolve_weights("0.7,0.3", ["x", "y"], names)
    w2, _ = resolve_weights("a=0.3,length=0.7", ["x", "y"], names)
    assert np.allclose(w1, [[0.7, 0.3]] * 2) and np.allclose(w1, w2)
    with pytest.raises(ConfigError, match="3 entries but there are 2 objectives"):
        resolve_weights("0.2,0.3,0.5", ["x"], names)
    with pytest.raises(ConfigError, match="needs --orchestrator"):
        resolve_weights("orchestrator", ["x"], names)


def test_orchestrator_weights_are_per_prompt_and_k_checked():
    names = ["length", "a"]
    orch = make_orchestrator(names)
    prompts = ["Human: bread? Assistant:", "Human: how do I mix flour and water and yeast? Assistant:"]
    w, method = resolve_weights("orchestrator", prompts, names, orchestrator=orch)
    assert method == "pro-morlhf"
    assert np.allclose(w, orch.predict(prompts), atol=1e-6) and np.allclose(w.sum(1), 1)
    assert not np.allclose(w[0], w[1], atol=1e-3)  # prompt-aware
    with pytest.raises(ConfigError, match="K mismatch"):
        resolve_weights("orchestrator", prompts, ["length", "a", "humor"], orchestrator=orch)


def test_shuffled_orchestrator_weights_keep_the_distribution_not_the_prompt():
    """The control for PRO-MORLHF: the same weight rows, permuted across prompts with the seed."""
    names = ["length", "a"]
    orch = make_orchestrator(names)
    prompts = [f"Human: question {i} {'x' * i}? Assistant:" for i in range(12)]
    w, _ = resolve_weights("orchestrator", prompts, names, orchestrator=orch)
    s, method = resolve_weights("orchestrator-shuffled", prompts, names, orchestrator=orch, seed=3)
    assert method == "pro-morlhf-shuffled"
    assert np.allclose(np.sort(s, axis=0), np.sort(w, axis=0))  # same rows
    assert not np.allclose(s, w)  # but not on their own prompts
    s2, _ = resolve_weights("orchestrator-shuffled", prompts, names, orchestrator=orch, seed=3)
    assert np.array_equal(s, s2)  # fixed by the seed
    with pytest.raises(ConfigError, match="orchestrator-shuffled needs --orchestrator"):
        resolve_weights("orchestrator-shuffled", prompts, names)


def test_dataset_carries_weights_column():
    ds = build_prompt_dataset(["p1", "p2"], np.array([0.25, 0.75]), ["length", "a"])
    assert ds.column_names == ["prompt", "weights"] and ds[1]["weights"] == pytest.approx([0.25, 0.75])
    with pytest.raises(DataError, match="3 weights but the reward suite has 2"):
        build_prompt_dataset(["p1"], np.array([[0.2, 0.3, 0.5]]), ["length", "a"])


def test_config_validation_names_the_fix():
    with pytest.raises(ConfigError, match="multiple of --num-generations"):
        MorlhfTrainConfig(batch_size=6, num_generations=4)
    with pytest.raises(ConfigError, match="--num-generations must be >= 2"):
        MorlhfTrainConfig(num_generations=1, batch_size=4)


# -- training ----------------------------------------------------------------------------------

def test_fixed_weights_reproduce_trl_multi_reward_morlhf(tmp_path, demo_data):
    """MORLHF through the weights column == trl's own K reward functions with reward_weights."""
    from trl import RLOOTrainer

    from pro_lib.morlhf import _trainer_args

    cfg = tiny_cfg(tmp_path, demo_data, weights="0.7,0.3", max_steps=3, save_steps=100)
    model_a, tok_a = make_policy()
    m = train_morlhf(cfg, suite=make_suite(), policy=(model_a, tok_a))
    assert m["method"] == "morlhf" and m["steps"] == 3

    # Reference implementation: one trl reward function per normalised objective, fixed reward_weights.
    def z_length(prompts, completions, **kw):
        return [(len(c) - 1.0) / 2.0 for c in completions]

    def z_a(prompts, completions, **kw):
        return [float(c.count("a")) for c in completions]

    prompts = [json.loads(line)["prompt"] for line in (Path(cfg.output_dir) / "prompts.jsonl").read_text().splitlines()]
    ref_cfg = tiny_cfg(tmp_path, demo_data, name="ref", weights="0.7,0.3", max_steps=3, save_steps=100)
    args = _trainer_args(ref_cfg, tmp_path / "ref" / "checkpoints")
    args.reward_weights = [0.7, 0.3]
    model_b, tok_b = make_policy()
    model_b.config._name_or_path = str(Path(cfg.output_dir) / "reference")  # same initial weights (seed 0)
    tok_b.padding_side = "left"
    from datasets import Dataset

    trainer = RLOOTrainer(model=model_b, reward_funcs=[z_length, z_a], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tok_b)
    trainer.train()
    ref_rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r]
    ours = [json.loads(line) for line in (Path(cfg.output_dir) / "train_log.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in ours if "reward" in r] == pytest.approx(ref_rewards, abs=1e-5)
    pa, pb = params(model_a), params(trainer.model)
    assert all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in pa)


def test_pro_morlhf_trains_logs_objectives_and_saves(tmp_path, demo_data):
    names = ["length", "a"]
    orch = make_orchestrator(names)
    cfg = tiny_cfg(tmp_path, demo_data, weights="orchestrator", algorithm="grpo", max_steps=2)
    m = train_morlhf(cfg, suite=make_suite(), orchestrator=orch, policy=make_policy())
    out = Path(cfg.output_dir)
    assert m["method"] == "pro-morlhf" and m["steps"] == 2
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    w = np.array([r["weights"] for r in rows])
    assert np.allclose(w, orch.predict([r["prompt"] for r in rows]), atol=1e-5)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    step = [r for r in log if "reward" in r][0]
    for key in ("objectives/length", "objectives/a", "weighted_reward", "kl"):
        assert key in step, key
    assert step["weighted_reward"] == pytest.approx(step["reward"], abs=1e-5)
    assert (out / "policy" / "config.json").is_file() and (out / "policy" / "tokenizer.json").is_file()
    assert (out / "metrics.json").is_file() and "final_weighted_reward" in m


def test_killed_run_resumes_from_last_checkpoint(tmp_path, demo_data):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    # Uninterrupted reference run.
    full_model, full_tok = make_policy()
    train_morlhf(tiny_cfg(tmp_path, demo_data, name="full"), suite=make_suite(), policy=(full_model, full_tok))

    cfg = tiny_cfg(tmp_path, demo_data, name="killed")
    with pytest.raises(KeyboardInterrupt):
        train_morlhf(cfg, suite=make_suite(), policy=make_policy(), callbacks=[Kill()])
    ckpt = last_checkpoint(Path(cfg.output_dir) / "checkpoints")
    assert ckpt is not None and ckpt.name == "checkpoint-2"
    assert not (Path(cfg.output_dir) / "policy").exists()
    # A half-written later checkpoint (killed while saving) is skipped.
    (Path(cfg.output_dir) / "checkpoints" / "checkpoint-3").mkdir()
    assert last_checkpoint(Path(cfg.output_dir) / "checkpoints").name == "checkpoint-2"

    resumed_model, resumed_tok = make_policy()
    m = train_morlhf(cfg, suite=make_suite(), policy=(resumed_model, resumed_tok))
    assert m["resumed_from_step"] == 2 and m["steps"] == 4
    pa, pb = params(full_model), params(resumed_model)
    assert all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in pa), "resumed run diverged from the full run"

    # Same folder with other settings: refused with the differing field named.
    with pytest.raises(CheckpointError, match="weights: 'uniform' -> '0.5,0.5'"):
        train_morlhf(tiny_cfg(tmp_path, demo_data, name="killed", weights="0.5,0.5", resume="auto"),
                     suite=make_suite(), policy=make_policy())
    # --resume never starts over; the earlier run is moved aside, not deleted.
    m = train_morlhf(tiny_cfg(tmp_path, demo_data, name="killed", weights="0.5,0.5", resume="never"),
                     suite=make_suite(), policy=make_policy())
    assert m["resumed_from_step"] == 0 and m["steps"] == 4
    (kept,) = tmp_path.glob("killed.prev-*")
    assert (kept / "policy" / "config.json").is_file() and (kept / "checkpoints" / "checkpoint-4").is_dir()


# -- evaluation --------------------------------------------------------------------------------

def test_evaluate_compares_runs_and_plots_curves(tmp_path, demo_data):
    names = ["length", "a"]
    orch = make_orchestrator(names)
    pro = tiny_cfg(tmp_path, demo_data, name="pro", weights="orchestrator", max_steps=2)
    base = tiny_cfg(tmp_path, demo_data, name="base", weights="uniform", max_steps=2)
    pro_policy, base_policy = make_policy(), make_policy()
    train_morlhf(pro, suite=make_suite(), orchestrator=orch, policy=pro_policy)
    train_morlhf(base, suite=make_suite(), policy=base_policy)

    ecfg = MorlhfEvalConfig(runs=[pro.output_dir, base.output_dir], output_dir=str(tmp_path / "eval"),
                            max_prompts=6, max_new_tokens=5)
    m = evaluate_morlhf(ecfg, suite=make_suite(), orchestrator=orch,
                        policies={"reference": make_policy(), pro.output_dir: pro_policy,
                                  base.output_dir: base_policy})
    out = tmp_path / "eval"
    report = json.loads((out / "eval.json").read_text())
    assert set(report["results"]) == {"reference", "pro-morlhf", "morlhf"}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for label, row in report["results"].items():
        mine = [s for s in samples if s["policy"] == label]
        assert len(mine) == row["n"] == report["prompts"]["used_prompts"] >= 2
        # Recompute from the saved samples: per-objective means and the uniform-weighted reward.
        z = np.array([[(len(s["response"]) - 1) / 2, s["response"].count("a")] for s in mine])
        assert row["length"] == pytest.approx(z[:, 0].mean(), abs=1e-5)
        assert row["weighted_uniform"] == pytest.approx(z.mean(axis=1).mean(), abs=1e-5)
        w = orch.predict([s["prompt"] for s in mine])
        assert row["weighted_orchestrator"] == pytest.approx((w * z).sum(1).mean(), abs=1e-4)
        # Each sample carries its own weighted rewards (what a repeat-seed summary pairs prompt by prompt).
        assert [s["weighted"]["orchestrator"] for s in mine] == pytest.approx((w * z).sum(1).tolist(), abs=1e-4)
        assert [s["weighted"]["uniform"] for s in mine] == pytest.approx(z.mean(axis=1).tolist(), abs=1e-5)
    assert m["n_prompts"] == row["n"] and "pro-morlhf/weighted_orchestrator" in m
    table = (out / "eval_table.md").read_text()
    assert "| pro-morlhf |" in table and "weighted (orchestrator)" in table
    assert (out / "curves.png").stat().st_size > 5000


# -- CLI ---------------------------------------------------------------------------------------

def test_cli_help_and_launch_dry_run(capsys):
    from pro_lib.cli import main

    with pytest.raises(SystemExit):
        main(["morlhf", "train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--weights", "--beta", "--learning-rate", "--num-generations", "--resume", "--algorithm"):
        assert flag in text
    assert main(["morlhf", "launch", "--zero", "3", "--num-processes", "4", "--dry-run", "--",
                 "--weights", "uniform"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "launch --config_file" in line and "configs/accelerate/zero3.yaml" in line
    assert line.endswith("-m pro_lib.cli morlhf train --weights uniform") and "--num_processes 4" in line


def _saved_suite_and_policy(tmp_path):
    from pro_lib.suite import Objective

    model, tok = make_policy()
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    RewardSuite([Objective(name=n, function=f"helpers.morlhf:{fn}") for n, fn in (("length", "length_score"),
                                                                                   ("a", "a_score"))],
                stats=STATS).save(tmp_path / "suite")
    return tmp_path / "policy", tmp_path / "suite"


@pytest.mark.parametrize("weights, message", [("0.5,abc", "weight for '#2' is not a number: 'abc'"),
                                              ("length=0.5,humor=0.5", "unknown objective 'humor'"),
                                              ("0.2,0.3,0.5", "have 3 entries but there are 2 objectives")])
def test_cli_reports_bad_weights(tmp_path, demo_data, capsys, weights, message):
    """Everything else valid (a saved suite and policy, data): the weights alone are refused, before training."""
    from pro_lib.cli import main

    policy, suite = _saved_suite_and_policy(tmp_path)
    rc = main(["morlhf", "train", "--weights", weights, "--suite", str(suite), "--policy", str(policy),
               "--data", demo_data, "--output-dir", str(tmp_path / "o"), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "weights" in err.lower() and message in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("stage", [2, 3])
def test_shipped_accelerate_configs_are_deepspeed(stage):
    import yaml

    cfg = yaml.safe_load((ROOT / "pro_lib" / "configs" / "accelerate" / f"zero{stage}.yaml").read_text())
    assert cfg["distributed_type"] == "DEEPSPEED" and cfg["deepspeed_config"]["zero_stage"] == stage


def test_cli_train_resume_and_eval_end_to_end(tmp_path, demo_data, capsys):
    """`pro morlhf train` / `eval` from saved artifacts: a suite folder, a policy folder, YAML config."""
    import yaml

    from pro_lib.cli import main

    model, tok = make_policy()
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    suite = RewardSuite([__import__("pro_lib.suite", fromlist=["Objective"]).Objective(
        name=n, function=f"{__name__}:{fn}") for n, fn in (("length", "length_score"), ("a", "a_score"))],
        stats=STATS)
    suite.save(tmp_path / "suite")
    cfg_file = tmp_path / "morlhf.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "policy": str(tmp_path / "policy"), "suite": str(tmp_path / "suite"), "data": [demo_data],
        "max-steps": 2, "save_steps": 1, "num_generations": 2, "batch_size": 4, "max_completion_length": 4,
        "learning_rate": 1e-3, "max_prompts": 8}))
    out = tmp_path / "cli_run"
    argv = ["morlhf", "train", "--config", str(cfg_file), "--weights", "a=0.25,length=0.75",
            "--output-dir", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    # Re-running continues from checkpoint-2 (nothing left to do); asking for more steps is another run
    # (the learning-rate schedule depends on max_steps): refused with the field named.
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from_step"] == 2 and m["steps"] == 2
    capsys.readouterr()
    assert main(argv + ["--max-steps", "3"]) == 2
    assert "max_steps: 2 -> 3" in capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert all(r["weights"] == pytest.approx([0.75, 0.25]) for r in rows)
    capsys.readouterr()
    assert main(["morlhf", "eval", "--runs", str(out), "--output-dir", str(tmp_path / "ev"),
                 "--max-prompts", "3", "--max-new-tokens", "3", "--split", "all"]) == 0
    printed = capsys.readouterr().out
    assert "| reference |" in printed and "| morlhf |" in printed and "weighted (uniform)" in printed
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert "weighted_own" in report["results"]["morlhf"]


def test_reward_models_stay_frozen_and_off_the_optimizer(tmp_path, demo_data):
    """Two reward models with their own tokenizers: scored in inference mode, never optimised."""
    from transformers import BertConfig, BertForSequenceClassification, TrainerCallback

    from pro_lib.suite import Objective

    objectives = []
    for i, (name, vocab) in enumerate((("helpful", 300), ("harmless", 280))):
        tok = make_tokenizer()
        if vocab != 300:  # a different tokenizer for the second model
            from tokenizers import Tokenizer, models, pre_tokenizers, trainers
            from transformers import PreTrainedTokenizerFast

            raw = Tokenizer(models.BPE())
            raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            raw.train_from_iterator(["bread flour water"] * 3, trainers.BpeTrainer(
                vocab_size=vocab, special_tokens=["[PAD]", "[CLS]", "[SEP]"],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
            tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
        torch.manual_seed(i)
        rm = BertForSequenceClassification(BertConfig(
            vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            num_labels=1, pad_token_id=tok.pad_token_id))
        rm.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        objectives.append(Objective(name=name, model=str(tmp_path / name), input_format="concat", max_length=64))
    suite = RewardSuite(objectives, stats={"helpful": (0.0, 1.0), "harmless": (0.0, 1.0)}, device="cpu")

    seen = {}

    class Grab(TrainerCallback):
        def on_train_end(self, args, state, control, optimizer=None, **kw):
            seen["optimized"] = {id(p) for g in optimizer.param_groups for p in g["params"]}

    cfg = tiny_cfg(tmp_path, demo_data, weights="0.5,0.5", max_steps=2, save_steps=100)
    train_morlhf(cfg, suite=suite, policy=make_policy(), callbacks=[Grab()])
    for obj in objectives:
        scorer = suite._scorer(obj)
        rm = scorer.model
        assert not rm.training and not any(p.requires_grad for p in rm.parameters())
        assert not seen["optimized"] & {id(p) for p in rm.parameters()}
        fresh = BertForSequenceClassification.from_pretrained(obj.model)
        assert all(torch.equal(a, b) for a, b in zip(rm.state_dict().values(), fresh.state_dict().values()))
    assert len(seen["optimized"]) > 0
