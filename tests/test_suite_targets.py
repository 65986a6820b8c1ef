import numpy as np
import pytest

from pro_lib.errors import CheckpointError, ConfigError, DataError
from pro_lib.evaluation import compare_weights, mean_kl
from pro_lib.suite import Objective, RewardSuite, encode_for_reward
from pro_lib.targets import parse_weights, target_weights, validate_weights


def test_target_weights_is_softmax_over_tau():
    z = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 2.0]])
    w = target_weights(z, tau=0.1)
    assert np.allclose(w.sum(1), 1)
    assert np.allclose(w[1], [0.5, 0.5])
    assert np.isclose(w[0, 0], 1 / (1 + np.exp(-10)))
    assert w[2].argmax() == 1
    soft = target_weights(z, tau=10.0)
    assert soft[0, 0] < w[0, 0]  # larger tau -> closer to uniform


def test_target_weights_rejects_nan_and_bad_tau():
    with pytest.raises(ConfigError, match="row 1, objective 0"):
        target_weights(np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(ConfigError, match="tau"):
        target_weights(np.zeros((1, 2)), tau=0)


def test_parse_weights_forms_and_errors():
    names = ["helpful", "harmless", "humor"]
    assert np.allclose(parse_weights("helpful=0.7,harmless=0.3", names), [0.7, 0.3, 0.0])
    assert np.allclose(parse_weights("1,1,2", names), [0.25, 0.25, 0.5])
    assert np.allclose(parse_weights({"humor": 2}, names), [0, 0, 1])
    with pytest.raises(ConfigError, match="unknown objective 'funny'"):
        parse_weights("funny=1", names)
    with pytest.raises(ConfigError, match="2 entries but there are 3"):
        parse_weights("0.5,0.5", names)
    with pytest.raises(ConfigError, match="non-negative"):
        parse_weights("1,-1,1", names)
    with pytest.raises(ConfigError, match="sum to 0"):
        parse_weights("0,0,0", names)
    with pytest.raises(ConfigError, match="not a number"):
        parse_weights("helpful=lots", names)
    with pytest.raises(ConfigError, match="NaN"):
        validate_weights(np.array([np.nan, 1.0]))


def test_function_suite_scores_and_normalises():
    suite = RewardSuite.from_functions({
        "length": lambda p, r: [len(x) for x in r],
        "const": lambda p, r: [1.0] * len(r),
    })
    raw = suite.score(["a", "b", "c"], ["x", "xxx", "xx"])
    assert raw.shape == (3, 2) and raw[:, 0].tolist() == [1, 3, 2]
    with pytest.raises(ConfigError, match="no normalisation statistics"):
        suite.normalize(raw)
    stats = suite.fit_normalization(raw)
    assert stats["const"] == (1.0, 1.0)  # constant objective: std falls back to 1, z = 0
    z = suite.normalize(raw)
    assert np.allclose(z[:, 0].mean(), 0) and np.allclose(z[:, 1], 0)


def test_nan_scores_and_wrong_lengths_are_clear_errors():
    suite = RewardSuite.from_functions({"bad": lambda p, r: [0.0, float("nan")]})
    with pytest.raises(DataError, match="objective 'bad'.*NaN.*input 1"):
        suite.score(["a", "b"], ["x", "y"])
    short = RewardSuite.from_functions({"short": lambda p, r: [0.0]})
    with pytest.raises(DataError, match="returned 1 scores for 2 inputs"):
        short.score(["a", "b"], ["x", "y"])
    with pytest.raises(DataError, match="2 prompts but 1 responses"):
        short.score(["a", "b"], ["x"])


def test_objective_validation():
    with pytest.raises(ConfigError, match="exactly one of"):
        Objective(name="x")
    with pytest.raises(ConfigError, match="input_format"):
        Objective(name="x", model="m", input_format="weird")
    with pytest.raises(ConfigError, match="unique"):
        RewardSuite([Objective(name="a", function="m:f"), Objective(name="a", function="m:g")])


def test_model_suite_save_load_and_length_sorting(tiny_reward_dir, tmp_path):
    suite = RewardSuite([Objective(name="rm", model=str(tiny_reward_dir), max_length=64),
                         Objective(name="len", function="scorers:length_reward")])
    prompts = ["short", "a much longer prompt with many words in it", "mid size prompt"]
    responses = ["ok", "a long answer " * 5, "fine thanks"]
    batched = suite.score(prompts, responses, batch_size=2, progress=False)
    single = np.concatenate([suite.score([p], [r], batch_size=1, progress=False)
                             for p, r in zip(prompts, responses)])
    assert np.allclose(batched, single, atol=1e-5)  # sorting + padding does not change scores
    suite.fit_normalization(np.vstack([batched, batched + 1]))
    suite.save(tmp_path / "suite")
    loaded = RewardSuite.load(tmp_path / "suite")
    assert loaded.names == ["rm", "len"] and loaded.stats == suite.stats
    assert np.allclose(loaded.score(prompts, responses, normalize=True, progress=False),
                       suite.normalize(batched), atol=1e-5)


def test_missing_suite_and_bad_logit_index(tiny_reward_dir, tmp_path):
    with pytest.raises(CheckpointError, match="suite.yaml"):
        RewardSuite.load(tmp_path / "nothing")
    suite = RewardSuite([Objective(name="rm", model=str(tiny_reward_dir), logit_index=3)])
    with pytest.raises(ConfigError, match="logit_index 3"):
        suite.score(["a"], ["b"], progress=False)
    missing = RewardSuite([Objective(name="rm", model=str(tmp_path / "gone"))])
    with pytest.raises(CheckpointError):
        missing.score(["a"], ["b"], progress=False)


def test_encode_for_reward_keeps_prompt_end_and_response_start(tiny_reward_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_reward_dir)
    prompt = "early context " * 50 + "final question"
    ids = encode_for_reward(tok, [prompt], ["the answer"], max_length=32)["input_ids"][0]
    text = tok.decode(ids)
    assert len(ids) <= 32 and "final question" in text and "the answer" in text
    assert "response" not in encode_for_reward(tok, ["p"], ["r"], input_format="response")


def test_compare_weights_hand_computed():
    target = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = compare_weights(target, {"orchestrator": np.array([[0.8, 0.2], [0.4, 0.6]]),
                                   "uniform": np.array([0.5, 0.5]), "best_fixed": np.array([0.5, 0.5])},
                          n_boot=50)
    assert np.isclose(res["methods"]["uniform"]["mse"], 0.5)
    assert np.isclose(res["methods"]["orchestrator"]["mse"], (0.08 + 0.32) / 2)
    assert res["methods"]["orchestrator"]["argmax_agreement"] == 1.0
    assert np.isclose(res["mse_ratio_vs_best_fixed"], 0.4)
    assert mean_kl(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]])) == pytest.approx(0.0)


def test_reward_model_settings_travel_with_the_model(tmp_path):
    """A reward model is scored as it was trained: input format and max length come from its
    pro_reward.json unless the score stage sets them."""
    from pro_lib.io import write_json
    from pro_lib.suite import ScoreConfig, build_suite

    rm = tmp_path / "rm_helpful"
    write_json(rm / "pro_reward.json", {"objective": "helpful", "input_format": "response", "max_length": 40})
    hub = "some-org/reward-model"  # no folder, nothing recorded: the defaults
    suite = build_suite(ScoreConfig(objectives=[f"helpful={rm}", f"other={hub}", "len=fn:scorers:length_reward"]))
    got = {o.name: (o.input_format, o.max_length) for o in suite.objectives}
    assert got["helpful"] == ("response", 40) and got["other"] == ("pair", 512)
    suite = build_suite(ScoreConfig(objectives=[f"helpful={rm}"], max_length=64, input_format="concat"))
    assert (suite.objectives[0].input_format, suite.objectives[0].max_length) == ("concat", 64)
