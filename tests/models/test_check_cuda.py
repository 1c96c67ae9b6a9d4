"""`check_cuda`: a cuda device this torch cannot reach is one line saying why."""

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.model import check_cuda


def test_a_torch_built_without_cuda_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(
        UsageError, match=r"^train\.device: cuda asked for, but this torch"
    ) as raised:
        check_cuda("cuda", "train.device")
    assert "built without CUDA" in str(raised.value)
    assert "train.device: cpu" in str(raised.value)


def test_a_gpu_number_past_the_gpus_seen_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_cuda("cuda:1", "index.device")  # there
    with pytest.raises(UsageError, match=r"sees 2 GPU\(s\), cuda:0 to cuda:1"):
        check_cuda("cuda:2", "index.device")


def test_cpu_is_never_checked(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    check_cuda("cpu", "demo.device")
