import json
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.formats.manifest import CLASSES_NAME, read_manifest
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.protocol import class_names
from tests.pipeline.sources.helpers import make_shapenet


def test_names_renames_synonyms_and_up_axis(tmp_path: Path) -> None:
    root, out = tmp_path / "ShapeNetCore.v2", tmp_path / "out"
    make_shapenet(root)
    build_manifest(MeshesConfig(source="shapenet", root=str(root), workers=1), out)
    records = read_manifest(out)
    by_model = {Path(r.path).parts[-3]: r for r in records}
    assert by_model["m1"].class_name == "monitor"
    assert by_model["m1"].synonyms == ["video display"]
    assert by_model["a1"].class_name == "trashcan"
    assert by_model["a1"].synonyms == ["trash can", "garbage can"]
    assert by_model["c1"].class_name == "chair" and by_model["c1"].synonyms == []
    assert all(r.status == "ok" and r.up_axis == "y" for r in records)
    assert json.loads((out / CLASSES_NAME).read_text()) == class_names("shapenet55")
    # Seeded split: disjoint, every class of two or more has a test object.
    assert {by_model[m].split for m in ("m1", "m2", "m3")} == {"train", "test"}
    assert {by_model[m].split for m in ("a1", "a2")} == {"train", "test"}


def test_split_from_all_csv(tmp_path: Path) -> None:
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    csv = tmp_path / "all.csv"
    csv.write_text(
        "id,synsetId,subSynsetId,modelId,split\n"
        "1,3211117,3211117,m1,test\n2,3211117,3211117,m2,val\n3,3211117,3211117,m3,train\n"
        "4,2747177,2747177,a1,test\n5,3001627,4331277,c1,train\n"
    )
    config = MeshesConfig(source="shapenet", root=str(root), split_file=str(csv), workers=1)
    build_manifest(config, tmp_path / "out")
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    # a2 is in no split: left out; val joins train.
    assert splits == {"m1": "test", "m2": "train", "m3": "train", "a1": "test", "c1": "train"}


