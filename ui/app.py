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
from ui.backend import (Backend, NoLocalStore, RegistryUnreachable, UIError, align_objectives, check_prompt,
                        versions_table)
from ui.sidebar import (ROLES, backend, cached_models, cached_predict, cached_resolve, cached_selectors,
                        note_registry_down, registry_down, sidebar)
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


def _on_slider(i: int, names: list[str]) -> None:
    locks = [bool(ss.get(f"lock_{n}", False)) for n in names]
    new = rebalance(ss["override"], i, float(ss[f"w_{names[i]}"]), locks)
    _set_override(new, names)


def _on_reset(names: list[str]) -> None:
    _set_override(np.asarray(ss["inferred"]), names)


def _on_uniform(names: list[str]) -> None:
    _set_override(uniform(len(names)), names)


def _on_typed(names: list[str]) -> None:
    try:
        _set_override(parse_weight_text(ss.get("typed_weights", ""), names), names)
        ss["typed_error"] = None
    except WeightError as exc:
        ss["typed_error"] = f"Cannot use these weights: {exc}"


def sync_weights(inferred: np.ndarray, names: list[str], key: str) -> None:
    """New prompt or orchestrator: the override starts again from the inferred weights."""
    ss["inferred"] = [float(x) for x in inferred]
    if ss.get("_weights_for") != key or len(ss.get("override", [])) != len(names):
        ss["_weights_for"] = key
        _set_override(inferred, names)


def weights_panel(names: list[str]) -> np.ndarray:
    st.markdown("**Override** — moving one slider rebalances the unlocked others; locked ones stay.")
    cols = st.columns(len(names))
    for i, (n, col) in enumerate(zip(names, cols)):
        with col:
            locked = st.checkbox("🔒 lock", key=f"lock_{n}")
            st.slider(n, 0.0, 1.0, step=0.01, key=f"w_{n}", on_change=_on_slider, args=(i, names),
                      disabled=locked, format="%.2f")
    b1, b2, b3 = st.columns([1, 1, 3])
    b1.button("Reset to inferred", key="reset", on_click=_on_reset, args=(names,))
    b2.button("Uniform", key="set_uniform", on_click=_on_uniform, args=(names,))
    with b3:
        t1, t2 = st.columns([3, 1])
        t1.text_input("type weights", key="typed_weights", label_visibility="collapsed",
                      placeholder=", ".join(f"{n}=…" for n in names))
        t2.button("Apply", key="apply_typed", on_click=_on_typed, args=(names,))
    if ss.get("typed_error"):
        st.error(ss["typed_error"])
    w = normalize(ss["override"])
    st.caption(f"override: {format_weights(w, names)} (sum {w.sum():.3f})")
    return w


# -- generation -----------------------------------------------------------------------------------

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
            kind = "z-score" if item.get("normalized") else "raw score"
            df = pd.DataFrame({"objective": names + ["weighted (own w)", "weighted (inferred w)"],
                               kind: list(item["scores"]) + [item["weighted"], item["weighted_inferred"]]})
            st.dataframe(df, hide_index=True, width="stretch")
        elif item.get("score_note"):
            st.caption(item["score_note"])


def run_generations(slot: str, jobs: list[dict], names: list[str], prompt: str, suite, inferred) -> None:
    """Stream each job (policy, weights) into its column, then score it; results live in ss[slot]."""
    be = backend()
    n = int(time.time() * 1000)
    items = [{"label": j["label"], "weights": [float(x) for x in j["weights"]], "text": "", "done": False,
              "stopped": False, "slot": slot, "n": n, "policy_ref": j["policy_ref"]} for j in jobs]
    ss[slot] = {"prompt": prompt, "items": items}
    cols = st.columns(len(jobs))
    boxes = [c.empty() for c in cols]
    for item, job, box in zip(items, jobs, boxes):
        render_output(item, names, box)
    import torch

    for item, job, box in zip(items, jobs, boxes):
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
        except UIError as exc:  # shown in this output's box; the other outputs still run
            item["error"] = str(exc)
        item["done"] = True
        if not item.get("error"):
            score_item(item, suite, names, prompt, inferred)
        render_output(item, names, box)


