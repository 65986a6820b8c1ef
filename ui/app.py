"""PRO preference explorer: what the orchestrator decides for a prompt and what it does to outputs.

Run with ``pro ui`` (or ``streamlit run ui/app.py``). Models come from the MLflow registry
(``MLFLOW_TRACKING_URI``, default ``sqlite:///$PRO_HOME/mlflow.db``) by name and alias/version, or
from local folders. Start-up defaults: ``PRO_UI_ORCHESTRATOR``, ``PRO_UI_SUITE``, ``PRO_UI_POLICY``,
``PRO_UI_POLICY_B`` (each ``models:/name@alias``, ``models:/name/3`` or a folder). Without them the
registry's champions; Policy B is a second registered policy or, next to a single one, the base policy
it was trained from (``PRO_UI_BASE_POLICY``, default the bundled ``smollm2``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run ui/app.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import streamlit as st

from ui import batch as batchlib
from ui import charts
from ui.backend import (Backend, EndpointUnreachable, NoLocalStore, RegistryUnreachable, UIError, check_prompt,
                        mlflow_ui_url, versions_table)
from ui.sidebar import (backend, cached_models, cached_predict, cached_resolve, cached_selectors, endpoint_down,
                        load_slot, note_endpoint_down, note_registry_down, prefetch, registry_down, sidebar,
                        status_line)
from ui.simplex import (WeightError, confidence, dominant, format_weights, normalize, parse_weight_text,
                        rebalance, uniform, weighted_score)

ss = st.session_state


@st.cache_data(show_spinner=False)
def example_prompts(limit: int = 60) -> list[str]:
    try:
        from pro_lib.data import load_pairs

        seen, out = set(), []
        for p in load_pairs("demo"):
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p.prompt)
        # spread over the file (it is grouped by objective)
        step = max(1, len(out) // limit)
        return out[::step][:limit]
    except Exception:
        return []


def gen_kwargs() -> dict:
    kw = {"max_new_tokens": int(ss.max_new_tokens), "do_sample": bool(ss.do_sample)}
    if ss.do_sample:
        kw["temperature"] = float(ss.temperature)
    return kw


# -- weights state --------------------------------------------------------------------------------

def _set_override(w: np.ndarray, names: list[str]) -> None:
    ss["override"] = [float(x) for x in w]
    for n, x in zip(names, w):
        ss[f"w_{n}"] = float(x)


def _overridden(w: np.ndarray, names: list[str]) -> None:
    """A weight the user set: the override changes, the Compare tab follows it, an old typing error goes."""
    _set_override(w, names)
    ss["cmp_weights"] = "override"
    ss["typed_error"] = None


def _on_slider(i: int, names: list[str]) -> None:
    locks = [bool(ss.get(f"lock_{n}", False)) for n in names]
    new = rebalance(ss["override"], i, float(ss[f"w_{names[i]}"]), locks)
    _overridden(new, names)


def _on_reset(names: list[str]) -> None:
    _set_override(np.asarray(ss["inferred"]), names)
    ss["cmp_weights"] = "inferred"
    ss["typed_error"] = None


def _on_uniform(names: list[str]) -> None:
    _overridden(uniform(len(names)), names)


def _on_typed(names: list[str]) -> None:
    try:
        w = parse_weight_text(ss.get("typed_weights", ""), names)
    except WeightError as exc:
        ss["typed_error"] = f"Cannot use these weights: {exc}"
        return
    _overridden(w, names)


def sync_weights(inferred: np.ndarray, names: list[str], key: str) -> None:
    """New prompt or orchestrator: the override starts again from the inferred weights."""
    ss["inferred"] = [float(x) for x in inferred]
    if ss.get("_weights_for") != key or len(ss.get("override", [])) != len(names):
        ss["_weights_for"] = key
        _set_override(inferred, names)
        ss["cmp_weights"] = "inferred"
        ss["typed_error"] = None


def weights_panel(names: list[str]) -> np.ndarray:
    st.markdown("**Override** — moving one slider rebalances the unlocked others; locked ones stay.")
    cols = st.columns(len(names))
    for i, (n, col) in enumerate(zip(names, cols)):
        with col:
            locked = st.checkbox(f"🔒 lock {n}", key=f"lock_{n}", help=f"Keep {n} fixed while other sliders move")
            st.slider(n, 0.0, 1.0, step=0.01, key=f"w_{n}", on_change=_on_slider, args=(i, names),
                      disabled=locked, format="%.2f")
    b1, b2, b3 = st.columns([1, 1, 3])
    b1.button("Reset to inferred", key="reset", on_click=_on_reset, args=(names,))
    b2.button("Uniform", key="set_uniform", on_click=_on_uniform, args=(names,))
    with b3:
        t1, t2 = st.columns([3, 1])
        t1.text_input("type weights", key="typed_weights", label_visibility="collapsed",
                      placeholder=", ".join(f"{n}=…" for n in names),
                      help="e.g. helpful=0.7, harmless=0.3 (missing objectives get 0; normalised to sum 1)")
        t2.button("Apply", key="apply_typed", on_click=_on_typed, args=(names,))
    if ss.get("typed_error"):
        st.error(ss["typed_error"])
    w = normalize(ss["override"])
    st.caption(f"override: {format_weights(w, names)} (sum {w.sum():.3f})")
    return w


# -- generation -----------------------------------------------------------------------------------

Z_HELP = ("z-score: (raw reward − mean) / std, with the mean and std of each reward model on the training "
          "data (the reward suite's statistics): 0 is a typical response, +1 one standard deviation better. "
          "Comparable across objectives; raw scores are each reward model's own logit scale.")


def unit_of(item: dict) -> str:
    return "z-score" if item.get("normalized") else "raw score"


def render_output(item: dict, names: list[str], box=None) -> None:
    box = box or st.container()
    with box.container(border=True):
        state = "" if item.get("done") else " — stopped" if item.get("stopped") else " — generating…"
        st.markdown(f"#### {item['label']}{state}")
        st.caption(format_weights(item["weights"], names))
        st.code(item["text"] or " ", language=None, wrap_lines=True)
        if item.get("error"):
            st.error(item["error"])
        if item.get("scores") is not None:
            kind = unit_of(item)
            df = pd.DataFrame({"objective": names + ["weighted (own w)", "weighted (inferred w)"],
                               kind: list(item["scores"]) + [item["weighted"], item["weighted_inferred"]]})
            st.dataframe(df, hide_index=True, width="stretch",
                         column_config={kind: st.column_config.NumberColumn(kind, format="%+.2f", help=Z_HELP)})
            values = " · ".join(f"{n} {v:+.2f}" for n, v in zip(names, item["scores"]))
            st.caption(f"{kind}s {item.get('scored_by', 'by the reward suite')}: {values}")
        elif item.get("score_note"):
            st.caption(item["score_note"])


def job_key(job: dict, prompt: str) -> str:
    """What decides a column's output: policy, prompt, weights and generation settings (and the seed)."""
    w = ",".join(f"{float(x):.6f}" for x in job["weights"])
    return f"{job['policy_ref']}|{prompt}|{w}|{sorted(gen_kwargs().items())}|{int(ss.seed)}"


