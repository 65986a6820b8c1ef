"""LoRA adapters vs merged models on SmolLM2 (issue 27), one run, side by side.

    flock /tmp/pro-cpu.lock python bench/bench_adapters.py [--rank 16] [--out runs/bench_adapters]

Measures (CPU):
- artifact size: a WIC policy saved as its LoRA adapter (r=16 on every linear layer, the <Wk> rows as
  trainable token rows) vs the same policy merged into a full model (the folder ``--lora-r`` wrote before);
- registration time of each (``pro_lib.packaging.register_model`` into a local SQLite MLflow store);
- resident memory of a process holding two policies of one base: two adapters on one shared base
  (``shared_base=True``, as pro-endpoint and the explorer load them) vs two full models;
- adapter switch latency on the shared base (``AdapterView`` activating its adapter), and the cost of
  one greedy 8-token generation after a switch vs without one.

The adapters are untrained LoRA weights with random B (sizes and memory do not depend on the values;
the two differ so that each switch changes the active adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ["helpful", "harmless"]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def make_policies(root: Path, rank: int) -> dict[str, Path]:
    """Two adapters of SmolLM2 and the first one merged into a full model."""
    import torch

    from pro_lib import adapters
    from pro_lib.wic import WICPolicy, wic_tags

    out = {}
    for i in range(2):
        pol = WICPolicy.from_pretrained("smollm2", objectives=NAMES)
        ids = pol.tokenizer.convert_tokens_to_ids(wic_tags(pol.K))
        pol.model = adapters.wrap_for_training(pol.model, adapters.lora_config(rank, 2 * rank, token_ids=ids))
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in pol.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 1e-3)
        pol.model.eval()
        pol.save_pretrained(root / f"adapter{i}")
        out[f"adapter{i}"] = root / f"adapter{i}"
        if i == 0:
            pol.model = pol.model.merge_and_unload()
            pol.save_pretrained(root / "merged0")
            out["merged0"] = root / "merged0"
            pol.model = None
    # a second full model for the memory comparison: the merged policy's copy
    import shutil

    shutil.copytree(root / "merged0", root / "merged1")
    out["merged1"] = root / "merged1"
    return out


def register_times(paths: dict[str, Path], home: Path) -> dict[str, float]:
    os.environ["PRO_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    from pro_lib import packaging

    times = {}
    for key, name in (("merged0", "pro-policy-merged"), ("adapter0", "pro-policy-adapter")):
        t0 = time.perf_counter()
        packaging.register_model(paths[key], name, metrics={"hypervolume": 0.5})
        times[key] = time.perf_counter() - t0
    return times


MEMORY = r"""
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
import torch
torch.set_num_threads(1)
from pro_lib.wic import WICPolicy
before = rss()
shared = sys.argv[1] == "shared"
pols = [WICPolicy.from_pretrained(p, shared_base=shared) for p in sys.argv[2:]]
after = rss()
out = {"rss_bytes": after - before}
if shared:
    import pro_lib.adapters as A
    out["bases"] = A.shared_bases()
    enc = pols[0].tokenizer(["How do I bake bread?"], return_tensors="pt")
    a, b = pols
    n = 200
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            (a if i % 2 else b).model._active()
    out["switch_ms"] = (time.perf_counter() - t0) / n * 1e3
    def gen(p):
        t = time.perf_counter()
        p.generate(["How do I bake bread?"], weights=[0.5, 0.5], max_new_tokens=8)
        return time.perf_counter() - t
    gen(a); gen(b)
    same = [gen(a) for _ in range(3)]
    alternating = [gen(b if i % 2 == 0 else a) for i in range(4)]
    out["generate_same_s"] = sorted(same)[1]
    out["generate_after_switch_s"] = sorted(alternating)[1]
print("RESULT" + json.dumps(out))
"""


def memory(mode: str, folders: list[Path], home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRO_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", MEMORY, mode, *map(str, folders)], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--out", default=None, help="keep the policies here (default: a temporary folder)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    root.mkdir(parents=True, exist_ok=True)
    from pro_lib.io import pro_home as _pro_home

    pro_home = _pro_home()  # the bundled SmolLM2 cache lives here
    paths = make_policies(root, args.rank)
    sizes = {k: folder_bytes(v) for k, v in paths.items()}
    reg = register_times(paths, root / "registry-home")
    os.environ["PRO_HOME"] = str(pro_home)
    shared = memory("shared", [paths["adapter0"], paths["adapter1"]], pro_home)
    full = memory("full", [paths["merged0"], paths["merged1"]], pro_home)
    mb = 2**20
    rows = [
        ("policy artifact (MB)", f"{sizes['adapter0'] / mb:.1f}", f"{sizes['merged0'] / mb:.1f}",
         f"{sizes['adapter0'] / sizes['merged0']:.1%}"),
        ("register_model (s)", f"{reg['adapter0']:.2f}", f"{reg['merged0']:.2f}",
         f"{reg['adapter0'] / reg['merged0']:.2f}x"),
        ("RSS, two policies loaded (MB)", f"{shared['rss_bytes'] / mb:.0f}", f"{full['rss_bytes'] / mb:.0f}",
         f"{shared['rss_bytes'] / full['rss_bytes']:.2f}x"),
    ]
    print(f"\nSmolLM2-135M, LoRA r={args.rank} (all linear layers + {len(NAMES)} tag rows), CPU, "
          f"torch threads 1\n")
    print("| measure | adapters (one base) | merged full models | adapter / full |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nshared bases in the adapter process: {shared['bases']}")
    print(f"adapter switch (set_adapter): {shared['switch_ms']:.3f} ms")
    print(f"greedy 8 tokens, same adapter: {shared['generate_same_s']:.3f} s; alternating adapters: "
          f"{shared['generate_after_switch_s']:.3f} s (median)")
    print(f"\nfolders: {root}")


if __name__ == "__main__":
    main()
