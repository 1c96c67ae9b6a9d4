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
