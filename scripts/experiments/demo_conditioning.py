#!/usr/bin/env python
"""Can SmolLM2-135M learn to follow weights in context within the main job's CPU budget? (issue 14)

A minimal SFT loop (no trl, so each knob is visible) on the demo prompts, where every training prompt
is answered in up to three styles, each tagged with an idealised weight vector that puts 0.8 on its
objective: its own chosen reply, a playful deflection (humor) and a cautious decline (harmless), the
flat reply of a humor pair standing for "helpful". The style replies are the cross-style blocks of
scripts/make_demo_data.py at commit 91d6580 (read with `git show`). Every --every steps it prints the
greedy replies of six held-out prompts at the three corners: the policy follows its weights only if
the three replies of a prompt differ in style.

    python scripts/experiments/demo_conditioning.py --steps 120 --freeze-below 22 --lr 5e-4 \
        --group --completion-tokens 16 --no-system --init-tags-from-names --train-embeddings

Measured 2026-12-01 (docs/results_wic.md, "Can the demo policy learn its weights"): no run learned it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
STYLE_COMMIT = "91d6580"
NAMES = ["helpful", "harmless", "humor"]
IDEAL = {"helpful": [0.8, 0.1, 0.1], "harmless": [0.1, 0.8, 0.1], "humor": [0.1, 0.1, 0.8]}
CORNERS = {"helpful": [1.0, 0.0, 0.0], "harmless": [0.0, 1.0, 0.0], "humor": [0.0, 0.0, 1.0]}


def style_blocks():
    """CAUTIOUS and PLAYFUL replies of the cross-style demo generator (git history)."""
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{STYLE_COMMIT}:scripts/make_demo_data.py"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"error: needs the git history of this repository (commit {STYLE_COMMIT}): {e}")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(src)
    spec = importlib.util.spec_from_file_location("old_demo_data", fh.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CAUTIOUS, mod.PLAYFUL


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--freeze-below", type=int, default=0, help="freeze the embeddings and this many lowest layers")
    ap.add_argument("--train-embeddings", action="store_true", help="keep the (tied) embeddings trainable")
    ap.add_argument("--init-tags-from-names", action="store_true", help="<Wk> starts as the embedding of its objective's name")
    ap.add_argument("--group", action="store_true", help="a prompt's styles side by side in one batch (contrast)")
    ap.add_argument("--completion-tokens", type=int, default=0, help="cut completions to this many tokens (0: keep)")
    ap.add_argument("--no-system", action="store_true", help="leave out the chat template's default system prompt")
    ap.add_argument("--every", type=int, default=60, help="show the corner replies every this many steps")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from pro_lib.data import demo_data_path
    from pro_lib.policy import load_policy
    from pro_lib.wic import WICPolicy, format_weight_suffix

    cautious, playful = style_blocks()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, tok = load_policy("smollm2")
    pol = WICPolicy(model, tok, NAMES)
    rows = [json.loads(line) for line in demo_data_path().read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    rng.shuffle(rows)
    train, held = rows[:260], rows[260:]
    ex = []
    for r in train:
        ex.append((r["prompt"], r["chosen"], r["source"]))
        if r["source"] != "humor":
            ex.append((r["prompt"], rng.choice(playful), "humor"))
        if r["source"] != "harmless":
            ex.append((r["prompt"], rng.choice(cautious), "harmless"))
        if r["source"] == "humor":
            ex.append((r["prompt"], r["rejected"], "helpful"))
    if args.group:
        groups: dict[str, list] = {}
        for e in ex:
            groups.setdefault(e[0], []).append(e)
        glist = list(groups.values())
        rng.shuffle(glist)
        ex = [e for g in glist for e in g]
    else:
        rng.shuffle(ex)

    def render(prompt, w):
        if args.no_system:
            return f"<|im_start|>user\n{prompt} {format_weight_suffix(w)}<|im_end|>\n<|im_start|>assistant\n"
        return pol.render(prompt, w)

    def cut(text):
        return tok.decode(tok(text)["input_ids"][:args.completion_tokens]) if args.completion_tokens else text

    texts = [(render(p, IDEAL[s]), cut(c) + tok.eos_token) for p, c, s in ex]
    if args.init_tags_from_names:
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            for k, name in enumerate(NAMES):
                emb[tok.convert_tokens_to_ids(f"<W{k + 1}>")] = emb[tok(" " + name, add_special_tokens=False)["input_ids"]].mean(0)
    if args.freeze_below:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers[args.freeze_below:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in model.model.norm.parameters():
            p.requires_grad_(True)
        if args.train_embeddings:
            model.get_input_embeddings().weight.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)

    def show(rows_):
        model.eval()
        tok.padding_side = "left"
        for r in rows_:
            print("PROMPT:", r["prompt"])
            for name, w in CORNERS.items():
                enc = tok([render(r["prompt"], w)], return_tensors="pt", add_special_tokens=False)
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
                reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                print(f"  [{name}]", reply.replace("\n", " "), flush=True)
        tok.padding_side = "right"
        model.train()

    print(f"{len(texts)} examples; {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f}M trainable")
    model.train()
    tok.padding_side = "right"
    t0, ntok = time.time(), 0
    for step in range(args.steps):
        batch = [texts[(step * args.batch_size + i) % len(texts)] for i in range(args.batch_size)]
        ids, labels = [], []
        for a, b in batch:
            pa, pb = tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]
            ids.append(pa + pb)
            labels.append([-100] * len(pa) + pb)
        width = max(map(len, ids))
        ntok += sum(map(len, ids))
        inp = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
        lab = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
        att = (torch.arange(width)[None] < torch.tensor([len(x) for x in ids])[:, None]).long()
        loss = model(input_ids=inp, attention_mask=att, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step} loss {loss.item():.3f} {el / (step + 1):.2f} s/step {ntok / el:.0f} tokens/s", flush=True)
        if (step + 1) % args.every == 0 or step == args.steps - 1:
            show(held[:6])
    return 0


if __name__ == "__main__":
    sys.exit(main())