def run_generations(slot: str, jobs: list[dict], names: list[str], prompt: str, suite, inferred) -> None:
    """Stream each job (policy, weights) into its column, then score it; results live in ss[slot].

    A column whose policy, weights and settings are those of the last run keeps its output (only the
    changed ones generate again). A served endpoint that stops answering keeps the last outputs."""
    be = backend()
    n = int(time.time() * 1000)
    previous = ss.get(slot)
    done_before = {it.get("key"): it for it in (previous or {}).get("items", [])
                   if it.get("done") and not it.get("error") and not it.get("stopped")}
    items = []
    for j in jobs:
        key = job_key(j, prompt)
        old = done_before.get(key)
        if old is not None:
            items.append({**old, "label": j["label"], "cached": True})
        else:
            items.append({"label": j["label"], "weights": [float(x) for x in j["weights"]], "text": "", "done": False,
                          "stopped": False, "slot": slot, "n": n, "policy_ref": j["policy_ref"], "key": key})
    ss[slot] = {"prompt": prompt, "items": items}
    cols = st.columns(len(jobs))
    boxes = [c.empty() for c in cols]
    for item, job, box in zip(items, jobs, boxes):
        render_output(item, names, box)
    import torch

    for item, job, box in zip(items, jobs, boxes):
        if item.get("cached"):
            continue
        torch.manual_seed(int(ss.seed))
        with box.container(border=True):
            st.markdown(f"#### {item['label']} — generating…")
            st.caption(format_weights(item["weights"], names))
            live = st.empty()
        last = 0.0
        try:
            for chunk in be.stream(job["policy"], prompt, np.asarray(job["weights"]), **gen_kwargs()):
                item["text"] += chunk
                if time.monotonic() - last > 0.05:
                    live.code(item["text"], language=None, wrap_lines=True)
                    last = time.monotonic()
        except EndpointUnreachable as exc:  # the endpoint, not this input: keep the last good outputs
            note_endpoint_down(str(exc))
            ss[slot] = previous
            return
        except UIError as exc:  # shown in this output's box; the other outputs still run
            item["error"] = str(exc)
        item["done"] = True
        if not item.get("error"):
            score_item(item, suite, names, prompt, inferred, policy=job["policy"])
        render_output(item, names, box)


