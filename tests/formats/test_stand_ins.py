"""What a clone without `git lfs pull` (or `git annex get`) or a failed download leaves in
place of a checkpoint, a safetensors file, a shard or a benchmark's h5 file: each reader names
it with the command that fetches the file (before: "Unsupported operand 118; a CG3D
checkpoint holds no pickled objects", "truncated tar header", safetensors' own words, h5py's
"file signature not found")."""

import io
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.files import stand_in
from cg3d.formats.intact import tar_problem
from cg3d.formats.tar import FormatError, tar_members
from cg3d.models.checkpoint import read_checkpoint
from cg3d.models.hub import safetensors_damage

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 620000000\n"
)
FETCH = "a Git LFS pointer (to an object of 620000000 bytes, sha256 4d7a214614ab…), not the file: run `git lfs pull`"


def pointer_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(LFS_POINTER)
    return path


def test_a_checkpoint_that_is_an_lfs_pointer(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        read_checkpoint(pointer_file(tmp_path / "cg3d.pt"))
    assert FETCH in str(caught.value)
    assert "pickled" not in str(caught.value)


def test_safetensors_weights_that_are_an_lfs_pointer(tmp_path: Path) -> None:
    assert FETCH in safetensors_damage(pointer_file(tmp_path / "model.safetensors"))


def test_a_shard_that_is_an_lfs_pointer(tmp_path: Path) -> None:
    shard = pointer_file(tmp_path / "shard-000000.tar")
    assert FETCH in str(tar_problem(shard))
    with pytest.raises(FormatError, match="git lfs pull"):
        list(tar_members(io.BytesIO(LFS_POINTER)))


def test_a_scanobjectnn_h5_that_is_an_lfs_pointer(tmp_path: Path) -> None:
    from cg3d.eval.readers import scanobjectnn

    pointer_file(tmp_path / "h5_files" / "main_split_nobg" / "test_objectdataset.h5")
    with pytest.raises(UsageError) as caught:
        scanobjectnn(tmp_path / "h5_files", "obj_only")
    assert "not a readable HDF5 file (a Git LFS pointer" in str(caught.value)


@pytest.mark.parametrize(
    "head",
    [
        b"glTF\x02\x00\x00\x00",
        b"ply\nformat ascii 1.0\n",
        b"OFF\n8 12 0\n",
        b"solid cube\n",
        b"# version https://git-lfs.github.com/spec/v1\nv 0 0 0\n",  # an OBJ comment
        b"PK\x03\x04\x14\x00",
        b"shapenet-03001627_a.points.npy".ljust(512, b"\0"),  # a tar's first header
        b'<?xml version="1.0"?><COLLADA>',  # XML, but no error response
    ],
)
def test_real_heads_are_no_stand_ins(head: bytes) -> None:
    assert stand_in(head) == ""


def test_older_pointer_spellings_are_known() -> None:
    hawser = LFS_POINTER.replace(b"git-lfs.github.com", b"hawser.github.com")
    extended = LFS_POINTER.replace(b"oid", b"ext-0-foo sha256:" + b"0" * 64 + b"\noid")
    assert "Git LFS pointer" in stand_in(hawser)
    assert "Git LFS pointer" in stand_in(extended)


def test_an_index_that_is_an_lfs_pointer(tmp_path: Path) -> None:
    """It was "damaged (…not valid JSON…): `cg3d pack` rebuilds it", where `git lfs pull`
    fetches it."""
    from cg3d.formats.shards import read_index

    pointer_file(tmp_path / "shards" / "index.json")
    with pytest.raises(UsageError) as caught:
        read_index(tmp_path / "shards")
    assert FETCH in str(caught.value) and "pack" not in str(caught.value)


@pytest.mark.parametrize("name", ["chair.npy", "chair.txt", "chair.ply"])
def test_a_point_file_that_is_an_lfs_pointer(tmp_path: Path, name: str) -> None:
    """`classify`/`embed`'s point files: it was "no NPY magic at its start" or a parse error."""
    from cg3d.formats.pointfiles import read_point_file

    with pytest.raises(UsageError) as caught:
        read_point_file(pointer_file(tmp_path / name))
    assert FETCH in str(caught.value)
