import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.failures import read_failures
from cg3d.formats.tar import tar_members
from cg3d.pipeline.captions import CaptionConfig, caption_objects
from cg3d.pipeline.pack import PackConfig, pack_shards
from tests.descriptors import open_under
from tests.pipeline.fakes import (
    CAMERA_EDITS,
    CLASSES,
    edited_cameras,
    fake_meshes,
    fake_pipeline,
    fake_points,
    fake_renders,
    ok_ids,
    rewrite_tar,
)


def test_counts_match_the_manifest_and_failures_are_listed(tmp_path):
    records, summary = fake_pipeline(tmp_path, per_class=4, shard_size=3)
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    packed = sum(entry["samples"] for entry in index["splits"].values())
    assert packed == len(ok_ids(records)) - 2  # one failed sampling, one failed rendering
    assert packed + index["failures"]["total"] == len(records)
    assert index["failures"]["by_stage"] == {"meshes": 1, "render": 1, "sample": 1}
    assert index["classes"] == CLASSES
    test_ids = {r.id for r in records if r.split == "test"}
    assert index["splits"]["test"]["samples"] == len(test_ids)
    failures = read_failures(tmp_path / "shards" / "failures.parquet")
    assert len(failures) == 3
    for split, entry in index["splits"].items():
        for name, count in zip(entry["shards"], entry["counts"], strict=True):
            with tarfile.open(tmp_path / "shards" / name) as tar:
                keys = {n.split(".", 1)[0] for n in tar.getnames()}
            assert len(keys) == count
            assert all((key in test_ids) == (split == "test") for key in keys)


def test_sample_read_with_webdataset_matches_the_schema(tmp_path):
    fake_pipeline(tmp_path, views=3, n=50)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert len(samples) == 3
    sample = samples[0]
    assert set(sample) >= {
        "__key__",
        "points.npy",
        "view_00.png",
        "view_02.png",
        "captions.json",
        "cameras.json",
        "cls",
        "meta.json",
    }
    points = np.load(io.BytesIO(sample["points.npy"]))
    assert points.shape == (50, 3) and points.dtype == np.float32
    assert Image.open(io.BytesIO(sample["view_01.png"])).size == (32, 32)
    meta = json.loads(sample["meta.json"])
    assert meta["id"] == sample["__key__"] and meta["views"] == 3
    assert CLASSES[int(sample["cls"])] == meta["class_name"]
    assert len(json.loads(sample["captions.json"])) > 60


def test_tar_command_lists_members_in_a_fixed_order(tmp_path):
    fake_pipeline(tmp_path, views=2)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    listing = subprocess.run(
        ["tar", "-tvf", str(shard)], capture_output=True, text=True, check=True
    )
    lines = listing.stdout.splitlines()
    first = lines[0].split()[-1].split(".", 1)[0]
    suffixes = [line.split()[-1].split(".", 1)[1] for line in lines[:7]]
    assert suffixes == [
        "points.npy",
        "view_00.png",
        "view_01.png",
        "cameras.json",
        "captions.json",
        "cls",
        "meta.json",
    ]
    assert all(line.split()[-1].startswith(first) for line in lines[:7])
    assert all("1970-01-01" in line and "0/0" in line for line in lines)


def test_repacking_unchanged_inputs_gives_identical_bytes(tmp_path):
    fake_pipeline(tmp_path)
    first = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "shards").rglob("*.tar")}
    index = (tmp_path / "shards" / "index.json").read_bytes()
    pack_shards(
        tmp_path / "meshes",
        tmp_path / "points",
        tmp_path / "renders",
        tmp_path / "captions",
        tmp_path / "shards",
        PackConfig(shard_size=3),
    )
    again = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "shards").rglob("*.tar")}
    assert first == again and len(first) > 1
    assert (tmp_path / "shards" / "index.json").read_bytes() == index


