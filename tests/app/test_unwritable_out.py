"""An output under a folder this user may not write is one line naming the path, exit 2, no
traceback, for every model command that writes (`export`, `embed`, `classify`, `index`,
`eval ...`, `scene-query`, `benchmark`, `finetune`, `audit`).

The tests run as root, which the kernel lets write anywhere, so a read-only folder cannot be
made for real. It is simulated where Python creates files and folders (`os.open`, `open`,
`os.mkdir`, `os.replace`): under the folder each raises PermissionError(EACCES), as the kernel
does for a user without write permission (creating an existing folder is EEXIST, as there).
Writers in C (pyarrow, safetensors) escape the simulation: the commands must find out before
they run, which is also what spares the user the model's load and the work (the model is never
read here).
"""

import builtins
import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest

from cg3d.cli import main
from cg3d.models import checkpoint


def _inside(path, folder: Path) -> bool:
    if isinstance(path, int):  # a file descriptor: already open
        return False
    path = Path(os.path.abspath(os.fsdecode(path)))
    return path == folder or folder in path.parents


def _refused(path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))


def make_unwritable(monkeypatch, folder: Path) -> None:
    """Creating, writing, renaming or removing anything inside `folder` (itself included) is
    EACCES from here on, as for a user without write permission on it."""
    folder = Path(os.path.abspath(folder))
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    real_replace, real_rename, real_unlink = os.replace, os.rename, os.unlink
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def opening(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _inside(file, folder):
            raise _refused(file)
        return real_open(file, mode, *args, **kwargs)

    def os_opening(path, flags, *args, **kwargs):
        if flags & writing and _inside(path, folder):
            raise _refused(path)
        return real_os_open(path, flags, *args, **kwargs)

    def making(path, *args, **kwargs):
        if _inside(path, folder):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            raise _refused(path)
        return real_mkdir(path, *args, **kwargs)

    def moving(real):
        def move(source, target, *args, **kwargs):
            if _inside(target, folder) or _inside(source, folder):
                raise _refused(target)
            return real(source, target, *args, **kwargs)

        return move

    def removing(path, *args, **kwargs):
        if _inside(path, folder):
            raise _refused(path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(io, "open", opening)
    monkeypatch.setattr(os, "open", os_opening)
    monkeypatch.setattr(os, "mkdir", making)
    monkeypatch.setattr(os, "replace", moving(real_replace))
    monkeypatch.setattr(os, "rename", moving(real_rename))
    monkeypatch.setattr(os, "unlink", removing)


def test_the_simulation_refuses_what_a_read_only_folder_refuses(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "old.txt").write_text("kept")
    make_unwritable(monkeypatch, tmp_path / "ro")
    for attempt in (
        lambda: (tmp_path / "ro" / "new.txt").write_text("x"),
        lambda: np.save(tmp_path / "ro" / "a.npy", np.zeros(3)),
        lambda: (tmp_path / "ro" / "sub").mkdir(),
        lambda: (tmp_path / "ro" / "probe").touch(),
        lambda: os.replace(tmp_path / "ro" / "old.txt", tmp_path / "ro" / "new.txt"),
    ):
        with pytest.raises(PermissionError):
            attempt()
    with pytest.raises(FileExistsError):
        (tmp_path / "ro").mkdir()
    assert (tmp_path / "ro" / "old.txt").read_text() == "kept"  # reading is allowed
    (tmp_path / "rw.txt").write_text("elsewhere is writable")


@pytest.fixture(scope="module")
def inputs(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint, a shape, a scene and a folder of shapes (also a stand-in benchmark root)."""
    shapes = tmp_path_factory.mktemp("inputs") / "shapes"
    shapes.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(shapes / f"{name}.npy", rng.uniform(-1, 1, (200, 3)))
    return {
        "checkpoint": tiny_checkpoint,
        "shape": shapes / "a.npy",
        "scene": shapes / "b.npy",
        "shapes": shapes,
    }


# Each command with its arguments; OUT is the output's path. The inputs are real where the
# command must get past them to write; elsewhere placeholders (the output is checked first).
COMMANDS = {
    "export pt": "export --checkpoint {checkpoint} --out OUT/model.pt",
    "export hub": "export --format hub --checkpoint {checkpoint} --out OUT/hub",
    "embed npy": "embed {shapes} --checkpoint {checkpoint} --out OUT/emb.npy",
    "embed parquet": "embed {shape} --checkpoint {checkpoint} --out OUT/emb.parquet",
    "classify csv": "classify {shapes} --checkpoint {checkpoint} --labels a,b --out OUT/rows.csv",
    "classify parquet": "classify {shapes} --checkpoint {checkpoint} --out OUT/rows.parquet",
    "index": "index --checkpoint {checkpoint} --shards nowhere --out OUT/index",
    "eval zeroshot": "eval zeroshot --checkpoint {checkpoint} --dataset modelnet40 --root nowhere "
    "--out OUT/zs",
    "eval retrieval": "eval retrieval --checkpoint {checkpoint} --shards nowhere --out OUT/ret",
    "eval text-features": "eval text-features --checkpoint {checkpoint} --classes a,b "
    "--out OUT/text.npy",
    "scene-query": "scene-query {scene} --text chair --checkpoint {checkpoint} --out OUT/scene",
    "benchmark": "benchmark --models ours={checkpoint} --datasets modelnet40 "
    "--roots modelnet40={shapes} --out OUT/bench",
    "finetune": "finetune --checkpoint {checkpoint} --shards nowhere --out OUT/ft",
    "audit": "audit --train nowhere --test nowhere --out OUT/audit",
}


FOLDER_COMMANDS = [name for name, words in COMMANDS.items() if "." not in words.split("OUT/")[1]]


@pytest.mark.parametrize(
    "command,itself",
    [(name, False) for name in COMMANDS] + [(name, True) for name in FOLDER_COMMANDS],
)
def test_an_output_in_a_folder_that_cannot_be_written_is_one_line_naming_it(
    tmp_path, inputs, monkeypatch, capsys, command, itself
):
    """--out in (or, for a folder, being) a folder this user cannot write."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    words = COMMANDS[command].format(**inputs).split()
    out = words.index("--out") + 1
    words[out] = str(folder) if itself else words[out].replace("OUT", str(folder))
    make_unwritable(monkeypatch, folder)

    def no_work(*args, **kwargs):
        raise AssertionError("the model was read before --out was checked")

    monkeypatch.setattr(checkpoint, "read_checkpoint", no_work)
    monkeypatch.setattr("sys.argv", ["cg3d", *words])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert exited.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    # the file, or the folder it goes in (checked before any work)
    named = words[out] in lines[0] or f"{Path(words[out]).parent}:" in lines[0]
    assert named and "ermission denied" in lines[0], err
    assert list(folder.iterdir()) == []  # nothing was left in it


def test_an_out_folder_whose_name_is_not_utf8_is_one_line_before_any_work(tmp_path):
    """Before: `cg3d meshes --out $'bad\\xff/m'` validated every mesh, then pyarrow could not
    encode the path: a UnicodeEncodeError traceback (the same from a non-UTF-8 working folder)."""
    import subprocess
    import sys

    parent = os.fsencode(tmp_path) + b"/bad\xff"
    words = [sys.executable, "-m", "cg3d", "meshes", "--per-class", "1", "--workers", "1"]
    run = subprocess.run([*words, "--out", parent + b"/m"], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr == (
        f"error: --out: '{tmp_path}/bad\\udcff/m' is not a UTF-8 name; rename it (or give a "
        "path that is) to read or write it\n"
    )
    assert not os.path.lexists(parent)


@pytest.mark.parametrize("command", [["sample", "--out", "points"], ["inspect"], ["caption"]])
def test_an_input_folder_whose_name_is_not_utf8_is_one_line(tmp_path, command):
    """Before: `cg3d sample --meshes $'bad\\xff/m'` (or inspect of it) ended in pyarrow's
    UnicodeEncodeError traceback: Python reads the bad byte as a lone surrogate, pyarrow and
    the JSON records need UTF-8."""
    import subprocess
    import sys

    meshes = os.fsencode(tmp_path) + b"/bad\xff/m"
    made = [sys.executable, "-m", "cg3d", "meshes", "--per-class", "1", "--workers", "1"]
    subprocess.run([*made, "--out", tmp_path / "m"], check=True, capture_output=True)
    os.makedirs(os.path.dirname(meshes))
    os.rename(tmp_path / "m", meshes)
    name, *rest = command
    words = [name, meshes] if name == "inspect" else [name, "--meshes", meshes, *rest]
    if name == "caption":
        words += ["--out", tmp_path / "captions"]
    run = subprocess.run([*made[:3], *words], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: '") and run.stderr.count("\n") == 1, run.stderr
    assert "bad\\udcff/m" in run.stderr and "is not a UTF-8 name; rename it" in run.stderr
