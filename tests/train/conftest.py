"""Fixtures of the training tests."""

import pytest

from tests.pipeline.fakes import fake_pipeline


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_pipeline(root, per_class=6, shard_size=3, views=2, n=64)
    return root / "shards"
