"""A file a user hands in (a params file, a checkpoint, a stage's manifest, captions or shard
index, text features) that is a FIFO, a folder or a symlink loop is named as what it is, in one
line, and never opened: before, each was "no manifest at …"/"no such file" (a FIFO that got past
the check would block the read forever)."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.formats.captions import CaptionsFile
from cg3d.formats.manifest import manifest_path
from cg3d.formats.shards import read_index
from cg3d.formats.textfeatures import read_text_features
from cg3d.models.checkpoint import read_checkpoint
from cg3d.params import read_yaml


def _not_a_file(kind: str, path: Path) -> Path:
    if kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a folder":
        path.mkdir()
    else:  # a symlink loop
        path.symlink_to(path.name)
    return path


KINDS = ["a FIFO", "a folder", "a symlink loop"]
READERS = {
    "manifest.parquet": manifest_path,
    "captions.parquet": CaptionsFile,
    "index.json": read_index,
}


def _expected(kind: str, path: Path, option: str = "") -> str:
    where = f"{option}: " if option else ""
    if kind == "a symlink loop":
        return f"{where}'{path}' is a symlink loop"
    return f"{where}{path}: not a regular file"


@pytest.mark.timeout(60)  # a guard only: before, a FIFO that was opened blocked forever
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(READERS))
def test_a_stage_file_that_is_no_file_is_named_so(tmp_path, name, kind):
    path = _not_a_file(kind, tmp_path / name)
    with pytest.raises(UsageError) as caught:
        READERS[name](tmp_path)
    assert str(caught.value) == _expected(kind, path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["params.yaml", "last.pt", "features.npy", "features.json"])
def test_a_file_given_on_the_command_line_that_is_no_file_is_named_so(tmp_path, name, kind):
    readers = {
        "params.yaml": read_yaml,
        "last.pt": read_checkpoint,
        "features.npy": read_text_features,
        "features.json": lambda _: read_text_features(tmp_path / "features.npy"),
    }
    if name == "features.json":  # the sidecar beside a real .npy
        (tmp_path / "features.npy").write_bytes(b"")
    # the option that gave the file leads the line (a checkpoint is named by several options)
    options = {"params.yaml": "--params", "features.npy": "--text-features"}
    options["features.json"] = "--text-features"
    path = _not_a_file(kind, tmp_path / name)
    with pytest.raises(UsageError) as caught:
        readers[name](path)
    assert str(caught.value) == _expected(kind, path, options.get(name, ""))


@pytest.mark.timeout(60)
def test_cg3d_sample_with_a_params_fifo_is_one_line(tmp_path):
    fifo = _not_a_file("a FIFO", tmp_path / "params.yaml")
    words = ["sample", "--meshes", str(tmp_path), "--out", str(tmp_path / "o"), "--params"]
    result = CliRunner().invoke(app, [*words, str(fifo)])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == f"--params: {fifo}: not a regular file"
    assert not (tmp_path / "o").exists()


def test_a_missing_file_keeps_its_own_message(tmp_path):
    with pytest.raises(UsageError, match="^no manifest at .*: run `cg3d meshes` first$"):
        manifest_path(tmp_path)
    with pytest.raises(UsageError, match="^no captions at .*: run `cg3d caption` first$"):
        CaptionsFile(tmp_path)
    with pytest.raises(UsageError, match="^--params: no such file "):
        read_yaml(tmp_path / "absent.yaml")
    with pytest.raises(UsageError, match="^no checkpoint at "):
        read_checkpoint(tmp_path / "absent.pt")


def test_a_broken_link_where_a_file_or_folder_goes_is_named_so_not_missing(tmp_path):
    """A name `ls` lists but that leads nowhere: "no such file" or "run `cg3d meshes` first"
    sent one looking for a typo or a stage to run (as `inspect` already said, t78b)."""
    (tmp_path / "manifest.parquet").symlink_to("moved/manifest.parquet")
    with pytest.raises(UsageError) as caught:
        manifest_path(tmp_path)
    assert str(caught.value) == (
        f"'{tmp_path / 'manifest.parquet'}' is a broken symlink (to 'moved/manifest.parquet')"
    )
    (tmp_path / "root").symlink_to(tmp_path / "unmounted")
    result = CliRunner().invoke(
        app, ["meshes", "--source", "folder", "--root", str(tmp_path / "root"), "--out", "o"]
    )
    assert str(result.exception) == (
        f"meshes.root: '{tmp_path / 'root'}' is a broken symlink (to '{tmp_path / 'unmounted'}')"
    )


@pytest.mark.timeout(60)  # a guard only: `cg3d export --measured FIFO` hung forever
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["--measured", "--annotations", "--audit", "--image"])
def test_other_files_a_user_names_that_are_no_file_are_named_so(tmp_path, name, kind):
    """Before: --measured (a FIFO) hung the export; --annotations said "no annotation file",
    --audit "no audit.json in", a search --image "no such file"."""
    from cg3d.app.api import read_image
    from cg3d.eval.audit import read_audit
    from cg3d.models.hub import read_measured
    from cg3d.pipeline.sources.objaverse import read_annotations

    readers = {
        "--measured": lambda path: read_measured([path]),
        "--annotations": read_annotations,
        "--audit": lambda path: read_audit(path.parent),
        "--image": read_image,
    }
    path = _not_a_file(kind, tmp_path / ("audit.json" if name == "--audit" else "file.json"))
    with pytest.raises(UsageError) as caught:
        readers[name](path)
    option = name if name in ("--measured", "--annotations") else ""  # the reader knows it
    assert str(caught.value) == _expected(kind, path, option)


def test_benchmark_text_features_that_are_no_folder_are_refused_before_any_work(tmp_path):
    """Before: a file (or a typo) for the folder of MODEL__DATASET.npy files was no folder, so
    every pair silently scored with the teacher's text features."""
    from cg3d.eval.benchmark import run_benchmark
    from cg3d.params import ZeroShotConfig

    (tmp_path / "features.npy").write_bytes(b"")
    config = ZeroShotConfig()
    for given, line in [
        ("features.npy", f"--text-features: {tmp_path / 'features.npy'} is a file, not a folder"),
        ("absent", f"--text-features: no such folder {tmp_path / 'absent'}"),
    ]:
        with pytest.raises(UsageError) as caught:
            run_benchmark([], [], tmp_path / "out", config, tmp_path / given)
        assert str(caught.value).startswith(line)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sample", "render"])
