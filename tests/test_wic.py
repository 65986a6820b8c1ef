"""PRO-WIC / RiC on tiny random Llama and GPT-2 policies with in-process reward functions (seconds)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pro_lib import testing, wic
from pro_lib.wic import evaluation as wic_eval, offline as wic_offline, rounds as wic_rounds, sft
from pro_lib.errors import ConfigError, DataError

from helpers.wic import NAMES, StandInOrchestrator, make_suite, write_tiny_pairs  # noqa: F401 (re-exported)


@pytest.fixture
def pairs_file(tmp_path):
    return write_tiny_pairs(tmp_path / "pairs.jsonl", 12)


@pytest.fixture(params=["llama", "gpt2"])
def tiny_policy_dir(request, tmp_path):
    return testing.build_tiny_policy(tmp_path / f"policy-{request.param}", NAMES, family=request.param)


# -- prompts and weights ---------------------------------------------------------------------
def test_format_wic_prompt_fixed_decimals():
    assert wic.format_wic_prompt("Hi", [0.7, 0.3], NAMES) == "Hi <W1> 0.70 <W2> 0.30"
    assert wic.format_wic_prompt("Hi ", np.array([1 / 3, 2 / 3]), NAMES, decimals=3) == "Hi <W1> 0.333 <W2> 0.667"
    with pytest.raises(ConfigError, match="3 weights for 2 objectives"):
        wic.format_wic_prompt("Hi", [0.2, 0.3, 0.5], NAMES)


@pytest.mark.parametrize("spec, expected", [
    ("helpful=0.7,harmless=0.3", [0.7, 0.3]), ("3,1", [0.75, 0.25]), ({"harmless": 2}, [0, 1]),
    ([1, 1], [0.5, 0.5]), (np.array([0.2, 0.2]), [0.5, 0.5])])
def test_parse_user_weights_renormalises(spec, expected):
    assert np.allclose(wic.parse_user_weights(spec, NAMES), expected)


@pytest.mark.parametrize("spec, match", [
    ("helpful=-0.1,harmless=1", "non-negative"), ("0.5,0.3,0.2", "3 entries but there are 2"),
    ("funny=1", "unknown objective 'funny'"), ("0,0", "sum to 0"), ("helpful=x", "not a number"),
    (None, "no weights given")])
def test_parse_user_weights_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as exc:
        wic.parse_user_weights(spec, NAMES)
    if spec is not None:
        assert "helpful=0.50,harmless=0.50" in str(exc.value)  # says what to write


def test_hh_transcript_to_messages():
    msgs = wic.to_messages("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "how are you?"}]
    assert wic.to_messages("plain question") == [{"role": "user", "content": "plain question"}]


def test_ric_mapping():
    # RiC's map_rewards_from_preference(method="linf") on [low, high] = [0, 1]:
    # argmax -> high; others -> min(K * w_k, 1) * (high - low) + low
    assert np.allclose(wic.ric_desired_rewards(np.array([[0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])),
                       [[1, 1], [0.4, 1], [0, 1]])
    # K=3 rows from RiC's evaluation grid: 3 * 0.1 = 0.3; 3 * 0.2 = 0.6; 0.4 >= 1/3 -> 1
    assert np.allclose(wic.ric_desired_rewards(np.array([[0.1, 0.1, 0.8], [0.2, 0.4, 0.4], [0.33, 0.33, 0.33]])),
                       [[0.3, 0.3, 1.0], [0.6, 1.0, 1.0], [1.0, 0.99, 0.99]])
    # l2 (RiC's released evaluation script): w / ||w||_2; (0.6, 0.8) already has norm 1
    assert np.allclose(wic.ric_desired_rewards(np.array([[0.6, 0.8], [1.0, 0.0]]), "l2"), [[0.6, 0.8], [1.0, 0.0]])
    assert np.allclose(wic.ric_desired_rewards(np.array([[0.5, 0.5]]), "l2"), [[0.5 ** 0.5, 0.5 ** 0.5]])
    assert np.allclose(wic.ric_desired_rewards(np.array([[0.3, 0.7]]), "linear"), [[0.3, 0.7]])
    with pytest.raises(ConfigError, match="unknown RiC mapping 'l3'"):
        wic.ric_desired_rewards(np.array([[0.5, 0.5]]), "l3")


def test_ric_mapping_is_recorded_and_overridable(tiny_policy_dir, tmp_path):
    pol = wic.WICPolicy.from_pretrained(tiny_policy_dir, conditioning="rewards", ric_mapping="l2")
    assert np.allclose(pol.tag_values(np.array([[0.6, 0.8]])), [[0.6, 0.8]])
    pol.save_pretrained(tmp_path / "p")
    again = wic.WICPolicy.from_pretrained(tmp_path / "p")
    assert again.ric_mapping == "l2" and again.conditioning == "rewards"
    assert "<W1> 0.60 <W2> 0.80" in again.condition(["hi"], [0.6, 0.8])[0]
    assert "<W1> 0.20 <W2> 1.00" in wic.WICPolicy.from_pretrained(tmp_path / "p", ric_mapping="linf").condition(
        ["hi"], [0.1, 0.9])[0]
    with pytest.raises(ConfigError, match="ric_mapping must be one of"):
        wic.WICPolicy.from_pretrained(tmp_path / "p", ric_mapping="max")


# -- the policy ------------------------------------------------------------------------------
def test_tags_are_single_special_tokens_and_roundtrip(tiny_policy_dir):
    pol = wic.WICPolicy.from_pretrained(tiny_policy_dir)
    assert pol.objectives == NAMES
    for tag in wic.wic_tags(2):
        ids = pol.tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tag in pol.tokenizer.all_special_tokens
    assert pol.model.get_input_embeddings().weight.shape[0] >= len(pol.tokenizer)
    meta = json.loads((tiny_policy_dir / "wic.json").read_text())
    assert meta["objectives"] == NAMES and meta["tags"] == ["<W1>", "<W2>"]


def test_new_tag_rows_do_not_depend_on_the_global_rng(tiny_policy_dir):
    """Two offline runs of the same config once trained different policies (the first step's loss differed):
    the new <Wk> embedding rows came from torch's unseeded global state. They are seeded now, and adding
    them leaves the caller's random state as it was."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = []
    for global_seed in (1, 2):
        model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
        tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
        n_before = model.get_input_embeddings().weight.shape[0]
        torch.manual_seed(global_seed)
        state = torch.random.get_rng_state()
        assert wic.add_wic_tokens(model, tok, 4) == 2  # <W3>, <W4>
        assert torch.equal(torch.random.get_rng_state(), state)
        emb = model.get_input_embeddings().weight.detach()
        assert emb.shape[0] == len(tok) > n_before
        rows.append(emb[n_before:].clone())
    assert torch.equal(rows[0], rows[1]) and rows[0].abs().sum() > 0


def test_conditioning_reaches_model_inputs(tiny_policy_dir):
    """The weights (tags + numbers) are in the input_ids the model sees, and differ per weight."""
    pol = wic.WICPolicy.from_pretrained(tiny_policy_dir)
    seen = []
    handle = pol.model.get_input_embeddings().register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    try:
        pol.generate(["can you help me ?"], weights="helpful=0.7,harmless=0.3", max_new_tokens=2)
        first = seen[0][0].tolist()
        seen.clear()
        pol.generate(["can you help me ?"], weights="helpful=0.2,harmless=0.8", max_new_tokens=2)
        second = seen[0][0].tolist()
    finally:
        handle.remove()
    tok = pol.tokenizer
    w1, w2 = tok.convert_tokens_to_ids(["<W1>", "<W2>"])
    assert w1 in first and w2 in first and first.index(w1) < first.index(w2)
    assert tok.convert_tokens_to_ids("0.70") in first and tok.convert_tokens_to_ids("0.80") in second
    assert first != second and len(first) == len(second)


def test_chat_template_wraps_the_conditioned_user_turn(tmp_path):
    path = testing.build_tiny_policy(tmp_path / "p", NAMES)
    pol = wic.WICPolicy.from_pretrained(path)
    pol.tokenizer.chat_template = ("{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"
                                   "{% if add_generation_prompt %}[assistant] {% endif %}")
    pol.use_chat_template = True
    text = pol.condition(["\n\nHuman: hi\n\nAssistant:"], [0.25, 0.75])[0]
    assert text == "[user] hi <W1> 0.25 <W2> 0.75 [assistant] "
    assert pol.render_plain("\n\nHuman: hi\n\nAssistant:") == "[user] hi [assistant] "


def test_system_prompt_sets_the_system_turn_and_travels_with_the_policy(tmp_path):
    """system_prompt='' (the main job) replaces a template's default system turn by an empty one, in the
    conditioned and the plain prompt, and a saved policy keeps it for the later stages; None keeps the
    template's own."""
    path = testing.build_tiny_policy(tmp_path / "p", NAMES)
    pol = wic.WICPolicy.from_pretrained(path, system_prompt="")
    pol.tokenizer.chat_template = ("{% if messages[0].role != 'system' %}[system] default {% endif %}"
                                   "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"
                                   "{% if add_generation_prompt %}[assistant] {% endif %}")
    pol.use_chat_template = True
    assert pol.condition(["hi"], [0.25, 0.75])[0] == "[system]  [user] hi <W1> 0.25 <W2> 0.75 [assistant] "
    assert pol.render_plain("hi") == "[system]  [user] hi [assistant] "
    again = wic.WICPolicy.from_pretrained(pol.save_pretrained(tmp_path / "saved"))
    assert again.system_prompt == "" and again.render_plain("hi") == "[system]  [user] hi [assistant] "
    pol.system_prompt = None
    assert pol.render_plain("hi") == "[system] default [user] hi [assistant] "


def test_generate_weights_default_to_orchestrator(tiny_policy_dir):
    pol = wic.WICPolicy.from_pretrained(tiny_policy_dir)
    with pytest.raises(ConfigError, match="no weights given and no orchestrator"):
        pol.generate(["hi"], max_new_tokens=2)
    orch = StandInOrchestrator()
    a = pol.generate(["can you help me ?", "tell me about harm"], orchestrator=orch, max_new_tokens=3)
    b = pol.generate(["can you help me ?", "tell me about harm"], weights=np.array([[0.8, 0.2], [0.2, 0.8]]),
                     max_new_tokens=3)
    assert orch.calls == 1 and a == b and len(a) == 2
    with pytest.raises(ConfigError, match="K mismatch"):
        pol.generate(["hi"], orchestrator=StandInOrchestrator(["a", "b"]), max_new_tokens=2)
    with pytest.raises(ConfigError, match="3 entries"):
        pol.generate(["hi"], weights=[0.2, 0.3, 0.5], max_new_tokens=2)


def test_stream_matches_generate(tiny_policy_dir):
    pol = wic.WICPolicy.from_pretrained(tiny_policy_dir)
    chunks = list(pol.stream("can you help me ?", [0.5, 0.5], max_new_tokens=5))
    assert "".join(chunks).strip() == pol.generate(["can you help me ?"], weights=[0.5, 0.5], max_new_tokens=5)[0]


def test_not_a_wic_policy(tmp_path):
    from pro_lib.errors import CheckpointError

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        wic.WICPolicy.from_pretrained(tmp_path / "empty")


# -- rejection sampling ----------------------------------------------------------------------
def test_rejection_rules():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, -1.0]])
    w = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    groups = np.array([0, 0, 1, 1])
    opts = wic_rounds.WICSampleConfig(quantile=0.5, quantile_rule="weighted")
    assert wic_rounds.rejection_mask(z, w, groups, opts).tolist() == [True, False, True, False]
    opts = wic_rounds.WICSampleConfig(quantile=0.7, quantile_rule="any")
    assert wic_rounds.rejection_mask(z, w, groups, opts).tolist() == [True, True, False, False]
    opts = wic_rounds.WICSampleConfig(quantile=0.5, quantile_rule="all")
    assert wic_rounds.rejection_mask(z, w, groups, opts).tolist() == [False, False, True, False]
    opts = wic_rounds.WICSampleConfig(rejection="topk", top_k=1)
    assert wic_rounds.rejection_mask(z, w, groups, opts).tolist() == [True, False, True, False]
    assert wic_rounds.rejection_mask(z, w, groups, wic_rounds.WICSampleConfig(rejection="none")).all()
    # fixed bars (the offline data's quantiles): acceptance depends on the samples, not on the batch
    bars = np.array([0.6, 0.6])
    opts = wic_rounds.WICSampleConfig(quantile_rule="weighted")
    assert wic_rounds.rejection_mask(z, w, groups, opts, bars).tolist() == [True, False, False, False]
    any_rule = wic_rounds.WICSampleConfig(quantile_rule="any")
    assert wic_rounds.rejection_mask(z, w, groups, any_rule, bars).tolist() == [True, True, False, False]