def test_objects_missing_from_a_stage_without_a_failure_row_are_counted(tmp_path):
    fake_pipeline(tmp_path)
    table = pq.read_table(tmp_path / "points" / "part-00000.parquet")
    dropped = table["id"][0].as_py()
    pq.write_table(table.slice(1), tmp_path / "points" / "part-00000.parquet")
    summary = pack_shards(
        tmp_path / "meshes",
        tmp_path / "points",
        tmp_path / "renders",
        tmp_path / "captions",
        tmp_path / "out",
        PackConfig(shard_size=3),
    )
    assert {"id": dropped, "stage": "pack", "reason": "missing: no points"} in summary.failures


def test_a_render_member_without_a_dot_is_one_line_naming_it(tmp_path):
    fake_pipeline(tmp_path)
    part = tmp_path / "renders" / "part-00001.tar"
    rewrite_tar(part, lambda name, data: (name.replace(".cameras.json", "_cameras"), data))
    with pytest.raises(UsageError, match=r"--renders: .*part-00001.tar: tar member '.*_cameras'"):
        pack_shards(
            tmp_path / "meshes",
            tmp_path / "points",
            tmp_path / "renders",
            tmp_path / "captions",
            tmp_path / "again",
            PackConfig(shard_size=3),
        )


def pack_into(root, out, **config):
    return pack_shards(
        root / "meshes",
        root / "points",
        root / "renders",
        root / "captions",
        root / out,
        PackConfig(**config),
    )


