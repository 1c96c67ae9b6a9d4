"""The class-text-feature file: FILE.npy and its FILE.json sidecar (cg3d.formats.textfeatures)."""

import hashlib
import json

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.formats.textfeatures import (
    features_about,
    features_for,
    read_text_features,
    write_text_features,
)


def test_written_features_read_back_with_their_classes_and_record(tmp_path):
    features = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    path = tmp_path / "lvis.npy"
    write_text_features(path, features, ["a", "b", "c"], {"protocol": "cg3d"})
    found = read_text_features(path)
    assert np.array_equal(found.features, features) and found.classes == ["a", "b", "c"]
    assert found.about["protocol"] == "cg3d" and found.about["format"] == "cg3d-text-features-1"
    assert found.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # a plain .npy as OpenShape ships it: loadable without pickle
    assert np.array_equal(np.load(path, allow_pickle=False), features)


def test_rows_are_taken_by_class_name_as_stored(tmp_path):
    """A released .npy with a hand-written sidecar, in another order than the benchmark's."""
    rows = np.array([[3.0, 0, 0, 4.0], [0, 2.0, 0, 0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    np.save(tmp_path / "released.npy", rows)
    (tmp_path / "released.json").write_text(json.dumps({"classes": ["lamp", "night stand", "cup"]}))
    picked = features_for(
        read_text_features(tmp_path / "released.npy"),
        ["cup", "night_stand", "lamp"],
        4,
        lambda n: n.replace("_", " "),
    )
    assert np.array_equal(picked, rows[[2, 1, 0]])
    with pytest.raises(UsageError, match="lacks the classes sofa, bed"):
        features_for(read_text_features(tmp_path / "released.npy"), ["cup", "sofa", "bed"], 4)
    with pytest.raises(UsageError, match="4-d features; the model's are 8-d"):
        features_for(read_text_features(tmp_path / "released.npy"), ["cup"], 8)


def test_rows_are_taken_by_class_name_in_either_unicode_form(tmp_path):
    """Before: features written for `café` typed in NFC lacked the class `café` of a data set
    made on a Mac (NFD), printed alike: "lacks the classes café"."""
    rows = np.array([[3.0, 0, 0, 4.0], [0, 2.0, 0, 0]], dtype=np.float32)
    np.save(tmp_path / "f.npy", rows)
    (tmp_path / "f.json").write_text(
        json.dumps({"classes": ["caf\u00e9", "cr\u00e8me br\u00fbl\u00e9e"]})
    )
    classes = ["cre\u0300me_bru\u0302le\u0301e", "cafe\u0301"]  # NFD, one as a folder spells it
    found = read_text_features(tmp_path / "f.npy")
    picked = features_for(found, classes, 4, lambda n: n.replace("_", " "))
    assert np.array_equal(picked, rows[[1, 0]])


@pytest.mark.parametrize(
    "array, sidecar, message",
    [
        (np.zeros((2, 4), np.float32), None, "no released.json beside"),
        (np.zeros((2, 4), np.float32), {"names": []}, 'no "classes" list'),
        (np.zeros((3, 4), np.float32), {"classes": ["a", "b"]}, r"\(2, D\) floats"),
        (np.zeros((2, 4), np.float32), {"classes": ["a", "a"]}, "names a class twice"),
        (np.array([[np.nan, 0], [0, 1]], np.float32), {"classes": ["a", "b"]}, "non-finite"),
        (np.array([{"a": 1}, None], dtype=object), {"classes": ["a", "b"]}, "not a plain .npy"),
        # before: every shape scored 0 against it, and a tie went to the first class, exit 0
        (np.array([[1, 0], [0, 0]], np.float32), {"classes": ["a", "b"]}, "class 'b' is all zeros"),
    ],
)
def test_bad_files_are_one_line_naming_them(tmp_path, array, sidecar, message):
    path = tmp_path / "released.npy"
    np.save(path, array, allow_pickle=True)
    if sidecar is not None:
        (tmp_path / "released.json").write_text(json.dumps(sidecar))
    with pytest.raises(UsageError, match=message):
        read_text_features(path)


def test_a_result_records_the_file_and_only_the_sidecars_short_provenance(tmp_path):
    path = tmp_path / "released.npy"
    np.save(path, np.eye(2, dtype=np.float32))
    sidecar = {
        "classes": ["chair", "lamp"],
        "clip_model": "ViT-bigG-14",
        "templates": "x" * 5000,  # a hand-written sidecar's essay: left out of every result
        "licence": "kept in the sidecar, not a provenance key",
    }
    (tmp_path / "released.json").write_text(json.dumps(sidecar))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert features_about(read_text_features(path)) == {
        "file": "released.npy",
        "sha256": digest,
        "clip_model": "ViT-bigG-14",
    }


def test_features_another_teacher_made_are_refused_naming_both(tmp_path):
    """Before: a sidecar saying ViT-B-32 made the rows was used for a model whose teacher is
    another CLIP of the same width, in silence: scores in a space the points are not in."""
    rows = np.eye(2, 4, dtype=np.float32)
    write_text_features(tmp_path / "f.npy", rows, ["cup", "lamp"], {"clip_model": "ViT-B-32"})
    with pytest.raises(UsageError, match="'ViT-B-32' made these.*teacher is 'ViT-B-16'"):
        features_for(read_text_features(tmp_path / "f.npy"), ["cup"], 4, clip_model="ViT-B-16")
    assert np.array_equal(
        features_for(read_text_features(tmp_path / "f.npy"), ["lamp"], 4, clip_model="ViT-B-32"),
        rows[[1]],
    )
    # a hand-written sidecar that names no teacher is taken at its word
    (tmp_path / "f.json").write_text(json.dumps({"classes": ["cup", "lamp"]}))
    assert np.array_equal(
        features_for(read_text_features(tmp_path / "f.npy"), ["cup"], 4, clip_model="ViT-B-16"),
        rows[[0]],
    )


def test_rows_written_without_their_sidecar_are_never_read_with_an_earlier_ones_names(
    tmp_path, monkeypatch
):
    """Before: a failure (or kill) between the .npy and the .json left the new rows beside the
    earlier run's class names: same count, rows read as the wrong classes, no error."""
    import cg3d.formats.textfeatures as textfeatures

    path = tmp_path / "f.npy"
    write_text_features(path, np.eye(2, dtype=np.float32), ["cup", "lamp"])

    def full_disk_at_the_sidecar(target, values):
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(textfeatures, "write_json", full_disk_at_the_sidecar)  # the sidecar's
    with pytest.raises(OSError):
        write_text_features(path, np.eye(2, dtype=np.float32)[::-1].copy(), ["sofa", "bed"])
    with pytest.raises(UsageError, match="no f.json beside"):
        read_text_features(path)


def test_a_large_file_that_is_no_npy_is_refused_unread(tmp_path):
    """A 256 MiB file (a checkpoint given by mistake; sparse here) was read whole into memory
    before its first bytes were found not to be .npy; its header now refuses it."""
    import tracemalloc

    path = tmp_path / "model.npy"
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04")  # a zip's (torch's checkpoint's) start
        handle.truncate(256 << 20)
    (tmp_path / "model.json").write_text(json.dumps({"classes": ["a"]}))
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="is not a plain .npy array"):
            read_text_features(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