def test_all_csv_saved_by_a_spreadsheet_reads(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark and uses CRLF; columns reordered
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    csv = tmp_path / "all.csv"
    text = "synsetId,modelId,split\r\n3211117,m1,test\r\n3211117,m2,train\r\n"
    csv.write_bytes(text.encode("utf-8-sig"))
    config = MeshesConfig(source="shapenet", root=str(root), split_file=str(csv), workers=1)
    build_manifest(config, tmp_path / "out")
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    assert splits == {"m1": "test", "m2": "train"}


def test_split_from_point_bert_lists(tmp_path: Path) -> None:
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    lists = tmp_path / "ShapeNet-55"
    lists.mkdir()
    (lists / "train.txt").write_text("03211117-m1.npy\n03211117-m2.npy\n02747177-a1.npy\n")
    (lists / "test.txt").write_text("03211117-m3.npy\n02747177-a2.npy\n03001627-c1.npy\n")
    config = MeshesConfig(source="shapenet", root=str(root), split_file=str(lists), workers=1)
    build_manifest(config, tmp_path / "out")
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    assert splits == {
        "m1": "train",
        "m2": "train",
        "a1": "train",
        "m3": "test",
        "a2": "test",
        "c1": "test",
    }


def test_missing_taxonomy_and_bad_split_file_name_their_option(tmp_path: Path) -> None:
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    bad = MeshesConfig(source="shapenet", root=str(root), split_file=str(tmp_path / "nope.txt"))
    with pytest.raises(UsageError, match="^--split-file"):
        build_manifest(bad, tmp_path / "out")
    (root / "taxonomy.json").unlink()
    with pytest.raises(UsageError, match="^--root: no taxonomy.json"):
        build_manifest(MeshesConfig(source="shapenet", root=str(root)), tmp_path / "out")


@pytest.mark.parametrize(
    "name,content,line",
    [
        (
            "all.csv",
            b"synsetId,modelId,split\n03211117,m1,train\n\xff\xfe\n",
            "is not UTF-8 text (byte 41",
        ),
        ("lists/train.txt", b"\xff\xfe03211117-m1\n", "train.txt is not UTF-8 text (byte 0"),
        (
            "lists/train.txt",
            b"03211117-m1.npy\nm2.npy\n",
            "lists 'm2.npy', not <synsetId>-<modelId>",
        ),
        ("lists/train.txt", b"-m2\n", "lists '-m2', not <synsetId>-<modelId>"),
        # a typo or a short row was a training shape, unsaid
        ("all.csv", b"synsetId,modelId,split\n03211117,m1,tset\n", "line 2: split 'tset' of mod"),
        ("all.csv", b"synsetId,modelId,split\n03211117,m1,\n", "line 2: split '' of model 'm1'"),
        ("all.csv", b"synsetId,modelId,split\n03211117,m1,TEST\n", "line 2: split 'TEST' of mod"),
        (
            "all.csv",
            b"synsetId,modelId,split\n03211117,m1,test\n03211117\n",
            "line 3: split 'None'",
        ),
    ],
)
def test_a_split_file_that_does_not_parse_is_one_line_naming_it(tmp_path, name, content, line):
    """Before: UnicodeDecodeError and "not enough values to unpack" tracebacks; a split value
    other than train, val or test was counted as train."""
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "test.txt").write_text("03211117-m3.npy\n")
    (tmp_path / name).write_bytes(content)
    given = tmp_path / name.split("/")[0]
    config = MeshesConfig(source="shapenet", root=str(root), split_file=str(given), workers=1)
    with pytest.raises(UsageError) as caught:
        build_manifest(config, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith("--split-file: ") and line in message and "\n" not in message


def shapenet_with_split(tmp_path: Path, name: str, content: bytes) -> MeshesConfig:
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    given = tmp_path / name.split("/")[0]
    return MeshesConfig(source="shapenet", root=str(root), split_file=str(given), workers=1)


def test_a_model_listed_twice_in_all_csv_with_two_splits_is_test_with_a_warning(tmp_path):
    """Before: the last row won, silently (m1 trained on here, whatever line 2 said). The file
    is ShapeNet's, which a user cannot fix: it is read, the model kept out of training."""
    config = shapenet_with_split(
        tmp_path,
        "all.csv",
        b"id,synsetId,subSynsetId,modelId,split\n1,3211117,3211117,m1,test\n"
        b"2,3211117,3211117,m2,train\n3,03211117,3211117,m1,train\n"
        b"4,03211117,4000000,m1,train\n",
    )
    with pytest.warns(UserWarning) as caught:
        build_manifest(config, tmp_path / "out")
    assert [str(w.message) for w in caught] == [
        f"--split-file: {tmp_path / 'all.csv'} gives 1 model(s) both a train and a test split, "
        "first model 'm1' of synset '03211117' (lines 2 and 4): each is taken as test, so no "
        "test model is trained on"
    ]
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    assert splits == {"m1": "test", "m2": "train"}


def test_a_model_listed_twice_in_all_csv_with_one_split_is_kept_once(tmp_path):
    """ShapeNet's own all.csv lists a model once per sub-synset: repeats that agree are fine
    (val and train are one split here)."""
    config = shapenet_with_split(
        tmp_path,
        "all.csv",
        b"id,synsetId,subSynsetId,modelId,split\n1,3211117,3211117,m1,test\n"
        b"2,3211117,4000000,m1,test\n3,3211117,3211117,m2,val\n4,3211117,3211117,m2,train\n",
    )
    build_manifest(config, tmp_path / "out")
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    assert splits == {"m1": "test", "m2": "train"}


def test_a_model_in_both_point_bert_lists_is_test_with_a_warning(tmp_path):
    config = shapenet_with_split(tmp_path, "lists/train.txt", b"03211117-m1.npy\n")
    (tmp_path / "lists" / "test.txt").write_text("03211117-m2.npy\n03211117-m1.npy\n")
    with pytest.warns(UserWarning) as caught:
        build_manifest(config, tmp_path / "out")
    assert [str(w.message) for w in caught] == [
        f"--split-file: {tmp_path / 'lists'} gives 1 model(s) both a train and a test split, "
        "first '03211117-m1.npy' (in both lists): each is taken as test, so no test model is "
        "trained on"
    ]
    splits = {Path(r.path).parts[-3]: r.split for r in read_manifest(tmp_path / "out")}
    assert splits == {"m1": "test", "m2": "test"}


@pytest.mark.parametrize("fifo", ["all.csv", "lists/test.txt"])
def test_a_fifo_given_as_a_split_file_is_named_a_fifo(tmp_path, fifo):
    """Before: "is neither a .csv nor a folder with train.txt and test.txt"."""
    import os

    config = shapenet_with_split(tmp_path, "lists/train.txt", b"03211117-m1.npy\n")
    os.mkfifo(tmp_path / fifo)
    config.split_file = str(tmp_path / fifo.split("/")[0])
    with pytest.raises(UsageError) as caught:
        build_manifest(config, tmp_path / "out")
    assert str(caught.value) == f"--split-file: '{tmp_path / fifo}' is a FIFO, not a file"


@pytest.mark.parametrize("name", ["all.csv", "lists/train.txt"])
def test_a_split_file_past_the_list_bound_is_refused_unread(tmp_path, name, monkeypatch):
    """Read whole and parsed, a split file is bounded as the other list files are. Before:
    read however large (a sparse 1 GB all.csv: read, then the row check)."""
    import os

    import cg3d.files

    monkeypatch.setattr(cg3d.files, "MAX_LIST_BYTES", 1 << 20)
    config = shapenet_with_split(tmp_path, name, b"synsetId,modelId,split\n03211117,m1,test\n")
    (tmp_path / "lists" / "test.txt").write_text("03211117-m3.npy\n") if "/" in name else None
    os.truncate(tmp_path / name, (1 << 20) + 1)
    with pytest.raises(UsageError) as caught:
        build_manifest(config, tmp_path / "out")
    assert str(caught.value) == (
        f"--split-file: {tmp_path / name} holds {(1 << 20) + 1} bytes, more than the 1 MiB a "
        "list or annotation file may hold"
    )
