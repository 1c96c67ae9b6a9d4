"""Files written by another cg3d (cg3d.formats.versions): a data root outlives a release.

A newer cg3d's file (a format tag of a higher number) is refused in one line naming the file,
both tags and what to do; before, a checkpoint or hub folder of a newer format was "not a CG3D
checkpoint ... `cg3d convert`", and a tagged sidecar, manifest or points part was read as if it
were ours. A column or field a newer cg3d added beside a tag we read is passed over: a manifest
with one was "damaged", to be rebuilt. An index built before retrieval.json was renamed (its
descriptor index.json) was a shard set to `cg3d inspect` and `cg3d index --out`.
"""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cg3d.app.index import build_index, open_index
from cg3d.errors import UsageError
from cg3d.formats.failures import read_failures, write_failures
from cg3d.formats.manifest import MANIFEST_NAME, SCHEMA, MeshRecord, read_manifest, write_manifest
from cg3d.formats.owner import PLAN_NAME, folder_owner
from cg3d.formats.points import read_points_part, write_points_part
from cg3d.formats.retrieval import read_retrieval
from cg3d.formats.shards import INDEX_NAME, read_index
from cg3d.formats.textfeatures import read_text_features, sidecar, write_text_features
from cg3d.formats.versions import TABLE_KEY
from cg3d.models.checkpoint import read_checkpoint
from cg3d.models.hub import export_hub
from cg3d.params import IndexConfig
from cg3d.pipeline.inspect import folder_kind, inspect_folder

NEWER = "written by a newer cg3d"


def records() -> list[MeshRecord]:
    return [MeshRecord(f"folder-m{i}-0a1b", "folder", f"{i}.obj", "chair", "train") for i in (0, 1)]


def test_a_checkpoint_of_a_newer_format_is_one_line_saying_so(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "newer.pt"
    torch.save({**payload, "format": "cg3d-checkpoint-2"}, path)
    with pytest.raises(UsageError) as caught:
        read_checkpoint(path)
    assert str(caught.value).startswith(
        f"{path}: {NEWER} (format 'cg3d-checkpoint-2'; this cg3d reads 'cg3d-checkpoint-1'): "
        "upgrade cg3d"
    )


def test_a_hub_folder_of_a_newer_format_is_one_line_saying_so(tiny_checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_hub(tiny_checkpoint, tmp_path / "hub")
    config_file = tmp_path / "hub" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "format": "cg3d-hub-2"}))
    with pytest.raises(UsageError, match=f"^{config_file}: {NEWER} \\(format 'cg3d-hub-2'"):
        read_checkpoint(tmp_path / "hub")


def test_a_text_features_sidecar_of_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "tf.npy"
    write_text_features(path, np.eye(2, dtype=np.float32), ["a", "b"])
    about = json.loads(sidecar(path).read_text())
    sidecar(path).write_text(json.dumps({**about, "format": "cg3d-text-features-2"}))
    with pytest.raises(UsageError, match=f"{NEWER} \\(format 'cg3d-text-features-2'"):
        read_text_features(path)
    # one without a format (a hand-written sidecar of a released .npy) is read as before
    sidecar(path).write_text(json.dumps({"classes": ["a", "b"]}))
    assert read_text_features(path).classes == ["a", "b"]


def test_an_index_of_a_newer_format_is_refused(tiny_index, tmp_path):
    newer = tmp_path / "index"
    shutil.copytree(tiny_index, newer)
    descriptor = json.loads((newer / "retrieval.json").read_text())
    (newer / "retrieval.json").write_text(json.dumps({**descriptor, "format": "cg3d-index-2"}))
    with pytest.raises(UsageError, match=f"{NEWER} \\(format 'cg3d-index-2'.*rerun `cg3d index`"):
        read_retrieval(newer)


@pytest.mark.parametrize("found", [2, 17])
def test_a_shard_index_of_a_newer_pack_is_refused(found, tiny_shards, tmp_path):
    """index.json's "format" has been 1 since the first pack, and no reader checked it: a newer
    pack's index (format 2) was trained on, evaluated and indexed as if it were ours."""
    shards = shutil.copytree(tiny_shards, tmp_path / "shards")
    index = json.loads((shards / INDEX_NAME).read_text())
    assert index["format"] == 1  # what every pack wrote
    (shards / INDEX_NAME).write_text(json.dumps({**index, "format": found}))
    with pytest.raises(UsageError, match=f"{NEWER} \\(format 'cg3d-shards-{found}'.*`cg3d pack`"):
        read_index(shards)


@pytest.mark.parametrize("found", [True, 1.0, "1", None, -1, 0, [1]])
def test_a_shard_index_whose_format_is_no_version_number_is_one_line(found, tiny_shards, tmp_path):
    shards = shutil.copytree(tiny_shards, tmp_path / "shards")
    index = json.loads((shards / INDEX_NAME).read_text())
    (shards / INDEX_NAME).write_text(json.dumps({**index, "format": found}))
    with pytest.raises(UsageError, match="not a `cg3d pack` index \\('format' is .*, not 1\\)"):
        read_index(shards)
    # one without a format (made by hand) is read as ours
    del index["format"]
    (shards / INDEX_NAME).write_text(json.dumps(index))
    assert read_index(shards)["classes"] == index["classes"]


def tagged(table: pa.Table, tag: str) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), TABLE_KEY: tag})