def score_item(item: dict, suite, names: list[str], prompt: str, inferred, policy=None) -> None:
    """Scores per objective: the served endpoint's own (for its answers) or the sidebar's reward suite
    (loaded here when first needed)."""
    from ui.backend import RemotePolicy

    by_endpoint = isinstance(policy, RemotePolicy) and policy.answer_scores(prompt, item["text"]) is not None
    try:
        model = None if by_endpoint else load_slot(suite, names)
        if model is None and not by_endpoint:
            item["score_note"] = "Load a reward suite in the sidebar to score outputs."
            return
        scores, normalized = backend().score(model, prompt, [item["text"]], names, policy=policy)
    except UIError as exc:
        item["score_note"] = str(exc)
        return
    item["scores"] = [float(x) for x in scores[0]]
    item["normalized"] = normalized
    item["scored_by"] = (f"from the endpoint's answer ({policy.url})" if by_endpoint
                         else f"by the reward suite ({suite.prov.label()})")
    item["weighted"] = weighted_score(scores[0], item["weights"])
    item["weighted_inferred"] = weighted_score(scores[0], inferred)


def show_stored(slot: str, names: list[str], suite, inferred) -> None:
    """Show the last generations. Runs are synchronous, so an unfinished item here was interrupted
    (the Stop button, or any widget the user touched mid-stream): it is marked stopped and its
    partial text is scored like a finished one."""
    stored = ss.get(slot)
    if not stored:
        return
    for it in stored["items"]:
        if not it["done"] and not it["stopped"]:
            it["stopped"] = True
            if it["text"].strip():
                score_item(it, suite, names, stored["prompt"], inferred)
    st.caption(f"Last run on: {stored['prompt'][:200]}")
    cols = st.columns(len(stored["items"]))
    for item, col in zip(stored["items"], cols):
        render_output(item, names, col)
    scored = [it for it in stored["items"] if it.get("scores") is not None]
    units = sorted({unit_of(it) for it in scored})
    summary = [{"output": it["label"], "unit": unit_of(it), **{n: s for n, s in zip(names, it["scores"])},
                "weighted (own w)": it["weighted"], "weighted (inferred w)": it["weighted_inferred"]}
               for it in scored]
    if len(summary) > 1:
        st.markdown(f"**Scores side by side** ({' / '.join(units)}s)")
        st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch",
                     column_config={n: st.column_config.NumberColumn(n, format="%+.2f", help=Z_HELP)
                                    for n in names})
        if len(units) > 1:
            st.warning("These outputs were scored in different units (z-scores and raw scores): compare "
                       "them within a unit only.")


# -- tabs -----------------------------------------------------------------------------------------