def test_preference_sources():
    rng = np.random.default_rng(0)
    for src in ("dirichlet", "ric", "uniform"):
        w = wic_rounds.sample_preferences(src, ["a"] * 50, NAMES, rng)
        assert w.shape == (50, 2) and np.allclose(w.sum(axis=1), 1) and (w >= 0).all()
    grid = wic_rounds.sample_preferences("ric", ["a"] * 200, NAMES, rng)
    assert np.allclose(np.round(grid * 10), grid * 10)  # RiC: weights from the 0.1 grid
    w = wic_rounds.sample_preferences("orchestrator", ["help me", "x"], NAMES, rng, orchestrator=StandInOrchestrator())
    assert np.allclose(w, [[0.8, 0.2], [0.2, 0.8]])
    with pytest.raises(ConfigError, match="--orchestrator"):
        wic_rounds.sample_preferences("orchestrator", ["x"], NAMES, rng)


# -- stages ----------------------------------------------------------------------------------
def _sft(**kw):
    return dict(epochs=1.0, batch_size=4, learning_rate=1e-3, max_length=64, save_steps=1000, **kw)


def test_offline_online_eval_pipeline(tmp_path, pairs_file):
    suite = make_suite()
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    # offline (PRO-WIC): w* from the suite, SFT on the chosen responses only
    cfg = wic_offline.WICOfflineConfig(policy=str(base), data=[str(pairs_file)], output_dir=str(tmp_path / "offline"),
                                       tau=0.5, **_sft())
    m = wic_offline.train_wic_offline(cfg, suite=suite)
    assert m["sft_steps"] == 6 and np.isfinite(m["sft_loss_last"]) and m["n_pairs"] == 24
    pol = wic.WICPolicy.from_pretrained(tmp_path / "offline")
    assert pol.conditioning == "weights" and pol.method == "pro-wic"
    assert len(pol.score_percentiles["helpful"]) == 101  # fixed rejection bars for the online stage
    ex = [json.loads(line) for line in (tmp_path / "offline" / "examples.jsonl").read_text().splitlines()]
    helpful_rows = [e for e in ex if "help me" in e["prompt"]]
    assert all(e["weights"][0] > 0.5 for e in helpful_rows)  # w* leans to the objective the response wins
    assert "<W1>" in ex[0]["prompt"] and "<W1>" not in ex[0]["completion"]
    assert not list(tmp_path.glob(".offline.work"))  # scratch removed after the atomic save

    # RiC offline: rewards in context
    ric = wic_offline.WICOfflineConfig(policy=str(base), data=[str(pairs_file)], output_dir=str(tmp_path / "ric"),
                                       conditioning="rewards", method="ric-offline", **_sft())
    wic_offline.train_wic_offline(ric, suite=suite)
    ric_pol = wic.WICPolicy.from_pretrained(tmp_path / "ric")
    assert ric_pol.conditioning == "rewards" and set(ric_pol.reward_range) == set(NAMES)
    assert "<W1> 1.00 <W2> 0.40" in ric_pol.condition(["q"], [0.8, 0.2])[0]

    # online: 2 rounds with the orchestrator, then resume is a no-op
    on = wic_rounds.WICOnlineLoopConfig(policy=str(tmp_path / "offline"), data=[str(pairs_file)], rounds=2,
                                        prompts_per_round=6, samples_per_prompt=3, max_new_tokens=6,
                                        output_dir=str(tmp_path / "online"), preferences="orchestrator",
                                        thresholds="round", **_sft())
    orch = StandInOrchestrator()
    om = wic_rounds.wic_online(on, suite=suite, orchestrator=orch)
    rounds = [json.loads(line) for line in (tmp_path / "online" / "rounds.jsonl").read_text().splitlines()]
    assert om["rounds"] == 2 and len(rounds) == 2
    for r in rounds:
        assert r["samples"] == 18 and 0 < r["kept"] <= 18 and r["acceptance_rate"] == r["kept"] / 18
        assert r["round_seconds"] > 0 and "mean_reward_helpful" in r
    assert (tmp_path / "online" / "policy" / "wic.json").is_file()
    samples = [json.loads(line) for line in (tmp_path / "online" / "round-1" / "samples.jsonl").read_text().splitlines()]
    assert {tuple(np.round(s["weights"], 2)) for s in samples} <= {(0.8, 0.2), (0.2, 0.8)}
    om2 = wic_rounds.wic_online(on, suite=suite, orchestrator=orch)
    assert om2["rounds"] == 2 and orch.calls == 2  # finished rounds are not redone

    # RiC online: random preferences, samples relabelled with achieved rewards
    ron = wic_rounds.WICOnlineLoopConfig(policy=str(tmp_path / "ric"), data=[str(pairs_file)], rounds=1,
                                         prompts_per_round=6, samples_per_prompt=2, max_new_tokens=6,
                                         output_dir=str(tmp_path / "ric_online"), preferences="dirichlet", **_sft())
    assert wic_rounds.wic_online(ron, suite=suite)["rounds"] == 1  # offline bars: may keep nothing, still a round

    # evaluation: two methods, fronts, table with the orchestrator row, hypervolume
    ev = wic_eval.WICEvalConfig(policies=[f"PRO-WIC={tmp_path / 'online' / 'policy'}",
                                          f"RiC={tmp_path / 'ric_online' / 'policy'}"], data=[str(pairs_file)], max_prompts=4, grid_step=0.5, max_new_tokens=4,
                                output_dir=str(tmp_path / "eval"), reference=[-5.0, -5.0])
    em = wic_eval.evaluate_wic(ev, suite=suite, orchestrator=orch)
    out = tmp_path / "eval"
    assert em["hypervolume"] == em["hypervolume_PRO_WIC"] and em["hypervolume_RiC"] >= 0
    table = (out / "eval_table.md").read_text()
    assert "| PRO-WIC | equal |" in table and "| PRO-WIC | orchestrator weights |" in table and "[-5.0, -5.0]" in table
    csv = (out / "pareto.csv").read_text().splitlines()
    assert csv[0].startswith("method,w_helpful,w_harmless,mean_helpful") and len(csv) == 1 + 2 * 3
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "eval.json").read_text())
    assert data["reference"] == [-5.0, -5.0] and len(data["methods"]["RiC"]["points"]) == 3
    boot = data["bootstrap"]
    assert boot["paired"] and set(boot["hypervolume_ci"]) == {"PRO-WIC", "RiC"}
    assert len(data["methods"]["PRO-WIC"]["weight_response"]) == 2 and "PRO_WIC_weight_response_helpful" in em
    assert "paired bootstrap over prompts" in table and "weight response harmless" in table
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 * (3 + 1)  # 2 methods x 4 prompts x (3 grid points + orchestrator weights)


