"""Python's own switches a researcher's shell may set: `PYTHONWARNINGS=error` (`python -W
error`) turns a warning into an exception, which ended a command with a traceback (exit 1)."""

import os
import subprocess
import sys

from tests.pipeline.sources.helpers import make_shapenet

# A model that ShapeNet's all.csv gives both splits: `cg3d meshes` warns, and goes on
SPLIT_TWICE = (
    b"id,synsetId,subSynsetId,modelId,split\n1,3211117,3211117,m1,test\n"
    b"2,3211117,3211117,m2,train\n3,03211117,3211117,m1,train\n"
)


def test_a_warning_the_filter_makes_an_error_is_one_line(tmp_path):
    root = tmp_path / "ShapeNetCore.v2"
    make_shapenet(root)
    (tmp_path / "all.csv").write_bytes(SPLIT_TWICE)
    words = ["meshes", "--source", "shapenet", "--root", root, "--split-file", "all.csv"]
    done = subprocess.run(
        [sys.executable, "-m", "cg3d", *map(str, words), "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: --split-file: all.csv gives 1 model(s) both a train and a test split, first"
        " model 'm1' of synset '03211117' (lines 2 and 4): each is taken as test, so no test"
        " model is trained on (a UserWarning made an error by the warnings filter 'error'"
        " (PYTHONWARNINGS, python -W))"
    ]
