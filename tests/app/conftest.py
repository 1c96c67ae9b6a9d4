"""Fixtures of the app tests: the eval tests' tiny checkpoint and shards, and an index of them."""

import pytest

from tests.eval.conftest import cube, tiny_checkpoint, write_shards  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shards of 2 classes × 3 objects per split, 2 views each (32 px)."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=3, n=64, views=2)
    return root


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_checkpoint, tiny_shards):  # noqa: F811 - the fixture
    from cg3d.app.index import build_index
    from cg3d.params import IndexConfig

    out = tmp_path_factory.mktemp("index")
    build_index(tiny_checkpoint, tiny_shards, out, IndexConfig(batch_size=4, thumbnail=16))
    return out