def current_names(loaded: dict) -> list[str] | None:
    """The objectives' names, in the orchestrator's order (else the policy's, else the suite's: those
    two are loaded here, since nothing else names the objectives)."""
    if loaded.get("orchestrator"):
        return list(loaded["orchestrator"].obj.objectives)
    for role, attr in (("policy_a", "objectives"), ("suite", "names")):
        if loaded.get(role):
            try:
                return list(getattr(load_slot(loaded[role]), attr))
            except EndpointUnreachable as exc:  # said once, at the top
                note_endpoint_down(str(exc))
                loaded[role] = None
            except UIError as exc:
                st.error(str(exc))
                loaded[role] = None
    return None


def _pick_example() -> None:
    if ss.get("example"):
        ss["prompt"] = ss["example"]


def _policy_or_error(loaded: dict, role: str, names: list[str]):
    """The role's policy, loaded on first need; None (with the reason on the page) when it cannot be."""
    try:
        return load_slot(loaded.get(role), names)
    except EndpointUnreachable as exc:
        note_endpoint_down(str(exc))
    except UIError as exc:
        st.error(str(exc))
    return None


def tab_one_prompt(loaded: dict, names: list[str]) -> None:
    be = backend()
    examples = example_prompts()
    if examples:
        if ss.get("example") and ss.get("prompt") != ss["example"]:
            ss["example"] = ""  # the prompt was edited: the picker no longer names it
        st.selectbox("Pick a prompt from the demo dataset (optional)", [""] + examples, key="example",
                     on_change=_pick_example, format_func=lambda p: p[:150] or "—")
    st.text_area("Prompt", key="prompt", height=100, placeholder="Ask something…")
    orch = loaded.get("orchestrator")
    if orch is None:
        st.info("The endpoint is offline (see the message at the top)." if endpoint_down() else
                "Load an orchestrator in the sidebar to see the weights it infers.")
        return
    try:
        prompt = check_prompt(ss.get("prompt"))
    except UIError as exc:
        (st.info if not (ss.get("prompt") or "").strip() else st.error)(str(exc))
        return
    prov = orch.prov
    try:
        with st.spinner("Inferring weights…"):
            inferred = cached_predict(be.tracking_uri, prov.load_ref, prompt)
    except EndpointUnreachable as exc:  # banner at the top; the last outputs stay below
        note_endpoint_down(str(exc))
        st.info("No weights for this prompt while the endpoint is offline (see the message at the top).")
        show_stored("gen", names, loaded.get("suite"), ss.get("inferred") or uniform(len(names)))
        return
    sync_weights(inferred, names, f"{prov.load_ref}|{prompt}")
    conf = confidence(inferred)
    policy_slot = loaded.get("policy_a")
    left, right = st.columns([2, 1])
    with right:
        # above the fold at 1280 x 800, next to the weights it uses
        g1, g2 = st.columns([3, 2])
        go = g1.button("Generate", key="generate", type="primary", disabled=policy_slot is None, width="stretch",
                       help="Policy A answers three times: under the inferred, the override and uniform weights "
                            "(columns whose weights did not change since the last run are kept)")
        g2.button("Stop", key="stop", help="Stops a running generation (the outputs so far are kept)", width="stretch")
        st.metric("Orchestrator confidence", f"{conf:.2f}", help="1 − entropy(w) / log K: 0 = uniform, 1 = one objective")
        st.metric("Dominant objective", dominant(inferred, names))
        st.caption("inferred: " + format_weights(inferred, names))
    override = weights_panel(names)
    series = {"inferred": inferred, "override": override, "uniform": uniform(len(names))}
    with left:
        fig = charts.weight_ternary(series, names) if len(names) == 3 else charts.weight_bars(series, names)
        st.plotly_chart(fig, key="weights_chart")

    st.divider()
    if policy_slot is None:
        st.info("Load a policy (Policy A) in the sidebar to generate.")
        return
    if go:
        policy = _policy_or_error(loaded, "policy_a", names)
        if policy is not None:
            jobs = [{"label": lab, "weights": w, "policy": policy, "policy_ref": policy_slot.prov.load_ref}
                    for lab, w in series.items()]
            run_generations("gen", jobs, names, prompt, loaded.get("suite"), inferred)
            st.rerun()
    show_stored("gen", names, loaded.get("suite"), inferred)