def test_a_manifest_or_points_part_of_a_newer_table_format_is_refused(tmp_path):
    write_manifest(records(), tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    pq.write_table(tagged(pq.read_table(manifest), "cg3d-table-2"), manifest)
    with pytest.raises(UsageError, match=f"^{manifest}: {NEWER} \\(format 'cg3d-table-2'.*meshes"):
        read_manifest(tmp_path)
    part = tmp_path / "part-00000.parquet"
    write_points_part(part, ["a"], [np.zeros((4, 3), np.float32)])
    pq.write_table(tagged(pq.read_table(part), "cg3d-table-2"), part)
    with pytest.raises(UsageError, match=f"^{part}: {NEWER}.*`cg3d sample`"):
        list(read_points_part(part))


# A tag of 5,000 digits was int()'s ValueError (a traceback); "\\n" after the number, a
# leading zero or another script's digit were "an older/newer cg3d"
BROKEN_TAGS = ["9" * 5000, "1\n", "01", "\u0662"]


@pytest.mark.parametrize("number", BROKEN_TAGS, ids=["5000-digits", "newline", "01", "arabic-2"])
def test_a_broken_tag_number_is_one_line_in_every_tagged_file(
    number, tiny_checkpoint, tiny_index, tmp_path
):
    payload = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({**payload, "format": f"cg3d-checkpoint-{number}"}, tmp_path / "c.pt")
    with pytest.raises(UsageError, match="not a CG3D checkpoint"):
        read_checkpoint(tmp_path / "c.pt")
    write_manifest(records(), tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    pq.write_table(tagged(pq.read_table(manifest), f"cg3d-table-{number}"), manifest)
    with pytest.raises(UsageError, match="its cg3d.format is 'cg3d-table-.*', not 'cg3d-table-1'"):
        read_manifest(tmp_path)
    index = shutil.copytree(tiny_index, tmp_path / "index")
    descriptor = json.loads((index / "retrieval.json").read_text())
    tag = {**descriptor, "format": f"cg3d-index-{number}"}
    (index / "retrieval.json").write_text(json.dumps(tag))
    with pytest.raises(UsageError, match="not a CG3D index"):
        read_retrieval(index)


@pytest.mark.parametrize("found", [2, 1.5, True, None, "2", "cg3d-text-features-01", "x" * 5000])
def test_a_sidecar_whose_format_is_of_another_type_or_shape_is_refused(found, tmp_path):
    # it was read silently: only a tag of a higher number was refused
    path = tmp_path / "tf.npy"
    write_text_features(path, np.eye(2, dtype=np.float32), ["a", "b"])
    about = json.loads(sidecar(path).read_text())
    sidecar(path).write_text(json.dumps({**about, "format": found}))
    with pytest.raises(UsageError, match=r"tf.json: its format is .{1,60}, not 'cg3d-text-featu"):
        read_text_features(path)


def test_a_parquet_tag_of_binary_garbage_is_one_line(tmp_path):
    write_manifest(records(), tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    garbage = bytes(range(256)) * 100
    table = pq.read_table(manifest)
    pq.write_table(table.replace_schema_metadata({TABLE_KEY: garbage}), manifest)
    with pytest.raises(UsageError) as caught:
        read_manifest(tmp_path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_manifest_with_a_column_this_cg3d_does_not_know_is_read(tmp_path):
    write_manifest(records(), tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    table = pq.read_table(manifest)
    pq.write_table(table.append_column("license", pa.array(["cc-by"] * 2)), manifest)
    assert read_manifest(tmp_path) == records()
    assert pq.read_schema(manifest).names == [*SCHEMA.names, "license"]


def before_the_rename(index: Path, old: Path) -> Path:
    """`index` as a cg3d before retrieval.json left it: its descriptor index.json, its plan
    naming no stage."""
    shutil.copytree(index, old)
    (old / "retrieval.json").rename(old / "index.json")
    recorded = json.loads((old / PLAN_NAME).read_text())
    recorded["plan"].pop("stage", None)
    (old / PLAN_NAME).write_text(json.dumps(recorded))
    return old


def test_an_index_built_before_the_rename_is_an_index_to_inspect_and_rebuild(
    tiny_index, tiny_checkpoint, tiny_shards, tmp_path
):
    old = before_the_rename(tiny_index, tmp_path / "old")
    assert folder_kind(old) == "index" and folder_owner(old) == "index"
    found = inspect_folder(old)
    assert len(found.ids) == len(open_index(old).objects)
    descriptor = json.loads((old / "index.json").read_text())
    descriptor.pop("lost", None)  # not recorded then
    (old / "index.json").write_text(json.dumps(descriptor))
    assert inspect_folder(old).details["samples lost"].startswith("not recorded")
    build_index(tiny_checkpoint, tiny_shards, old, IndexConfig(batch_size=4, thumbnail=16))
    assert (old / "retrieval.json").is_file() and not (old / "index.json").exists()


def test_a_failures_table_is_read_by_its_columns(tmp_path):
    """A column this cg3d does not know is passed over (the rows went on with it); a dropped
    one is one line (a KeyError further on, in `cg3d inspect` or the stage's summary)."""
    path = tmp_path / "failures.parquet"
    write_failures([{"id": "a", "stage": "sample", "reason": "empty: no faces"}], path)
    table = pq.read_table(path)
    pq.write_table(table.append_column("code", pa.array(["E1"])), path)
    assert read_failures(path) == [{"id": "a", "stage": "sample", "reason": "empty: no faces"}]
    pq.write_table(table.drop_columns(["reason"]), path)
    with pytest.raises(
        UsageError, match=f"^{path} is damaged \\(no reason column\\).*`cg3d sample`"
    ):
        read_failures(path, "sample")
