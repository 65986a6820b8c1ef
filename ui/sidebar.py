"""The explorer's sidebar: one model picker per role (registry name + alias/version, or a local
folder), the generation settings, and the cached look-ups and loaders they (and the tabs) share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from pro_lib.registry import ORCHESTRATOR_MODEL, REWARD_MODEL_PREFIX, policy_model_name
from ui import loading
from ui.backend import (PER_OBJECTIVE, Backend, EndpointUnreachable, ModelSpec, Provenance, RegistryUnreachable,
                        UIError, align_objectives, is_endpoint, mlflow_ui_url)

ROLES = {  # role -> (label, env var, registry-name hint, optional?)
    "orchestrator": ("Orchestrator", "PRO_UI_ORCHESTRATOR", "orchestrator", False),
    "suite": ("Reward suite", "PRO_UI_SUITE", "suite", False),
    "policy_a": ("Policy A", "PRO_UI_POLICY", "policy", False),
    "policy_b": ("Policy B (compare)", "PRO_UI_POLICY_B", "policy", True),
}
SOURCES = ["Registry", "Local folder"]
ALIASES_PER_OBJECTIVE = ("champion", "challenger")
PLACEHOLDERS = {"orchestrator": "runs/orchestrator", "suite": "runs/targets/suite",
                "policy_a": "runs/wic or smollm2", "policy_b": "runs/ric or smollm2"}
ss = st.session_state


# what each role's model is loaded for (shown while it loads, and before)
NEEDED_FOR = {"orchestrator": "the weights", "suite": "scoring the outputs", "policy_a": "Generate",
              "policy_b": "the Compare tab"}
KIND = {"orchestrator": "orchestrator", "suite": "suite", "policy_a": "policy", "policy_b": "policy"}


@dataclass
class Slot:
    """A role's chosen model: where it comes from (resolved, cheap) and, once loaded, the model.

    Only the orchestrator is loaded while the sidebar is drawn; the others load when a view first
    needs them (:func:`load_slot`), or ahead of time in the background (:func:`prefetch`)."""

    role: str
    prov: Provenance
    key: loading.Key
    obj: Any = None

    def __getitem__(self, i):  # (model, provenance), as the page's helpers read it
        return (self.obj, self.prov)[i]

    @property
    def state(self) -> str:
        return "loaded" if self.obj is not None else loading.state(self.key)


def load_slot(slot: Slot | None, names: list[str] | None = None):
    """The one way a view gets a model: loads it on first need (spinner naming it and why), checks its
    objectives against the orchestrator's, and returns it (None for no slot)."""
    if slot is None:
        return None
    if slot.obj is None:
        label = ROLES[slot.role][0]
        quiet = loading.state(slot.key) == "loaded"
        with (st.empty() if quiet else st.spinner(f"Loading {label} ({slot.prov.label()}) for "
                                                  f"{NEEDED_FOR[slot.role]}…")):
            obj = loading.get(slot.key)
        if names is not None:
            other = obj.names if slot.role == "suite" else getattr(obj, "objectives", None)
            if other is not None:
                align_objectives(names, other, f"{label} ({slot.prov.load_ref})")
        slot.obj = obj
    return slot.obj


def prefetch(slot: Slot | None) -> None:
    """Start loading a slot's model in the background (the page stays usable meanwhile)."""
    if slot is not None and slot.obj is None:
        loading.prefetch(slot.key)


def status_line(loaded: dict) -> str | None:
    """What is loading and why, or what will load when (None when everything is loaded)."""
    parts = []
    for role, slot in loaded.items():
        if slot is None or slot.state == "loaded":
            continue
        label, why = ROLES[role][0], NEEDED_FOR[role]
        if slot.state == "loading":
            parts.append(f"⏳ {label} is loading in the background for {why}")
        elif slot.state == "not loaded":
            parts.append(f"{label} loads when {why} first needs it")
    return " · ".join(parts) + "." if parts else None


def endpoint_down() -> list[str]:
    """"The endpoint is away" messages (one banner at the top, like :func:`registry_down`); they stay until
    ↻ Reload, which checks again."""
    return ss.setdefault("endpoint_down", [])


def note_endpoint_down(message: str) -> None:
    if message not in endpoint_down():
        endpoint_down().append(message)


def registry_down() -> list[str]:
    """This run's "registry is away" messages, shown once at the top of the page, not in every picker
    (kept in the session, not in this module, which all sessions share; :func:`sidebar` empties it
    at the start of each run)."""
    return ss.setdefault("registry_down", [])


