"""Everything CG3D prints goes through one escaping console (cg3d/terminal.py): a path, id,
class name or failure reason holding ESC or a newline is shown escaped wherever it is printed,
in a line or a table cell, without every call site having to remember to escape it."""

import ast
import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from cg3d import terminal

PACKAGE = Path(__file__).resolve().parents[1] / "cg3d"


def printed(*objects, **options) -> str:
    out = io.StringIO()
    console = terminal.console(file=out, width=200, color_system=None)
    console.print(*objects, **options)
    return out.getvalue()


def test_a_line_with_control_characters_stays_one_line_shown_escaped():
    assert printed("run\x1b]0;owned\x07 done\nfake: line") == (
        "run\\x1b]0;owned\\x07 done\\nfake: line\n"
    )


def test_table_cells_and_titles_are_escaped_too():
    table = Table("id", "reason", title="shards\x1b[2J")
    table.add_row("chair\x1b[31m", "bad\nheader")
    text = printed(table)
    assert "\x1b" not in text
    assert "chair\\x1b[31m" in text and "bad\\nheader" in text and "shards\\x1b[2J" in text


def test_brackets_and_emoji_codes_in_text_are_printed_as_written():
    assert printed("runs/[bold]x[/] :train:") == "runs/[bold]x[/] :train:\n"


def test_markup_is_read_only_where_a_call_asks_for_it():
    assert printed("[bold red]error:[/]", markup=True) == "error:\n"


def test_several_lines_are_printed_as_lines_each_escaped():
    assert printed("a\x1b", "b", sep="\n") == "a\\x1b\nb\n"


