"""Held-out evaluation of PRO-MORLHF / MORLHF runs (the training is in :mod:`pro_lib.morlhf`).

For every training folder written by ``pro morlhf train`` (and the reference policy): one completion
per held-out prompt, scored by the reward suite; the mean normalised reward per objective, the weighted
reward under the orchestrator's, uniform and the run's own weights, paired bootstrap differences
between policies, and the training reward curves of all runs on one figure (the paper's Figure 3).

Stage function: :func:`evaluate_morlhf` (``MorlhfEvalConfig``); it returns a metrics dict and writes
atomically into ``output_dir``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from pro_lib.artifacts import EVAL_FILE
from pro_lib.config import field
from pro_lib.data import load_split_prompts
from pro_lib.errors import CheckpointError, ConfigError
from pro_lib.io import atomic_savefig, atomic_write_text, read_jsonl, write_json, write_jsonl
from pro_lib.morlhf_reward import ORCHESTRATOR_WEIGHTS
from pro_lib.policy import load_policy, resolve_device
from pro_lib.targets import check_objectives


@dataclass
class MorlhfEvalConfig:
    """Held-out evaluation of MORLHF-trained policies (and the reference policy).

    For every run folder: generate one completion per held-out prompt, score it with the reward
    suite, report the mean normalised reward per objective and the weighted reward under the
    orchestrator's weights, uniform weights and the run's own training weights; plot the training
    reward curves of all runs on one figure (the paper's Figure 3).
    """

    runs: list[str] = field(default_factory=list, help="training output folders (comma-separated)")
    output_dir: str = field("runs/morlhf_eval", help="folder for eval.json, eval_table.md, curves.png, samples.jsonl")
    suite: str | None = field(None, help="reward suite folder (default: the first run's)")
    orchestrator: str | None = field(None, help="orchestrator for the prompt-aware weighted reward "
                                                "(default: the first PRO-MORLHF run's)")
    data: list[str] | None = field(None, help="prompt source (default: the first run's data)")
    split: str = field("eval", help="side of the prompt split to evaluate on", choices=["train", "eval", "all"])
    eval_fraction: float | None = field(None, help="split share (default: the first run's)")
    split_seed: int | None = field(None, help="split seed (default: the first run's)")
    max_prompts: int = field(32, help="evaluate on at most this many held-out prompts (a random sample stratified "
                                      "by source, seed --seed)")
    max_prompt_tokens: int | None = field(None, help="skip longer prompts (default: the first run's)")
    max_new_tokens: int | None = field(None, help="completion length (default: the first run's)")
    do_sample: bool = field(False, help="sample instead of greedy decoding")
    include_reference: bool = field(True, help="also evaluate the reference (untrained) policy")
    batch_size: int = field(8, help="generation batch size")
    seed: int = field(0, help="random seed")

    def __post_init__(self) -> None:
        if isinstance(self.runs, str):
            self.runs = [r for r in self.runs.split(",") if r.strip()]
        if not self.runs:
            raise ConfigError("give at least one training folder with --runs")


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8,
             do_sample: bool = False, seed: int = 0, desc: str = "generating") -> list[str]:
    """Completions (text after the prompt) for each prompt, batched with left padding."""
    import torch

    from pro_lib.policy import generate_batched

    torch.manual_seed(seed)
    out = generate_batched(model, tokenizer, list(prompts), batch_size=batch_size, desc=desc,
                           max_new_tokens=max_new_tokens, do_sample=do_sample)
    model.eval()
    return [rows[0] for rows in out]


def _run_info(folder: Path) -> dict:
    run_file = folder / "run.yaml"
    if not run_file.is_file():
        raise CheckpointError(f"{folder} is not a MORLHF training folder (no run.yaml); pass folders written "
                              "by `pro morlhf train`")
    if not (folder / "policy" / "config.json").is_file():
        raise CheckpointError(f"{folder}/policy is missing: the run has not finished; re-run `pro morlhf train` "
                              "with the same --output-dir to resume it")
    return yaml.safe_load(run_file.read_text()) or {}


def _label(info: dict, folder: Path, used: set[str]) -> str:
    base = info.get("method", folder.name)
    label = base if base not in used else f"{base} ({folder.name})"
    used.add(label)
    return label


def evaluate_morlhf(cfg: MorlhfEvalConfig, *, suite=None, orchestrator=None, policies: dict | None = None) -> dict:
    """Held-out rewards of each run (and the reference policy), training curves on one plot.

    Writes ``eval.json`` (all numbers), ``eval_table.md``, ``samples.jsonl`` and ``curves.png``
    into ``cfg.output_dir``. ``policies`` may map a run folder (or ``"reference"``) to a
    ``(model, tokenizer)`` pair already in memory.
    """
    from pro_lib.targets import uniform_weights

    folders = [Path(r) for r in cfg.runs]
    infos = [_run_info(f) for f in folders]
    first = infos[0]
    if suite is None:
        from pro_lib.suite import RewardSuite

        suite = RewardSuite.load(cfg.suite or first["suite"], device=resolve_device())
    names = list(suite.names)
    for f, info in zip(folders, infos):
        if info.get("objectives"):
            check_objectives(info["objectives"], names, got_what=str(f), expected_what="the reward suite")
    orch_ref = cfg.orchestrator or next((i.get("orchestrator") for i in infos if i.get("weights") in ORCHESTRATOR_WEIGHTS
                                         and i.get("orchestrator")), None)
    if orchestrator is None and orch_ref:
        from pro_lib.orchestrator import PreferenceOrchestrator

        orchestrator = PreferenceOrchestrator.from_pretrained(orch_ref)
    policies = dict(policies or {})

    ref_model, ref_tok = policies.get("reference") or load_policy(first["policy"])
    max_prompt_tokens = cfg.max_prompt_tokens if cfg.max_prompt_tokens is not None else first.get("max_prompt_tokens")
    prompts, info = load_split_prompts(cfg.data or first["data"], split=cfg.split,
                                       eval_fraction=cfg.eval_fraction if cfg.eval_fraction is not None
                                       else first.get("eval_fraction", 0.1),
                                       split_seed=cfg.split_seed if cfg.split_seed is not None
                                       else first.get("split_seed", 0),
                                       tokenizer=ref_tok, max_prompt_tokens=max_prompt_tokens, max_prompts=cfg.max_prompts,
                                       seed=cfg.seed)
    max_new = cfg.max_new_tokens or first.get("max_completion_length", 64)
    weight_sets: dict[str, np.ndarray] = {"uniform": np.tile(uniform_weights(len(names)), (len(prompts), 1))}
    if orchestrator is not None:
        orchestrator.check_objectives(names)
        weight_sets["orchestrator"] = np.asarray(orchestrator.predict(prompts), dtype=np.float64)

    entries: list[tuple[str, Path | None, dict, Any]] = []
    if cfg.include_reference:
        entries.append(("reference", None, {"policy": first["policy"]}, (ref_model, ref_tok)))
    used: set[str] = set()
    for f, rinfo in zip(folders, infos):
        entries.append((_label(rinfo, f, used), f, rinfo, policies.get(str(f))))

    results: dict[str, dict] = {}
    per_prompt: dict[str, np.ndarray] = {}
    samples = []
    for label, folder, rinfo, loaded in entries:
        model, tok = loaded if loaded is not None else load_policy(str(folder / "policy"))
        responses = generate(model, tok, prompts, max_new_tokens=max_new, batch_size=cfg.batch_size,
                             do_sample=cfg.do_sample, seed=cfg.seed, desc=f"generating ({label})")
        z = np.asarray(suite.score(prompts, responses, normalize=True, progress=False), dtype=np.float64)
        row: dict[str, Any] = {"n": len(prompts)}
        for k, n in enumerate(names):
            row[n] = float(z[:, k].mean())
            row[f"{n}_sem"] = float(z[:, k].std(ddof=1) / math.sqrt(len(z))) if len(z) > 1 else 0.0
        for wname, w in weight_sets.items():
            wr = (w * z).sum(axis=1)
            row[f"weighted_{wname}"] = float(wr.mean())
            row[f"weighted_{wname}_sem"] = float(wr.std(ddof=1) / math.sqrt(len(wr))) if len(wr) > 1 else 0.0
        if folder is not None and rinfo.get("weights") not in (*ORCHESTRATOR_WEIGHTS, "uniform"):
            from pro_lib.targets import parse_weights

            wr = (parse_weights(rinfo["weights"], names)[None, :] * z).sum(axis=1)
            row["weighted_own"] = float(wr.mean())
        results[label] = row
        per_prompt[label] = z
        for i, (p, r, zz) in enumerate(zip(prompts, responses, z)):
            samples.append({"policy": label, "prompt": p, "response": r, "scores": dict(zip(names, zz.tolist())),
                            "weighted": {wname: float(w[i] @ zz) for wname, w in weight_sets.items()}})
        if loaded is None:
            del model

    out = Path(cfg.output_dir)
    curves = {label: read_jsonl(folder / "train_log.jsonl")
              for label, folder, _, _ in entries if folder is not None and (folder / "train_log.jsonl").is_file()}
    plot_training_curves(curves, names, out / "curves.png")
    diffs = paired_differences(per_prompt, weight_sets, names, seed=cfg.seed)
    from pro_lib.data import format_source_mix

    table = (f"{len(prompts)} held-out prompts (stratified random sample, seed {cfg.seed}: "
             f"{format_source_mix(info['source_mix'])})\n\n" + format_table(results, names, list(weight_sets))
             + "\n\n" + format_differences(diffs))
    report = {"objectives": names, "prompts": info, "max_new_tokens": max_new, "do_sample": cfg.do_sample,
              "weightings": list(weight_sets), "results": results, "differences": diffs,
              "runs": {label: str(folder) for label, folder, _, _ in entries if folder is not None}}
    write_json(out / EVAL_FILE, report)
    atomic_write_text(out / "eval_table.md", table + "\n")
    write_jsonl(out / "samples.jsonl", samples)
    metrics = {f"{label}/{key}": value for label, row in results.items() for key, value in row.items()
               if not key.endswith("_sem") and key != "n"}
    metrics["n_prompts"] = len(prompts)
    return metrics


def paired_differences(z: dict[str, np.ndarray], weight_sets: dict[str, np.ndarray], names: Sequence[str], *,
                       n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Paired comparisons on the same prompts: every policy against the reference (when there is one) and
    every pair of trained policies. Per objective and per weighting, the mean per-prompt difference with
    a percentile interval from a bootstrap over prompts (``level``)."""
    labels = list(z)
    pairs = [(a, "reference") for a in labels if a != "reference" and "reference" in z]
    trained = [lab for lab in labels if lab != "reference"]
    pairs += [(a, b) for i, a in enumerate(trained) for b in trained[i + 1:]]
    rng = np.random.default_rng(seed)
    n = len(next(iter(z.values()))) if z else 0
    idx = rng.integers(0, n, (n_boot, n)) if n else None
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    out = []
    for a, b in pairs:
        cols = {nm: z[a][:, k] - z[b][:, k] for k, nm in enumerate(names)}
        for wname, w in weight_sets.items():
            cols[f"weighted_{wname}"] = (w * (z[a] - z[b])).sum(axis=1)
        row: dict[str, Any] = {"a": a, "b": b, "n": n, "level": level, "diff": {}}
        for key, d in cols.items():
            lo, hi = np.percentile(d[idx].mean(axis=1), q) if n > 1 else (math.nan, math.nan)
            row["diff"][key] = [float(d.mean()), float(lo), float(hi)]
        out.append(row)
    return out


def format_differences(diffs: Sequence[dict]) -> str:
    """Markdown: paired differences with their intervals and a verdict column (the interval excludes 0?)."""
    if not diffs:
        return ""
    keys = list(diffs[0]["diff"])
    pct = f"{diffs[0]['level']:.0%}"
    lines = [f"Paired differences (a - b) on the same prompts, {pct} bootstrap intervals over prompts; "
             "* marks an interval that excludes 0:", "",
             "| a - b | " + " | ".join(k.replace("weighted_", "weighted (") + (")" if k.startswith("weighted_") else "")
                                      for k in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in diffs:
        cells = []
        for k in keys:
            m, lo, hi = r["diff"][k]
            sig = "*" if (lo > 0 or hi < 0) else ""
            cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{sig}")
        lines.append(f"| {r['a']} - {r['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(results: dict[str, dict], names: Sequence[str], weightings: Sequence[str]) -> str:
    """Markdown table: one row per policy, mean normalised reward (± s.e.m.) per objective and weighted."""
    cols = list(names) + [f"weighted_{w}" for w in weightings]
    header = "| policy | " + " | ".join(c.replace("weighted_", "weighted (") + (")" if c.startswith("weighted_")
                                                                                   else "") for c in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 1)]
    for label, row in results.items():
        cells = [f"{row[c]:+.3f} ± {row.get(c + '_sem', 0.0):.3f}" for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_training_curves(curves: dict[str, list[dict]], names: Sequence[str], path: str | Path) -> Path | None:
    """Training reward curves of several runs on one figure: the weighted reward each run optimised,
    then one panel per objective (mean normalised reward of the sampled completions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return None
    panels = [("reward", "weighted reward (training objective)")] + [(f"objectives/{n}", n) for n in names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, rows in curves.items():
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if not pts:
                continue
            x, y = zip(*pts)
            line, = ax.plot(x, y, alpha=0.35, linewidth=1)
            if len(y) >= 3:  # moving average: the raw curve of a short run is noisy
                k = max(2, len(y) // 5)
                smooth = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(x[k - 1:], smooth, color=line.get_color(), linewidth=2, label=label)
            else:
                line.set_label(label)
                line.set_alpha(1.0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean normalised reward")
    axes[0][0].legend()
    fig.tight_layout()
    return atomic_savefig(fig, path)
