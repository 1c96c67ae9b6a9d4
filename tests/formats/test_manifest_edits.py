"""A hand-edited manifest is checked before any stage trusts it: its columns and types, no null
where a value is read, every id a safe key (a WebDataset key, a file name stem), no id twice.
Before, edits gave tracebacks (a dropped column, a null path, an id `a.b.c` in sample and
render), a tar member named `../../evil` (render), or two samples under one key in the shards
(a repeated id, packed and verified "ok")."""

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.formats.manifest import (
    CLASSES_NAME,
    MANIFEST_NAME,
    SCHEMA,
    MeshRecord,
    manifest_rows,
    manifest_size,
    manifest_tables,
    read_classes,
    read_manifest,
    write_manifest,
)
from cg3d.pipeline.sources import MeshesConfig, build_manifest


def rows(n: int = 4) -> list[dict]:
    return [
        vars(MeshRecord(f"folder-m{i}-0a1b", "folder", f"{i}.obj", "chair", "train"))
        for i in range(n)
    ]


def edited(tmp_path: Path, table: pa.Table) -> Path:
    """The table as the manifest, written as is (no sorting, no schema cast)."""
    pq.write_table(table, tmp_path / MANIFEST_NAME)
    return tmp_path


def with_ids(*ids: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{**r, "id": i} for r, i in zip(rows(len(ids)), ids, strict=True)], SCHEMA
    )


EDITS = {
    "an id twice": (with_ids("a", "b", "b", "c"), "the id 'b' is out of order or listed twice"),
    "ids out of order": (with_ids("a", "c", "b"), "the id 'b' is out of order"),
    "an id climbing out": (with_ids("../../evil", "b"), "the id '../../evil' is not a key"),
    "an absolute id": (with_ids("/abs/x"), "the id '/abs/x' is not a key"),
    "an id with dots": (with_ids("a.b.c"), "the id 'a.b.c' is not a key"),
    "an empty id": (with_ids("", "b"), "the id '' is not a key"),
    # before: passed, and the render and pack stages' tar writers refused its member names
    # (ValueError "name is too long") after the work
    "an id too long for a tar member": (
        with_ids("k" * 87),
        f"the id {'k' * 26 + '…' + 'k' * 54!r} (87 characters) is longer than the 86 characters a tar member's name leaves its key",
    ),
    "a null path": (
        pa.Table.from_pylist([{**rows(1)[0], "path": None}], SCHEMA),
        "a null path in row group 0",
    ),
    "a null status": (
        pa.Table.from_pylist([{**rows(1)[0], "status": None}], SCHEMA),
        "a null status",
    ),
    "a dropped column": (
        pa.Table.from_pylist(rows(), SCHEMA).drop_columns(["up_axis"]),
        "no up_axis column",
    ),
    "split as numbers": (
        pa.Table.from_pylist(rows(), SCHEMA).set_column(
            SCHEMA.get_field_index("split"), "split", pa.array([1] * 4)
        ),
        "its split column holds int64, not string",
    ),
    "missing as one string": (  # optional to old manifests, but not of another type
        pa.Table.from_pylist(rows(), SCHEMA).set_column(
            SCHEMA.get_field_index("missing"), "missing", pa.array(["gone.mtl"] * 4)
        ),
        "its missing column holds string, not list<item: string>",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_a_hand_edited_manifest_is_one_line_naming_the_edit(tmp_path, case):
    table, problem = EDITS[case]
    meshes = edited(tmp_path, table)
    readers = [
        read_manifest,
        manifest_size,
        lambda d: list(manifest_rows(d)),
        lambda d: list(manifest_tables(d)),
    ]
    for read in readers:
        with pytest.raises(UsageError) as caught:
            read(meshes)
        message = str(caught.value)
        assert message.startswith(f"{meshes / MANIFEST_NAME} is damaged ({problem}")
        assert message.endswith("rerun `cg3d meshes` to rebuild it")


def test_a_manifest_rewritten_in_place_at_the_same_size_and_mtime_is_checked_again(tmp_path):
    """The check runs once per version of the file, and a version counts its ctime: a damaged
    manifest copied over a checked one in place (`cp -p`: the same inode, the old mtime set
    back) at the same size passed unchecked in the same process (a notebook's next stage)."""
    path = edited(tmp_path, with_ids("a", "b")) / MANIFEST_NAME
    assert manifest_size(tmp_path) == 2  # checked, and remembered as good
    before, damaged = path.stat(), tmp_path / "damaged.parquet"
    pq.write_table(with_ids("b", "a"), damaged)
    assert damaged.stat().st_size == before.st_size
    time.sleep(0.05)  # past the kernel's coarse timestamp tick (a jiffy), as a later cp is
    with open(path, "r+b") as handle:  # in place, as cp does: the inode stays
        handle.write(damaged.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns
    )  # fmt: skip
    with pytest.raises(UsageError, match="the id 'a' is out of order"):
        manifest_size(tmp_path)


@pytest.mark.parametrize("command", ["sample", "caption", "render"])
def test_every_stage_refuses_a_traversing_id_with_one_line_before_any_output(tmp_path, command):
    (tmp_path / "meshes").mkdir()
    meshes, out = edited(tmp_path / "meshes", with_ids("../../evil")), tmp_path / "out"
    result = CliRunner().invoke(app, [command, "--meshes", str(meshes), "--out", str(out)])
    assert isinstance(result.exception, UsageError)  # `cg3d`'s handler: one line, exit 2
    assert "the id '../../evil' is not a key" in str(result.exception)
    assert not any(out.rglob("part-*")) and not any(out.rglob("*.parquet"))


def test_a_manifest_the_meshes_stage_wrote_passes_the_check(tmp_path):
    build_manifest(MeshesConfig(source="synthetic", per_class=2, workers=1), tmp_path)
    assert len(read_manifest(tmp_path)) == manifest_size(tmp_path) == 20


def test_a_class_listed_twice_is_a_damaged_class_list(tmp_path):
    """Before: pack gave labels by the first list, inspect an IndexError traceback."""
    write_manifest([MeshRecord(**r) for r in rows()], tmp_path)
    (tmp_path / CLASSES_NAME).write_text(json.dumps(["chair", "bed", "chair"]))
    with pytest.raises(
        UsageError, match=r"classes.json is damaged \(the class 'chair' is listed twice\)"
    ):
        read_classes(tmp_path)


def test_the_longest_id_the_manifest_takes_is_written_in_every_member_of_its_samples(tmp_path):
    """86 characters, and each member a sample of it has (the longest: captions.json) fits the
    ustar header of our tar writer."""
    from cg3d.formats.tar import tar_members, write_tar

    key = "k" * 86
    read_manifest(edited(tmp_path, with_ids(key)))  # taken
    suffixes = ["points.npy", "view_999.png", "cameras.json", "captions.json", "cls", "meta.json"]
    write_tar(tmp_path / "sample.tar", {f"{key}.{suffix}": b"x" for suffix in suffixes})
    with open(tmp_path / "sample.tar", "rb") as stream:
        assert sorted(name for name, _ in tar_members(stream)) == sorted(
            f"{key}.{suffix}" for suffix in suffixes
        )
