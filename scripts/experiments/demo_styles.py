"""Can SmolLM2 learn its weights on demo data in the main job's SFT budget? (issue 14, second study)

The first study (demo_conditioning.py, docs/results_wic.md) found that when a prompt's style can be
read from the prompt and every reply is different text, 120 steps do not teach the tags. Here each
training prompt is answered in two styles (its natural one and one other, drawn at random), and every
styled reply opens with a fixed sentence per style, so that which style to use is decided by a few
tokens that are the same across prompts and that only the tags predict.

Scores come from keyword functions (no reward-model training), tags are w* = softmax(z / tau) of those
scores through the real offline stage (pro_lib.wic.offline.train_wic_offline). After SFT, the policy
generates on held-out demo prompts at each corner of the simplex; the weight response of objective k
is the mean score k at corner k minus the mean score k at the other corners (95% bootstrap interval
over prompts).

    python scripts/experiments/demo_styles.py --out /tmp/demo_styles --steps 40
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

NAMES = ["helpful", "harmless", "humor"]
BODY_WORDS = 0  # --body-words
OPENER_EXAMPLES = False  # --opener-examples
# the openers and the joke pool that the shipped demo data uses (scripts/make_demo_data.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_demo_data import JOKES as HUMOR, OPEN  # noqa: E402

SAFE = ["Please take care: check with a qualified professional before you try anything risky, and stop if it feels unsafe.",
        "Your safety comes first, so go slowly, ask someone you trust for help, and avoid anything that could hurt you or others.",
        "I'd rather be careful here: please stay safe, follow the official guidance, and reach out to a professional if in doubt."]


def styled(style: str, row: dict, rng: random.Random) -> str:
    """A reply in ``style``: the fixed opener, then the prompt's own reply when it is in that style."""
    if style == row["source"]:
        body = row["chosen"]
    elif style == "humor":
        body = rng.choice(HUMOR)
    elif style == "harmless":
        body = rng.choice(SAFE)
    else:  # helpful on a humor prompt: its flat, literal reply
        body = row["rejected"]
    if BODY_WORDS:
        body = " ".join(body.split()[:BODY_WORDS])
    return f"{OPEN[style]} {body}"


def other_styles(source: str) -> list[str]:
    # never a "helpful" (compliant) reply to a risky request
    return {"helpful": ["harmless", "humor"], "harmless": ["humor"], "humor": ["helpful", "harmless"]}[source]


def balanced_other(source: str, rng: random.Random) -> list[str]:
    """--mode balanced: risky prompts keep their one (cautious) style; the others get one more, chosen so
    that the three styles appear about equally often."""
    return {"helpful": [rng.choice(["harmless", "humor"])], "harmless": [], "humor": ["helpful"]}[source]


def kw(words):
    def f(prompts, responses):
        return [float(sum(r.lower().count(w) for w in words)) for r in responses]
    return f


def style(name, words):
    """3 for the style's opener, plus 0.5 per style word: clean, style-separating scores."""
    base = kw(words)
    def f(prompts, responses):
        return [3.0 * r.strip().startswith(OPEN[name]) + 0.5 * b for r, b in zip(responses, base(prompts, responses))]
    return f


SCORERS = {"helpful": style("helpful", ["detailed", "first", "step"]),
           "harmless": style("harmless", ["safe", "care", "professional"]),
           "humor": style("humor", ["joke", "funny"])}


def build(rows, seed, mode):
    rng = random.Random(seed)
    out = []
    for r in rows:
        styles = ([r["source"], rng.choice(other_styles(r["source"]))] if mode == "two" else
                  [r["source"], *other_styles(r["source"])] if mode == "all" else
                  [r["source"], *balanced_other(r["source"], rng)] if mode == "balanced" else [rng.choice(NAMES)])
        for s in styles:
            if s == "helpful" and r["source"] == "harmless":
                s = "harmless"
            out.append({"prompt": r["prompt"], "chosen": styled(s, r, rng), "rejected": r["rejected"], "source": s})
    if OPENER_EXAMPLES:  # the decision, alone: the same prompt with only the opener as its completion
        out += [{**r, "chosen": OPEN[r["source"]]} for r in out]
    rng.shuffle(out)
    return out


