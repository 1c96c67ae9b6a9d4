"""Every command that writes a folder holds its output lock (issue 25 §3): while another run
writes into OUT, a second command into OUT is refused at once with one line, before any work
(not even its checkpoint or inputs are read), and leaves the folder as it was.

The lock is taken where the command starts (`cg3d.files.locks_folder` on the command), so the
refusal comes first, whatever else is wrong with the arguments: that is what lets this test give
every command placeholder arguments. Stage commands lock inside their stage function
(`locks_out_dir`), after their inputs are checked; their tests hold them to it.
"""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.files import LOCK_NAME

# The arguments of each command besides --out, all placeholders (the lock is refused first).
LOCKED_AT_THE_COMMAND = {
    "eval zeroshot": ["--checkpoint", "none.pt", "--dataset", "modelnet40", "--root", "nowhere"],
    "eval retrieval": ["--checkpoint", "none.pt", "--shards", "nowhere"],
    "finetune": ["--checkpoint", "none.pt", "--shards", "nowhere"],
    "scene-query": ["scene.ply", "--text", "a chair", "--checkpoint", "none.pt"],
    "audit": ["--train", "nowhere", "--test", "nowhere"],
    "index": ["--checkpoint", "none.pt", "--shards", "nowhere"],
    "show": ["some_id", "--renders", "nowhere"],
    "benchmark": ["--models", "m=none.pt", "--datasets", "modelnet40", "--roots", "modelnet40=x"],
}
# Stage commands: their stage function locks `out_dir` (tests of each stage show it).
LOCKED_IN_THEIR_STAGE = {"meshes", "sample", "caption", "pack", "render", "train"}
# --out names a file, not a folder (written atomically: a second run replaces it whole).
# `eval text-features` writes a pair of files, so it also locks the pair's .npy (its own test).
WRITE_A_FILE = (
    {"export", "classify", "embed", "eval text-features"}
    | {
        f"convert {name}"
        for name in ("cg3d-release", "openshape-pointbert", "ulip-pointbert", "ulip2-pointbert")
    }
    | {f"convert uni3d-{size}" for size in ("ti", "s", "b", "l", "g")}
)


def commands_with_out() -> set[str]:
    """Every `cg3d` command (group members as `group name`) with an --out option."""
    found = set()

    def walk(command: click.Command, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group (typer vendors its own click: no isinstance)
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        elif any("--out" in getattr(param, "opts", []) for param in command.params):
            found.add(prefix)

    walk(typer.main.get_command(app), "")
    return found


def test_every_command_that_writes_a_folder_is_held_to_the_lock():
    known = set(LOCKED_AT_THE_COMMAND) | LOCKED_IN_THEIR_STAGE | WRITE_A_FILE
    found = commands_with_out()
    assert {"export", "eval zeroshot", "train"} <= found  # the walk finds commands at all
    assert found <= known, "a new command with --out: lock it, then list it here"


@contextmanager
def another_run_writing_into(folder: Path) -> Iterator[None]:
    """A second process holding `folder`'s output lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate("")  # its stdin closes: it lets go and exits


HOLD_LOCK = """
import sys
from pathlib import Path
from cg3d.files import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("command", list(LOCKED_AT_THE_COMMAND))
def test_a_second_command_into_a_locked_folder_is_refused_at_once(tmp_path, command):
    out = tmp_path / "out"  # `show` writes OUT/ID.png: the folder locked is OUT too
    out.mkdir()
    (out / "metrics.json").write_text("the first run's\n")
    with another_run_writing_into(out):
        args = [*command.split(), *LOCKED_AT_THE_COMMAND[command], "--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert sorted(path.name for path in out.iterdir()) == [LOCK_NAME, "metrics.json"]
    assert isinstance(result.exception, UsageError), (result.exception, result.output)
    (line,) = str(result.exception).splitlines()
    assert line.startswith("--out: another run is writing into ") and LOCK_NAME in line
    assert (out / "metrics.json").read_text() == "the first run's\n"


def test_a_failed_run_removes_the_folders_its_lock_made_and_keeps_the_rest(tmp_path):
    """The lock makes the --out folder (and its parents); a run refused after taking it, as
    `pack` with a missing --points is, must not leave them behind. A folder that was there
    before, or that holds something now, stays."""
    from cg3d.files import output_lock

    (tmp_path / "kept").mkdir()
    with pytest.raises(UsageError), output_lock(tmp_path / "kept" / "new" / "out"):
        raise UsageError("--points: no such folder")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]
    with pytest.raises(UsageError), output_lock(tmp_path / "kept" / "new" / "out"):
        (tmp_path / "kept" / "new" / "out" / "part.tmp").write_text("partial")
        raise UsageError("--points: no such folder")
    assert (tmp_path / "kept" / "new" / "out" / "part.tmp").is_file()
    assert not (tmp_path / "kept" / "new" / "out" / ".cg3d.lock").exists()
    inputs = [f"--{name}={tmp_path / 'none'}" for name in ("points", "renders", "captions")]
    pack = ["pack", f"--meshes={tmp_path / 'kept'}", *inputs, f"--out={tmp_path / 'shards'}"]
    result = CliRunner().invoke(app, pack)
    assert isinstance(result.exception, UsageError) and "--points" in str(result.exception)
    assert not (tmp_path / "shards").exists()
