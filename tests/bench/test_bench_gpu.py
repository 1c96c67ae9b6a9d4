"""bench/bench_gpu.py, the GPU-path benchmark, runs end to end on a CPU at tiny sizes: running
it on a lent GPU is then one command."""

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_the_gpu_bench_runs_every_section_on_a_cpu_at_tiny_sizes(tmp_path):
    command = [sys.executable, "bench_gpu.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)]
    command += ["--objects", "24", "--loader-steps", "2", "--workers", "0,1", "--steps", "1"]
    command += ["--sections", "model,loader,ops", "--variants", "before,sync-free,all"]
    subprocess.run(command, cwd=BENCH, check=True, capture_output=True, timeout=600)
    sections = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert [(row["config"], row["variant"]) for row in sections["model"]] == [
        ("default", "before"),
        ("default", "all"),
        ("paper", "before"),
        ("paper", "sync-free"),
        ("paper", "all"),
        ("paper-openai", "all"),
    ]
    assert all(row["gflop_per_sample"] > 0 for row in sections["model"])
    assert all(row["mfu_percent"] is None for row in sections["model"])  # a CPU: no peak
    assert [row["workers"] for row in sections["loader"]] == [0, 1]
    assert all(row["samples_per_s"] > 0 for row in sections["model"] + sections["loader"])
    assert all(row["updates"] == 2 for row in sections["loader"])  # ran, not skipped out early
    assert [row["device"] for row in sections["ops"]] == ["cpu"]
    assert "## loader" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.blender
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="may have a CUDA device")
def test_the_cycles_section_counts_views_and_names_a_gpu_device_blender_lacks(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(BENCH))
    bench_gpu = importlib.import_module("bench_gpu")
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: True)  # torch sees a GPU
    rows = bench_gpu.cycles_section(argparse.Namespace(tiny=True), tmp_path)
    assert [(row["engine"], row["device"]) for row in rows] == [
        ("workbench", "cpu"),
        ("cycles", "cpu"),
        ("cycles", "cuda"),
        ("cycles", "optix"),
    ]
    assert all(row["views"] == 20 and row["views_per_s"] > 0 for row in rows[:2])  # 10 × 2 views
    assert rows[2]["skipped"].startswith("render.cycles_device: no CUDA device")
    assert rows[3]["skipped"].startswith("render.cycles_device: no OPTIX device")


@pytest.fixture
def bench_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("bench_gpu")


def test_the_bf16_peak_is_looked_up_by_the_device_name(bench_gpu):
    names = {
        "NVIDIA H100 80GB HBM3": 989.4,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H100 NVL": 835.0,
        "NVIDIA H200": 989.4,
        "NVIDIA GH200 480GB": 989.4,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA GeForce RTX 4090": None,
    }
    assert {name: bench_gpu.peak_tflops(name) for name in names} == names
    # 1,000 samples/s of 100 GFLOP each is 100 TFLOP/s: 10.1 % of an H100 SXM's 989.4
    assert bench_gpu.mfu(1000.0, 100e9, "NVIDIA H100 80GB HBM3") == pytest.approx(10.11, abs=0.01)
    assert bench_gpu.mfu(1000.0, 100e9, "cpu") is None


@pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
def test_update_flops_count_at_least_the_image_towers_matmuls_per_sample(bench_gpu, tmp_path):
    """FlopCounterMode over one update of each phase, per sample: the same for a batch of 4
    and of 8, and above a floor written out by hand: the prompted tower's block weights, each
    applied to every token of every image (2 FLOPs a weight a token) in each phase's forward."""
    from cg3d.train.loop import Trainer, prepare_model
    from tests.train.helpers import CLASSES, tiny_train_config

    per_sample = []
    for batch in (4, 8):
        config = tiny_train_config(batch_size=batch)
        model, _ = prepare_model(config, CLASSES, tmp_path / str(batch))
        trainer = Trainer(model.train(), config, 4, torch.device("cpu"))
        batches = bench_gpu.memory_batches(config, model.visual.image_size, 2, uint8=True)
        per_sample.append(bench_gpu.update_flops(trainer, batches))
        visual = model.clip.visual
        tokens = 1 + (visual.image_size[0] // visual.patch_size[0]) ** 2 + config.prompts
        weights = sum(
            m.weight.numel()
            for m in visual.transformer.modules()
            if isinstance(m, torch.nn.Linear) and m.weight.ndim == 2
        ) + sum(b.attn.in_proj_weight.numel() for b in visual.transformer.resblocks)
        assert per_sample[-1] > 2 * tokens * weights
    assert per_sample[0] == pytest.approx(per_sample[1], rel=0.05)