def tab_compare(loaded: dict, names: list[str]) -> None:
    a, b = loaded.get("policy_a"), loaded.get("policy_b")
    if a is None or b is None:
        st.info("Load two policies in the sidebar (Policy A and Policy B), e.g. champion vs challenger "
                "or PRO-WIC vs RiC.")
        return
    st.caption(f"A: {a.prov.label()} · B: {b.prov.label()}")
    if b.state != "loaded":
        st.caption(f"Policy B ({b.prov.label()}) is not loaded yet: it loads when you first press "
                   "**Compare policies** (a SmolLM2 takes up to a minute on a CPU).")
    if a.prov.load_ref == b.prov.load_ref:
        st.warning(f"Policy A and Policy B are the same model ({a.prov.label()}): the two columns can differ "
                   "only by sampling. Pick another policy, version or alias for Policy B in the sidebar.")
    if "inferred" not in ss:
        st.info("Type a prompt in the **One prompt** tab first.")
        return
    try:
        prompt = check_prompt(ss.get("prompt"))
    except UIError as exc:
        st.error(str(exc))
        return
    which = st.radio("weights", ["inferred", "override", "uniform"], key="cmp_weights", horizontal=True,
                     help="Starts on the override once you set one in the One prompt tab")
    w = {"inferred": np.asarray(ss["inferred"]), "override": normalize(ss["override"]),
         "uniform": uniform(len(names))}[which]
    st.caption(format_weights(w, names))
    c1, c2, _ = st.columns([2, 1, 4])
    go = c1.button("Compare policies", key="compare", type="primary")
    c2.button("Stop", key="cmp_stop", help="Stops a running generation (the outputs so far are kept)")
    if go:
        pa = _policy_or_error(loaded, "policy_a", names)
        pb = _policy_or_error(loaded, "policy_b", names) if pa is not None else None
        if pa is not None and pb is not None:
            jobs = [{"label": f"A: {a.prov.spec.name}" + (f"@{a.prov.spec.selector}" if a.prov.spec.selector else ""),
                     "weights": w, "policy": pa, "policy_ref": a.prov.load_ref},
                    {"label": f"B: {b.prov.spec.name}" + (f"@{b.prov.spec.selector}" if b.prov.spec.selector else ""),
                     "weights": w, "policy": pb, "policy_ref": b.prov.load_ref}]
            run_generations("cmp", jobs, names, prompt, loaded.get("suite"), ss["inferred"])
            st.rerun()
    show_stored("cmp", names, loaded.get("suite"), ss["inferred"])
    judge_panel(names)


def judge_panel(names: list[str]) -> None:
    """Ask an LLM judge which of the two compared answers is better (both orders, as `pro eval judge` does)."""
    stored = ss.get("cmp")
    items = [it for it in (stored or {}).get("items", []) if it.get("done") and not it.get("error")]
    if len(items) != 2 or not all(it["text"].strip() for it in items):
        return
    from pro_lib.judge_client import ENV_BASE_URL, ENV_MODEL
    from pro_lib.judge_protocol import DEFAULT_RUBRICS

    with st.expander("LLM judge: which answer is better?", expanded=bool(ss.get("judge_result"))):
        st.caption(f"Any OpenAI-compatible endpoint (vLLM, `transformers serve`, a hosted API). The key is read from "
                   f"$PRO_JUDGE_API_KEY or the mounted Secret pro-judge, never typed here. Each answer is shown "
                   f"first once, so a judge that prefers a position says 'inconsistent'.")
        c1, c2, c3 = st.columns([3, 2, 2])
        c1.text_input("judge base URL", value=os.environ.get(ENV_BASE_URL, ""), key="judge_url",
                      placeholder="http://127.0.0.1:8000/v1")
        c2.text_input("judge model", value=os.environ.get(ENV_MODEL, ""), key="judge_model")
        rubrics = [r for r in DEFAULT_RUBRICS if r == "general" or r in names]
        c3.selectbox("rubric", rubrics, key="judge_rubric", help="general, or one objective only")
        a, b = items
        key = hashlib.sha256("|".join([stored["prompt"], a["text"], b["text"], ss.get("judge_rubric", ""),
                                       ss.get("judge_url", ""), ss.get("judge_model", "")]).encode()).hexdigest()
        if st.button("Judge A vs B", key="judge_go"):
            try:
                with st.spinner("asking the judge (two requests)…"):
                    ss["judge_result"] = {"key": key, **backend().judge_pair(
                        stored["prompt"], a["text"], b["text"], base_url=ss.get("judge_url"),
                        model=ss.get("judge_model"), rubric=ss.get("judge_rubric") or "general")}
            except UIError as exc:
                ss["judge_result"] = None
                st.error(str(exc))
        res = ss.get("judge_result")
        if res and res["key"] == key:  # a verdict for other answers or another judge is not shown
            st.markdown(f"**{res['verdict']}** ({res['rubric']} rubric; {a['label']} vs {b['label']})")
            st.caption(f"judge {res['judge']}: A shown first -> [[{res['a_first'] or '?'}]], B shown first -> "
                       f"[[{res['b_first'] or '?'}]]" + (" (cached)" if res["cached"] else ""))
            with st.expander("the judge's replies"):
                for title, reply in zip(("A shown first", "B shown first"), res["replies"]):
                    st.markdown(f"*{title}*")
                    st.code(reply or " ", language=None, wrap_lines=True)


