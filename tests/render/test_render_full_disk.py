"""`cg3d render` on a real full disk (issue t70b). Blender's image writer ignores a failed write
(it logs "Saved" and leaves an empty PNG, which the stage read back as a bad image: a
traceback); the worker now checks each PNG and reports the file system's cause. Whichever write
the disk fills at (a view in the worker's temp folder, a part), the command says one line
naming the file, exits 2, blames no object, and a rerun on a disk with room ends with the bytes
of a run that never failed. Small tmpfs disks (root only; skipped elsewhere)."""

import re
import shutil

import pytest

from cg3d.formats.failures import read_failures
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.disks import cg3d, mounted, stage_files

pytestmark = pytest.mark.blender

ENOSPC_LINE = re.compile(r"error: (?P<file>/\S+): No space left on device \(ENOSPC\)")
ARGS = ["--views", 2, "--resolution", 64, "--chunk-size", 2, "--workers", 1]


def test_a_full_disk_while_rendering_is_one_line_and_a_rerun_with_room_resumes(tmp_path):
    build_manifest(MeshesConfig(per_class=1, workers=1), tmp_path / "meshes")
    meshes = tmp_path / "meshes"
    whole = tmp_path / "whole"
    assert cg3d("render", "--meshes", meshes, "--out", whole, *ARGS).returncode == 0
    named = []
    for size in (16, 20, 24, 48, 96):  # KiB: the temp folder, the first views, then parts
        with mounted(tmp_path / f"disk{size}", f"size={size}k") as disk:
            result = cg3d("render", "--meshes", meshes, "--out", disk / "out", *ARGS)
            shutil.copytree(disk / "out", tmp_path / f"out{size}", symlinks=True)
        assert result.returncode == 2, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert ENOSPC_LINE.fullmatch(line) and "Traceback" not in result.stderr, result.stderr
        named.append(ENOSPC_LINE.fullmatch(line)["file"])
        out = tmp_path / f"out{size}"
        blamed = [row for part in out.glob("_failures/*.parquet") for row in read_failures(part)]
        assert blamed == []  # the disk is no object's failure
        resumed = cg3d("render", "--meshes", meshes, "--out", out, *ARGS)
        assert resumed.returncode == 0, resumed.stderr
        assert stage_files(out) == stage_files(whole)
    assert any(name.endswith(".png") for name in named), named  # Blender's own write was hit
