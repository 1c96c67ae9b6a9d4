"""Writers whose library hid a full disk's cause (issue t70b): numpy's `tofile` (C's fwrite)
reported a short write as "[Errno None] 1280 requested and 992 written" (`cg3d embed`, text
features, a Blender worker's points), and safetensors' Rust writer as a SafetensorError
traceback (`cg3d export --format hub`). Each is now one line naming the file and the cause, on a
real small tmpfs (root only; skipped elsewhere) and, for safetensors, simulated too."""

import errno
import os
import re

import pytest
from safetensors import SafetensorError

from cg3d.files import os_error_line
from cg3d.models import hub
from tests.pipeline.disks import cg3d, mounted

ENOSPC_LINE = re.compile(r"error: (?P<file>/\S+): No space left on device \(ENOSPC\)")


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", ["e.npy", "new/deeper/e.npy"])
def test_an_embedding_array_on_a_full_disk_names_its_file_and_the_cause(
    tiny_checkpoint, tmp_path, name
):
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    for i in range(24):  # 24 rows of the tiny model's 64 floats: 6 KiB, more than the disk has
        (shapes / f"s{i}.xyz").write_text("\n".join(f"{i} {j % 7} {j % 5}" for j in range(64)))
    with mounted(tmp_path / "disk", "size=4k") as disk:
        result = cg3d("embed", shapes, "--checkpoint", tiny_checkpoint, "--out", disk / name)
        left = sorted(path.name for path in disk.iterdir())
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [f"error: {disk / name}: No space left on device (ENOSPC)"]
    assert left == []  # no partial array, no temp file, no folder made for it (new/ was left)


def test_text_features_and_tables_on_a_full_disk_leave_no_folder_made_for_them(
    tmp_path, monkeypatch
):
    import numpy as np

    from cg3d.app import batch
    from cg3d.formats import tables, textfeatures

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(textfeatures, "write_npy", full)
    with pytest.raises(OSError, match="No space left"):
        textfeatures.write_text_features(tmp_path / "a" / "b" / "tf.npy", np.ones((1, 4)), ["x"])
    monkeypatch.setattr(tables.csv, "DictWriter", full)  # the one CSV writer batch uses
    with pytest.raises(OSError, match="No space left"):
        batch.write_table([{"path": "a.obj"}], tmp_path / "c" / "d" / "c.csv")
    assert sorted(tmp_path.iterdir()) == []


def test_a_hub_export_on_a_full_disk_is_one_line_naming_the_weights(tiny_checkpoint, tmp_path):
    with mounted(tmp_path / "disk", "size=256k") as disk:
        result = cg3d(
            "export", "--format", "hub", "--checkpoint", tiny_checkpoint, "--out", disk / "hub"
        )
        left = sorted(path.name for path in disk.rglob("*"))
    assert result.returncode == 2, result.stderr
    expected = f"error: {disk / 'hub' / 'model.safetensors'}: No space left on device (ENOSPC)"
    assert error_lines(result) == [expected]
    assert left == []  # the folder it made is gone with the partial weights


def test_a_safetensors_write_error_with_an_errno_is_that_os_error(tmp_path, monkeypatch):
    def full(tensors, filename, metadata=None):
        open(filename, "wb").close()  # noqa: SIM115 - an empty start, as a full disk leaves
        message = "Error while serializing: I/O error: No space left on device (os error 28)"
        raise SafetensorError(message)

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(OSError) as raised:
        hub.write_hub(tmp_path / "hub", {"model": {}}, {}, "card")
    assert raised.value.errno == errno.ENOSPC
    assert os_error_line(raised.value) == (
        f"{tmp_path / 'hub' / 'model.safetensors'}: {os.strerror(errno.ENOSPC)} (ENOSPC)"
    )


def test_a_safetensors_error_naming_no_errno_stays_what_it_was(tmp_path, monkeypatch):
    def refused(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: a tensor is not contiguous")

    monkeypatch.setattr("safetensors.torch.save_file", refused)
    with pytest.raises(SafetensorError, match="not contiguous"):
        hub.write_hub(tmp_path / "hub", {"model": {}}, {}, "card")


def test_an_embedding_array_is_never_left_beside_an_earlier_runs_rows(tmp_path, monkeypatch):
    """`cg3d embed`'s .npy and the .csv naming its rows: a full disk at the .csv left this run's
    array beside the previous run's rows (other shapes, another order), read as a pair."""
    import numpy as np

    from cg3d.app import batch

    out = tmp_path / "e.npy"
    rows = [{"path": "a.obj", "status": "ok", "error": "", "row": 0}]
    batch.write_embeddings(rows, np.zeros((1, 4), np.float32), out)

    def full(rows, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(batch, "write_table", full)
    with pytest.raises(OSError, match="No space left"):
        batch.write_embeddings([{**rows[0], "path": "b.obj"}], np.ones((1, 4), np.float32), out)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_full_disk_at_the_array_leaves_no_earlier_array_without_its_rows(tmp_path, monkeypatch):
    """The earlier run's pair goes whole: its .csv was removed first and, when the new .npy then
    failed, its .npy stayed alone (an array whose rows nothing names)."""
    import numpy as np

    from cg3d.app import batch

    out = tmp_path / "e.npy"
    rows = [{"path": "a.obj", "status": "ok", "error": "", "row": 0}]
    batch.write_embeddings(rows, np.zeros((1, 4), np.float32), out)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["e.csv", "e.npy"]

    def full(path, array):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(batch, "write_npy", full)
    with pytest.raises(OSError, match="No space left"):
        batch.write_embeddings(rows, np.ones((1, 4), np.float32), out)
    assert sorted(path.name for path in tmp_path.iterdir()) == []
