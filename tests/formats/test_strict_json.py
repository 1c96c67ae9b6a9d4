"""Every JSON file and member cg3d writes is strict JSON (issue t81d): Python's `json.dumps`
wrote NaN and infinity as `NaN` / `Infinity` in shard meta, chunk plans and cameras, which jq,
JavaScript and most parsers refuse. `cg3d.files.json_text` writes them as null, and the
readers take what it wrote."""

import json
import math

import numpy as np
import pytest

from cg3d.formats.owner import PLAN_NAME
from cg3d.formats.renders import CamerasError, dumps_cameras, loads_cameras
from cg3d.formats.shards import decode_meta, sample_members
from cg3d.pipeline.pack import prepare_output


def strict_json(text: str | bytes) -> object:
    """json.loads as jq or JavaScript read: NaN and Infinity are no JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_shards_meta_holding_nan_is_strict_json_and_reads_back_as_null():
    meta = {"class_name": "chair", "scale": math.nan, "extent": [1.5, math.inf, -math.inf]}
    points = np.zeros((4, 3), np.float32)
    members = dict(sample_members(points, {}, None, ["a chair"], 0, meta))
    expected = {"class_name": "chair", "scale": None, "extent": [1.5, None, None]}
    assert strict_json(members["meta.json"]) == expected
    assert decode_meta(members["meta.json"]) == expected  # the shard reader takes it


def test_a_plan_holding_nan_is_strict_json_and_its_rerun_keeps_the_finished_shards(tmp_path):
    out = tmp_path / "shards"
    fingerprint = {"stage": "pack", "shard_size": 2, "inputs": "abc", "weight": math.nan}
    digest = prepare_output(out, fingerprint)
    plan = strict_json((out / PLAN_NAME).read_text())
    assert plan == {"digest": digest, "plan": {**fingerprint, "weight": None}}
    finished = out / "train" / "shard-000000.tar"
    finished.write_bytes(b"a finished shard")
    assert prepare_output(out, fingerprint) == digest  # the plan it wrote reads as the same
    assert finished.exists()


def test_cameras_holding_nan_are_strict_json_and_still_refused_on_reading():
    view = {"name": "view_00", "K": np.eye(3).tolist(), "world_to_camera": np.eye(4).tolist()}
    view |= {"azimuth_deg": 0.0, "elevation_deg": 30.0}
    view["K"][0][0] = math.nan  # a camera gone wrong
    data = dumps_cameras({"width": 64, "height": 64, "views": [view]})
    assert strict_json(data)["views"][0]["K"][0][0] is None
    with pytest.raises(CamerasError, match="view 0: K is not a finite 3×3"):
        loads_cameras(data)


# Run under a locale whose encoding is ASCII (the C locale with Python's UTF-8 coercion off, as
# `LANG=C PYTHONCOERCECLOCALE=0`, or a latin-1 one): what `write_text` without an encoding used.
UNDER_ASCII_LOCALE = r"""
import json, locale, sys
from pathlib import Path
from cg3d.formats.manifest import write_classes
from cg3d.formats.shards import write_index
from cg3d.pipeline.closure import module_closure
assert locale.getpreferredencoding() != "UTF-8"
out = Path(sys.argv[1])
names = ["caf\u00e9", "\u0441\u0442\u0443\u043b"]
write_classes(names, out)
write_index(out, {"classes": names})
assert "cg3d.params" in module_closure(["cg3d.pipeline.sample"])  # its source is not ASCII
print("ok")
"""


def test_files_are_utf_8_and_the_code_is_read_whatever_the_locale(tmp_path):
    """classes.json and index.json hold users' class names: written in the locale's encoding,
    a non-UTF-8 locale crashed on "стул" (UnicodeEncodeError) or wrote "café" in latin-1, which
    their UTF-8 readers refuse; and every stage's code digest read cg3d's own source in it,
    failing on the first non-ASCII character (UnicodeDecodeError)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run(
        [sys.executable, "-c", UNDER_ASCII_LOCALE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    names = ["café", "стул"]
    assert json.loads((tmp_path / "classes.json").read_bytes().decode("utf-8")) == names
    index = json.loads((tmp_path / "index.json").read_bytes().decode("utf-8"))
    assert index["classes"] == names


def test_the_json_files_keep_their_layouts_through_the_one_writer(tmp_path):
    """classes.json and index.json: one-space indent, non-ASCII kept; a hub config.json:
    two-space indent, keys sorted, non-ASCII escaped (the bytes these files had before they
    shared `files.write_json`: DVC would see any change as new data)."""
    import torch

    from cg3d.formats.manifest import write_classes
    from cg3d.formats.shards import write_index
    from cg3d.models.hub import write_hub

    write_classes(["стул", "a|b"], tmp_path)
    assert (tmp_path / "classes.json").read_bytes() == '[\n "стул",\n "a|b"\n]\n'.encode()
    write_index(tmp_path, {"splits": {}, "classes": ["椅子"]})
    assert (tmp_path / "index.json").read_bytes() == (
        '{\n "splits": {},\n "classes": [\n  "椅子"\n ]\n}\n'.encode()
    )
    write_hub(tmp_path / "hub", {"model": {"w": torch.zeros(1)}}, {"z": 1, "a": ["椅"]}, "")
    config = (tmp_path / "hub" / "config.json").read_text(encoding="ascii")
    assert config.startswith('{\n  "a": [\n    "\\u6905"\n  ],\n  "weights_sha256": "')
    assert config.endswith('",\n  "z": 1\n}\n')