def _dataset_choices() -> list[str]:
    extra = [s.strip() for s in os.environ.get("PRO_UI_DATASETS", "").split(",") if s.strip()]
    return ["demo"] + extra


def tab_batch(loaded: dict, names: list[str]) -> None:
    be = backend()
    orch = loaded.get("orchestrator")
    src = st.radio("prompts from", ["Upload a file", "Dataset"], key="batch_source", horizontal=True)
    limit = st.number_input("max prompts", 1, 100_000, 500, key="batch_limit")
    prompts, origin = None, None
    try:
        if src == "Upload a file":
            up = st.file_uploader("Prompt file: .txt (one per line), .jsonl / .json (prompt field), .csv",
                                  type=["txt", "jsonl", "json", "csv", "tsv"], key="batch_file")
            if up is not None:
                data = up.getvalue()
                prompts = batchlib.read_prompts(data, up.name, limit=int(limit))
                origin = f"{up.name}:{hashlib.sha1(data).hexdigest()[:10]}"
        else:
            spec = st.selectbox("dataset", _dataset_choices(), key="batch_dataset")
            from pro_lib.data import load_pairs

            pairs = load_pairs(spec, limit=int(limit))
            prompts = list(dict.fromkeys(p.prompt for p in pairs))
            origin = f"{spec}:{limit}"
    except (batchlib.PromptFileError, ValueError, OSError) as exc:
        st.error(f"Cannot read the prompts: {exc}")
        return
    if prompts is None:
        st.info("Upload a prompt file or pick a dataset.")
        return
    st.caption(f"{len(prompts)} prompt(s)")
    if orch is None:
        st.info("Load an orchestrator in the sidebar to infer weights.")
        return
    orch_obj, prov = orch.obj, orch.prov
    key = f"{prov.load_ref}|{origin}"
    if st.button("Infer weights", key="batch_run", type="primary"):
        bad = [i for i, p in enumerate(prompts) if not p.strip()]
        if bad:
            st.error(f"Prompt {bad[0] + 1} is empty; remove empty prompts from the file.")
            return
        bar = st.progress(0.0, text="Inferring weights…")
        rows, bs = [], 32
        for start in range(0, len(prompts), bs):
            rows.append(be.predict(orch_obj, prompts[start:start + bs]))
            done = min(len(prompts), start + bs)
            bar.progress(done / len(prompts), text=f"Inferring weights… {done}/{len(prompts)}")
        bar.empty()
        ss["batch"] = {"key": key, "names": names,
                       "df": batchlib.weights_table(prompts, np.concatenate(rows), names)}
    res = ss.get("batch")
    if not res or res["names"] != names:
        return
    if res["key"] != key:
        st.caption("These results are for another file or orchestrator: press **Infer weights** to update.")
    df = res["df"]
    pick = st.multiselect("filter by dominant objective", names, key="batch_filter")
    view = batchlib.filter_dominant(df, pick)
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(charts.weight_histograms(view[names].to_numpy(), names), key="batch_hist")
    with c2:
        if len(names) == 3:
            st.plotly_chart(charts.ternary_scatter(view[names].to_numpy(), names, list(view["dominant"]),
                                                   list(view["prompt"])), key="batch_ternary")
        else:
            st.bar_chart(view["dominant"].value_counts())
    st.dataframe(view, hide_index=True, width="stretch",
                 column_config={n: st.column_config.ProgressColumn(n, min_value=0.0, max_value=1.0, format="%.2f")
                                for n in names})
    d1, d2 = st.columns(2)
    d1.download_button(f"Download all {len(df)} rows (CSV)", batchlib.to_csv(df), file_name="pro_inferred_weights.csv",
                       mime="text/csv", key="batch_csv")
    if pick:
        d2.download_button(f"Download the {len(view)} filtered rows (CSV)", batchlib.to_csv(view),
                           file_name="pro_inferred_weights_filtered.csv", mime="text/csv", key="batch_csv_filtered")


