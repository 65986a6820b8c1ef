"""Markdown / HTML reports the components write into KFP artifacts (and MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

from components.runtime import image_html, md_table
from pro_lib.artifacts import DATA_REPORT, EVAL_FILE, TargetsReport
from pro_lib.io import read_json


def data_report(cfg, result: dict) -> str:
    rep = read_json(Path(cfg.output_dir) / DATA_REPORT)
    rows = [{"label": k, "pairs": v} for k, v in sorted(rep.get("per_label", {}).items())]
    return (f"# Prepared data\n\nsources: {', '.join(map(str, cfg.sources))}\n\n"
            f"train pairs: **{rep['n_train']}**, eval pairs: **{rep['n_eval']}**\n\n"
            + md_table(rows, ["label", "pairs"]))


def reward_report(cfg, result: dict) -> str:
    return (f"# Reward model `{cfg.objective}`\n\n"
            f"held-out pairwise accuracy **{result['accuracy']:.3f}** "
            f"(95% Wilson CI {result['accuracy_ci_low']:.3f}-{result['accuracy_ci_high']:.3f}, "
            f"n={result['n_eval']}), mean margin {result['mean_margin']:.3f}, train loss "
            f"{result['train_loss']:.4f} on {result['n_train']} pairs\n")


def targets_report(cfg, result: dict) -> str:
    rep = TargetsReport.load(cfg.output_dir)
    rows = [{"objective": n, "mean w*": float(rep.mean_target[k]), "argmax share": float(rep.argmax_share[k]),
             "raw mean": float(rep.stats[n][0]), "raw std": float(rep.stats[n][1])}
            for k, n in enumerate(rep.objectives)]
    return (f"# Targets w* = softmax(z / {rep.tau})\n\n{rep.n} prompts scored\n\n"
            + md_table(rows, ["objective", "mean w*", "argmax share", "raw mean", "raw std"]))


def orchestrator_train_report(cfg, result: dict) -> str:
    return (f"# Orchestrator training\n\nbackbone `{cfg.backbone}`, {result['train_steps']} steps, final loss "
            f"{result['train_loss']:.4f} ({cfg.loss}), {result['train_seconds']:.0f} s\n")


def orchestrator_eval_report(cfg, result: dict) -> str:
    ev = read_json(Path(cfg.output_dir) / EVAL_FILE)
    rows = [{"weights": m, **r} for m, r in ev["methods"].items()]
    text = "# Orchestrator evaluation (held out)\n\n" + md_table(rows, ["weights", "mse", "kl", "argmax_agreement"])
    if "mse_ratio_vs_best_fixed" in ev:
        text += (f"\norchestrator / best fixed MSE = **{ev['mse_ratio_vs_best_fixed']:.3f}** (95% bootstrap CI "
                 f"{ev['mse_ratio_ci_low']:.3f}-{ev['mse_ratio_ci_high']:.3f}, n={ev['n']})\n")
    return text


def orchestrator_eval_plot(cfg, result: dict, out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ev = read_json(out / EVAL_FILE)
    names = ev["objectives"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, ev["mean_target"], 0.4, label="mean target w*")
    axes[0].bar(x + 0.2, ev["mean_prediction"], 0.4, label="mean orchestrator f(x)")
    axes[0].set_xticks(x, names)
    axes[0].set_title("weights per objective")
    axes[0].legend()
    methods = list(ev["methods"])
    axes[1].bar(methods, [ev["methods"][m]["mse"] for m in methods], color=["C2", "C7", "C1"][: len(methods)])
    axes[1].set_title("held-out MSE to w* (lower is better)")
    fig.tight_layout()
    png = out / "orchestrator_eval.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return image_html("Orchestrator evaluation", png, f"n={ev['n']} held-out prompts")


def morlhf_eval_report(cfg, result: dict) -> str:
    p = Path(cfg.output_dir) / "eval_table.md"
    return "# Policy evaluation\n\n" + (p.read_text() if p.is_file() else "```\n" + json.dumps(result, indent=2) + "\n```")


def morlhf_eval_plot(cfg, result: dict, out: Path) -> str | None:
    png = out / "curves.png"
    return image_html("Training reward curves", png) if png.is_file() else None


def pareto_plot(cfg, result: dict, out: Path) -> str | None:
    pngs = sorted(out.glob("*.png"))
    return image_html("Pareto front", pngs[0]) if pngs else None