def test_sampling_round_and_online_sft_stages(tmp_path, pairs_file):
    """The two halves the KFP components call: sample_online_round -> train_wic_online."""
    suite = make_suite()
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    sc = wic_rounds.WICSampleConfig(policy=str(base), data=[str(pairs_file)], prompts_per_round=4,
                                    samples_per_prompt=2, max_new_tokens=4, preferences="ric", rejection="topk",
                                    output_dir=str(tmp_path / "s1"))
    m = wic_rounds.sample_online_round(sc, suite=suite)
    assert m["samples"] == 8 and m["kept"] == 4 and m["acceptance_rate"] == 0.5
    with pytest.raises(ConfigError, match="--thresholds round"):  # no offline score distribution recorded
        wic_rounds.sample_online_round(dataclasses.replace(sc, rejection="quantile", output_dir=str(tmp_path / "s0")),
                                       suite=suite)
    kept = (tmp_path / "s1" / "kept.jsonl").read_text().splitlines()
    assert len(kept) == 4
    oc = wic_rounds.WICOnlineConfig(policy=str(base), samples=[str(tmp_path / "s1")], output_dir=str(tmp_path / "p1"),
                                    **_sft())
    om = wic_rounds.train_wic_online(oc)
    assert om["sft_examples"] <= 4 and (tmp_path / "p1" / "wic.json").is_file()
    with pytest.raises(DataError, match="no kept samples"):
        wic_rounds.train_wic_online(wic_rounds.WICOnlineConfig(policy=str(base), samples=[str(tmp_path / "nope")],
                                                               output_dir=str(tmp_path / "p2")))