def boot(x, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (n, len(x)))
    m = x[idx].mean(axis=1)
    return float(x.mean()), float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/demo_styles")
    ap.add_argument("--train-prompts", type=int, default=160)
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--mode", choices=["two", "one", "all", "balanced"], default="two")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--body-words", type=int, default=0, help="cut each reply's body to this many words (0: keep)")
    ap.add_argument("--opener-examples", action="store_true",
                    help="also train on each reply's opener alone (weights the loss on the style decision)")
    args = ap.parse_args()
    global BODY_WORDS, OPENER_EXAMPLES
    BODY_WORDS, OPENER_EXAMPLES = args.body_words, args.opener_examples
    import torch

    from pro_lib import wic
    from pro_lib.wic import offline as wic_offline
    from pro_lib.data import demo_data_path
    from pro_lib.suite import RewardSuite

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(l) for l in demo_data_path().read_text().splitlines() if l.strip()]
    random.Random(0).shuffle(rows)
    held = rows[:args.heldout]
    train = build(rows[args.heldout:args.heldout + args.train_prompts], 0, args.mode)
    data = out / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in train))
    suite = RewardSuite.from_functions(SCORERS)
    suite.fit_normalization(suite.score([r["prompt"] for r in train], [r["chosen"] for r in train], progress=False))
    cfg = wic_offline.WICOfflineConfig(policy="smollm2", data=[str(data)], output_dir=str(out / "wic"),
                                       epochs=args.epochs, learning_rate=args.lr, batch_size=8, max_length=256,
                                       max_prompt_tokens=128, save_steps=1000, tau=args.tau)
    t0 = time.time()
    m = wic_offline.train_wic_offline(cfg, suite=suite)
    t_sft = time.time() - t0
    pol = wic.WICPolicy.from_pretrained(out / "wic")
    prompts = [r["prompt"] for r in held]
    scores, texts = {}, {}
    t0 = time.time()
    for k, name in enumerate(NAMES):
        w = np.eye(len(NAMES))[k]
        texts[name] = pol.generate(prompts, weights=list(w), max_new_tokens=args.max_new_tokens, batch_size=12)
        scores[name] = suite.score(prompts, texts[name], progress=False)  # (N, K) raw
    t_gen = time.time() - t0
    opener_share = {c: {s: float(np.mean([t.strip().startswith(OPEN[s]) for t in texts[c]])) for s in NAMES} for c in NAMES}
    resp = {}
    for k, name in enumerate(NAMES):
        others = np.mean([scores[o][:, k] for o in NAMES if o != name], axis=0)
        resp[name] = boot(scores[name][:, k] - others)
    report = {"args": vars(args), "sft": m, "sft_seconds": t_sft, "gen_seconds": t_gen,
              "opener_share": opener_share, "weight_response": resp,
              "examples": {c: texts[c][:4] for c in NAMES}, "prompts": prompts[:4]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("sft_seconds", "gen_seconds", "opener_share", "weight_response")}, indent=1))
    ex = [json.loads(l) for l in (out / "wic" / "examples.jsonl").read_text().splitlines()]
    for st in NAMES:
        w = np.array([e["weights"] for e in ex if e["completion"].startswith(OPEN[st]) and e["completion"] != OPEN[st]])
        print(f"tags of {st}-style examples: n={len(w)} mean={np.round(w.mean(0), 2)} std={np.round(w.std(0), 2)}")
    print("loss first/last", m.get("sft_loss_first"), m.get("sft_loss_last"), "steps", m.get("steps", m.get("global_step")))


if __name__ == "__main__":
    main()
