"""The GPU path in one run: model throughput, loader-fed training with GPU utilisation, the
encoder's FPS and kNN, and Blender Cycles on the GPU — everything issue 19 asks a lent GPU for.

    python bench/bench_gpu.py --out runs/bench_gpu                 # on a CUDA machine
    bash bench/device/run.sh …                                     # on the device tool's machine
    python bench/bench_gpu.py --device cpu --tiny --out /tmp/g     # the same code, tiny, on a CPU

Sections (each runs on its own; one that fails prints its reason and the others still run):
1. model: training samples/s, GPU utilisation (`nvidia-smi` every 100 ms) and model FLOPs
   utilisation of params.yaml's `train:` (the CPU default), configs/paper.yaml (SLIP ViT-B/16,
   8192 points, batch 64) and configs/paper-openai.yaml (OpenAI's ViT-B/16), CLIP random-init,
   on synthetic in-memory batches (bf16 autocast on CUDA): what the model and the update cost,
   without the loader. The paper config runs as each of `VARIANTS` (--variants): the update as
   before issue 24, each lever of `cg3d.train.trainer.Levers` on its own, all of them.
   MFU = samples/s × FLOPs per sample (`FlopCounterMode` over one update of each phase) over
   the device's bf16 dense peak (`PEAK_BF16_TFLOPS`, by device name).
2. loader: the paper config trained from real WebDataset shards (written here by the caption and
   pack stages from generated points and 224 px PNG views) through `make_loader` with W workers,
   for W in --workers, every lever on; samples/s, GPU utilisation and MFU: does the loader keep
   the GPU busy, and how many workers does it take?
3. ops: farthest point sampling (8192 → 64 centres) and kNN (32 of 8192) of the encoder, CPU
   against GPU, on a batch of 64 clouds.
4. compile: the paper config with `train.compile` (torch.compile of the point encoder and the
   prompted tower; and with CUDA graphs), last: compiling takes minutes.
5. cycles: views/s of the render stage with WORKBENCH, CPU Cycles and GPU Cycles (CUDA, OptiX),
   when `bpy` imports here.

Writes `results.json` and a Markdown summary `results.md` to --out.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from bench_loader import random_inputs, view_png
from bench_train import CLASSES
from timing import timed_ms

from cg3d.models.clip import RandomClipWarning
from cg3d.models.encoders.ops import farthest_point_sample, knn
from cg3d.models.model import build_model, model_config
from cg3d.params import load_section
from cg3d.train.loop import TrainConfig, Trainer, seed_everything
from cg3d.train.trainer import Levers

ROOT = Path(__file__).resolve().parents[1]


class GpuSampler:
    """`nvidia-smi` polled in the background: utilisation (%) and memory (MiB) readings."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms, self.readings = interval_ms, []
        self.process: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        try:
            self.process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    f"-lms={self.interval_ms}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError:
            return self  # no NVIDIA driver here: no readings
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 2 and all(f.isdigit() for f in fields):
                self.readings.append((int(fields[0]), int(fields[1])))

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def summary(self) -> dict:
        if not self.readings:
            return {"gpu_util_mean": None, "gpu_util_median": None, "gpu_mem_max_mib": None}
        util = np.array([r[0] for r in self.readings])
        return {
            "gpu_util_mean": round(float(util.mean()), 1),
            "gpu_util_median": float(np.median(util)),
            "gpu_mem_max_mib": max(r[1] for r in self.readings),
            "readings": len(util),
        }


def configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
    """The training settings measured: the default and the paper's on SLIP and on OpenAI's
    ViT-B/16 (random CLIP weights: none can be downloaded)."""
    default = load_section(
        TrainConfig, "train", ROOT / "params.yaml", options=dict(device=args.device)
    )
    paper = load_section(
        TrainConfig,
        "train",
        ROOT / "configs" / "paper.yaml",
        options=dict(batch_size=args.batch, clip_pretrained="none", device=args.device),
    )
    paper_openai = load_section(
        TrainConfig,
        "train",
        ROOT / "configs" / "paper-openai.yaml",
        options=dict(batch_size=args.batch, clip_pretrained="none", device=args.device),
    )
    if args.tiny:  # the same code path at a size a CPU runs in seconds
        small = dict(encoder=default.encoder, n_points=default.n_points, batch_size=4)
        default = replace(default, batch_size=4)
        paper = replace(paper, clip_model=default.clip_model, **small)
        paper_openai = replace(paper_openai, clip_model=default.clip_model, **small)
    return {"default": default, "paper": paper, "paper-openai": paper_openai}