def console_constructions(path: Path) -> list[int]:
    """Lines of `path` that build a rich Console (`Console(...)`, `rich.console.Console(...)`)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "Console":
                lines.append(node.lineno)
    return lines


def test_no_module_builds_a_console_of_its_own():
    builders = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if path.name != "terminal.py" and (lines := console_constructions(path))
    }
    assert builders == {}


def cg3d_at_width(columns: int, *args: str) -> subprocess.CompletedProcess:
    """`cg3d` as a user runs it, its stderr a log file (not a terminal) `columns` wide."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "cg3d", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    "args, said",
    [
        (
            ["sample", "--meshes", "m", "--out", "o", "--points", "abc"],
            "Invalid value for '--points'",
        ),
        (["sample", "--out", "o"], "Missing option '--meshes'"),
        (["sample", "--meshes", "m", "--out", "o", f"--{'a-long-option-' * 8}"], "No such option"),
        (["classify", "--checkpoint", f"{'long-folder/' * 8}last.pt"], "Missing argument 'path'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_a_usage_error_is_one_line_at_any_width(args, said):
    """click's usage errors (a typo, a wrong type, a missing option) were typer's boxed panel
    under two lines of usage, wrapped to the width: at 30 columns an option split over five
    lines; each is now one `error:` line, as every other error, naming the command."""
    for columns in (30, 200):
        run = cg3d_at_width(columns, *args)
        assert run.returncode == 2
        (line,) = run.stderr.splitlines()
        assert line.startswith("error: ") and said in line and "--help" in line


def test_a_long_line_stays_one_line_at_any_width_and_a_table_fits_it():
    """A summary naming its output (`index`, `eval zeroshot`, a training epoch) was broken at
    80 columns in a log file, a long path split mid-name; a table must still fit the width."""
    line = "shards (test), 10 shapes: top-1 10.00% → " + "/runs/a-long-folder-name" * 6
    table = Table("id", "class")
    table.add_row("synthetic-bathtub_bathtub_0000-93d983a798", "bathtub with a long name")
    out = io.StringIO()
    console = terminal.console(file=out, width=30, color_system=None)
    console.print(line)
    console.print(table)
    first, *table_lines = out.getvalue().splitlines()
    assert first == line
    assert table_lines and all(len(row) <= 30 for row in table_lines)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("args", [["--help"], ["inspect", "--help"]])
def test_a_failed_write_to_stdout_says_it_was_stdout(args):
    """`cg3d ... > /dev/full` said `error: No space left on device (ENOSPC)` alone: no file
    named, as if the command's own output folder were full."""
    with open("/dev/full", "w") as full:
        run = subprocess.run(
            [sys.executable, "-m", "cg3d", *args], stdout=full, stderr=subprocess.PIPE,
            text=True, timeout=120,
        )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "error: writing the output stream (stdout) failed: No space left on device (ENOSPC)"
    ]


def test_an_in_process_main_leaves_the_callers_streams_whole(monkeypatch, tmp_path):
    """Under `pytest -s` an in-process `cli.main()` detached the real stdout and stderr (its
    wrappers took their buffers): pytest's reporter, holding the old objects, then failed on
    "underlying buffer has been detached". The streams are proxied, and put back on return."""
    from cg3d import cli

    with (tmp_path / "out").open("wb") as out_file, (tmp_path / "err").open("wb") as err_file:
        stdout = io.TextIOWrapper(out_file, encoding="ascii")  # strict: main escapes, then not
        stderr = io.TextIOWrapper(err_file, encoding="utf-8")
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(sys, "stderr", stderr)
        monkeypatch.setattr(sys, "argv", ["cg3d", "--help"])
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 0
        assert sys.stdout is stdout and sys.stderr is stderr
        stdout.write("after main\n")  # ValueError on a detached stream
        stderr.write("after main\n")
        assert stdout.errors == "strict"
        stdout.flush()
        stderr.flush()
    printed = (tmp_path / "out").read_text()
    assert "Usage" in printed and printed.endswith("after main\n")
    assert (tmp_path / "err").read_text() == "after main\n"


class _FullDisk(io.RawIOBase):
    """A stdout redirected to a full disk (`> /dev/full`)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_in_process_main_puts_back_what_it_changed_even_when_stdout_fails(monkeypatch):
    """main's log handler, its showwarning and its escaping stdout are undone when it returns:
    each in-process call added a root handler (a warning then printed once per earlier call),
    and a stdout whose last flush failed was left escaping (its exit skipped the undo)."""
    import logging
    import warnings

    from cg3d import cli

    root = logging.getLogger()
    handlers, level, showwarning = list(root.handlers), root.level, warnings.showwarning
    stdout = io.TextIOWrapper(io.BufferedWriter(_FullDisk()), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    monkeypatch.setattr(sys, "argv", ["cg3d", "--help"])
    for _ in range(2):
        with pytest.raises(SystemExit) as stop:
            cli.main()
        assert stop.value.code == 2
    assert root.handlers == handlers and root.level == level
    assert warnings.showwarning is showwarning
    assert stdout.errors == "strict"


def test_two_in_process_mains_at_once_put_back_the_callers_streams(monkeypatch):
    """Two threads of a service each run a command: the first to start ends first. Each put
    back what it had found, so the second put back the first's proxies of the streams and
    the first's showwarning, for good."""
    import threading
    import warnings

    from cg3d import cli

    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    showwarning = warnings.showwarning
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def command() -> None:
        if threading.current_thread().name == "first":
            first_in.set()
            assert second_in.wait(60)
        else:
            second_in.set()
            assert first_out.wait(60)
        raise SystemExit(0)

    def run_main(done: threading.Event | None) -> None:
        with pytest.raises(SystemExit):
            cli.main()
        if done is not None:
            done.set()

    monkeypatch.setattr(cli, "app", command)
    first = threading.Thread(target=run_main, args=(first_out,), name="first")
    second = threading.Thread(target=run_main, args=(None,), name="second")
    first.start()
    assert first_in.wait(60)
    second.start()
    first.join(60)
    second.join(60)
    assert sys.stdout is stdout and sys.stderr is stderr
    assert warnings.showwarning is showwarning


def test_a_logged_progress_says_it_is_alive_when_a_tenth_takes_long():
    """Off a terminal a line came at each tenth only: a render's chunk of 1000 objects or an
    epoch of hours left the log silent for an hour, as if the job hung."""
    clock = [0.0]
    out = io.StringIO()
    shown = terminal.console(file=out, width=80, color_system=None)
    with terminal.LoggedProgress(console=shown, get_time=lambda: clock[0]) as progress:
        task = progress.add_task("rendering", total=10, rate="")
        clock[0] = 59.0
        progress._log_the_silent()
        assert out.getvalue() == ""
        clock[0] = 61.0
        progress._log_the_silent()
        progress.advance(task)  # a tenth: its own line, and the next beat is a minute on
        clock[0] = 100.0
        progress._log_the_silent()
        lines = out.getvalue().splitlines()
    assert lines == ["rendering: 0/10 (0%) still working, 0:01:01 elapsed", "rendering: 1/10 (10%)"]


def test_a_logged_progress_writes_lines_on_a_dumb_terminal():
    """TERM=dumb (an editor's shell, a CI's pseudo-terminal): rich redraws no bar there, and
    the lines were written to log files only: nothing until the stage's end."""
    out = io.StringIO()
    dumb = terminal.console(file=out, force_terminal=True, _environ={"TERM": "dumb"})
    with terminal.LoggedProgress(console=dumb) as progress:
        task = progress.add_task("sampling", total=4, rate="")
        progress.advance(task)
        assert out.getvalue().splitlines() == ["sampling: 1/4 (25%)"]


def test_a_table_into_a_log_file_ignores_a_narrow_columns():
    """A batch job inherits COLUMNS from the shell that submitted it: at COLUMNS=10 `cg3d
    inspect` into a log file showed `…` for every id and class name of its tables."""
    table = Table("failed id", "reason")
    table.add_row("folder-chair_m-fdf659a44d", "unreadable")
    out = io.StringIO()
    terminal.console(file=out, color_system=None, _environ={"COLUMNS": "10"}).print(table)
    assert "folder-chair_m-fdf659a44d" in out.getvalue()


@pytest.mark.parametrize("asks", [{"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_a_logged_progress_writes_lines_to_a_file_when_the_environment_forces_colour(asks):
    """FORCE_COLOR=1 (a CI's, a shell profile's) made rich take a log file for a terminal: the
    bar was redrawn into it, a carriage return a frame, and no plain line was written."""
    out = io.StringIO()
    forced = Console(file=out, width=80, _environ=asks)  # rich's own, as `progress_bar` gets
    with terminal.LoggedProgress(console=forced) as progress:
        task = progress.add_task("sampling", total=4, rate="")
        progress.advance(task)
        # colours as asked, and rich's hidden cursor before the line (a terminal's code)
        assert out.getvalue() == "\x1b[?25lsampling: 1/4 (25%)\n"
    assert "\r" not in out.getvalue()


def test_a_stage_into_a_pipe_under_force_color_redraws_nothing(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "cg3d", "meshes", "--out", "meshes", "--per-class", "2"],
        cwd=tmp_path,
        capture_output=True,  # bytes: text=True reads each carriage return as a newline
        env=os.environ | {"FORCE_COLOR": "1", "PYTHONWARNINGS": ""},
    )
    assert run.returncode == 0, run.stderr
    assert b"objects from synthetic" in run.stdout and b"\r" not in run.stdout


def test_columns_zero_is_no_width_at_all():
    """COLUMNS=0 (an editor's shell, a CI runner's): rich took it for the width, and `cg3d
    --help` printed nothing (one empty line)."""
    run = subprocess.run(
        [sys.executable, "-m", "cg3d", "--help"],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "0", "LINES": "0"},
    )
    assert run.returncode == 0, run.stderr
    assert "Usage: python -m cg3d" in run.stdout and "meshes" in run.stdout
    assert max(map(len, run.stdout.splitlines())) <= 80  # rich's width for a pipe


def test_a_main_stopped_while_it_changes_the_process_puts_back_what_it_had_changed(monkeypatch):
    """A Ctrl-C (or a failed read of the CPU quota) while main wraps the streams and sets the
    thread limit: the streams, showwarning and log handler made before it stayed for good."""
    import logging
    import warnings

    from cg3d import cli, params

    root = logging.getLogger()
    handlers, level, showwarning = list(root.handlers), root.level, warnings.showwarning
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "argv", ["cg3d", "--help"])

    def interrupted(root=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(params, "cpu_count", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main()
    assert sys.stdout is stdout and sys.stderr is stderr
    assert root.handlers == handlers and root.level == level
    assert warnings.showwarning is showwarning
    monkeypatch.undo()  # the next call makes its changes and undoes them again
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "argv", ["cg3d", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert sys.stdout is stdout and root.handlers == handlers
