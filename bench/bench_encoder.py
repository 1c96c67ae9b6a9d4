"""Point-encoder throughput: forward + backward samples/s of named encoders, side by side.

Times the encoder alone (train mode, random points, the sum of its output as the loss), so
that a change of network shows in isolation from CLIP and the loader. Default rows: the
network `pointtransformer-base` named until issue 17 (`pointtransformer-v1-base`) against
the paper's Point-BERT network that the name means now, at 8192 and 1024 points.

    python bench/bench_encoder.py                           # CPU, fp32
    python bench/bench_encoder.py --device cuda --batch 64  # GPU, bf16 autocast
"""

import argparse
from contextlib import nullcontext

import torch
from timing import timed_ms

from cg3d.models.encoders import build_encoder


def samples_per_second(name: str, points: int, batch: int, steps: int, device: torch.device):
    torch.manual_seed(0)
    encoder = build_encoder(name, 512).to(device).train()
    clouds = torch.rand(batch, points, 3, device=device) * 2 - 1
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if device.type == "cuda"
        else nullcontext
    )

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        with autocast():
            loss = encoder(clouds).float().sum()
        loss.backward()

    return batch / timed_ms(step, device, steps) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed updates per row")
    parser.add_argument("--points", type=int, nargs="+", default=[8192, 1024])
    parser.add_argument(
        "--encoders", nargs="+", default=["pointtransformer-v1-base", "pointtransformer-base"]
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"device: {name}, threads {torch.get_num_threads()}, {precision}, batch {args.batch}")
    print("| encoder | points | parameters | samples/s (forward + backward) |")
    print("|---|---:|---:|---:|")
    for points in args.points:
        for encoder in args.encoders:
            count = sum(p.numel() for p in build_encoder(encoder, 512).parameters())
            rate = samples_per_second(encoder, points, args.batch, args.steps, device)
            print(f"| {encoder} | {points} | {count / 1e6:.2f} M | {rate:.1f} |")


if __name__ == "__main__":
    main()
