#!/usr/bin/env python
"""PRO's premise on real data without training a policy: best-of-N under per-prompt weights (issue 28 item 5).

Theorem 5.1 says per-prompt weights fit the preferred responses better than any fixed vector; what a user
wants to know is whether picking answers by ``sum_k f(x)_k r_k`` gives better answers. Here the bundled
SmolLM2-135M-Instruct samples N answers per held-out HH prompt; one reward suite (A) picks the answer
maximising the weighted reward under each weighting; a second suite (B), trained on a disjoint half of
the pairs, judges the pick, so the selection cannot game its own judge.

1. split the shared HH-RLHF *test* pairs (helpful-base + harmless-base) by a seeded hash of the prompt into
   four disjoint parts: held-out prompts, orchestrator training, reward-model half A, half B;
2. train suite A (helpful RM on A's helpful-base pairs, harmless RM on A's harmless-base pairs) and suite B
   the same way on half B (MiniLM + trl RewardTrainer, as scripts/experiments/orchestrator_hh.py);
3. score the orchestrator part's preferred responses with suite A (z-stats, w* = softmax(z / 0.1)) and
   train the Preference Orchestrator on them (the product's path: `pro rewards score`, `pro orchestrator train`);
4. sample N_max answers per held-out prompt (a random sample stratified by source) once, cached;
5. score every answer with both suites, cached; best-of-N for N in {1, 4, 8} = the first N samples;
6. the pick under f(x), the best fixed vector (the mean training target), f(x) shuffled across prompts
   (control), uniform, and the source's one-hot (oracle: reads the label), judged by suite B: each
   objective's reward per source, the source-matched reward (helpful on helpful-base, harmless on
   harmless-base), paired bootstrap intervals over prompts against uniform and against shuffled.

Every step is skipped when its output exists (``--force`` redoes all); rerunning only the selection
(step 6) takes seconds. Writes <out>/report.md and <out>/result.json.

    flock /tmp/pro-cpu.lock .venv/bin/python scripts/experiments/best_of_n_hh.py     # < 20 min on 2 cores
    .venv/bin/python scripts/experiments/best_of_n_hh.py --quick                     # smoke run, numbers meaningless
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NAMES = ["helpful", "harmless"]
SOURCES = {"helpful": "helpful-base", "harmless": "harmless-base"}
PARTS = ("heldout", "orchestrator", "rm_a", "rm_b")
UNTIL = ("split", "suite_a", "suite_b", "orchestrator", "samples", "scores")


def split_by_prompt(pairs, fractions: dict[str, float], seed: int) -> dict[str, list]:
    """Disjoint parts by a seeded hash of each pair's prompt (a prompt's pairs stay together)."""
    edges, acc = [], 0.0
    for name, f in fractions.items():
        acc += f
        edges.append((name, acc))
    parts: dict[str, list] = {name: [] for name in fractions}
    for p in pairs:
        u = int(hashlib.sha256(f"best-of-n\0{seed}\0{p.prompt}".encode()).hexdigest()[:12], 16) / 16 ** 12
        parts[next(name for name, e in edges if u < e or e == edges[-1][1])].append(p)
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "hh-rlhf"))
    ap.add_argument("--out", default=str(REPO / "runs" / "best_of_n"))
    ap.add_argument("--seed", type=int, default=0, help="the split, the prompt sample, sampling, the shuffle")
    ap.add_argument("--prompts", type=int, default=80, help="held-out prompts (stratified by source)")
    ap.add_argument("--samples", type=int, default=8, help="answers sampled per prompt (N max)")
    ap.add_argument("--ns", default="1,4,8", help="the N of best-of-N (the first N samples)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-prompt-tokens", type=int, default=128, help="generation sees the prompt's last tokens")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--gen-batch", type=int, default=4, help="prompts per generate call (x samples sequences)")
    ap.add_argument("--rm-pairs", type=int, default=400, help="pairs per reward model (a stratified sample)")
    ap.add_argument("--rm-eval-pairs", type=int, default=150, help="held-out pairs per source for RM accuracy")
    ap.add_argument("--rm-max-length", type=int, default=128)
    ap.add_argument("--orch-pairs", type=int, default=600, help="orchestrator training pairs")
    ap.add_argument("--orch-epochs", type=float, default=2.0)
    ap.add_argument("--fractions", default="0.1,0.2,0.35,0.35", help="held-out, orchestrator, RM A, RM B")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny budget smoke run (numbers not meaningful)")
    ap.add_argument("--force", action="store_true", help="redo every step")
    ap.add_argument("--until", choices=UNTIL, default=None,
                    help="stop after this step (to run the steps as several short jobs; outputs are kept)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.rm_pairs, args.rm_eval_pairs, args.orch_pairs = 8, 40, 20, 60
        args.samples, args.ns, args.max_new_tokens, args.orch_epochs = 4, "1,2,4", 8, 1.0
    ns = [int(x) for x in args.ns.split(",")]
    if max(ns) > args.samples:
        sys.exit(f"error: --ns {args.ns} needs --samples >= {max(ns)}")

    import torch

    from pro_lib import best_of_n as bon
    from pro_lib.config import build_config
    from pro_lib.data import format_source_mix, load_pairs, source_mix, stratified_sample, write_pairs
    from pro_lib.io import atomic_write_text, read_jsonl, write_json, write_jsonl
    from pro_lib.orchestrator import OrchestratorTrainConfig, PreferenceOrchestrator, train_orchestrator
    from pro_lib.rewards import RewardTrainConfig, reward_eval_table, train_reward_model
    from pro_lib.suite import RewardSuite, ScoreConfig, model_objective, score_and_target
    from pro_lib.artifacts import TargetsReport

    torch.set_num_threads(args.threads)
    data_dir, out = Path(args.data_dir), Path(args.out)
    files = [data_dir / f"{s}_test.jsonl.gz" for s in SOURCES.values()]
    for f in files:
        if not f.is_file():
            sys.exit(f"error: {f} not found; pass --data-dir pointing at the HH-RLHF files")
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0, timings = time.time(), {}

    def step(name: str, marker: Path, fn):
        if marker.exists():
            print(f"[skip] {name}: {marker} exists", flush=True)
            return None
        print(f"[run ] {name}", flush=True)
        t = time.time()
        result = fn()
        timings[name] = round(time.time() - t, 1)
        return result

    # 1. the split --------------------------------------------------------------------------------
    fractions = dict(zip(PARTS, (float(x) for x in args.fractions.split(","))))
    if abs(sum(fractions.values()) - 1) > 1e-9:
        sys.exit(f"error: --fractions must sum to 1, got {args.fractions}")
    split_dir = out / "split"

    def do_split():
        pairs = [p for f in files for p in load_pairs(f"hh:{f}")]
        parts = split_by_prompt(pairs, fractions, args.seed)
        src = lambda ps: [p.source for p in ps]  # noqa: E731
        written = {"heldout_eval": stratified_sample(parts["heldout"], 2 * args.rm_eval_pairs,
                                                     sources=src(parts["heldout"]), seed=args.seed),
                   "orchestrator": stratified_sample(parts["orchestrator"], args.orch_pairs,
                                                     sources=src(parts["orchestrator"]), seed=args.seed),
                   "rm_a": parts["rm_a"], "rm_b": parts["rm_b"], "heldout": parts["heldout"]}
        for name, ps in written.items():
            write_pairs(ps, split_dir / f"{name}.jsonl")
        write_json(split_dir / "split.json", {
            "seed": args.seed, "fractions": fractions,
            "parts": {name: source_mix(src(ps)) for name, ps in parts.items()},
            "written": {name: source_mix(src(ps)) for name, ps in written.items()}})

    step("split", split_dir / "split.json", do_split)
    split_info = json.loads((split_dir / "split.json").read_text())
    if args.until == "split":
        return 0

    # 2. the two suites ---------------------------------------------------------------------------
    rm_rows = []
    for half in ("a", "b"):
        for obj in NAMES:
            rm_dir = out / f"suite_{half}" / obj
            step(f"reward model {obj} (half {half.upper()})", rm_dir / "eval_metrics.json",
                 lambda: train_reward_model(build_config(RewardTrainConfig, {
                     "objective": obj, "data": [str(split_dir / f"rm_{half}.jsonl")],
                     "eval_data": [str(split_dir / "heldout_eval.jsonl")], "source": SOURCES[obj],
                     "limit": args.rm_pairs, "base_model": "minilm", "output_dir": str(rm_dir),
                     "max_length": args.rm_max_length, "epochs": 1.0, "learning_rate": 5e-5, "batch_size": 16,
                     "seed": args.seed})))
            m = json.loads((rm_dir / "eval_metrics.json").read_text())
            rm_rows.append({**m, "objective": f"{obj} (suite {half.upper()})"})
        if args.until == f"suite_{half}":
            return 0

    # 3. orchestrator on suite A's targets --------------------------------------------------------
    targets = out / "targets_a"
    step("score + targets (suite A)", targets / TargetsReport.FILE, lambda: score_and_target(build_config(
        ScoreConfig, {"data": str(split_dir / "orchestrator.jsonl"), "output_dir": str(targets),
                      "objectives": [f"{o}={out / 'suite_a' / o}" for o in NAMES]})))
    orch_dir = out / "orchestrator"
    step("orchestrator (KL(f || w*), suite A targets)", orch_dir / "train_metrics.json",
         lambda: train_orchestrator(build_config(OrchestratorTrainConfig, {
             "targets": str(targets), "backbone": "minilm", "loss": "reverse_kl", "output_dir": str(orch_dir),
             "max_length": 128, "epochs": args.orch_epochs, "learning_rate": 5e-5, "batch_size": 32,
             "seed": args.seed})))
    if args.until == "orchestrator":
        return 0

    # 4. held-out prompts and their samples (generated once) ----------------------------------------
    heldout = load_pairs(str(split_dir / "heldout.jsonl"))
    uniq: dict[str, str] = {}
    for p in heldout:
        uniq.setdefault(p.prompt, p.source)
    prompts = stratified_sample(list(uniq), args.prompts, sources=list(uniq.values()), seed=args.seed)
    sources = [uniq[p] for p in prompts]
    samples_file = out / "samples.jsonl"

    def do_samples():
        from tqdm.auto import tqdm

        from pro_lib.policy import generate_batched, load_policy, truncate_prompt
        from pro_lib.wic import to_messages

        model, tok = load_policy("smollm2")
        partial = out / "samples.partial.jsonl"
        done = {r["prompt"]: r for r in read_jsonl(partial)} if partial.is_file() else {}
        rows = [done[p] for p in prompts if p in done]
        todo = [p for p in prompts if p not in done]
        chunks = [todo[i:i + args.gen_batch] for i in range(0, len(todo), args.gen_batch)]
        for chunk in tqdm(chunks, desc=f"sampling {args.samples} answers x {len(todo)} prompts", unit="batch"):
            texts = [tok.apply_chat_template(to_messages(truncate_prompt(tok, p, args.max_prompt_tokens)),
                                             tokenize=False, add_generation_prompt=True) for p in chunk]
            torch.manual_seed(args.seed * 100003 + prompts.index(chunk[0]))  # the same samples after a restart
            outs = generate_batched(model, tok, texts, batch_size=len(chunk), num_return_sequences=args.samples,
                                    progress=False, max_new_tokens=args.max_new_tokens, do_sample=True,
                                    temperature=args.temperature, top_p=args.top_p)
            rows += [{"prompt": p, "source": uniq[p], "samples": [s.strip() for s in o]} for p, o in zip(chunk, outs)]
            write_jsonl(partial, rows)
        by_prompt = {r["prompt"]: r for r in rows}
        write_jsonl(samples_file, [by_prompt[p] for p in prompts])
        partial.unlink(missing_ok=True)

    step(f"sample {args.samples} answers per prompt (SmolLM2-135M-Instruct)", samples_file, do_samples)
    recs = read_jsonl(samples_file)
    if [r["prompt"] for r in recs] != prompts:
        sys.exit(f"error: {samples_file} holds other prompts (another --seed / --prompts?); delete it or use --force")
    cands = [r["samples"][:args.samples] for r in recs]
    if args.until == "samples":
        return 0

    # 5. both suites score every answer ------------------------------------------------------------
    scores_file = out / "scores.npz"

    def do_scores():
        flat_p = [p for p, c in zip(prompts, cands) for _ in c]
        flat_r = [s for c in cands for s in c]
        suite_a = RewardSuite.load(targets / "suite")                # with suite A's z-stats (orchestrator part)
        a = suite_a.normalize(suite_a.score(flat_p, flat_r))
        suite_b = RewardSuite([model_objective(o, str(out / "suite_b" / o)) for o in NAMES])
        b_raw = suite_b.score(flat_p, flat_r)
        np.savez(scores_file, a=a.reshape(len(prompts), args.samples, -1),
                 b_raw=b_raw.reshape(len(prompts), args.samples, -1))

    step("score every answer with suite A and suite B", scores_file, do_scores)
    if args.until == "scores":
        return 0
    sc = np.load(scores_file)
    sel = sc["a"]
    b_raw = sc["b_raw"]
    # the judge's units: z over every held-out answer (suite B has no stats of its own data here)
    judge = (b_raw - b_raw.reshape(-1, 2).mean(0)) / b_raw.reshape(-1, 2).std(0)

    # 6. the weightings and the selection ------------------------------------------------------------
    orch = PreferenceOrchestrator.from_pretrained(orch_dir)
    f_x = orch.predict(prompts).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    best_fixed = np.asarray(TargetsReport.load(targets).mean_target, dtype=np.float64)
    onehot = np.array([[1.0, 0.0] if s == SOURCES["helpful"] else [0.0, 1.0] for s in sources])
    weightings = {"f(x)": f_x, "best fixed": best_fixed, "shuffled f(x)": f_x[rng.permutation(len(prompts))],
                  "uniform": np.full(2, 0.5), "one-hot source (oracle)": onehot}
    objective_of = {SOURCES[n]: k for k, n in enumerate(NAMES)}
    res = bon.evaluate_selection(sel, judge, weightings, sources, objective_of, NAMES, ns=ns,
                                 baselines=("uniform", "shuffled f(x)", "best fixed"), n_boot=args.bootstrap, seed=args.seed)
    own = bon.evaluate_selection(sel, sel, weightings, sources, objective_of, NAMES, ns=ns,
                                 baselines=("uniform",), n_boot=args.bootstrap, seed=args.seed)
    agree = float((f_x.argmax(1) == onehot.argmax(1)).mean())

    # report ---------------------------------------------------------------------------------------------
    lines = [f"# Best-of-N under per-prompt weights on HH-RLHF (seed {args.seed})", "",
             f"held-out prompts: {len(prompts)} ({format_source_mix(source_mix(sources))}), {args.samples} samples "
             f"each from SmolLM2-135M-Instruct (T {args.temperature}, top-p {args.top_p}, {args.max_new_tokens} new "
             f"tokens, prompt cut to its last {args.max_prompt_tokens} tokens); selection: suite A (z under its "
             f"stats); judge: suite B (z over the {len(prompts) * args.samples} held-out answers)", "",
             f"split (seeded hash of the prompt, fractions {args.fractions}): "
             + "; ".join(f"{k} {format_source_mix(v)}" for k, v in split_info["parts"].items()), "",
             "## Reward models: held-out pairwise accuracy (95% Wilson interval)", "```",
             reward_eval_table(rm_rows), "```", "",
             f"orchestrator: argmax agrees with the prompt's source on {agree:.3f} of the held-out prompts; "
             f"mean f(x) {dict(zip(NAMES, np.round(f_x.mean(0), 3).tolist()))}; best fixed (mean training target) "
             f"{dict(zip(NAMES, np.round(best_fixed, 3).tolist()))}", ""]
    for n in ns:
        r = res["by_n"][n]
        lines += [f"## N = {n}: suite B's reward of the pick (z), per source", "",
                  "| weighting | helpful on helpful-base | harmless on helpful-base | helpful on harmless-base "
                  "| harmless on harmless-base | source-matched | source-matched under suite A (selection) |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in r["weightings"].items():
            hb, hm = row["by_source"][SOURCES["helpful"]], row["by_source"][SOURCES["harmless"]]
            lines.append(f"| {name} | {hb['helpful']:+.3f} | {hb['harmless']:+.3f} | {hm['helpful']:+.3f} | "
                         f"{hm['harmless']:+.3f} | **{row['source_matched']:+.3f}** | "
                         f"{own['by_n'][n]['weightings'][name]['source_matched']:+.3f} |")
        lines += ["", f"Paired differences of the source-matched reward (suite B), 95% bootstrap intervals over "
                  f"prompts ({args.bootstrap} resamples):", "", "| a - b | mean | 95% CI |", "|---|---|---|"]
        for key, (m, lo, hi) in r["differences"].items():
            mark = " *" if lo > 0 or hi < 0 else ""
            lines.append(f"| {key} | {m:+.3f} | [{lo:+.3f}, {hi:+.3f}]{mark} |")
        lines.append("")
    lines += ["## Verdicts (from the intervals)", ""]
    for n in [n for n in ns if n > 1]:
        d = res["by_n"][n]["differences"]
        for a, b in (("f(x)", "uniform"), ("f(x)", "shuffled f(x)"), ("best fixed", "uniform"),
                     ("f(x)", "best fixed"), ("one-hot source (oracle)", "uniform")):
            lines.append(f"- N = {n}: " + bon.verdict(*d[f"{a} - {b}"], what=a, than=b))
    lines += ["", f"wall time of this invocation: {time.time() - t0:.0f} s; steps run: {timings}"
              + (" (--quick: numbers not meaningful)" if args.quick else "")]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text + "\n")
    write_json(out / "result.json", {"args": vars(args), "split": split_info, "reward_models": rm_rows,
                                     "orchestrator_source_agreement": agree, "judge": res, "selection_suite": own,
                                     "timings": timings})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