def output_files(folder) -> dict:
    """Every file of a pack output by relative path, and its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_one_and_two_workers_write_the_same_files(tmp_path):
    fake_pipeline(tmp_path, per_class=8, shard_size=2)
    pack_into(tmp_path, "one", shard_size=2, workers=1)
    pack_into(tmp_path, "two", shard_size=2, workers=2)
    one, two = output_files(tmp_path / "one"), output_files(tmp_path / "two")
    # every byte, index.json's included: it records the params that shape the shards, not
    # `workers` (DVC would see new shards, and retrain, after a pack with more workers)
    assert one == two
    assert json.loads(one[Path("index.json")])["params"] == {
        "shard_size": 2, "points": [64], "channels": [3],
    }  # fmt: skip
    assert len([p for p in one if p.suffix == ".tar"]) == 11  # 22 packable: 11 shards of 2


def test_an_object_lost_while_packing_shortens_its_shard_and_moves_no_other(tmp_path):
    fake_pipeline(tmp_path, per_class=8, shard_size=3)
    before = output_files(tmp_path / "shards")
    part = tmp_path / "points" / "part-00001.parquet"
    table = pq.read_table(part)
    lost = table["id"][0].as_py()  # gone from the points without a failure row
    pq.write_table(table.slice(1), part)
    summary = pack_into(tmp_path, "shards", shard_size=3)
    after = output_files(tmp_path / "shards")
    changed = sorted(str(p) for p in after if p.suffix == ".tar" and after[p] != before[p])
    assert len(changed) == 1 and set(after) == set(before)
    with tarfile.open(tmp_path / "shards" / changed[0]) as tar:
        keys = {n.split(".", 1)[0] for n in tar.getnames()}
    assert len(keys) == 2 and lost not in keys
    assert {"id": lost, "stage": "pack", "reason": "missing: no points"} in summary.failures
    assert summary.shards_written == sum(summary.shards.values())  # a changed input: all stale


def test_a_rerun_on_unchanged_inputs_writes_no_shard(tmp_path):
    fake_pipeline(tmp_path, per_class=8, shard_size=3)
    before = output_files(tmp_path / "shards")
    summary = pack_into(tmp_path, "shards", shard_size=3)
    assert summary.shards_written == 0 and output_files(tmp_path / "shards") == before
    assert pack_into(tmp_path, "shards", shard_size=4).shards_written == 6  # new params


@pytest.mark.parametrize("mark", ["none", "another"])
def test_shards_another_cg3d_wrote_are_packed_again(tmp_path, mark):
    """A data root kept across an upgrade: the same inputs and params, shards of an earlier
    cg3d (no .code.json: written before the mark; or another code's). Before, every shard was
    kept and today's index.json listed them, whatever layout the earlier code wrote."""
    fake_pipeline(tmp_path, per_class=8, shard_size=3)
    code = tmp_path / "shards" / ".code.json"
    if mark == "none":
        code.unlink()
    else:
        code.write_text(json.dumps({"code": "0" * 64}))
    before = output_files(tmp_path / "shards")
    summary = pack_into(tmp_path, "shards", shard_size=3)
    assert summary.shards_written == sum(summary.shards.values()) == 8  # every one
    assert output_files(tmp_path / "shards").keys() >= before.keys()
    assert pack_into(tmp_path, "shards", shard_size=3).shards_written == 0  # its own: kept


def test_inputs_with_other_mtimes_pack_to_identical_bytes_plan_included(tmp_path):
    """A fresh clone's run (same input bytes, new mtimes) must give DVC the same output hash."""
    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    first = output_files(tmp_path / "shards")
    assert Path(".plan.json") in first
    for stage in ("meshes", "points", "renders", "captions"):
        for path in (tmp_path / stage).rglob("*"):
            os.utime(path, (1_000_000_000, 1_000_000_000))  # 2001, as a checkout might set
    summary = pack_into(tmp_path, "shards", shard_size=3)
    assert summary.shards_written == 0  # same content: nothing to redo
    assert output_files(tmp_path / "shards") == first
    pack_into(tmp_path, "fresh", shard_size=3)
    assert output_files(tmp_path / "fresh") == first


@pytest.mark.slow
def test_a_pack_killed_with_sigkill_resumes_to_a_clean_runs_bytes(tmp_path):
    records = fake_meshes(tmp_path / "meshes", per_class=100)
    ids = ok_ids(records)
    fake_points(tmp_path / "points", ids, n=4096, chunk=50)
    fake_renders(tmp_path / "renders", ids, views=2, chunk=60)
    caption_objects(tmp_path / "meshes", tmp_path / "captions", CaptionConfig())
    command = [sys.executable, "-m", "cg3d", "pack", "--shard-size", "1"]
    for stage in ("meshes", "points", "renders", "captions"):
        command += [f"--{stage}", str(tmp_path / stage)]
    out = tmp_path / "shards"
    run = subprocess.Popen(
        [*command, "--workers", "2", "--out", str(out)], stdout=subprocess.DEVNULL
    )
    while run.poll() is None and len(list(out.glob("_shards/*.json"))) < 3:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done_at_kill = len(list(out.glob("_shards/*.json")))
    assert 3 <= done_at_kill < len(ids) and not (out / "index.json").exists()

    resumed = subprocess.run([*command, "--workers", "2", "--out", str(out)], capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run([*command, "--workers", "1", "--out", str(tmp_path / "clean")])
    assert clean.returncode == 0
    assert output_files(out) == output_files(tmp_path / "clean")
    assert sum(json.loads((out / "index.json").read_text())["splits"]["train"]["counts"]) == 225


def test_pack_refuses_a_sample_run_that_did_not_finish(tmp_path, monkeypatch):
    """A killed `cg3d sample` leaves some parts; pack packed them and listed the rest as
    "missing: no points" (exit 0). A run that starts removes failures.parquet, which it
    writes last, so an unfinished run is known, also when it resumes a finished one."""
    import cg3d.pipeline.sample as sample_module
    from cg3d.formats.manifest import read_manifest
    from cg3d.pipeline.sample import SampleConfig, sample_points
    from cg3d.pipeline.sources import MeshesConfig, build_manifest

    build_manifest(MeshesConfig(source="synthetic", per_class=1, workers=1), tmp_path / "meshes")
    ids = [r.id for r in read_manifest(tmp_path / "meshes")]
    fake_renders(tmp_path / "renders", ids)
    caption_objects(tmp_path / "meshes", tmp_path / "captions", CaptionConfig())
    config = SampleConfig(points=32, chunk_size=3, workers=1)
    sample_points(tmp_path / "meshes", tmp_path / "points", config)
    stages = [tmp_path / s for s in ("meshes", "points", "renders", "captions")]
    pack_shards(*stages, tmp_path / "finished", PackConfig(4))  # a finished run packs

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill leaves: the run stops inside its chunks

    monkeypatch.setattr(sample_module, "run_chunks", killed)
    with pytest.raises(KeyboardInterrupt):
        sample_points(tmp_path / "meshes", tmp_path / "points", config)
    with pytest.raises(UsageError, match=r"^--points: .* holds no finished `cg3d sample` output"):
        pack_shards(*stages, tmp_path / "shards", PackConfig(4))
    assert not any((tmp_path / "shards").glob("*/*.tar"))


RECORD_EDITS = {
    "a list": lambda record: [],
    "nested 100,000 deep": lambda record: None,
    "no count": lambda record: {k: v for k, v in record.items() if k != "count"},
    "a failure that is no row": lambda record: {**record, "failures": [1]},
}


@pytest.mark.parametrize("case", sorted(RECORD_EDITS))
def test_a_damaged_shard_record_is_packed_again_to_the_same_bytes(tmp_path, case):
    """Before: a TypeError ("[]"), KeyError or RecursionError traceback on the resumed run.
    The edits keep the record's size (the shard's), so only the record's shape tells."""
    fake_pipeline(tmp_path)
    shards = tmp_path / "shards"
    files = {p.relative_to(shards): p.read_bytes() for p in shards.rglob("*") if p.is_file()}
    path = sorted((shards / "_shards").glob("*.json"))[1]
    edited = RECORD_EDITS[case](json.loads(path.read_text()))
    path.write_text("[" * 100_000 if edited is None else json.dumps(edited))
    stages = [tmp_path / s for s in ("meshes", "points", "renders", "captions")]
    pack_shards(*stages, shards, PackConfig(shard_size=3))
    again = {p.relative_to(shards): p.read_bytes() for p in shards.rglob("*") if p.is_file()}
    assert again == files


@pytest.mark.parametrize("edit", ["not JSON", "views not a list", "a width of 10^6"])
def test_a_render_part_with_a_damaged_cameras_json_is_refused_in_one_line(tmp_path, edit):
    """Before: pack copied cameras.json into the shards unchecked (and verify passed them)."""
    fake_pipeline(tmp_path)
    part = tmp_path / "renders" / "part-00001.tar"
    with open(part, "rb") as stream:
        names = [name for name, _ in tar_members(stream, read_data=False)]
    target = [name for name in names if name.endswith(".cameras.json")][0]
    rewrite_tar(
        part, lambda name, data: (name, edited_cameras(data, edit) if name == target else data)
    )
    with pytest.raises(UsageError) as refused:
        pack_into(tmp_path, "again", shard_size=3)
    (line,) = str(refused.value).splitlines()
    assert line.startswith(f"--renders: {part}: member {target}: "), line
    assert CAMERA_EDITS[edit] in line and "rerun `cg3d render`" in line


def with_captions_edited(captions_dir, object_id: str, edit) -> None:
    """captions.parquet rewritten by hand: `object_id`'s captions replaced by `edit(captions)`."""
    table = pq.read_table(captions_dir / "captions.parquet")
    rows = table.to_pylist()
    (row,) = [row for row in rows if row["id"] == object_id]
    row["captions"] = edit(row["captions"])
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table.schema), captions_dir / "captions.parquet"
    )