def tab_registry() -> None:
    be = backend()
    try:
        models = cached_models(be.tracking_uri)
    except NoLocalStore as exc:
        st.info(str(exc))
        return
    except RegistryUnreachable as exc:
        note_registry_down(str(exc))
        st.info("The registry is offline (see the message at the top).")
        return
    except UIError as exc:
        st.error(str(exc))
        return
    if not models:
        st.info("No registered models yet. `make demo` trains and registers the orchestrator, reward models "
                "and policies.")
        return
    with st.spinner("Reading the registry…"):
        overview = be.overview()
    st.markdown("**Registered models**")
    st.dataframe(pd.DataFrame(overview), hide_index=True, width="stretch")
    name = st.selectbox("registered model", models, key="reg_model")
    try:
        versions = be.list_versions(name)
    except UIError as exc:
        st.error(str(exc))
        return
    if not versions:
        st.info(f"{name} has no versions.")
        return
    table = versions_table(versions, mlflow_ui_url(be.tracking_uri))
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"training run": st.column_config.LinkColumn(
                     "training run", display_text=r"runs/([0-9a-f]{8})", help="Opens the run in the MLflow UI")}
                 if mlflow_ui_url(be.tracking_uri) else None)
    if os.environ.get("PRO_UI_ALLOW_PROMOTION", "").strip().lower() not in ("1", "true", "yes"):
        st.caption("Promotion to champion is disabled in this explorer (set PRO_UI_ALLOW_PROMOTION=true "
                   "to enable it); promote with `pro registry promote`.")
        return
    st.markdown("**Promote to champion** — gated: the candidate must beat the champion on the model's "
                "gate metric; forcing needs a reason, which is recorded.")
    numbers = [str(r.get("version")) for r in versions]
    challenger = next((str(r["version"]) for r in versions if "challenger" in (r.get("aliases") or [])), None)
    c1, c2, c3 = st.columns([1, 1, 2])
    version = c1.selectbox("candidate version", numbers, key="promote_version",
                           index=numbers.index(challenger) if challenger in numbers else 0)
    force = c2.checkbox("force", key="promote_force")
    reason = c3.text_input("reason (needed to force)", key="promote_reason")
    pending = ss.get("promote_confirm")
    if pending and (pending["name"], pending["version"]) != (name, version):
        pending = ss["promote_confirm"] = None  # another model or version picked: ask again
    if st.button("Promote", key="promote", type="primary", disabled=bool(pending)):
        if force and (reason or "").strip():  # a forced promotion skips the gate: ask first
            ss["promote_confirm"] = {"name": name, "version": version, "reason": reason.strip()}
        else:
            _do_promote(be, name, version, force, reason)
        st.rerun()
    if pending:
        champ = next((str(r["version"]) for r in versions if "champion" in (r.get("aliases") or [])), None)
        st.warning(f"Force version {version} of {name} to champion"
                   + (f" over version {champ}" if champ else "")
                   + f" without the gate? Reason recorded: “{pending['reason']}”.")
        k1, k2, _ = st.columns([1, 1, 4])
        k1.button("Yes, force it", key="promote_confirm_yes", type="primary", on_click=_confirm_forced, args=(be,))
        k2.button("Cancel", key="promote_confirm_no", on_click=_reset_force)
    msg = ss.pop("promote_msg", None)
    if msg:
        {"success": st.success, "warning": st.warning, "error": st.error}[msg[0]](msg[1])