# Dense bf16 peaks (TFLOP/s, no sparsity) of the vendors' datasheets, by a part of
# `torch.cuda.get_device_name()`: the first that the name contains (the specific ones first).
PEAK_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
)


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a device by its name; None for one not in the table."""
    return next((peak for part, peak in PEAK_BF16_TFLOPS if part in device_name), None)


def update_flops(trainer: Trainer, batches: list[dict]) -> float:
    """FLOPs per sample of one update of each phase (forward and backward, as
    `torch.utils.flop_counter.FlopCounterMode` counts matmuls, convolutions and attention),
    averaged over the phases: what the alternating schedule costs a sample."""
    from torch.utils.flop_counter import FlopCounterMode

    phases = 2 if trainer.config.schedule == "alternating" else 1
    total = samples = 0
    for step, batch in enumerate(batches[:phases]):
        with FlopCounterMode(display=False) as counter:
            trainer.update([batch], step)
        total += counter.get_total_flops()
        samples += len(batch["cls"])
    return total / samples


def mfu(samples_per_s: float, flops_per_sample: float | None, device_name: str) -> float | None:
    """Model FLOPs utilisation (%): the FLOPs the samples needed over the device's bf16 peak."""
    peak = peak_tflops(device_name)
    if peak is None or not flops_per_sample:
        return None
    return round(100 * samples_per_s * flops_per_sample / (peak * 1e12), 2)


@dataclass(frozen=True)
class Variant:
    """One way of running the update: the trainer's levers, and what the bench adds around
    it (reading the losses back after every update, as the loop did before issue 24; float
    or uint8 views)."""

    levers: Levers
    read_each_update: bool
    uint8_views: bool


BEFORE = Variant(Levers(fused=False, prefetch=False), read_each_update=True, uint8_views=False)
ALL = Variant(Levers(), read_each_update=False, uint8_views=True)
# Each lever on its own over the update as it was before issue 24 (foreach kernels were
# torch's default on CUDA already), then all of them, then with torch.compile.
VARIANTS = {
    "before": BEFORE,
    "per-parameter steps": replace(BEFORE, levers=replace(BEFORE.levers, foreach=False)),
    "sync-free": replace(BEFORE, read_each_update=False),
    "fused steps": replace(BEFORE, levers=replace(BEFORE.levers, fused=True)),
    "uint8 views": replace(BEFORE, uint8_views=True),
    "pinned + prefetch": replace(BEFORE, levers=replace(BEFORE.levers, prefetch=True)),
    "all": ALL,
    "all + compile": replace(ALL, levers=replace(ALL.levers, compile=True)),
    "all + compile (CUDA graphs)": replace(
        ALL, levers=replace(ALL.levers, compile=True, compile_mode="reduce-overhead")
    ),
}
COMPILED = [name for name, variant in VARIANTS.items() if variant.levers.compile]


def memory_batches(config: TrainConfig, image_size: int, count: int, uint8: bool) -> list[dict]:
    """Synthetic batches in host memory: float views (normalised, as before) or uint8 pixels."""
    import random

    from bench_train import synthetic_batch

    rng = random.Random(0)
    batches = [synthetic_batch(config, image_size, rng) for _ in range(count)]
    if uint8:
        generator = torch.Generator().manual_seed(0)
        for batch in batches:
            shape = batch["image"].shape
            batch["image"] = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return batches