def score_item(item: dict, suite, names: list[str], prompt: str, inferred) -> None:
    if suite is None:
        item["score_note"] = "Load a reward suite in the sidebar to score outputs."
        return
    try:
        scores, normalized = backend().score(suite, prompt, [item["text"]], names)
    except UIError as exc:
        item["score_note"] = str(exc)
        return
    item["scores"] = [float(x) for x in scores[0]]
    item["normalized"] = normalized
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
    summary = [{"output": it["label"], **{n: s for n, s in zip(names, it["scores"])},
                "weighted (own w)": it["weighted"], "weighted (inferred w)": it["weighted_inferred"]}
               for it in stored["items"] if it.get("scores") is not None]
    if len(summary) > 1:
        st.markdown("**Scores side by side**")
        st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch")


# -- tabs -----------------------------------------------------------------------------------------

def current_names(loaded: dict) -> list[str] | None:
    """The objectives' names, in the orchestrator's order (else the policy's, else the suite's)."""
    if loaded.get("orchestrator"):
        return list(loaded["orchestrator"][0].objectives)
    if loaded.get("policy_a"):
        return list(loaded["policy_a"][0].objectives)
    if loaded.get("suite"):
        return list(loaded["suite"][0].names)
    return None


def check_compat(loaded: dict, names: list[str]) -> None:
    """Models whose objectives differ from the orchestrator's are shown as an error and not used."""
    for role in ("suite", "policy_a", "policy_b"):
        if loaded.get(role):
            obj = loaded[role][0]
            other = obj.names if role == "suite" else getattr(obj, "objectives", None)
            if other is None:
                continue
            try:
                align_objectives(names, other, f"{ROLES[role][0]} ({loaded[role][1].load_ref})")
            except UIError as exc:
                st.error(str(exc))
                loaded[role] = None


def _pick_example() -> None:
    if ss.get("example"):
        ss["prompt"] = ss["example"]


def tab_one_prompt(loaded: dict, names: list[str]) -> None:
    be = backend()
    examples = example_prompts()
    if examples:
        st.selectbox("Pick a prompt from the demo dataset (optional)", [""] + examples, key="example",
                     on_change=_pick_example, format_func=lambda p: p[:150] or "—")
    st.text_area("Prompt", key="prompt", height=100, placeholder="Ask something…")
    orch = loaded.get("orchestrator")
    if orch is None:
        st.info("Load an orchestrator in the sidebar to see the weights it infers.")
        return
    try:
        prompt = check_prompt(ss.get("prompt"))
    except UIError as exc:
        (st.info if not (ss.get("prompt") or "").strip() else st.error)(str(exc))
        return
    orch_obj, prov = orch
    with st.spinner("Inferring weights…"):
        inferred = cached_predict(be.tracking_uri, prov.load_ref, prompt)
    sync_weights(inferred, names, f"{prov.load_ref}|{prompt}")
    conf = confidence(inferred)
    left, right = st.columns([2, 1])
    with right:
        st.metric("Orchestrator confidence", f"{conf:.2f}", help="1 − entropy(w) / log K: 0 = uniform, 1 = one objective")
        st.metric("Dominant objective", dominant(inferred, names))
        st.caption("inferred: " + format_weights(inferred, names))
    override = weights_panel(names)
    series = {"inferred": inferred, "override": override, "uniform": uniform(len(names))}
    with left:
        fig = charts.weight_ternary(series, names) if len(names) == 3 else charts.weight_bars(series, names)
        st.plotly_chart(fig, key="weights_chart")

    st.divider()
    policy = loaded.get("policy_a")
    c1, c2, _ = st.columns([2, 1, 4])
    go = c1.button("Generate: inferred · override · uniform", key="generate", type="primary",
                   disabled=policy is None)
    c2.button("Stop", key="stop", help="Stops a running generation (the outputs so far are kept)")
    if policy is None:
        st.info("Load a policy (Policy A) in the sidebar to generate.")
        return
    if go:
        jobs = [{"label": lab, "weights": w, "policy": policy[0], "policy_ref": policy[1].load_ref}
                for lab, w in series.items()]
        run_generations("gen", jobs, names, prompt, (loaded.get("suite") or (None,))[0], inferred)
        st.rerun()
    show_stored("gen", names, (loaded.get("suite") or (None,))[0], inferred)