@pytest.mark.parametrize("manifest", ["missing", "damaged"])
def test_a_stage_refused_for_its_manifest_leaves_no_out_folder(tmp_path, command, manifest):
    """Before: the refused run had made --out with a .plan.json and _failures/ in it, so the
    folder now belonged to that stage (another stage's --out there was refused)."""
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    if manifest == "damaged":
        (meshes / "manifest.parquet").write_bytes(b"garbage")
    words = [command, "--meshes", str(meshes), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, words)
    assert isinstance(result.exception, UsageError), result.output
    assert "manifest.parquet" in str(result.exception)
    assert not (tmp_path / "out").exists()


FOLDER_KINDS = {"a FIFO": "is a FIFO, not a folder", "a file": "is a file, not a folder"}
# Each command with X where a folder goes, and the option its line names ("" for one the
# reader names by its path only: inspect, verify, the stages' --meshes, zero-shot's shards).
FOLDER_COMMANDS = {
    "inspect": (["inspect", "X"], ""),
    "verify": (["verify", "X"], ""),
    "train --shards": (["train", "--shards", "X", "--out", "out"], "--shards: "),
    "eval retrieval --shards": (
        ["eval", "retrieval", "--shards", "X", "--checkpoint", "ck.pt", "--out", "out"],
        "--shards: ",
    ),
    "eval zeroshot --shards": (
        ["eval", "zeroshot", "--shards", "X", "--checkpoint", "ck.pt", "--out", "out"],
        "",
    ),
    "finetune --shards": (
        ["finetune", "--shards", "X", "--checkpoint", "ck.pt", "--out", "out"],
        "",
    ),
    "audit --train": (["audit", "--train", "X", "--test", "X", "--out", "out"], ""),
    "sample --meshes": (["sample", "--meshes", "X", "--out", "out"], ""),
    "caption --meshes": (["caption", "--meshes", "X", "--out", "out"], ""),
    "pack --points": (
        ["pack", "--meshes", "m", "--captions", "c", "--renders", "r", "--points", "X"]
        + ["--out", "out"],
        "--points: ",
    ),
    "search INDEX": (["search", "X", "--text", "a chair"], ""),
    "show --renders": (["show", "abc", "--renders", "X", "--out", "out"], "--renders: "),
    **{
        f"eval zeroshot --dataset {name} --root": (
            ["eval", "zeroshot", "--dataset", name, "--root", "X", "--checkpoint", "ck.pt"]
            + ["--out", "out"],
            "--root: ",
        )
        for name in ("modelnet40", "scanobjectnn", "shapenet55")
    },
    "meshes --root": (
        ["meshes", "--source", "folder", "--root", "X", "--out", "out"],
        "meshes.root: ",
    ),
}