def with_caption_of_length(captions_dir, object_id: str, length: int) -> None:
    """`object_id`'s first caption made `length` 'x's."""
    with_captions_edited(captions_dir, object_id, lambda captions: ["x" * length, *captions[1:]])


def test_a_caption_over_the_bound_in_captions_parquet_is_refused_in_one_line(tmp_path):
    """Before: a hand-edited 100 MB caption was packed into the shards as it was. The caption
    stage writes at most 4096 characters; a longer one is a damaged file."""
    fake_pipeline(tmp_path)
    edited = sorted(read_shard_captions(tmp_path / "shards"))[1]  # an object that is packed
    with_caption_of_length(tmp_path / "captions", edited, 4096)
    pack_into(tmp_path, "at_bound", shard_size=3)  # 4096 characters: packed
    assert "x" * 4096 in read_shard_captions(tmp_path / "at_bound")[edited]
    with_caption_of_length(tmp_path / "captions", edited, 4097)
    with pytest.raises(UsageError) as refused:
        pack_into(tmp_path, "over", shard_size=3)
    (line,) = str(refused.value).splitlines()
    assert str(tmp_path / "captions" / "captions.parquet") in line
    assert f"object {edited!r} has a caption of 4097 characters, more than 4096" in line
    assert "cg3d caption" in line