def tab_compare(loaded: dict, names: list[str]) -> None:
    a, b = loaded.get("policy_a"), loaded.get("policy_b")
    if a is None or b is None:
        st.info("Load two policies in the sidebar (Policy A and Policy B), e.g. champion vs challenger "
                "or PRO-WIC vs RiC.")
        return
    st.caption(f"A: {a[1].label()} · B: {b[1].label()}")
    if a[1].load_ref == b[1].load_ref:
        st.warning(f"Policy A and Policy B are the same model ({a[1].label()}): the two columns can differ "
                   "only by sampling. Pick another policy, version or alias for Policy B in the sidebar.")
    if "inferred" not in ss:
        st.info("Type a prompt in the **One prompt** tab first.")
        return
    try:
        prompt = check_prompt(ss.get("prompt"))
    except UIError as exc:
        st.error(str(exc))
        return
    which = st.radio("weights", ["inferred", "override", "uniform"], key="cmp_weights", horizontal=True)
    w = {"inferred": np.asarray(ss["inferred"]), "override": normalize(ss["override"]),
         "uniform": uniform(len(names))}[which]
    st.caption(format_weights(w, names))
    c1, c2, _ = st.columns([2, 1, 4])
    go = c1.button("Compare policies", key="compare", type="primary")
    c2.button("Stop", key="cmp_stop", help="Stops a running generation (the outputs so far are kept)")
    if go:
        jobs = [{"label": f"A: {a[1].spec.name}" + (f"@{a[1].spec.selector}" if a[1].spec.selector else ""),
                 "weights": w, "policy": a[0], "policy_ref": a[1].load_ref},
                {"label": f"B: {b[1].spec.name}" + (f"@{b[1].spec.selector}" if b[1].spec.selector else ""),
                 "weights": w, "policy": b[0], "policy_ref": b[1].load_ref}]
        run_generations("cmp", jobs, names, prompt, (loaded.get("suite") or (None,))[0], ss["inferred"])
        st.rerun()
    show_stored("cmp", names, (loaded.get("suite") or (None,))[0], ss["inferred"])


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
    orch_obj, prov = orch
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
    st.download_button("Download CSV", batchlib.to_csv(view), file_name="pro_inferred_weights.csv",
                       mime="text/csv", key="batch_csv")


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
    st.dataframe(versions_table(versions), hide_index=True, width="stretch")
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

def main() -> None:
    st.set_page_config(page_title="PRO preference explorer", page_icon="⚖️", layout="wide")
    st.title("PRO preference explorer")
    banner = st.empty()
    be = backend()
    loaded = sidebar(be)
    if registry_down():
        banner.error(registry_down()[0])
    names = current_names(loaded)
    tabs = st.tabs(["One prompt", "Compare policies", "Batch", "Registry"])
    if names is None:
        for t in tabs[:3]:
            t.info("Load an orchestrator (or a policy / reward suite) in the sidebar to start.")
    else:
        check_compat(loaded, names)
        for tab, fn in zip(tabs[:3], (tab_one_prompt, tab_compare, tab_batch)):
            with tab:
                _guard(fn, loaded, names)
    with tabs[3]:
        _guard(tab_registry)


def _guard(fn, *args) -> None:
    """Show any failure as a message on the page instead of a traceback."""
    try:
        fn(*args)
    except (UIError, WeightError) as exc:
        st.error(str(exc))
    except Exception as exc:  # last resort: still no traceback on the page
        st.error(f"Something went wrong ({type(exc).__name__}): {str(exc)[:500]}")


main()