# -- cached resources -----------------------------------------------------------------------------

def backend() -> Backend:
    return Backend()


@st.cache_data(ttl=20, show_spinner=False)
def cached_models(tracking_uri: str) -> list[str]:
    return Backend(tracking_uri).list_models()


@st.cache_data(ttl=20, show_spinner=False)
def cached_selectors(tracking_uri: str, name: str) -> list[str]:
    return Backend(tracking_uri).selectors(name)


@st.cache_data(ttl=20, show_spinner=False)
def cached_resolve(tracking_uri: str, spec: ModelSpec):
    return Backend(tracking_uri).resolve(spec)


@st.cache_data(ttl=20, show_spinner=False)
def cached_resolve_per_objective(tracking_uri: str, selector: str, names: tuple, stats_json: str):
    import json

    return Backend(tracking_uri).resolve_per_objective(selector, list(names), json.loads(stats_json))


def cached_orchestrator(tracking_uri: str, load_ref: str):
    return loading.get(loading.Key("orchestrator", tracking_uri, load_ref))


@st.cache_data(max_entries=256, show_spinner=False)
def cached_predict(tracking_uri: str, load_ref: str, prompt: str) -> np.ndarray:
    orch = cached_orchestrator(tracking_uri, load_ref)
    return Backend(tracking_uri).predict(orch, [prompt])[0]


# -- sidebar: model selection -------------------------------------------------------------------

def _registry_models(be: Backend) -> tuple[list[str], str | None]:
    try:
        return cached_models(be.tracking_uri), None
    except RegistryUnreachable as exc:
        note_registry_down(str(exc))
        return [], str(exc)
    except UIError as exc:
        return [], str(exc)


def note_registry_down(message: str) -> None:
    if message not in registry_down():
        registry_down().append(message)


def _keep_loaded(role: str, name: str | None = None):
    """While the registry is away, a picker keeps the model it had loaded from it."""
    last = ss.get(f"{role}_last")
    if last and last.prov.spec.source == "registry" and name in (None, last.prov.spec.name):
        st.sidebar.caption(f"from {last.prov.label()} (kept: the registry is offline)")
        return last
    st.sidebar.caption("The registry is offline (see the message at the top).")
    return None


def _init_role(role: str, models: list[str]) -> None:
    """First run: widget defaults from PRO_UI_* or the registry's pro-* models.

    With the registry away at start the pickers stay on "Registry" and get their defaults once it
    answers (the page says it is away instead of silently switching to local folders).
    """
    auto = ss.get(f"{role}_auto")
    if f"{role}_source" in ss and not auto:
        return
    label, env, hint, optional = ROLES[role]
    text = "" if auto else os.environ.get(env, "").strip()
    if registry_down() and not text:
        ss.setdefault(f"{role}_source", "None" if optional else "Registry")
        ss[f"{role}_auto"] = True
        return
    if auto:
        del ss[f"{role}_auto"]
        if ss.get(f"{role}_name") or ss.get(f"{role}_source") != ("None" if optional else "Registry"):
            return  # the user chose meanwhile
    if text:
        try:
            spec = ModelSpec.parse(text)
        except UIError:
            spec = ModelSpec("local", text, "")
        if spec.source == "registry":
            ss[f"{role}_source"], ss[f"{role}_name"], ss[f"{role}_sel"] = "Registry", spec.name, spec.selector
            ss[f"{role}_want"] = (spec.name, spec.selector)
        else:
            ss[f"{role}_source"], ss[f"{role}_path"] = "Local folder", spec.name
        return
    candidates = [m for m in models if hint in m]
    if role == "suite" and not candidates and any(m.startswith(REWARD_MODEL_PREFIX) for m in models):
        candidates = [PER_OBJECTIVE]
    if role == "policy_b":  # a second registered policy (e.g. RiC next to PRO-WIC), else the base policy
        if candidates[1:] or not candidates:
            candidates = candidates[1:]
        else:  # one trained policy (the main job's PRO-WIC champion): compare it with what it started from
            ss[f"{role}_source"], ss[f"{role}_path"] = "Local folder", os.environ.get("PRO_UI_BASE_POLICY", "smollm2")
            return
    if not candidates:
        ss[f"{role}_source"] = "None" if optional else ("Registry" if models else "Local folder")
        return
    preferred = {"orchestrator": ORCHESTRATOR_MODEL}.get(role)
    ss[f"{role}_source"] = "Registry"
    ss[f"{role}_name"] = preferred if preferred in candidates else candidates[0]


