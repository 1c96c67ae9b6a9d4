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

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_the_gpu_bench_runs_every_section_on_a_cpu_at_tiny_sizes(tmp_path):
    command = [sys.executable, "bench_gpu.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)]
    command += ["--objects", "24", "--loader-steps", "2", "--workers", "0,1", "--steps", "1"]
    command += ["--sections", "model,loader,ops"]
    subprocess.run(command, cwd=BENCH, check=True, capture_output=True, timeout=600)
    sections = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert [row["config"] for row in sections["model"]] == ["default", "paper", "paper-openai"]
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
