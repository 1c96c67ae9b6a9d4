"""Python's and the math libraries' variables a researcher's shell may set: `PYTHONWARNINGS=error`
(`python -W error`) turns a warning into an exception, which ended a command with a traceback
(exit 1); thread variables no library reads as a count (OMP_NUM_THREADS=abc, MKL_NUM_THREADS=-1)."""

import json
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


# torch's thread count, and what libgomp says, after cg3d's command line read the environment
THREADS_AFTER_CG3D = (
    "from cg3d.params import drop_bad_thread_variables\n"
    "print(drop_bad_thread_variables())\n"
    "import torch\n"
    "print(torch.get_num_threads())\n"
)


def thread_count_run(variables: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_THREADS")}
    return subprocess.run(
        [sys.executable, "-c", THREADS_AFTER_CG3D],
        capture_output=True,
        text=True,
        env=clean | variables,
    )


def test_thread_variables_no_library_reads_are_dropped_with_their_names():
    """OMP_NUM_THREADS=abc made libgomp print "Invalid value for environment variable" in
    each process loading it; MKL_NUM_THREADS=-1 left torch one thread on any machine."""
    unset = thread_count_run({})
    wrong = thread_count_run({"OMP_NUM_THREADS": "abc", "MKL_NUM_THREADS": "-1"})
    assert wrong.returncode == 0 and "libgomp" not in wrong.stderr, wrong.stderr
    dropped, threads = wrong.stdout.splitlines()
    assert dropped == "[\"OMP_NUM_THREADS='abc'\", \"MKL_NUM_THREADS='-1'\"]"
    assert threads == unset.stdout.splitlines()[1]  # the count of a shell that set none


def test_thread_variables_libraries_read_are_kept():
    kept = thread_count_run({"OMP_NUM_THREADS": "4,2", "MKL_NUM_THREADS": "1"})
    assert kept.stdout.splitlines() == ["[]", "1"]


def test_the_command_line_says_which_thread_variable_it_ignored():
    done = subprocess.run(
        [sys.executable, "-m", "cg3d", "--help"],
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "0", "PYTHONWARNINGS": ""},
    )
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "warning: OMP_NUM_THREADS='0' is not a number of threads: ignored"
    ]


def test_python_m_under_safepath_in_another_checkout_says_it_would_run_other_code(tmp_path):
    """A DVC stage runs `python -m cg3d` to import its working folder's code (dvc.yaml), which
    PYTHONSAFEPATH=1 leaves off the path: the installed checkout's code ran, silently."""
    (tmp_path / "cg3d").mkdir()
    for name in ("__init__.py", "__main__.py"):  # another checkout's package
        (tmp_path / "cg3d" / name).write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "cg3d", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONSAFEPATH": "1"},
    )
    assert done.returncode == 2, done.stdout
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: PYTHONSAFEPATH is set (python -P): python -m cg3d would run ")
    assert line.endswith("not this folder's cg3d/; unset PYTHONSAFEPATH")


def test_python_m_under_safepath_beside_a_cg3d_package_that_is_no_checkout_runs(tmp_path):
    """A folder's own cg3d/ package without a __main__.py (a user's library of that name): no
    `python -m cg3d` ran it without -P either, so -P runs the installed cg3d; it was refused."""
    (tmp_path / "cg3d").mkdir()
    (tmp_path / "cg3d" / "__init__.py").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "cg3d", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONSAFEPATH": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


# Every command's help as click holds it (typer builds it at `get_command`), one JSON object
ALL_COMMAND_HELPS = (
    "import json, typer\n"
    "from cg3d.cli import app\n"
    "def walk(command, path):\n"
    "    yield ' '.join(path), command.help\n"
    "    for name, sub in getattr(command, 'commands', {}).items():\n"
    "        yield from walk(sub, [*path, name])\n"
    "print(json.dumps(dict(walk(typer.main.get_command(app), ['cg3d']))))\n"
)


def command_helps(*switches: str) -> dict[str, str | None]:
    done = subprocess.run(
        [sys.executable, *switches, "-c", ALL_COMMAND_HELPS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-1000:]
    return json.loads(done.stdout)


def test_python_OO_keeps_every_commands_help():
    """`python -OO` strips docstrings, from which typer takes each command's help: `cg3d
    --help` listed every command without its summary, `cg3d sample --help` had no
    description. The help comes from the source then, the same text as without -OO."""
    plain, optimized = command_helps(), command_helps("-OO")
    assert "Sample point clouds from meshes" in plain["cg3d sample"]
    assert len(plain) > 25 and all(plain.values())
    assert optimized == plain