def model_picker(role: str, be: Backend, models: list[str], registry_error: str | None, context: dict):
    """Source / name / alias-or-version widgets for one role; returns the loaded object or None."""
    label, _, hint, optional = ROLES[role]
    _init_role(role, models)
    st.sidebar.markdown(f"**{label}**")
    sources = (["None"] if optional else []) + SOURCES
    source = st.sidebar.radio(f"{label} source", sources, key=f"{role}_source", horizontal=True,
                              label_visibility="collapsed")
    spec = None
    if source == "None":
        return None
    if source == "Registry":
        if registry_error:
            if registry_down():
                return _keep_loaded(role)
            st.sidebar.error(registry_error)
            return None
        if f"{role}_name" not in ss and ss.get(f"{role}_want"):  # widgets not drawn while offline lose state
            ss[f"{role}_name"], ss[f"{role}_sel"] = ss[f"{role}_want"]
        if not models:
            st.sidebar.warning("The registry has no models yet: run `make demo`, or pick a local folder.")
            return None
        if role.startswith("policy") and not any(hint in m for m in models) and not ss.get(f"{role}_name"):
            st.sidebar.info("No policy is registered yet (the `pro_wic` pipeline registers "
                            f"`{policy_model_name('pro-wic')}`). Pick **Local folder** and type `smollm2` to try the "
                            "bundled SmolLM2, or a folder from `pro wic offline`.")
        names = sorted(models, key=lambda m: (hint not in m, m))
        if role == "suite" and any(m.startswith(REWARD_MODEL_PREFIX) for m in models):
            names.insert(0, PER_OBJECTIVE)
        wanted = ss.get(f"{role}_name")
        if wanted is not None and wanted not in names:
            st.sidebar.error(f"Registered model '{wanted}' is missing from the registry at "
                             f"{be.tracking_uri}; pick another one.")
            del ss[f"{role}_name"]
        name = st.sidebar.selectbox(f"{label}: registered model", names, key=f"{role}_name", index=None,
                                    placeholder=f"choose a registered {hint}")
        if name is None:
            return None
        try:
            selectors = list(ALIASES_PER_OBJECTIVE) if name == PER_OBJECTIVE else cached_selectors(be.tracking_uri, name)
        except RegistryUnreachable as exc:
            note_registry_down(str(exc))
            return _keep_loaded(role, name)
        except UIError as exc:
            st.sidebar.error(str(exc))
            return None
        if not selectors:
            st.sidebar.warning(f"'{name}' has no versions.")
            return None
        if ss.get(f"{role}_sel") not in selectors:
            wanted = ss.get(f"{role}_sel")
            if wanted:
                st.sidebar.warning(f"'{name}' has no alias or version '{wanted}'; showing "
                                   f"'{selectors[0]}' instead.")
            ss[f"{role}_sel"] = selectors[0]
        sel = st.sidebar.selectbox(f"{label}: alias or version", selectors, key=f"{role}_sel")
        ss[f"{role}_want"] = (name, sel)
        spec = ModelSpec("registry", name, sel)
    else:
        path = st.sidebar.text_input(f"{label}: folder", key=f"{role}_path", placeholder=PLACEHOLDERS[role],
                                     help="a folder saved by PRO, or models:/<name>@<alias> / models:/<name>/<version>")
        if not path.strip():
            st.sidebar.info("Enter a folder saved by PRO (or a models:/<name>@<alias> reference)." + (
                " No WIC policy trained yet? Type `smollm2` for the bundled SmolLM2-135M-Instruct "
                "(weights go into its prompt, but it was not trained to follow them)."
                if role.startswith("policy") else ""))
            return None
        try:  # models:/name@alias typed here works as on the CLI
            spec = ModelSpec.parse(path)
        except UIError as exc:
            st.sidebar.error(str(exc))
            return None
    try:
        if spec.name == PER_OBJECTIVE:
            orch = context.get("orchestrator")
            if orch is None:
                st.sidebar.info("Load the orchestrator first: it names the objectives and holds the "
                                "normalisation statistics.")
                return None
            import json

            prov = cached_resolve_per_objective(be.tracking_uri, spec.selector, tuple(orch.obj.objectives),
                                                json.dumps(getattr(orch.obj, "norm_stats", None), sort_keys=True))
        else:
            prov = cached_resolve(be.tracking_uri, spec)
        orch = context.get("orchestrator")
        objectives = tuple(orch.obj.objectives) if role.startswith("policy") and orch and orch.obj else None
        slot = Slot(role, prov, loading.Key(KIND[role], be.tracking_uri, prov.load_ref, objectives))
        if role == "orchestrator":  # the first screen needs it: loaded now
            with st.spinner(f"Loading the orchestrator ({prov.label()}) for the weights…"):
                slot.obj = loading.get(slot.key)
    except RegistryUnreachable as exc:
        note_registry_down(str(exc))
        return _keep_loaded(role, spec.name)
    except EndpointUnreachable as exc:
        note_endpoint_down(str(exc))
        return _keep_endpoint(role, spec.name)
    except UIError as exc:
        st.sidebar.error(str(exc))
        return None
    show_provenance(slot, be)
    ss[f"{role}_last"] = slot
    return slot


