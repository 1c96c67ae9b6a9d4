"""The meshes stage's external merge: the same rows and duplicates as sorting everything in
memory, through several merge passes, and a run killed mid-merge resumes to the same files."""

import hashlib
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import ROW_GROUP_ROWS, SCHEMA, manifest_writer
from cg3d.params import MeshesConfig
from cg3d.pipeline import sources
from cg3d.pipeline.sources import build_manifest, merge
from tests.pipeline.sources.helpers import box, manifest_rows, write_mesh


@pytest.fixture
def small_runs(monkeypatch):
    """Runs of 50 rows, 3 merged at a time: 1,000 rows take three merge passes."""
    monkeypatch.setattr(merge, "RUN_ROWS", 50)
    monkeypatch.setattr(merge, "READ_ROWS", 7)
    monkeypatch.setattr(merge, "FAN_IN", 3)
    monkeypatch.setattr(merge, "WRITE_ROWS", 30)


def row(object_id: str, sha: str, status: str = "ok", missing: tuple = ()) -> dict:
    return {
        "id": object_id, "source": "folder", "path": f"{object_id}.obj", "class_name": "c",
        "synonyms": [], "name": "", "split": "train", "up_axis": "y", "sha256": sha,
        "status": status, "error": "" if status == "ok" else f"{status} file",
        "missing": list(missing), "references_sha256": "",
    }  # fmt: skip


def write_parts(rows: list[dict], folder: Path, n_parts: int) -> list[Path]:
    folder.mkdir(parents=True)
    parts = []
    for i in range(n_parts):
        parts.append(folder / f"part-{i:05d}.parquet")
        pq.write_table(pa.Table.from_pylist(rows[i::n_parts], schema=SCHEMA), parts[-1])
    return parts


def test_a_hand_made_case(tmp_path: Path, small_runs) -> None:
    rows = [
        row("d", "h1"),  # a copy of b (same hash, later id)
        row("b", "h1"),
        row("a", "h1", "unreadable"),  # not ok: never an original
        row("c", "h2", missing=["c.mtl"]),  # ok, naming a file the source lacks
        row("e", "h2", missing=["c.mtl"]),  # its duplicate: not counted again
        row("f", "h3"),
    ]
    parts = write_parts(rows, tmp_path / "parts", 2)
    counts, lacking = merge.merge_parts(parts, tmp_path / "work", tmp_path, "meshes")
    got = [(r["id"], r["status"], r["error"]) for r in manifest_rows(tmp_path)]
    assert got == [
        ("a", "unreadable", "unreadable file"),
        ("b", "ok", ""),
        ("c", "ok", ""),
        ("d", "duplicate", "same content as b"),
        ("e", "duplicate", "same content as c"),
        ("f", "ok", ""),
    ]
    assert counts == {"ok": 3, "duplicate": 2, "unreadable": 1}
    assert lacking == 1
    assert read_failures(tmp_path / "failures.parquet") == [
        {"id": "a", "stage": "meshes", "reason": "unreadable: unreadable file"},
        {"id": "d", "stage": "meshes", "reason": "duplicate: same content as b"},
        {"id": "e", "stage": "meshes", "reason": "duplicate: same content as c"},
    ]
    assert not (tmp_path / "work").exists()


def test_many_passes_give_the_rows_of_an_in_memory_sort(tmp_path: Path, small_runs) -> None:
    rng = random.Random(0)
    ids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1000)]  # random order
    rows = [row(i, f"h{rng.randrange(40)}", rng.choice(["ok"] * 9 + ["empty"])) for i in ids]
    parts = write_parts(rows, tmp_path / "parts", 13)
    merge.merge_parts(parts, tmp_path / "work", tmp_path, "meshes")
    # The oracle: everything in memory, the first ok id of each hash in a dict.
    first: dict[str, str] = {}
    expected = []
    for r in sorted(rows, key=lambda r: r["id"]):
        if r["status"] == "ok" and r["sha256"] in first:
            r = {**r, "status": "duplicate", "error": f"same content as {first[r['sha256']]}"}
        elif r["status"] == "ok":
            first[r["sha256"]] = r["id"]
        expected.append(r)
    assert manifest_rows(tmp_path) == expected
    assert sum(r["status"] == "duplicate" for r in expected) > 500  # the case is exercised


def test_runs_are_merged_down_to_the_fan_in(tmp_path: Path, small_runs) -> None:
    tables = [pa.table({"id": [f"{(i * 37) % 1000:04d}" for i in range(k, k + 20)]}) for k in
              range(0, 1000, 20)]  # fmt: skip
    runs = merge.sorted_runs(tables, ["id"], tmp_path / "runs")
    assert len(runs) <= 3 and len(list((tmp_path / "runs").iterdir())) == len(runs)
    assert [r["id"] for r in merge.merged_rows(runs, ["id"])] == [f"{i:04d}" for i in range(1000)]


def test_two_objects_with_one_id_are_refused(tmp_path: Path, small_runs) -> None:
    parts = write_parts([row("a", "h1"), row("b", "h2"), row("a", "h3")], tmp_path / "p", 2)
    with pytest.raises(RuntimeError, match="two objects with the id a"):
        merge.merge_parts(parts, tmp_path / "work", tmp_path, "meshes")
    assert not (tmp_path / "manifest.parquet").exists()


def test_killed_mid_merge_resumes_to_the_same_files(tmp_path: Path, small_runs, monkeypatch):
    root = tmp_path / "in"
    for i in range(120):  # 3 contents: most files are duplicates
        write_mesh(root / f"c{i % 2}" / f"m{i:03d}.obj", box((1, 1, 1 + i % 3)))
    config = MeshesConfig(source="folder", root=str(root), workers=1, chunk_size=25)
    build_manifest(config, tmp_path / "whole")
    marked = merge._marked

    def killed_after_60_rows(rows, copies):
        for n, r in enumerate(marked(rows, copies)):
            if n == 60:
                raise KeyboardInterrupt
            yield r

    monkeypatch.setattr(merge, "_marked", killed_after_60_rows)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        build_manifest(config, out)
    assert not (out / "manifest.parquet").exists()  # no half-written manifest
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(merge, "_marked", marked)
    summary = build_manifest(config, out)
    assert (summary.chunks_run, summary.chunks_total) == (0, 5)  # nothing validated again
    assert summary.counts == {"ok": 3, "duplicate": 117}
    for name in ("manifest.parquet", "failures.parquet"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (out / sources.WORK_DIR).exists()


def test_the_streaming_writer_writes_full_row_groups(tmp_path: Path) -> None:
    rows = [row(f"{i:06d}", "h") for i in range(ROW_GROUP_ROWS * 2 + 5)]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, tmp_path / "whole.parquet", row_group_size=ROW_GROUP_ROWS)
    with manifest_writer(tmp_path) as write:
        for start in range(0, table.num_rows, 1000):
            write(table.slice(start, 1000))
    written = pq.ParquetFile(tmp_path / "manifest.parquet")
    groups = [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)]
    assert groups == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 5]
    assert (tmp_path / "manifest.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
