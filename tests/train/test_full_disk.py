"""A full disk loses nothing and claims nothing (issue 25 §3): every checkpoint write (the
training loop's `last.pt`, `cg3d export`) fails as one OSError naming the file, leaves no
temp file, and the run's numbers (`OUT/.resume/run.json` while it trains, `metrics.json` once
published) never claim an epoch whose checkpoint is not on disk.

The full disk is simulated where the bytes are written: the checkpoint module's `open` gives
a handle whose writes raise ENOSPC, as a full file system's do (torch.save itself reports
them as a RuntimeError with no errno).
"""

import errno
import json
from pathlib import Path

import pytest

from cg3d.files import os_error_line
from cg3d.models import checkpoint
from cg3d.models.checkpoint import export_checkpoint, read_checkpoint
from cg3d.train import loop
from cg3d.train.loop import RUN_INFO, fit, prepare_model
from cg3d.train.resume import resume_folder
from tests.train.helpers import CLASSES, make_batches, tiny_train_config


class FullDisk:
    """A binary file handle on a disk that fills after `room` bytes."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def fill_disk_at(monkeypatch, save: int, room: int = 1000) -> None:
    """The `save`-th file the checkpoint module opens for writing is on a full disk."""
    opened = []

    def opening(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        if "w" in mode:
            opened.append(path)
            if len(opened) == save:
                return FullDisk(handle, room)
        return handle

    monkeypatch.setattr(checkpoint, "open", opening, raising=False)


def temp_files(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("room", [0, 1000, 100_000])
def test_a_full_disk_at_an_epochs_save_leaves_the_last_saved_epoch_whole(
    tmp_path, monkeypatch, room
):
    config = tiny_train_config(epochs=2)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    fill_disk_at(monkeypatch, save=2, room=room)
    with pytest.raises(OSError) as raised:
        fit(config, tmp_path, model, make_batches(2, 8), make_batches(1, 8, seed=9))
    last = resume_folder(tmp_path) / "last.pt"
    assert os_error_line(raised.value) == f"{last}: No space left on device (ENOSPC)"
    metrics = json.loads((resume_folder(tmp_path) / RUN_INFO).read_text())
    assert metrics["epoch"] == read_checkpoint(last)["training"]["epoch"] == 1
    assert not (tmp_path / "metrics.json").exists()  # nothing published for an unfinished run
    assert temp_files(tmp_path) == []


def test_a_full_disk_at_the_first_save_leaves_no_metrics(tmp_path, monkeypatch):
    config = tiny_train_config(epochs=1)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    fill_disk_at(monkeypatch, save=1)
    with pytest.raises(OSError, match="No space left"):
        fit(config, tmp_path, model, make_batches(2, 8), make_batches(1, 8, seed=9))
    for folder in (tmp_path, resume_folder(tmp_path)):
        assert not (folder / "metrics.json").exists() and not (folder / RUN_INFO).exists()
        assert not (folder / "last.pt").exists()
    assert temp_files(tmp_path) == []


def test_a_run_stopped_between_its_checkpoint_and_its_metrics_rewrites_them_on_resume(
    tmp_path, monkeypatch
):
    config = tiny_train_config(epochs=2)
    with monkeypatch.context() as patch:
        written = []

        def failing(folder, metrics):  # the numbers of epoch 2 are never written
            written.append(metrics["epoch"])
            if metrics["epoch"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(folder / RUN_INFO))
            return original(folder, metrics)

        original = loop.write_run_info
        patch.setattr(loop, "write_run_info", failing)
        model, _ = prepare_model(config, CLASSES, tmp_path)
        with pytest.raises(OSError):
            fit(config, tmp_path, model, make_batches(2, 8), make_batches(1, 8, seed=9))
    assert written == [1, 2]
    assert json.loads((resume_folder(tmp_path) / RUN_INFO).read_text())["epoch"] == 1
    assert read_checkpoint(resume_folder(tmp_path) / "last.pt")["training"]["epoch"] == 2
    model, training = prepare_model(config, CLASSES, tmp_path, resume="always")
    metrics = fit(config, tmp_path, model, make_batches(2, 8), make_batches(1, 8), training)
    assert metrics["epoch"] == 2
    published = json.loads((tmp_path / "metrics.json").read_text())
    assert published["epoch"] == 2 == read_checkpoint(tmp_path / "last.pt")["training"]["epoch"]
    assert json.loads((tmp_path / RUN_INFO).read_text()) == metrics


@pytest.mark.parametrize("room", [0, 1000])
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(
    tiny_checkpoint, tmp_path, monkeypatch, room
):
    fill_disk_at(monkeypatch, save=1, room=room)
    target = tmp_path / "model.pt"
    with pytest.raises(OSError) as raised:
        export_checkpoint(tiny_checkpoint, target)
    assert os_error_line(raised.value) == f"{target}: No space left on device (ENOSPC)"
    assert list(tmp_path.iterdir()) == []
