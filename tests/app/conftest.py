"""Fixtures of the app tests: tiny shards and an index of them (with tests/conftest.py's tiny
checkpoint)."""

import pytest

from tests.eval.files import write_shards


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shards of 2 classes × 3 objects per split, 2 views each (32 px)."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=3, n=64, views=2)
    return root


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_checkpoint, tiny_shards):
    from cg3d.app.index import build_index
    from cg3d.params import IndexConfig

    out = tmp_path_factory.mktemp("index")
    build_index(tiny_checkpoint, tiny_shards, out, IndexConfig(batch_size=4, thumbnail=16))
    return out
