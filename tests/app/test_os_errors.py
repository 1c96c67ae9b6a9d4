"""`cg3d.cli.main` prints an OSError as one line (exit 2) only when it is the user's or the
machine's condition: it names its file, or its errno is such a condition (a full disk, a
permission, a closed pipe, a network that does not answer). Any other OSError is a bug and
keeps its traceback (every OSError was one line: a bug's lost where it happened)."""

import errno
import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error

import pytest

from cg3d.cli import main


def run_raising(monkeypatch, capsys, tmp_path, error: BaseException) -> tuple[int | None, str]:
    """`cg3d inspect` whose work raises `error`: (the exit code, stderr)."""

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr("cg3d.pipeline.inspect.inspect_folder", fails)
    monkeypatch.setattr("sys.argv", ["cg3d", "inspect", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.EINVAL, "Invalid argument", "/d/x.bin"),
            "/d/x.bin: Invalid argument (EINVAL)",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (ENOSPC)"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded (EDQUOT)"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system (EROFS)"),
        (OSError(errno.EFBIG, "File too large"), "File too large (EFBIG)"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied (EACCES)"),
        (
            PermissionError(errno.EPERM, "Operation not permitted"),
            "Operation not permitted (EPERM)",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "No such file or directory (ENOENT)",
        ),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            "Connection refused (ECONNREFUSED)",
        ),
        (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "Connection timed out (ETIMEDOUT)"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "No route to host (EHOSTUNREACH)"),
        (
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            "Network is unreachable (ENETUNREACH)",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "Name or service not known",
        ),
        (TimeoutError("no data for 60 s"), "no data for 60 s"),
        (urllib.error.URLError("no host given"), "<urlopen error no host given>"),
        # urllib raises it as it is: a ConnectionResetError with no errno
        (
            http.client.RemoteDisconnected("Remote end closed connection without response"),
            "Remote end closed connection without response",
        ),
        # the SSL library's codes, not errnos: 8 is no ENOEXEC (a traceback), 1 no EPERM
        (
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)"),
            "EOF occurred in violation of protocol (_ssl.c:2427)",
        ),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"),
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify",
        ),
        # a file but no errno: no "[Errno None]"
        (OSError(None, "not a mesh", "/d/x.bin"), "/d/x.bin: not a mesh"),
        (FileNotFoundError(None, None, "/d/x.bin"), "/d/x.bin: FileNotFoundError"),
        # pyarrow's: the errno in its words only, the file too
        (
            OSError("Failed to open local file '/d/p'. Detail: [errno 28] No space left on device"),
            "Failed to open local file '/d/p'. Detail: [errno 28] No space left on device",
        ),
    ],  # fmt: skip
)
def test_a_condition_is_one_line(monkeypatch, capsys, tmp_path, error, line):
    code, err = run_raising(monkeypatch, capsys, tmp_path, error)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [f"error: {line}"]


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EINVAL, "Invalid argument"),  # no file named, an errno that is no condition
        OSError(errno.EBADF, "Bad file descriptor"),
        OSError("a library's words, no errno"),
        OSError(),
    ],
)
def test_any_other_os_error_keeps_its_traceback(monkeypatch, capsys, tmp_path, error):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr("cg3d.pipeline.inspect.inspect_folder", fails)
    monkeypatch.setattr("sys.argv", ["cg3d", "inspect", str(tmp_path)])
    with pytest.raises(OSError) as raised:  # out of main: Python prints its traceback
        main()
    assert raised.value is error
    assert "error:" not in capsys.readouterr().err