def show_provenance(slot: Slot, be: Backend) -> None:
    """Where the model comes from (version, aliases, training run, links into the MLflow UI) and its state."""
    prov = slot.prov
    state = {"loaded": "", "loading": " · ⏳ loading", "failed": " · failed to load",
             "not loaded": f" · loads for {NEEDED_FOR[slot.role]}"}[slot.state]
    st.sidebar.caption(f"from {prov.label()}{state}")
    links = prov.links(mlflow_ui_url(be.tracking_uri))
    if links:
        parts = []
        if "version" in links:
            parts.append(f"[version {prov.version} ↗]({links['version']})")
        if "run" in links:
            parts.append(f"[training run {prov.run_name or prov.training_run[:12]} ↗]({links['run']})")
        st.sidebar.markdown(" · ".join(parts), help="Opens the MLflow UI (PRO_UI_MLFLOW_URL)")
    elif prov.training_run and prov.spec.source == "registry":
        st.sidebar.caption(f"training run `{prov.training_run}` (set PRO_UI_MLFLOW_URL to link it)")


def _keep_endpoint(role: str, ref: str):
    """While a served endpoint is away, its pickers keep what they showed (nothing is unloaded)."""
    last = ss.get(f"{role}_last")
    if last and is_endpoint(last.prov.load_ref) and last.prov.load_ref == ref.strip().rstrip("/"):
        st.sidebar.caption(f"from {last.prov.label()} (kept: the endpoint is offline)")
        return last
    st.sidebar.caption("The endpoint is offline (see the message at the top).")
    return None


def _clear_caches() -> None:
    for fn in (cached_models, cached_selectors, cached_resolve, cached_resolve_per_objective, cached_predict):
        fn.clear()
    loading.clear()
    ss["endpoint_down"] = []


def sidebar(be: Backend) -> dict:
    """Model pickers (one per role in :data:`ROLES`) and generation settings; returns role -> (model,
    provenance) or None. Call it first in each run: it starts the run's :func:`registry_down` list."""
    ss["registry_down"] = []
    st.sidebar.header("Models")
    models, registry_error = _registry_models(be)
    st.sidebar.caption(f"MLflow: `{be.tracking_uri}`")
    st.sidebar.button("↻ Reload", key="reload", on_click=_clear_caches,
                      help="Forget cached models and registry look-ups (after retraining or promoting elsewhere)")
    loaded: dict = {}
    for role in ROLES:
        loaded[role] = model_picker(role, be, models, registry_error, loaded)
    st.sidebar.header("Generation")
    st.sidebar.number_input("max new tokens", 1, 1024, 48, key="max_new_tokens",
                            help="The longest answer, in tokens (about ¾ of a word each); generation stops "
                                 "earlier at the end of the answer. Longer takes longer on a CPU.")
    st.sidebar.checkbox("sample", value=False, key="do_sample",
                        help="Off: greedy decoding, the same answer every time. On: draws tokens at random "
                             "(temperature), so the weights' effect mixes with chance; the seed makes it repeatable.")
    st.sidebar.slider("temperature", 0.1, 2.0, 0.8, 0.05, key="temperature", disabled=not ss.get("do_sample"),
                      help="Sampling only: below 1 sharper, above 1 more random")
    st.sidebar.number_input("seed", 0, 2**31 - 1, 0, key="seed", help="Random seed for sampling")
    return loaded