def test_more_captions_than_the_bound_in_captions_parquet_is_refused_in_one_line(tmp_path):
    """Before: a hand-edited row of 100,000 captions was packed into one sample as it was."""
    fake_pipeline(tmp_path)
    edited = sorted(read_shard_captions(tmp_path / "shards"))[1]

    def captions_of_count(count):
        return lambda _: [f"a caption {k}" for k in range(count)]

    with_captions_edited(tmp_path / "captions", edited, captions_of_count(8192))
    pack_into(tmp_path, "at_bound", shard_size=3)
    assert len(read_shard_captions(tmp_path / "at_bound")[edited]) == 8192
    with_captions_edited(tmp_path / "captions", edited, captions_of_count(8193))
    with pytest.raises(UsageError) as refused:
        pack_into(tmp_path, "over", shard_size=3)
    (line,) = str(refused.value).splitlines()
    assert f"object {edited!r} has 8193 captions, more than 8192" in line
    assert "cg3d caption" in line


def read_shard_captions(shards) -> dict[str, list[str]]:
    """{key: captions} of every sample, read with webdataset (not the project's reader)."""
    found = {}
    for tar in sorted(shards.rglob("shard-*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            found[sample["__key__"]] = json.loads(sample["captions.json"])
    return found


def run_pack_stage(project: Path) -> dict:
    """dvc.yaml's pack command, run as DVC runs it (a shell in the project folder, no output
    left from before); the files of data/shards and their bytes."""
    repo = Path(__file__).resolve().parents[2]
    command = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["pack"]["cmd"]
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {"PYTHONPATH": str(repo), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    shutil.rmtree(project / "data" / "shards", ignore_errors=True)
    subprocess.run(["bash", "-c", command], cwd=project, env=env, check=True, capture_output=True)
    return output_files(project / "data" / "shards")


def test_the_pack_stage_output_does_not_depend_on_how_the_points_were_chunked(tmp_path):
    # Other sample chunk sizes: other part files, the same points. The shards were the same
    # bytes but their .plan.json (the input files' hashes) was not, and DVC retrained on them
    data = tmp_path / "data"
    records = fake_meshes(data / "meshes", per_class=4)
    ids = ok_ids(records)
    fake_renders(data / "render", ids)
    caption_objects(data / "meshes", data / "captions", CaptionConfig())
    (tmp_path / "params.yaml").write_text("pack:\n  shard_size: 3\n  workers: 1\n")
    fake_points(data / "points", ids, chunk=5)
    five = run_pack_stage(tmp_path)
    shutil.rmtree(data / "points")
    fake_points(data / "points", ids, chunk=3)
    three = run_pack_stage(tmp_path)
    assert any(p.suffix == ".tar" for p in five) and three == five


def test_pack_keeps_no_input_open_once_it_returns(tmp_path):
    """Packed in-process (a notebook, a sweep), the stage kept its captions file open until the
    process's next pack."""
    fake_pipeline(tmp_path, per_class=2, shard_size=3)
    for run in range(3):
        pack_into(tmp_path, f"again{run}", shard_size=3, workers=1)
        assert open_under(tmp_path) == []


def test_pack_refuses_an_index_its_readers_would_refuse(tmp_path, monkeypatch):
    """Before: an index over `MAX_INDEX_BYTES` (some 620k shards) was written, and every
    reader refused it ("more than 64 MiB: not a `cg3d pack` index")."""
    from cg3d.formats import shards as shards_module

    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    size = (tmp_path / "shards" / "index.json").stat().st_size
    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", size + 200)  # one more shard's lines
    with pytest.raises(
        UsageError, match=r"^--shard-size 1 makes \d+ shards: index\.json would be [\d,]+ bytes"
    ):
        pack_into(tmp_path, "shards", shard_size=1)
    assert not (tmp_path / "shards" / "index.json").exists()  # no index a reader refuses


def test_pack_refuses_too_many_shards_before_writing_any(tmp_path, monkeypatch):
    """Before: a --shard-size whose index its readers would refuse was refused only once every
    shard was written (hours at Objaverse scale); now the plan's shard count alone refuses it,
    and a pack whose index fits still packs."""
    from cg3d.formats import shards as shards_module

    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    pack_into(tmp_path, "ones", shard_size=1)
    index = json.loads((tmp_path / "ones" / "index.json").read_text())
    shards = sum(len(split["shards"]) for split in index["splits"].values())
    size = (tmp_path / "ones" / "index.json").stat().st_size

    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", size)  # exactly the index: it packs
    assert sum(pack_into(tmp_path, "fits", shard_size=1).shards.values()) == shards
    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", shards * 100 - 1)
    with pytest.raises(
        UsageError, match=rf"^--shard-size 1 makes {shards} shards: index\.json would be at least"
    ):
        pack_into(tmp_path, "refused", shard_size=1)
    assert list((tmp_path / "refused").rglob("*.tar")) == []  # no shard was packed


def test_the_least_bytes_a_shard_adds_to_the_index_is_a_lower_bound(tmp_path):
    """The early refusal's bound: the smallest index (test split, one sample a shard, no
    class, failure or param) is still over the per-shard bytes it assumes."""
    from cg3d.formats.shards import LEAST_INDEX_BYTES_PER_SHARD, shard_index, write_index

    record = {"count": 1, "sha256": "0" * 64, "shapes": []}
    for shards in (1, 2, 50):
        write_index(tmp_path, shard_index([], {"test": [record] * shards}, [], {}))
        size = (tmp_path / "index.json").stat().st_size
        assert size >= shards * LEAST_INDEX_BYTES_PER_SHARD


def test_an_index_written_at_the_bound_reads_and_one_byte_more_is_not_written(
    tmp_path, monkeypatch
):
    from cg3d.files import FileTooLarge
    from cg3d.formats import shards as shards_module
    from cg3d.formats.shards import read_index, shard_index, write_index

    record = {"count": 1, "sha256": "0" * 64, "shapes": [[64, 3]]}
    index = shard_index(["chair"], {"train": [record] * 30, "test": [record]}, [], {})
    write_index(tmp_path, index)
    size = (tmp_path / "index.json").stat().st_size
    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", size)
    write_index(tmp_path, index)
    assert read_index(tmp_path)["splits"]["train"]["counts"] == [1] * 30
    (tmp_path / "index.json").unlink()
    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", size - 1)
    with pytest.raises(FileTooLarge, match=f"index.json would be {size:,} bytes, over"):
        write_index(tmp_path, index)
    assert not (tmp_path / "index.json").exists()


def test_each_render_part_s_headers_are_read_once_a_pack(tmp_path, monkeypatch):
    """Before: every process that wrote shards (the stage's, each pool worker) read the tar
    headers of every render part (143 µs an object: 2 minutes a process for 800k objects).
    Here every shard's inputs are opened afresh, as each in a new worker would be."""
    from cg3d.formats import renders as renders_module
    from cg3d.pipeline import pack as pack_module

    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    walked = []
    part_ids = renders_module.part_ids
    monkeypatch.setattr(
        renders_module, "part_ids", lambda part: walked.append(part) or part_ids(part)
    )
    opened = pack_module.opened_inputs

    def fresh(*args):
        opened.cache_clear()  # a worker process of its own
        return opened(*args)

    fresh.cache_clear = opened.cache_clear  # the stage clears it when it returns
    monkeypatch.setattr(pack_module, "opened_inputs", fresh)
    before = output_files(tmp_path / "shards")
    summary = pack_into(tmp_path, "again", shard_size=3, workers=1)
    parts = renders_module.render_parts(tmp_path / "renders")
    assert sorted(map(Path, walked)) == parts  # each once, not once more a shard
    assert summary.shards_written > 1
    again = output_files(tmp_path / "again")
    assert {p: b for p, b in again.items() if p.name != ".plan.json"} == {
        p: b for p, b in before.items() if p.name != ".plan.json"
    }
