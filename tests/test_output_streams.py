"""A command in a batch job (Slurm, cron, CI, nohup): its stdout and stderr are a log file that
may be on a full or read-only disk, or closed (`>&-`), and its stdin is /dev/null or closed.
The stage's own files never depend on whether its log could be written; the exit code says
what happened (`cg3d.cli.main`)."""

import array
import fcntl
import io
import os
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

F_SETPIPE_SZ = 1031  # Linux's fcntl: a pipe's capacity


def unread(read_end: int) -> int:
    """How many bytes wait in the pipe of `read_end` (FIONREAD)."""
    waiting = array.array("i", [0])
    fcntl.ioctl(read_end, termios.FIONREAD, waiting)
    return waiting[0]


needs_dev_full = pytest.mark.skipif(
    not Path("/dev/full").exists(), reason="needs Linux's /dev/full"
)


def _stage(tmp_path: Path, stdout, stderr) -> tuple[subprocess.CompletedProcess, Path]:
    """`cg3d meshes` of 300 synthetic objects, whose progress lines (one a tenth off a
    terminal) go to `stdout`; (the run, its output folder)."""
    params = tmp_path / "params.yaml"
    params.write_text("meshes:\n  source: synthetic\n  per_class: 30\n  workers: 1\n")
    out = tmp_path / "meshes"
    command = [sys.executable, "-m", "cg3d", "meshes", "--out", str(out), "--params", str(params)]
    run = subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, timeout=300
    )
    return run, out


@needs_dev_full
@pytest.mark.parametrize("stderr_too", [False, True])
def test_a_stage_whose_log_cannot_be_written_still_writes_its_output_whole(tmp_path, stderr_too):
    """`cg3d meshes ... > log` on a full disk: its first progress line ended the stage (exit 2)
    with no manifest, its output depending on its log. It now finishes its work, then says
    once that stdout failed and exits 2; with stderr full too it said nothing and exited 1 (a
    traceback into the full stderr), now 2."""
    with open("/dev/full", "w") as full:
        stderr = full if stderr_too else subprocess.PIPE
        run, out = _stage(tmp_path, stdout=full, stderr=stderr)
    assert run.returncode == 2
    assert pq.read_table(out / "manifest.parquet").num_rows == 300  # 10 classes of 30
    if not stderr_too:
        assert run.stderr.decode().splitlines() == [
            "error: writing the output stream (stdout) failed: No space left on device (ENOSPC)"
        ]


# A command that warns on stderr mid-work, as the stages print theirs (a chunk's or a
# checkpoint's warning: `terminal.console(stderr=True)`), then leaves a mark that it finished.
_WARNS_MID_WORK = """
from pathlib import Path
from cg3d import cli, terminal

@cli.app.command("talk")
def talk(mark: Path) -> None:
    terminal.console(stderr=True).print("warning: a chunk's line mid-work")
    mark.write_text("done")

cli.main(whole_process=True)
"""


@needs_dev_full
def test_a_warning_into_a_full_stderr_does_not_end_the_work(tmp_path):
    """`2> log` on a full disk: the stage's first warning was an ENOSPC that ended it (exit 2,
    its work half done), for a line nobody could read."""
    mark = tmp_path / "mark"
    command = [sys.executable, "-c", _WARNS_MID_WORK, "talk", str(mark)]
    with open("/dev/full", "w") as full:
        run = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, timeout=120)
    assert run.returncode == 0
    assert mark.read_text() == "done"


# A command that opens its output file while its stdout is closed (`>&-`), then runs a child
# that writes to the stdout it inherits, as Blender, git or a library's C code would.
_OPENS_ITS_OUTPUT = """
import subprocess
from pathlib import Path
from cg3d import cli

@cli.app.command("talk")
def talk(out: Path) -> None:
    with out.open("w") as file:
        subprocess.run(["echo", "a child's line"], check=True)
        file.write("the output")

cli.main(whole_process=True)
"""


def test_a_closed_stdout_is_not_the_next_file_the_command_opens(tmp_path):
    """With fd 1 closed (`>&-`, a daemon's spawn) the first file the command opened took
    number 1: a child's (or a C library's) line to stdout went into that output file."""
    out = tmp_path / "out.txt"
    command = [sys.executable, "-c", _OPENS_ITS_OUTPUT, "talk", str(out)]
    shell = 'exec "$@" >&- </dev/null'
    run = subprocess.run(["sh", "-c", shell, "sh", *command], stderr=subprocess.PIPE, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    assert out.read_text() == "the output"


def test_a_nonblocking_stdout_with_a_slow_reader_gets_the_whole_log():
    """A CI parent's pipe set O_NONBLOCK (shared with the command): while its reader lagged, a
    write failed with EAGAIN and the rest of the log was dropped. The pipe is made one page
    (4 KiB) and the reader starts late, so the help text (7 KiB) meets a full pipe."""
    command = [sys.executable, "-m", "cg3d", "render", "--help"]
    env = {**os.environ, "COLUMNS": "200"}
    whole = subprocess.run(command, capture_output=True, env=env, timeout=120, check=True).stdout
    assert len(whole) > 4096
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    run = subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, env=env)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        time.sleep(2)  # the command fills the pipe meanwhile
        received = b""
        while chunk := reader.read1(512):
            received += chunk
            time.sleep(0.005)  # a slow reader
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr.decode()
    assert received == whole


def test_a_nonblocking_stdout_whose_reader_never_reads_waits_as_a_blocking_one_until_stopped():
    """A reader that stops reading (a pager stopped with Ctrl-Z) is waited for without a bound,
    as a blocking stdout is (a bound would drop what the reader may still come back for), and
    a SIGTERM still stops the command at once, in one line (t86a's decision)."""
    import signal

    command = [sys.executable, "-m", "cg3d", "render", "--help"]
    env = {**os.environ, "COLUMNS": "200"}
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    run = subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, env=env)
    os.close(write_end)
    try:
        # The command has started writing (its stop handler is in place before): a loaded
        # machine took over 3 s to start it, and the SIGTERM, sent before the handler was
        # there, killed it (-15)
        deadline = time.monotonic() + 120
        while unread(read_end) == 0:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(subprocess.TimeoutExpired):
            run.wait(timeout=3)  # the pipe is full and never read: it waits
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
    finally:
        run.kill()
        os.close(read_end)
    assert run.returncode == 128 + signal.SIGTERM
    assert stderr.decode() == "error: terminated (SIGTERM)\n"


class _Writes(io.StringIO):
    """A stderr that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_an_error_or_warning_line_is_one_write(monkeypatch):
    """The ranks of a torchrun share its stderr: the label written apart from its message
    interleaved two ranks' lines ("error: error: terminated (SIGTERM)", then "terminated
    (SIGTERM)"), and a log search for either line missed it. A line is one write now."""
    import signal

    from cg3d import cli

    stderr = _Writes()
    monkeypatch.setattr(sys, "stderr", stderr)
    with pytest.raises(SystemExit):
        cli._interrupted(signal.SIGTERM)
    with pytest.raises(SystemExit):
        cli._refused("no such file [x]\x1b[31m")
    cli._OneLineWarnings()(UserWarning("a [b] warning"), UserWarning, cli.__file__, 1)
    assert stderr.writes == [
        "error: terminated (SIGTERM)\n",
        "error: no such file [x]\\x1b[31m\n",
        "warning: a [b] warning\n",
    ]