def test_a_bugs_os_error_prints_its_traceback_from_the_command_line(tmp_path):
    script = (
        "import errno, sys\n"
        "import cg3d.pipeline.inspect as inspect\n"
        "def fails(*args, **kwargs):\n"
        "    raise OSError(errno.EINVAL, 'Invalid argument')\n"
        "inspect.inspect_folder = fails\n"
        f"sys.argv = ['cg3d', 'inspect', {str(tmp_path)!r}]\n"
        "from cg3d.cli import main\n"
        "main(whole_process=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "in fails" in done.stderr
    assert done.stderr.rstrip().endswith("OSError: [Errno 22] Invalid argument")


def test_a_reader_that_closes_the_output_pipe_leaves_the_command_quiet(tmp_path):
    """`cg3d inspect DIR --ids | head -1`: the closed pipe (EPIPE) is the reader's choice, not
    an error: the rest goes nowhere, exit 0, nothing on stderr, no traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cg3d.formats.manifest import MANIFEST_NAME, SCHEMA

    row = {"source": "folder", "class_name": "chair", "synonyms": [], "name": "", "split": "train"}
    row |= {"up_axis": "y", "sha256": "ab", "status": "ok", "error": "", "missing": []}
    rows = [{**row, "id": f"folder-chair_{i:06d}", "path": f"{i}.obj"} for i in range(20000)]
    (tmp_path / "meshes").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "meshes" / MANIFEST_NAME)
    reader = subprocess.Popen(
        [sys.executable, "-m", "cg3d", "inspect", str(tmp_path / "meshes"), "--ids"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout.readline() == b"folder-chair_000000\n"
    reader.stdout.close()  # 20,000 ids: far more than the pipe holds
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 0 and stderr == ""


def test_a_stage_piped_to_a_reader_that_leaves_does_its_work_whole(tmp_path):
    """`cg3d meshes ... | head -1`: the stage's progress lines (one a tenth off a terminal)
    went into the closed pipe and the stage ended at the second, with no manifest; the reader
    takes only the output, the stage finishes."""
    import pyarrow.parquet as pq

    params = tmp_path / "params.yaml"
    params.write_text("meshes:\n  source: synthetic\n  per_class: 30\n  workers: 1\n")
    out = tmp_path / "meshes"
    stage = subprocess.Popen(
        [sys.executable, "-m", "cg3d", "meshes", "--out", str(out), "--params", str(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert stage.stdout.readline().startswith(b"generating synthetic meshes: ")
    stage.stdout.close()
    stderr = stage.stderr.read().decode()
    assert stage.wait(timeout=300) == 0 and stderr == ""
    assert pq.read_table(out / "manifest.parquet").num_rows == 300  # 10 classes of 30


# A command that prints far more than a pipe holds, then a line on stderr as the stages print
# theirs (a chunk's or a checkpoint's warning: `terminal.console(stderr=True)`), then leaves a
# mark that it did its work to the end.
_WARNS_AFTER_ITS_OUTPUT = """
from pathlib import Path
from cg3d import cli, terminal

@cli.app.command("talk")
def talk(mark: Path) -> None:
    for i in range(100000):
        print(f"line {i}")
    terminal.console(stderr=True).print("warning: a chunk's line after the output")
    mark.write_text("done")

cli.main(whole_process=True)
"""


def test_a_reader_that_leaves_both_streams_2_and_1_lets_the_command_finish(tmp_path):
    """`cg3d STAGE ... 2>&1 | head -1`: stderr is the reader's pipe too; the stage's first
    warning after the reader left ended it there (exit 1, its work half done), where its
    stdout had gone to /dev/null."""
    mark = tmp_path / "mark"
    command = [sys.executable, "-c", _WARNS_AFTER_ITS_OUTPUT, "talk", str(mark)]
    talker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert talker.stdout.readline() == b"line 0\n"
    talker.stdout.close()
    assert talker.wait(timeout=120) == 0
    assert mark.read_text() == "done"


def test_a_copy_refused_by_a_full_disk_is_the_first_files_line(monkeypatch, capsys, tmp_path):
    """`shutil.copytree` (train's dvclive plots, `publish`) gathers the files it could not
    copy into one shutil.Error, whose line was a Python list of (source, target, words)
    tuples: it is the first target and its cause, as any other full disk's."""
    source, target = tmp_path / "plots", tmp_path / "out"
    (source / "metrics").mkdir(parents=True)
    for name in ("a.tsv", "b.tsv", "c.tsv"):
        (source / "metrics" / name).write_text("step\tloss\n")

    def full_disk(src: str, dst: str) -> None:
        # as shutil's sendfile copy raises it: both files named, the source first
        raise OSError(errno.ENOSPC, "No space left on device", src, None, dst)

    with pytest.raises(shutil.Error) as copied:
        shutil.copytree(source, target, copy_function=full_disk)
    code, err = run_raising(monkeypatch, capsys, tmp_path, copied.value)
    first = copied.value.args[0][0][1]  # the first file tried (a folder's order: the OS's)
    assert first.startswith(f"{target}/metrics/")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [
        f"error: {first}: No space left on device (ENOSPC) (and 2 other files)"
    ]


def test_the_errno_of_an_error_is_its_own_else_the_one_its_words_name(tmp_path):
    """One rule (`files._errno_of`) for the errno of an error, wherever it is read: an OSError's
    own errno first, else the one a library put in its words only ("[errno N]", Rust's "(os
    error N)"); the error then names the user's file in the system's words."""
    from cg3d.files import _naming, is_condition, os_error_in, out_of_room

    rust = ValueError("I/O error: No space left on device (os error 28)")
    refused = os_error_in(rust, tmp_path / "w.safetensors")
    assert (refused.errno, refused.strerror) == (errno.ENOSPC, "No space left on device")
    assert refused.filename == str(tmp_path / "w.safetensors")
    assert os_error_in(ValueError("bad header"), tmp_path / "w") is None
    # its own errno wins over one its words name
    own = OSError(errno.EACCES, "Permission denied [errno 28]")
    assert out_of_room(own) is None and is_condition(own)
    assert out_of_room(OSError("write failed (os error 122)")) == errno.EDQUOT
    renamed = _naming(OSError("pyarrow: [errno 30] read-only\nmore"), tmp_path / "a.parquet")
    assert (renamed.errno, renamed.strerror) == (errno.EROFS, "Read-only file system")
    words = _naming(OSError("a library's words\nsecond line"), tmp_path / "a.parquet")
    assert (words.errno, words.strerror, words.filename) == (
        None,
        "a library's words",
        str(tmp_path / "a.parquet"),
    )
