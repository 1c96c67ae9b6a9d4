"""Training samples/s of several trees of this repository on one GPU, in one run: the bisect
of the regression BENCHMARKS.md's GPU section found between a5873ca and the recipe merges.

    python bench/bisect_gpu.py --trees DIR --out OUT.json [--steps 20] [--paper a5873ca,b2135b8]

DIR holds one extracted tree per commit (`bash bench/device/prepare.sh` archives them) and
`order.txt`, the commits oldest first. Each tree runs in its own process with its own code
(its `cg3d`, its `bench/bench_train.py`'s `samples_per_second`, its params.yaml and
configs/paper.yaml): the default config for every tree, the paper config (batch 64, CLIP
random-init) for the trees named by --paper. `.` (this checkout) is measured last the same way.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import json, sys, warnings
import torch
warnings.simplefilter("ignore")
from bench_train import samples_per_second
from cg3d.params import load_section
from cg3d.train.loop import TrainConfig
path, steps, paper, device = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "paper", sys.argv[4]
options = dict(device=device)
if paper:
    options |= dict(batch_size=64, clip_pretrained="none")
config = load_section(TrainConfig, "train", path, options=options)
rate = samples_per_second(config, steps, torch.device(device))
print(json.dumps({"clip": config.clip_model, "encoder": config.encoder,
                  "batch": config.batch_size, "samples_per_s": round(rate, 1)}))
"""


def measure(tree: Path, config: str, steps: int, timeout: float, device: str = "cuda") -> dict:
    """One tree's samples/s of `config` ("default" or "paper"), in a process of its own."""
    path = tree / ("params.yaml" if config == "default" else "configs/paper.yaml")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path), str(steps), config, device],
            cwd=tree / "bench",
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"over {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"failed": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1]) | {"seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--paper", default="a5873ca,b2135b8,.")
    parser.add_argument("--timeout", type=float, default=90, help="seconds per measurement")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    args = parser.parse_args()
    commits = (args.trees / "order.txt").read_text().split() + ["."]
    paper = set(args.paper.split(","))
    rows = []
    for commit in commits:
        tree = ROOT if commit == "." else args.trees / commit
        for config in ["default"] + (["paper"] if commit in paper else []):
            rows.append(
                {"commit": commit, "config": config}
                | measure(tree, config, args.steps, args.timeout, args.device)
            )
            print(f"bisect {rows[-1]}", flush=True)
            args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
