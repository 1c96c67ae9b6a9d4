"""Training throughput (samples/s) with and without the text-feature cache, in one run.

Feeds in-memory synthetic batches (random points, images at the CLIP resolution, captions
from the 63 CG3D templates over 10 classes, as the default data set has), so it times the
model and the update, not the loader. Both columns train towards the captions
(`text_targets: captions`), the only targets the cache serves. Configs: the `train` section
of params.yaml (the CPU default), configs/paper.yaml (SLIP ViT-B/16) and
configs/paper-openai.yaml (OpenAI's ViT-B/16) at a small batch (CLIP random-init: no weights
here).

    python bench/bench_train.py                          # CPU
    python bench/bench_train.py --device cuda --paper-batch 64 --steps 20
"""

import argparse
import dataclasses
import random
import time
import warnings
from pathlib import Path

import torch

from cg3d.models.clip import RandomClipWarning
from cg3d.models.model import build_model, model_config
from cg3d.params import load_section
from cg3d.protocol import templates
from cg3d.train.loop import TrainConfig, Trainer, seed_everything

CLASSES = ["airplane", "bench", "car", "chair", "lamp", "sofa", "table", "bottle", "bowl", "cup"]


def synthetic_batch(config: TrainConfig, image_size: int, rng: random.Random) -> dict:
    captions = [
        rng.choice(templates("cg3d")).format(rng.choice(CLASSES)) for _ in range(config.batch_size)
    ]
    return {
        "points": torch.randn(config.batch_size, config.n_points, 3),
        "image": torch.randn(config.batch_size, 3, image_size, image_size),
        "caption": captions,
        "cls": torch.zeros(config.batch_size, dtype=torch.long),
    }


def samples_per_second(config: TrainConfig, steps: int, device: torch.device) -> float:
    seed_everything(0)
    model = build_model(model_config(config, CLASSES)).to(device).train()
    trainer = Trainer(model, config, updates_per_epoch=steps + 2, device=device)
    image_size = model.visual.image_size
    rng = random.Random(0)
    batches = [synthetic_batch(config, image_size, rng) for _ in range(steps + 2)]
    for step, batch in enumerate(batches[:2]):  # warm-up: one update of each phase
        trainer.update([batch], step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step, batch in enumerate(batches[2:]):
        trainer.update([batch], step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - started)


def check_gpu_path() -> None:
    """On CUDA: FPS/kNN give the CPU's answer, and a bf16-autocast update is finite."""
    from cg3d.models.encoders.ops import farthest_point_sample, knn

    points = torch.rand(4, 8192, 3)
    fps_cpu = farthest_point_sample(points, 64)
    fps_gpu = farthest_point_sample(points.cuda(), 64).cpu()
    knn_cpu = knn(points[:, :64], points, 32)
    knn_gpu = knn(points[:, :64].cuda(), points.cuda(), 32).cpu()
    print(
        f"FPS cuda == cpu: {torch.equal(fps_cpu, fps_gpu)}; "
        f"kNN cuda == cpu (as sets): {torch.equal(knn_cpu.sort(-1).values, knn_gpu.sort(-1).values)}"
    )
    config = load_section(
        TrainConfig, "train", Path("params.yaml"), options=dict(device="cuda", schedule="joint")
    )
    model = build_model(model_config(config, CLASSES)).cuda().train()
    trainer = Trainer(model, config, updates_per_epoch=4, device=torch.device("cuda"))
    with trainer.autocast():
        dtype = model.point_encoder(torch.randn(2, config.n_points, 3, device="cuda")).dtype
    batch = synthetic_batch(config, model.visual.image_size, random.Random(0))
    logged = trainer.update([batch], 0)
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    print(
        f"bf16 autocast: encoder output {dtype}; joint update losses {logged}; weights finite: {finite}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="timed updates per measurement")
    parser.add_argument("--paper-batch", type=int, default=4)
    parser.add_argument("--paper-steps", type=int, default=2)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["default", "paper", "paper-openai"],
        choices=["default", "paper", "paper-openai"],
        help="which configs to time: params.yaml, configs/paper.yaml (SLIP), paper-openai.yaml",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomClipWarning)
    device = torch.device(args.device)
    if device.type == "cuda":
        check_gpu_path()
    paper_options = dict(batch_size=args.paper_batch, clip_pretrained="none", device=args.device)
    configs = {
        "default": (Path("params.yaml"), dict(device=args.device), args.steps),
        "paper": (Path("configs/paper.yaml"), paper_options, args.paper_steps),
        "paper-openai": (Path("configs/paper-openai.yaml"), paper_options, args.paper_steps),
    }
    rows = []
    for name in args.configs:
        path, options, steps = configs[name]
        config = load_section(TrainConfig, "train", path, options=options)
        # The cache holds caption features: under `text_targets: class_prototypes` (the
        # default's) no caption is encoded in a step, and both columns would time the same.
        config = dataclasses.replace(config, text_targets="captions")
        cached = samples_per_second(config, steps, device)
        uncached = samples_per_second(dataclasses.replace(config, text_cache=False), steps, device)
        rows.append((name, config.batch_size, config.clip_model, uncached, cached))
    print(
        f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}),"
        f" threads {torch.get_num_threads()}, precision {'bf16 autocast' if device.type == 'cuda' else 'fp32'}"
    )
    print(
        "| config | batch | CLIP | samples/s, text encoded every step | samples/s, text cache | speedup |"
    )
    print("|---|---|---|---|---|---|")
    for name, batch, clip, uncached, cached in rows:
        print(
            f"| {name} | {batch} | {clip} | {uncached:.2f} | {cached:.2f} | {cached / uncached:.2f}× |"
        )


if __name__ == "__main__":
    main()