def test_kfp_halves_and_the_loop_run_the_same_round(tmp_path, pairs_file):
    """The online round exists once (issue 12): the two KFP halves (sample_online_round ->
    train_wic_online) and the CLI loop (wic_online) keep the same samples from the same prompts, cut to
    the same --max-prompt-tokens (the sampling half once cut at a hard-coded 256), and train the same policy
    (the SFT half once used seed --seed where the loop uses seed + round)."""
    from safetensors.torch import load_file

    suite = make_suite()
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    sampling = dict(policy=str(base), data=[str(pairs_file)], prompts_per_round=4, samples_per_prompt=2,
                    max_new_tokens=4, preferences="dirichlet", rejection="topk", max_prompt_tokens=4, seed=3)
    sft_kw = {**_sft(), "batch_size": 1}  # 4 steps: the order of the kept samples (the SFT seed) matters
    wic_rounds.wic_online(wic_rounds.WICOnlineLoopConfig(**sampling, **sft_kw, rounds=1,
                                                         output_dir=str(tmp_path / "loop")), suite=suite)
    wic_rounds.sample_online_round(wic_rounds.WICSampleConfig(**sampling, round_index=1,
                                                              output_dir=str(tmp_path / "sampled")), suite=suite)
    wic_rounds.train_wic_online(wic_rounds.WICOnlineConfig(policy=str(base), samples=[str(tmp_path / "sampled")],
                                                           seed=3, output_dir=str(tmp_path / "kfp"), **sft_kw))

    def samples(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [(r["prompt"], r["response"], r["kept"], tuple(np.round(r["weights"], 6))) for r in rows]

    loop, kfp = samples(tmp_path / "loop" / "round-1" / "samples.jsonl"), samples(tmp_path / "sampled" / "samples.jsonl")
    assert loop == kfp and sum(kept for _, _, kept, _ in kfp) == 4
    tok = wic.WICPolicy.from_pretrained(base).tokenizer
    lengths = [len(tok(prompt, add_special_tokens=False)["input_ids"]) for prompt, *_ in kfp]
    assert max(lengths) <= 4 < len(tok(json.loads(pairs_file.read_text().splitlines()[0])["prompt"])["input_ids"])
    trained = [load_file(d / "model.safetensors") for d in (tmp_path / "loop" / "policy", tmp_path / "kfp")]
    assert trained[0].keys() == trained[1].keys()
    for name, tensor in trained[0].items():
        np.testing.assert_allclose(tensor.numpy(), trained[1][name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    untouched = load_file(base / "model.safetensors")
    assert any(not np.array_equal(untouched[n].numpy(), trained[1][n].numpy()) for n in untouched)  # it trained


def test_offline_tags_follow_the_targets_tau(tmp_path, pairs_file):
    """`--set score_config.tau=0.5` reaches the PRO-WIC tags: the offline stage builds w* with the tau
    the targets were built with (target_report.json), so tags and orchestrator targets agree."""
    from pro_lib.suite import ScoreConfig, score_and_target

    targets = tmp_path / "targets"
    score_and_target(ScoreConfig(data=str(pairs_file), output_dir=str(targets), tau=0.5,
                                 objectives=["helpful=fn:scorers:length_reward", "harmless=fn:scorers:polite_reward"]))
    base = testing.build_tiny_policy(tmp_path / "base", NAMES)
    cfg = wic_offline.WICOfflineConfig(policy=str(base), data=[str(pairs_file)], targets=str(targets),
                                       output_dir=str(tmp_path / "offline"), epochs=0.2, batch_size=24, max_length=64)
    metrics = wic_offline.train_wic_offline(cfg)
    tags = [json.loads(line)["weights"] for line in (tmp_path / "offline" / "examples.jsonl").read_text().splitlines()]
    w_star = [json.loads(line)["weights"] for line in (targets / "targets.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(tags, w_star, atol=1e-6)
    assert metrics["tau"] == 0.5
    from pro_lib.targets import resolve_tau

    # a different explicit tau would make the tags drift from the targets: refused, with the fix
    with pytest.raises(ConfigError, match=r"tau=0.1 differs from tau=0.5.*drop tau"):
        resolve_tau(0.1, targets)
    assert resolve_tau(None, tmp_path) == 0.1 and resolve_tau(0.3, None) == 0.3  # no targets: the flag, else 0.1
    # soft tags (tau 0.5) never hold 1.00: inference writes a corner as the largest tag the policy was trained on
    pol = wic.WICPolicy.from_pretrained(tmp_path / "offline")
    expected = wic_offline.training_tag_max(np.asarray(tags), None, 2)
    assert pol.tag_max == expected < 1.0
    assert f"<W1> {expected:.2f} <W2> {1 - expected:.2f}" in pol.condition(["hi"], [1.0, 0.0])[0]
    # the online round's SFT examples carry the tags their samples were generated with
    from pro_lib.wic.rounds import kept_examples

    ex = kept_examples(pol, [{"prompt": "hi", "response": "ok", "weights": [1.0, 0.0], "kept": True}])
    assert ex[0]["prompt"] == pol.condition(["hi"], [1.0, 0.0])[0]


def test_corner_weights_shrink_into_the_training_tag_range():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    t = wic.shrink_to_tag_range(w, 0.96)
    assert np.allclose(t.sum(axis=1), 1.0) and (t >= 0).all()
    assert np.allclose(t[0], [0.96, 0.02, 0.02]) and np.allclose(t[1], [0.02, 0.02, 0.96])
    assert np.allclose(t[2], 1 / 3)  # the centre stays; the order of every row is kept
    assert np.array_equal(np.argsort(t[3]), np.argsort(w[3]))
    assert np.array_equal(wic.shrink_to_tag_range(w, None), w) and np.array_equal(wic.shrink_to_tag_range(w, 1.0), w)
    # the recorded value: 95th percentile of the training rows' largest tag, rounded like the tags; 1 at corners
    soft = np.array([[0.9, 0.1]] * 19 + [[0.99, 0.01]])
    assert wic_offline.training_tag_max(soft, None, 2) == pytest.approx(0.9045, abs=0.006)
    assert wic_offline.training_tag_max(np.array([[1.0, 0.0], [0.0, 1.0]]), None, 2) == 1.0
    assert wic_offline.training_tag_max(soft, 1.0, 2) == 1.0  # the paper's format, explicitly
    with pytest.raises(ConfigError, match=r"tag_max must be in \(0, 1\]"):
        wic_offline.training_tag_max(soft, 1.5, 2)


def test_offline_k_mismatch(tmp_path, pairs_file):
    base = testing.build_tiny_policy(tmp_path / "base", ["a", "b", "c"])
    pol = wic.WICPolicy.from_pretrained(base)
    cfg = wic_offline.WICOfflineConfig(policy=str(base), data=[str(pairs_file)], output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="K mismatch"):
        wic_offline.train_wic_offline(cfg, suite=make_suite(), policy=pol)


# -- policy references -----------------------------------------------------------------------
def test_load_policy_references(tmp_path):
    from pro_lib.errors import CheckpointError
    from pro_lib.policy import load_policy, resolve_policy

    path = testing.build_tiny_policy(tmp_path / "p", NAMES, family="gpt2")
    model, tok = load_policy(path)
    assert tok.pad_token is not None and model.config.pad_token_id is not None and not model.training
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        resolve_policy(tmp_path / "file.txt")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve_policy(tmp_path / "half")
    with pytest.raises(CheckpointError, match="empty policy reference"):
        resolve_policy(" ")
    assert resolve_policy("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_plain_lm_becomes_wic_policy_with_objectives(tmp_path):
    from pro_lib.errors import CheckpointError

    path = testing.build_tiny_policy(tmp_path / "p", NAMES)
    (path / "wic.json").unlink()
    with pytest.raises(CheckpointError, match="not a WIC policy"):
        wic.WICPolicy.from_pretrained(path)
    pol = wic.WICPolicy.from_pretrained(path, objectives=["a", "b", "c"])
    assert pol.K == 3 and "<W3>" in pol.condition(["q"], [1, 1, 1])[0]


def test_trainable_layers_trains_only_the_top_layers(tmp_path):
    """--trainable-layers 1 on a 2-layer model: SFT moves the top layer and the final norm only; the
    embeddings (tied output head) and the lower layer keep their values; every parameter trains again after."""
    import torch

    path = testing.build_tiny_policy(tmp_path / "p", NAMES, num_layers=2)
    pol = wic.WICPolicy.from_pretrained(path)
    before = {n: p.detach().clone() for n, p in pol.model.named_parameters()}
    examples = [{"prompt": pol.condition(["can you help me ?"], [0.8, 0.2])[0], "completion": "sure , here it is"}] * 8
    opts = sft.SFTOptions(epochs=1.0, batch_size=4, learning_rate=1e-2, trainable_layers=1, save_steps=1000)
    out = sft.sft_train(pol, examples, opts, tmp_path / "work")
    assert out["sft_steps"] == 2
    moved = {n for n, p in pol.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(n.startswith(("model.layers.1.", "model.norm")) for n in moved), sorted(moved)
    assert any(n.startswith("model.layers.1.") for n in moved)
    assert all(p.requires_grad for p in pol.model.parameters())
    with pytest.raises(ConfigError, match="has 2 layers"):
        sft.sft_train(pol, examples, dataclasses.replace(opts, trainable_layers=3), tmp_path / "w2")
    with pytest.raises(ConfigError, match="pass one of them"):
        sft.sft_train(pol, examples, dataclasses.replace(opts, lora_r=4), tmp_path / "w3")