def _do_promote(be: Backend, name: str, version: str, force: bool, reason: str | None) -> None:
    try:
        result = be.promote(name, version, force=force, reason=reason)
        ss["promote_msg"] = _promotion_message(result, name, version)
    except UIError as exc:
        ss["promote_msg"] = ("error", str(exc))
    cached_resolve.clear()
    cached_selectors.clear()


def _reset_force() -> None:
    """After a forced promotion (or its cancellation) the force box and reason start empty again."""
    ss["promote_confirm"] = None
    ss["promote_force"] = False
    ss["promote_reason"] = ""


def _confirm_forced(be: Backend) -> None:
    pending = ss.get("promote_confirm")
    if pending:
        _do_promote(be, pending["name"], pending["version"], True, pending["reason"])
    _reset_force()


def _promotion_message(result, name: str, version: str) -> tuple[str, str]:
    promoted = getattr(result, "promoted", None)
    if promoted is None and isinstance(result, dict):
        promoted = result.get("promoted")
    why = getattr(result, "reason", None) or getattr(result, "message", None)
    if why is None and isinstance(result, dict):
        why = result.get("reason") or result.get("message")
    if promoted:
        return "success", f"{name} v{version} is now champion. {why or ''}".strip()
    return "warning", f"Promotion refused — nothing changed. {why or result}"


# -- page -----------------------------------------------------------------------------------------

def check_loaded(loaded: dict, names: list[str]) -> None:
    """Models loaded by now (in the background, or earlier) whose objectives differ from the orchestrator's
    are shown as an error and not used; the others are checked when they load."""
    for role in ("suite", "policy_a", "policy_b"):
        slot = loaded.get(role)
        if slot is not None and slot.state == "loaded":
            try:
                load_slot(slot, names)
            except UIError as exc:
                st.error(str(exc))
                loaded[role] = None


INTRO = ("The **orchestrator** reads a prompt and infers how much each objective should matter (the weights); "
         "the **policy** answers under those weights, or under yours; the **reward models** score each answer "
         "per objective.")


def main() -> None:
    st.set_page_config(page_title="PRO preference explorer", page_icon="⚖️", layout="wide")
    st.title("PRO preference explorer")
    st.caption(INTRO)
    banner = st.empty()
    status = st.empty()
    be = backend()
    loaded = sidebar(be)
    names = current_names(loaded)
    tabs = st.tabs(["One prompt", "Compare policies", "Batch", "Registry"])
    if names is None:
        why = ("The endpoint is offline (see the message at the top)." if endpoint_down() else
               "Load an orchestrator (or a policy / reward suite) in the sidebar to start.")
        for t in tabs[:3]:
            t.info(why)
    else:
        check_loaded(loaded, names)
        for tab, fn in zip(tabs[:3], (tab_one_prompt, tab_compare, tab_batch)):
            with tab:
                _guard(fn, loaded, names)
    with tabs[3]:
        _guard(tab_registry)
    messages = registry_down() + endpoint_down()
    if messages:
        banner.error("\n\n".join(messages))
    # the page is drawn: what Generate and scoring need loads in the background (Policy B waits for Compare)
    if names is not None and not endpoint_down():
        for role in ("suite", "policy_a"):
            prefetch(loaded.get(role))
    line = status_line({r: loaded.get(r) for r in ("suite", "policy_a", "policy_b")})
    if line:
        status.caption(line)


def _guard(fn, *args) -> None:
    """Show any failure as a message on the page instead of a traceback."""
    try:
        fn(*args)
    except (UIError, WeightError) as exc:
        st.error(str(exc))
    except Exception as exc:  # last resort: still no traceback on the page
        st.error(f"Something went wrong ({type(exc).__name__}): {str(exc)[:500]}")


main()
