"""JSON nested past Python's recursion limit (100,000 `[`) in a file a stage reads is a file
that does not parse, read by `cg3d.files.loads_json`: each reader's own one line, never a
RecursionError traceback (index.json in verify, classes.json in pack, a .plan.json on resume)."""

import json

import pytest

from cg3d.errors import UsageError
from cg3d.files import loads_json
from cg3d.formats.manifest import CLASSES_NAME, read_classes
from cg3d.formats.shards import INDEX_NAME, read_index
from cg3d.pipeline.chunks import previous_plan_digest

DEEP = "[" * 100_000


def test_loads_json_makes_deep_nesting_a_value_error_and_reads_the_rest():
    with pytest.raises(ValueError, match="nests too deep"):
        loads_json(DEEP)
    assert loads_json(b'{"a": [[1]]}') == {"a": [[1]]}
    nested = "[" * 500 + "]" * 500  # deep, but within the limit: read as json reads it
    assert loads_json(nested) == json.loads(nested)


def test_a_deep_index_json_is_a_damaged_index(tmp_path):
    (tmp_path / INDEX_NAME).write_text(DEEP)
    with pytest.raises(UsageError, match=r"index.json is damaged .*nests too deep.*`cg3d pack`"):
        read_index(tmp_path)


def test_a_deep_class_list_is_a_damaged_class_list(tmp_path):
    (tmp_path / CLASSES_NAME).write_text(DEEP)
    with pytest.raises(
        UsageError, match=r"classes.json is damaged .*nests too deep.*`cg3d meshes`"
    ):
        read_classes(tmp_path)


def test_a_deep_plan_file_counts_as_another_plans(tmp_path):
    (tmp_path / ".plan.json").write_text(DEEP)
    assert previous_plan_digest(tmp_path / ".plan.json") is None


def test_deep_json_in_a_user_or_resume_file_is_its_readers_one_line(tmp_path):
    """Before: RecursionError tracebacks (the LVIS split, a text-features sidecar, an index's
    retrieval.json) and a benchmark resume that ended instead of recomputing the pair."""
    import numpy as np

    from cg3d.eval.benchmark import _finished
    from cg3d.eval.readers import read_lvis_split
    from cg3d.formats.retrieval import RETRIEVAL_NAME, read_retrieval
    from cg3d.formats.textfeatures import read_text_features, sidecar, write_text_features

    (tmp_path / "lvis.json").write_text(DEEP)
    with pytest.raises(UsageError, match=r"lvis.json: not a readable LVIS .*nests too deep"):
        read_lvis_split(tmp_path / "lvis.json")
    features = tmp_path / "text.npy"
    write_text_features(features, np.eye(2, dtype=np.float32), ["a", "b"])
    sidecar(features).write_text(DEEP)
    with pytest.raises(UsageError, match=r"is not readable JSON \(the JSON nests too deep\)"):
        read_text_features(features)
    (tmp_path / RETRIEVAL_NAME).write_text(DEEP)
    with pytest.raises(UsageError, match=r"not readable JSON \(the JSON nests too deep\)"):
        read_retrieval(tmp_path)
    (tmp_path / "pair.json").write_text(DEEP)
    assert _finished(tmp_path / "pair.json", "0" * 64, "cg3d", {"limit": 0}, {}) is None