def timed_updates(
    model, config: TrainConfig, variant: Variant, steps: int, device: torch.device
) -> dict:
    """Samples/s and GPU utilisation of `steps` updates of `model` run as `variant`, after a
    warm-up of each phase (four updates when compiling: both phases, grad and no-grad)."""
    from cg3d.train.data import prefetch

    trainer = Trainer(model, config, updates_per_epoch=10_000, device=device, levers=variant.levers)
    warm = 4 if variant.levers.compile else 2
    batches = memory_batches(config, model.visual.image_size, warm + steps, variant.uint8_views)
    if variant.levers.prefetch and device.type == "cuda":
        batches = [b | {k: b[k].pin_memory() for k in ("points", "image")} for b in batches]
    feed = iter(prefetch(batches, device) if variant.levers.prefetch else batches)
    for step in range(warm):
        trainer.update([next(feed)], step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    with GpuSampler() as sampler:
        started = time.perf_counter()
        for step, batch in enumerate(feed, start=warm):
            logged = trainer.update([batch], step)
            if variant.read_each_update:
                logged = {key: float(value) for key, value in logged.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    return {"samples_per_s": round(steps * config.batch_size / elapsed, 1)} | sampler.summary()


def model_section(args: argparse.Namespace, device: torch.device, compiled: bool = False) -> list:
    """Samples/s, GPU utilisation and MFU of each config and variant on in-memory batches;
    `compiled`: the torch.compile variants only (a section of their own: compiling takes
    minutes and must not hold up the rest)."""
    rows = []
    chosen = {
        "default": ["before", "all"],
        "paper": [n for n in args.variants if n not in COMPILED],
        "paper-openai": ["all"],
    }
    if compiled:
        chosen = {"paper": [n for n in args.variants if n in COMPILED]}
    name_of_device = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for name, config in configs(args).items():
        if not chosen.get(name):
            continue
        seed_everything(0)
        model = build_model(model_config(config, CLASSES)).to(device).train()
        counter = Trainer(model, config, updates_per_epoch=10_000, device=device)
        flops = update_flops(counter, memory_batches(config, model.visual.image_size, 2, True))
        for variant in chosen[name]:
            row = {
                "config": name,
                "variant": variant,
                "clip": config.clip_model,
                "encoder": config.encoder,
                "points": config.n_points,
                "batch": config.batch_size,
            }
            try:
                row |= timed_updates(model, config, VARIANTS[variant], args.steps, device)
            except Exception as error:  # a lever that fails here (compile) is a row saying so
                row["failed"] = f"{type(error).__name__}: {str(error)[:200]}"
            row["gflop_per_sample"] = round(flops / 1e9, 2)
            row["mfu_percent"] = mfu(row.get("samples_per_s", 0), flops, name_of_device)
            rows.append(row)
            print(f"model {rows[-1]}", flush=True)
    return rows


def make_shards(root: Path, objects: int, points: int, views: int) -> Path:
    """Real shards (the caption and pack stages) from generated points and PNG views."""
    from cg3d.pipeline.captions import CaptionConfig, caption_objects
    from cg3d.pipeline.pack import PackConfig, pack_shards

    random_inputs(root, objects, points, views, view_bytes=view_png)
    caption_objects(root / "meshes", root / "captions", CaptionConfig())
    pack_shards(
        root / "meshes",
        root / "points",
        root / "renders",
        root / "captions",
        root / "shards",
        PackConfig(shard_size=100),
    )
    return root / "shards"


def loader_section(args: argparse.Namespace, device: torch.device, work: Path) -> list[dict]:
    """The paper config fed by the shard loader (uint8 views, pinned, prefetched to the
    device; every lever of `ALL` on), with each --workers count."""
    from cg3d.train.data import ClipPreprocess, LoaderConfig, make_loader, prefetch

    config = configs(args)["paper"]
    started = time.perf_counter()
    shards = make_shards(work, args.objects, config.n_points, views=2)
    print(f"shards: {args.objects} objects in {time.perf_counter() - started:.0f} s", flush=True)
    seed_everything(0)
    model = build_model(model_config(config, CLASSES)).to(device).train()
    preprocess = ClipPreprocess.of_model(model.clip.visual)
    name_of_device = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    counter = Trainer(model, config, updates_per_epoch=10_000, device=device)
    flops = update_flops(counter, memory_batches(config, preprocess.image_size, 2, True))
    rows = []
    for workers in args.workers:
        loader = make_loader(
            shards,
            "train",
            replace(LoaderConfig.of_params(config, preprocess.image_size), workers=workers),
            preprocess,
        )
        trainer = Trainer(model, config, updates_per_epoch=10_000, device=device, levers=ALL.levers)
        batches = iter(prefetch(loader, device))
        for step in range(2):  # warm-up: workers start, one update of each phase
            trainer.update([next(batches)], step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        count, step = 0, 2
        with GpuSampler() as sampler:
            begun = time.perf_counter()
            for batch in batches:
                trainer.update([batch], step)
                count, step = count + len(batch["cls"]), step + 1
                if step - 2 >= args.loader_steps:
                    break
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - begun
        rate = round(count / elapsed, 1)
        rows.append(
            {"workers": workers, "samples_per_s": rate, "updates": step - 2}
            | sampler.summary()
            | {"mfu_percent": mfu(rate, flops, name_of_device)}
        )
        print(f"loader {rows[-1]}", flush=True)
    return rows


def ops_section(args: argparse.Namespace, device: torch.device) -> list[dict]:
    batch, n, centres, k = (4, 1024, 32, 16) if args.tiny else (64, 8192, 64, 32)
    points = torch.rand(batch, n, 3)
    rows = []
    for where in ["cpu"] + ([str(device)] if device.type == "cuda" else []):
        cloud = points.to(where)
        run_device = torch.device(where)
        fps_ms = timed_ms(lambda c=cloud: farthest_point_sample(c, centres), run_device, 3)
        knn_ms = timed_ms(lambda c=cloud: knn(c[:, :centres], c, k), run_device, 3)
        rows.append(
            {
                "device": where,
                "batch": batch,
                "points": n,
                "fps_ms": round(fps_ms, 2),
                "knn_ms": round(knn_ms, 2),
            }
        )
        print(f"ops {rows[-1]}", flush=True)
    if device.type == "cuda":  # the GPU must give the CPU's answer
        fps_same = torch.equal(
            farthest_point_sample(points, centres),
            farthest_point_sample(points.to(device), centres).cpu(),
        )
        rows.append({"fps_gpu_equals_cpu": fps_same})
    return rows


def cycles_section(args: argparse.Namespace, work: Path) -> list[dict]:
    """Views/s of the render stage: workbench, CPU Cycles, and with CUDA, Cycles on the GPU
    through `render.cycles_device` cuda and optix (a device Blender does not find is a row
    saying so: the stage refuses it at start)."""
    try:
        import bpy  # noqa: F401
    except ImportError as error:
        return [{"skipped": f"bpy does not import here ({error}); no Blender renders measured"}]
    from cg3d.errors import UsageError
    from cg3d.params import RenderConfig
    from cg3d.pipeline.sources import MeshesConfig, build_manifest
    from cg3d.render.stage import render_meshes

    build_manifest(MeshesConfig(source="synthetic", per_class=1 if args.tiny else 4), work / "m")
    rows = []
    settings = [("workbench", "cpu"), ("cycles", "cpu")]
    if torch.cuda.is_available():
        settings += [("cycles", "cuda"), ("cycles", "optix")]
    for engine, device in settings:
        per_object = 2 if args.tiny else 12
        config = RenderConfig(engine=engine, cycles_device=device, views=per_object, resolution=224)
        started = time.perf_counter()
        try:
            summary = render_meshes(work / "m", work / f"render-{engine}-{device}", config)
        except UsageError as error:
            rows.append({"engine": engine, "device": device, "skipped": str(error)})
            continue
        elapsed = time.perf_counter() - started  # Blender's start-up included, as a stage pays it
        rows.append(
            {
                "engine": engine,
                "device": device,
                "views": summary.views,
                "views_per_s": round(summary.views / elapsed, 2),
            }
        )
        print(f"cycles {rows[-1]}", flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = [f"# bench_gpu: {results['machine']}", ""]
    for section, rows in results["sections"].items():
        lines.append(f"## {section}")
        if isinstance(rows, str):
            lines += [rows, ""]
            continue
        keys = list(dict.fromkeys(k for row in rows for k in row))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU check of the code")
    parser.add_argument("--sections", default="model,loader,ops,compile,cycles")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="update variants of the paper config (model and compile sections): "
        + ", ".join(VARIANTS),
    )
    parser.add_argument("--batch", type=int, default=64, help="the paper config's batch")
    parser.add_argument("--steps", type=int, default=10, help="timed updates of the model section")
    parser.add_argument("--objects", type=int, default=1024, help="objects in the loader's shards")
    parser.add_argument("--loader-steps", type=int, default=12)
    parser.add_argument("--workers", default="4,8,14", help="loader workers to try")
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}")
    warnings.simplefilter("ignore", RandomClipWarning)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    results = {
        "machine": f"{name}, torch {torch.__version__}, python {sys.version.split()[0]}",
        "date": time.strftime("%Y-%m-%d"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "sections": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        runs = {
            "model": lambda: model_section(args, device),
            "loader": lambda: loader_section(args, device, Path(scratch) / "loader"),
            "ops": lambda: ops_section(args, device),
            "compile": lambda: model_section(args, device, compiled=True),
            "cycles": lambda: cycles_section(args, Path(scratch) / "cycles"),
        }
        for section in args.sections.split(","):
            try:
                results["sections"][section] = runs[section]()
            except Exception as error:  # one section's failure must not lose the others
                traceback.print_exc()
                results["sections"][section] = f"failed: {type(error).__name__}: {error}"
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
