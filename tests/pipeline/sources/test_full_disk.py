"""`cg3d meshes` on a full disk (issue 25 §3): whatever write the disk fills at (generating the
synthetic objects, the listing parts, the validation parts, the merge's sorted runs, the
manifest), the command says one line naming the file it was writing, exits 2, and leaves no
temp file behind. Real full disks: a small tmpfs per run (root only; skipped elsewhere)."""

import re
from pathlib import Path

import pytest

from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.disks import cg3d, mounted

ENOSPC_LINE = re.compile(r"error: (?P<file>/\S+): No space left on device \(ENOSPC\)")


def check_full_disk_run(result, out: Path) -> str | None:
    """The file a failed run named (after checking its one line and that no .tmp is left), or
    None for a run that fitted."""
    left = (
        [path.name for path in out.rglob("*") if path.name.endswith(".tmp")] if out.exists() else []
    )
    assert left == [], left
    if result.returncode == 0:
        return None
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ENOSPC_LINE.fullmatch(lines[0]), result.stderr
    named = Path(ENOSPC_LINE.fullmatch(lines[0])["file"])
    assert named.is_relative_to(out), named
    return named.relative_to(out).as_posix()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A folder source of 60 small PLY objects (the synthetic source's, in 10 classes)."""
    out = tmp_path_factory.mktemp("synthetic")
    build_manifest(MeshesConfig(per_class=6, workers=1), out)
    return out / "synthetic"


@pytest.mark.slow  # 16 runs of the command
def test_the_folder_source_on_a_full_disk_names_the_file_at_every_phase(tmp_path, source):
    named = []
    for size in range(8, 200, 12):  # KiB: from the first listing part to the manifest
        with mounted(tmp_path / f"disk{size}", f"size={size}k") as disk:
            out = disk / "meshes"
            args = ["--workers", 1, "--chunk-size", 6]
            result = cg3d("meshes", "--source", "folder", "--root", source, "--out", out, *args)
            named.append(check_full_disk_run(result, out))
    phases = {re.sub(r"[-\d]+\.", "-N.", name) for name in named if name}
    # every kind of file the stage writes was hit by some size, each named
    assert {
        ".validate/listing-N.parquet",
        ".validate/parts/part-N.parquet",
        "manifest.parquet",
    } <= phases, phases
    assert any(name.startswith(".validate/merge/") for name in phases), phases
    assert named[-1] is None  # the largest disk fits the run


def test_the_synthetic_source_on_a_full_disk_names_the_object(tmp_path):
    for size in (16, 128):
        with mounted(tmp_path / f"disk{size}", f"size={size}k") as disk:
            out = disk / "meshes"
            result = cg3d("meshes", "--per-class", 4, "--workers", 1, "--out", out)
            named = check_full_disk_run(result, out)
            assert named is not None and re.fullmatch(r"synthetic/\w+/\w+_\d{4}\.ply", named)