@pytest.mark.timeout(60)  # a guard only: nothing here may open the FIFO
@pytest.mark.parametrize("kind", list(FOLDER_KINDS))
@pytest.mark.parametrize("command", list(FOLDER_COMMANDS))
def test_a_file_or_fifo_given_where_a_folder_goes_is_named_so(tmp_path, monkeypatch, command, kind):
    """Before: "no such folder X", "no index.json in X", "no manifest at X/manifest.parquet",
    "X: not a CG3D index" or "meshes.root: … needs an existing folder": each sent the user
    looking for a typo in a path that was there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ck.pt").write_bytes(b"not read: the folder is checked first")
    path = tmp_path / "X"
    if kind == "a FIFO":
        os.mkfifo(path)
    else:
        path.write_text("a file\n")
    words, option = FOLDER_COMMANDS[command]
    result = CliRunner().invoke(app, [str(path) if w == "X" else w for w in words])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == f"{option}{path} {FOLDER_KINDS[kind]}"


def test_why_not_a_folder_names_each_kind_of_node(tmp_path):
    from cg3d.files import why_not_a_folder

    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "file").write_text("x")
    assert why_not_a_folder(tmp_path) == ""
    assert why_not_a_folder(tmp_path / "absent") == "does not exist"
    assert why_not_a_folder(tmp_path / "file" / "below") == "does not exist"
    assert why_not_a_folder(tmp_path / "loop") == "is a symlink loop"
    assert why_not_a_folder("/dev/null") == "is a device, not a folder"
    assert why_not_a_folder(f"{tmp_path}/a\0b") == "holds a NUL byte: it names no folder"


def test_why_not_a_file_or_a_folder_names_what_is_there(tmp_path):
    """One rule for both (`files._why_not_a`): a node is named as what it is. A FIFO, socket
    or device given for a file was "a device, FIFO or socket", where one given for a folder
    was named."""
    import socket

    from cg3d.files import why_not_a_file, why_not_a_folder

    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "socket"))
    try:
        assert why_not_a_file(tmp_path / "file") == ""
        assert why_not_a_file(tmp_path) == "is a folder, not a file"
        assert why_not_a_file(tmp_path / "fifo") == "is a FIFO, not a file"
        assert why_not_a_file(tmp_path / "socket") == "is a socket, not a file"
        assert why_not_a_file("/dev/null") == "is a device, not a file"
        assert why_not_a_folder(tmp_path / "file") == "is a file, not a folder"
        assert why_not_a_folder(tmp_path / "fifo") == "is a FIFO, not a folder"
        assert why_not_a_folder(tmp_path / "socket") == "is a socket, not a folder"
        assert why_not_a_file(tmp_path / "absent") == "does not exist"
        assert why_not_a_file(f"{tmp_path}/a\0b") == "holds a NUL byte: it names no file"
    finally:
        listening.close()


LIST_OPTIONS = ["meshes.exclude", "--annotations", "--labels-file", "--train-list", ""]


def _read_list(option: str, path: Path) -> object:
    from cg3d.app.api import read_labels_file
    from cg3d.app.batch import list_shapes
    from cg3d.eval.audit import read_shapenet_list
    from cg3d.pipeline.sources import read_exclude
    from cg3d.pipeline.sources.objaverse import read_annotations

    readers = {
        "meshes.exclude": lambda: read_exclude(str(path)),
        "--annotations": lambda: read_annotations(path),
        "--labels-file": lambda: read_labels_file(path),
        "--train-list": lambda: read_shapenet_list(path, "--train-list"),
        "": lambda: list_shapes(path),  # `cg3d classify LIST.txt`: a positional argument
    }
    return readers[option]()


@pytest.mark.parametrize("option", LIST_OPTIONS)
@pytest.mark.parametrize("suffix", [".json", ".txt"])
def test_a_list_or_annotation_file_past_its_bound_is_refused_before_reading(
    tmp_path, option, suffix
):
    """Before: each was read whole (a 600 MB sparse file took 1.3 GB of memory) before its
    one-line answer. 256 MiB is the bound: a real Objaverse annotation file is tens of MB."""
    path = tmp_path / f"huge{suffix}"
    size = 256 * 2**20 + 1
    with path.open("wb") as stream:  # sparse: no disk is used
        stream.truncate(size)
    with pytest.raises(UsageError) as caught:
        _read_list(option, path)
    where = f"{option}: " if option else ""
    assert str(caught.value) == (
        f"{where}{path} holds {size} bytes, more than the 256 MiB a list or annotation file "
        "may hold"
    )


def test_list_and_annotation_files_within_the_bound_are_read(tmp_path):
    from cg3d.pipeline.sources import read_exclude
    from cg3d.pipeline.sources.objaverse import read_annotations

    (tmp_path / "skip.txt").write_text("a  # broken\n\nb\n")
    (tmp_path / "skip.json").write_text('{"chair": ["c", "d"]}')
    (tmp_path / "labels.json").write_text(
        '{"u1": "chair", "u2": {"category": "lamp", "name": "x"}}'
    )
    assert read_exclude(str(tmp_path / "skip.txt")) == {"a", "b"}
    assert read_exclude(str(tmp_path / "skip.json")) == {"c", "d"}
    assert read_annotations(tmp_path / "labels.json") == {"u1": ("chair", ""), "u2": ("lamp", "x")}
    (tmp_path / "labels.txt").write_text("a chair\n\n  a lamp \n")
    (tmp_path / "train.txt").write_text("02691156-m1.npy\n\n03001627-m2.npy\n")
    (tmp_path / "shapes.lst").write_text("# shapes\na.npy\n\nsub/b.ply\n")
    assert _read_list("--labels-file", tmp_path / "labels.txt") == ["a chair", "a lamp"]
    assert _read_list("--train-list", tmp_path / "train.txt") == ["02691156-m1", "03001627-m2"]
    shapes = [tmp_path / "a.npy", tmp_path / "sub" / "b.ply"]
    assert _read_list("", tmp_path / "shapes.lst") == shapes


@pytest.mark.timeout(60)
def test_an_lvis_root_that_is_a_fifo_is_named_so(tmp_path):
    """A file is a valid --root there (OpenShape's lvis.json itself); a FIFO was said to hold
    "neither our shards nor OpenShape's LVIS split"."""
    from cg3d.eval.readers import open_benchmark

    os.mkfifo(tmp_path / "X")
    with pytest.raises(UsageError) as caught:
        open_benchmark("objaverse-lvis", tmp_path / "X", allow_pickle=True)
    assert str(caught.value) == f"--root: {tmp_path / 'X'} is a FIFO, not a folder"


@pytest.mark.timeout(120)
def test_inspect_with_a_meshes_option_that_names_no_manifest_folder_is_one_line(tmp_path):
    """Before: `cg3d inspect CAPTIONS --meshes X` passed over X silently when it was a file, a
    FIFO or a typo, and printed the counts without classes."""
    runner = CliRunner()
    meshes, captions = tmp_path / "meshes", tmp_path / "captions"
    made = runner.invoke(
        app, ["meshes", "--out", str(meshes), "--per-class", "1", "--workers", "1"]
    )
    assert made.exit_code == 0, made.output
    made = runner.invoke(app, ["caption", "--meshes", str(meshes), "--out", str(captions)])
    assert made.exit_code == 0, made.output
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("x")
    for name, line in [
        ("fifo", f"--meshes: {tmp_path / 'fifo'} is a FIFO, not a folder"),
        ("file", f"--meshes: {tmp_path / 'file'} is a file, not a folder"),
        ("absent", f"--meshes: no manifest at {tmp_path / 'absent' / 'manifest.parquet'}: run "),
    ]:
        result = runner.invoke(app, ["inspect", str(captions), "--meshes", str(tmp_path / name)])
        assert isinstance(result.exception, UsageError), result.output
        assert str(result.exception).startswith(line)
    shown = runner.invoke(app, ["inspect", str(captions), "--meshes", str(meshes)])
    assert shown.exit_code == 0 and "chair" in shown.output  # classes from the manifest named


@pytest.mark.parametrize("option", ["--labels-file", "--train-list", "a shape list"])
def test_a_list_file_that_is_not_utf8_names_its_option_and_the_first_bad_byte(tmp_path, option):
    """Before, three wordings: "cannot read X (not UTF-8 text)", "X does not read ('utf-8'
    codec can't decode…)" and "X: not a list of paths ('utf-8' codec…)"."""
    from cg3d.app.api import read_labels_file
    from cg3d.app.batch import list_shapes
    from cg3d.eval.audit import read_shapenet_list

    readers = {
        "--labels-file": read_labels_file,
        "--train-list": lambda path: read_shapenet_list(path, "--train-list"),
        "a shape list": list_shapes,
    }
    path = tmp_path / "list.txt"
    path.write_bytes(b"chair\n\xff\xfe lamp\n")
    with pytest.raises(UsageError) as caught:
        readers[option](path)
    where = "" if option == "a shape list" else f"{option}: "
    assert str(caught.value) == f"{where}{path} is not UTF-8 text (byte 6: invalid start byte)"
