"""The `cg3d` command: one subcommand per stage, each a thin wrapper over a stage function.

Each area registers its own commands (`cg3d/<area>/commands.py`); heavy imports (torch,
bpy, ray) happen inside the commands so that `cg3d --help` is instant.
"""

import calendar
import fcntl
import io
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from cg3d import terminal
from cg3d.errors import (
    ConfigWarning,
    UsageError,
    missing_dependency_line,
    printable,
    resource_limit_line,
)
from cg3d.stopping import COMMAND_STOP_SIGNALS, Interrupt, loader_worker_died, stopped_words

PACKAGE_DIR = Path(__file__).resolve().parent


class _NoBoolType:
    """Flags (`--colors/--no-colors`, `--help`) take no value: `--help` shows no `<bool>`
    type beside them as if they did."""

    def get_params(self, ctx: Any) -> list[Any]:  # click's Context and Parameters
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # typer prints the metavar, when set, instead of the type
        return params


class _Command(_NoBoolType, TyperCommand):
    def invoke(self, ctx: Any) -> Any:  # click's Context
        _not_under_launcher(ctx)
        try:
            return super().invoke(ctx)
        except ImportError as error:  # a package it imports (bpy, gradio): absent or broken
            line = missing_dependency_line(error, ctx.command_path)
            if line is None:
                raise
            raise UsageError(line) from None


# The commands that run as several processes under a launcher (torchrun): each joins the others.
LAUNCHED_COMMANDS = ("train",)


def _not_under_launcher(ctx: Any) -> None:
    """A command other than `train` under torchrun (WORLD_SIZE above 1) stops, before it makes
    any folder: it reads no launcher variable, so every process ran the whole command into the
    same output folder (each rank writing the same files, or all but one refused the lock)."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent  # `cg3d eval zeroshot`: the command below cg3d is `eval`
    size = os.environ.get("WORLD_SIZE", "")
    # a malformed WORLD_SIZE is `train`'s to name (`launch_world`); the others never read it
    if ctx.info_name in LAUNCHED_COMMANDS or not (size.isascii() and size.isdigit()):
        return
    if int(size) > 1:
        raise UsageError(
            f"WORLD_SIZE={size}: `cg3d {ctx.info_name}` runs as one process; only `cg3d train`"
            " runs under a launcher (torchrun, a job script). Run it once, without the launcher"
            " (or unset WORLD_SIZE)"
        )


class _Group(_NoBoolType, TyperGroup):
    """The `cg3d` group: click's usage errors (an unknown option, a value of the wrong type,
    a missing option) leave as our `UsageError`, printed by `main` as every other error: one
    escaped line. typer drew them as a boxed panel wrapped to the terminal's width, which split
    a long path or option over lines (COLUMNS=30, an 80-column log)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:  # click's Context
        with _usage_errors_as_ours():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:  # a subcommand's own parsing runs in here
        with _usage_errors_as_ours():
            return super().invoke(ctx)


@contextmanager
def _usage_errors_as_ours() -> Iterator[None]:
    try:
        yield
    except TyperException as error:  # typer's own click: its UsageError exits with 2
        if error.exit_code != 2 or type(error).__name__ == "NoArgsIsHelpError":
            raise  # `cg3d` alone: the help was shown
        ctx = getattr(error, "ctx", None)
        where = ctx.command_path if ctx is not None else "cg3d"
        raise UsageError(f"{where}: {error.format_message()} (`{where} --help`)") from None


app = typer.Typer(
    cls=_Group,
    name="cg3d",
    help="CLIP goes 3D: meshes → points, views, captions → shards → a CLIP-aligned 3D encoder → metrics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    from cg3d.app import commands as app_commands
    from cg3d.eval import commands as eval_commands
    from cg3d.models import commands as model_commands
    from cg3d.models import convert as convert_commands
    from cg3d.pipeline import commands as pipeline_commands
    from cg3d.render import commands as render_commands
    from cg3d.train import commands as train_commands

    modules = (pipeline_commands, render_commands, train_commands, eval_commands, model_commands)
    modules += (convert_commands, app_commands)
    for module in modules:
        module.register(app)


def _use_command_classes(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = _Command
        if sys.flags.optimize >= 2 and info.help is None and info.callback is not None:
            info.help = source_docstring(info.callback)
    for group in typer_app.registered_groups:
        group.typer_instance.info.cls = group.typer_instance.info.cls or _Group
        _use_command_classes(group.typer_instance)


def source_docstring(function: Any) -> str | None:
    """`function`'s docstring as its source file has it. `python -OO` strips `__doc__`, from
    which typer takes a command's summary in `cg3d --help` and its description in `cg3d CMD
    --help`: every command was listed with none. None where there is no source to read (an
    install of .pyc files only) or no docstring in it."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    return ast.get_docstring(node)


_register_all()
_use_command_classes(app)


def _stderr() -> Console:
    return terminal.console(stderr=True, highlight=False, soft_wrap=True)


def _labelled_line(label: str, style: str, message: str) -> None:
    """`LABEL MESSAGE` on stderr in one write: the ranks of a torchrun share its stderr, and a
    label printed apart from its message interleaved with the other rank's line ("error:
    error: terminated (SIGTERM)" then "terminated (SIGTERM)")."""
    _stderr().print(Text.assemble((label, style), " ", printable(message)))


def _process_rank() -> tuple[int, int]:
    """(rank, world size) of this process once it joined a torchrun run's group, else (0, 1):
    `cg3d.train.distributed.world`, asked of torch.distributed only where it is imported
    already, and without importing that module (it imports the model's code): an error line
    of `cg3d pack` imports nothing, and cannot fail on an absent open_clip."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _rank_label(label: str) -> str:
    """`label` ("error:", "warning:") naming this process's rank when the run has several:
    the ranks share one log, and a line one rank alone says (a shard only it reads) did not
    say whose it was."""
    rank, size = _process_rank()
    return f"rank {rank}: {label}" if size > 1 else label


class _OneLineWarnings:
    """`warnings.showwarning` for the command line: one `warning:` line per message, no file,
    line number or source line; the random CLIP's warning once per command, however many
    models a command builds (its two messages say the same thing). A library's own warnings
    are left out unless the user asks for them (`python -W default`, `PYTHONWARNINGS`)."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def __call__(self, message: Any, category: type, filename: str, *more: Any) -> None:
        if not (sys.warnoptions or _is_ours(filename)):
            return
        key = category.__name__ if category.__name__ == "RandomClipWarning" else str(message)
        if key in self.shown:
            return
        self.shown.add(key)
        # one about the config every rank meets alike: rank 0 speaks for the run
        if issubclass(category, ConfigWarning):
            if _process_rank()[0] == 0:
                _labelled_line("warning:", "bold yellow", str(message))
            return
        _labelled_line(_rank_label("warning:"), "bold yellow", str(message))


def _is_ours(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(PACKAGE_DIR)


def _ours(record: logging.LogRecord) -> bool:
    # Libraries log to the root logger in their own words: open_clip's "No pretrained weights
    # loaded" or "Failed to download weights", which the RandomClipWarning says in ours.
    return record.name.startswith("cg3d") or record.levelno >= logging.CRITICAL


class _PrintableFormatter(logging.Formatter):
    """A log line as one line: what it quotes (a path, a failure reason a file held) keeps no
    raw control character, as the error and warnings.warn lines."""

    def format(self, record: logging.LogRecord) -> str:
        # a log line is one process's own (a shard it skips): it names the rank, as warnings
        line = printable(super().format(record))
        return line.replace("warning:", _rank_label("warning:"), 1)


def quiet_warnings() -> logging.Handler:
    """Warnings and log lines as one clear line each, none from inside libraries; returns the
    root logger's new handler (`main` removes it when it returns)."""
    warnings.showwarning = _OneLineWarnings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("warning: %(message)s"))
    handler.addFilter(_ours)
    root = logging.getLogger()
    root.addHandler(handler)  # a library's later logging.basicConfig() is then a no-op
    root.setLevel(logging.WARNING)
    return handler


class _ReaderMayLeave:
    """stdout or stderr, whose failed writes never end the work. A reader that left (`| head
    -1`, a pager quit) took what it wanted: the rest goes to /dev/null and the work goes on. A
    stage's progress line into a closed pipe ended a stage hours in (exit 1, its chunks to
    redo) where, printing nothing until its end, it had finished. stderr too: with `2>&1 | head
    -1` both are the reader's pipe, and the stage's first warning ended it there (exit 1).

    A log that cannot be written (`> /dev/full`, a full or read-only disk, an I/O error behind
    the redirection) likewise: its progress line ended a stage mid-way, its output folder
    half-written, so that whether a stage's files were made depended on its log. Its first
    failure is kept in `failed`: `main` reports it when the work is done.

    A thin proxy around the stream it is given (everything but write and flush is the
    stream's own): the stream stays whole, so a caller that holds it (pytest -s, an
    in-process `main()`) still writes to it after `main` returns and puts it back.

    A non-blocking descriptor (a CI parent's pipe with O_NONBLOCK, shared with us) refuses a
    write with EAGAIN while its slow reader lags: the log lost its rest there, dropped as a
    failed one. Into such a descriptor each write goes straight to it, waiting until it can
    take more (`_write_waiting`)."""

    def __init__(self, stream: io.TextIOWrapper) -> None:
        self.stream = stream
        self.failed: OSError | None = None  # the first failed write, a reader's leaving aside
        self.dropped = False
        self.nonblocking = _nonblocking_descriptor(stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        if self.dropped:
            return len(text)
        try:
            if self.nonblocking is None:
                return self.stream.write(text)
            return self._write_waiting(text, self.nonblocking)
        except OSError as error:
            self._drop_the_rest(error)
            return len(text)

    def flush(self) -> None:
        if self.dropped:
            return
        try:
            while True:
                try:
                    self.stream.flush()  # a BufferedWriter keeps what EAGAIN refused
                    return
                except BlockingIOError:
                    _wait_writable(self.stream.fileno())
        except OSError as error:
            self._drop_the_rest(error)

    def _write_waiting(self, text: str, descriptor: int) -> int:
        """`text` written whole to the non-blocking `descriptor`, past the stream's buffers:
        where EAGAIN came from inside them, which of their bytes had gone is unknown. What
        they still held goes first; encoding as the stream does (a UnicodeEncodeError before
        any byte)."""
        data = memoryview(text.encode(self.stream.encoding, self.stream.errors or "strict"))
        self.flush()
        while data:
            try:
                data = data[os.write(descriptor, data) :]
            except BlockingIOError:
                _wait_writable(descriptor)
        return len(text)

    def _drop_the_rest(self, error: OSError) -> None:
        if not isinstance(error, BrokenPipeError):
            self.failed = error
        self.dropped = True
        try:
            descriptor = self.stream.fileno()
        except (OSError, ValueError):  # no descriptor (an in-process caller's stream): theirs
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, descriptor)  # the bytes still buffered go there too
        finally:
            os.close(devnull)
        with suppress(OSError):  # devnull takes anything: only a stream gone odd refuses
            self.stream.flush()


def _nonblocking_descriptor(stream: io.TextIOWrapper) -> int | None:
    """The descriptor behind `stream` when it is set O_NONBLOCK, else None (an in-process
    caller's stream without one included)."""
    try:
        descriptor = stream.fileno()
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return descriptor if flags & os.O_NONBLOCK else None


def _wait_writable(descriptor: int) -> None:
    """Until `descriptor` takes more (its reader read some) or has gone (then the write says
    which: EPIPE)."""
    poll = select.poll()
    poll.register(descriptor, select.POLLOUT)
    poll.poll()


class _OutputStream(_ReaderMayLeave):
    """stdout. A character its encoding cannot write (PYTHONIOENCODING=ascii, a latin-1
    locale) is shown escaped (`\\u2026`), as Python's stderr does: an id list's `…` or a class
    name's `é` was a UnicodeEncodeError traceback mid-output. Escaped here, not by
    reconfiguring the stream: the caller's stream (an in-process `main`) is left as it was."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except UnicodeEncodeError:  # raised before any byte is written: whole text again
            encoding = self.stream.encoding
            super().write(text.encode(encoding, "backslashreplace").decode(encoding))
            return len(text)


def _standard_descriptors_opened() -> None:
    """A closed stdin, stdout or stderr (`>&-`, `2>&-`, a daemon's or a scheduler's spawn) made
    /dev/null: the first file the command opened took its number, and what a library's C code,
    or a child process inheriting it, wrote to "stdout" or "stderr" went into that output
    file. Python itself then has no such stream (`sys.stdout` is None) and prints nothing."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if devnull != descriptor:
                os.dup2(devnull, descriptor)
                os.close(devnull)
            os.set_inheritable(descriptor, True)  # os.open's are not: a child had none


def _streams_wrapped() -> None:
    """Put stdout in an `_OutputStream` and stderr in a `_ReaderMayLeave`; a stream that is
    no plain TextIOWrapper (a test's capture, a proxy of an earlier `main`) is left as it is.
    Before `quiet_warnings`, whose log handler keeps the stderr it is given."""
    if type(sys.stdout) is io.TextIOWrapper:
        sys.stdout = _OutputStream(sys.stdout)
    if type(sys.stderr) is io.TextIOWrapper:
        sys.stderr = _ReaderMayLeave(sys.stderr)


def _streams_flushed() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _ReaderMayLeave):
            stream.flush()


def _output_flushed() -> None:
    """What is still buffered goes out (or, a reader gone, to /dev/null) here, not at the
    interpreter's exit, which would report a closed pipe as "Exception ignored" and exit 120.
    A command whose work is done but whose stdout could not be written exits 2, saying so on
    stderr: stdout held its result (`inspect`, `search`) or its log, which the user lost."""
    _streams_flushed()
    if isinstance(sys.stdout, _ReaderMayLeave) and sys.stdout.failed is not None:
        _refused(_stdout_failed_line(sys.stdout.failed))


def _interrupted(signum: int) -> None:
    # a rank torchrun stopped because another failed names itself: "error: terminated
    # (SIGTERM)" read as the run's cause
    _labelled_line(_rank_label("error:"), "bold red", stopped_words(signum))
    sys.exit(128 + signum)


def main(whole_process: bool = False) -> None:
    """Entry point: user errors, and what the user's or the machine's condition refused (an
    OSError naming its file, or whose errno is such a condition: a full disk, a read-only
    folder, a permission, a network that does not answer, `files.is_condition`; a name that is
    not UTF-8) become one line on stderr and exit code 2; Ctrl-C one line and exit code 130,
    SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGXCPU (a soft `ulimit -t`) one line and exit codes
    143, 129, 138, 140 and 152 (`cg3d.stopping`). Any other
    OSError is a bug and keeps its traceback. A stdout or stderr that cannot be written never
    ends the work; a stdout that could not be written is exit 2 once the work is done (the
    README's exit codes).

    `whole_process`: the command is this process (`cg3d`, `python -m cg3d`), whose stop
    handling stays until the interpreter's exit handlers (a pool's workers joined) have run.
    Else main puts the caller's signal handlers back when it returns (`_stop_signals_handled`).
    """
    with _process_changed():
        try:
            _run(whole_process)
        except SystemExit as stop:
            if stop.code in (0, None):  # else its own line said why, a failed stdout aside
                _output_flushed()
            raise
        _output_flushed()


def _run(whole_process: bool) -> None:
    """`main`'s work, inside the wrapped streams."""
    with _stop_signals_handled(whole_process) as interrupt:
        try:
            _run_app(interrupt)
        except SystemExit as stop:
            # A failed command is stopping already, its line said: a stop signal during its
            # cleanup (the exit handlers joining its pool's workers) is a second one, ignored
            # (a third still ends it at once). torchrun's SIGTERM to a rank whose peer had
            # failed raised KeyboardInterrupt there: "Exception ignored in atexit callback"
            # and a traceback after the rank's one line.
            if stop.code not in (0, None):
                interrupt.count = max(interrupt.count, 1)
            raise


# What `main` changes of the whole process (its streams, warnings, log handler and thread
# settings) it puts back when it returns, for a caller that runs it in-process (tests, a
# notebook): each call added a root log handler (every warning printed once per earlier call)
# and left its showwarning in place. Calls running at once (a service's threads) share the
# changes: the first makes them and the last undoes them. Each undid what it had found, so
# the second of two left its proxies of the first's streams, and its showwarning, for good.
_changes_lock = threading.Lock()
_changes_users = 0
_changes_undo: ExitStack | None = None


@contextmanager
def _process_changed() -> Iterator[None]:
    global _changes_users, _changes_undo
    with _changes_lock:
        if _changes_users == 0:
            _changes_undo = _process_changes_made()
        _changes_users += 1
    try:
        yield
    finally:
        try:
            _streams_flushed()
        finally:
            with _changes_lock:
                _changes_users -= 1
                if _changes_users == 0 and _changes_undo is not None:
                    _changes_undo.close()


def _process_changes_made() -> ExitStack:
    """Make `main`'s changes to the process; closing the stack returned undoes them. A change
    that fails (a Ctrl-C as a notebook's cell starts, a cgroup file that cannot be read) undoes
    those made before it: they stayed for good, as no call was counted to undo them."""
    from cg3d.params import (
        cpu_count,
        drop_bad_thread_variables,
        open_files_raised,
        threads_limited,
    )

    with ExitStack() as undo:
        root = logging.getLogger()
        undo.callback(setattr, warnings, "showwarning", warnings.showwarning)
        undo.callback(root.setLevel, root.level)
        undo.callback(setattr, sys, "stderr", sys.stderr)
        undo.callback(setattr, sys, "stdout", sys.stdout)
        _standard_descriptors_opened()
        _streams_wrapped()
        undo.callback(root.removeHandler, quiet_warnings())
        terminal.drop_zero_sizes()  # before any console reads them
        # before torch or numpy load, as the next; logged, not warned: `-W error` would make
        # it a traceback here, outside the command's error handling
        for variable in drop_bad_thread_variables():
            logging.getLogger("cg3d").warning("%s is not a number of threads: ignored", variable)
        # a CPU quota (a container's): before torch or numpy load
        undo.enter_context(threads_limited(cpu_count()))
        undo.enter_context(open_files_raised())  # a node's low soft `ulimit -n`
        return undo.pop_all()


@contextmanager
def _stop_signals_handled(for_good: bool) -> Iterator[Interrupt]:
    """The stop signals handled by an `Interrupt` for the block (in the main thread, where
    Python runs handlers), then the caller's handlers again: an in-process `main()` left its
    handler for good, so the caller's next Ctrl-C after one had stopped a command was ignored
    and its third ended the process, and SIGTERM raised KeyboardInterrupt in a caller that
    expected to die of it (a service under systemd, a notebook's kernel). `for_good`: kept."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    if for_good:
        yield interrupt.install(COMMAND_STOP_SIGNALS)
        return
    handlers = {signum: signal.getsignal(signum) for signum in COMMAND_STOP_SIGNALS}
    interrupt.install(COMMAND_STOP_SIGNALS)
    try:
        yield interrupt
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: one set outside Python, which cannot be put back
                signal.signal(signum, handler)


def _run_app(interrupt: Interrupt) -> None:
    """The command, with its errors made one line (`main`)."""
    from cg3d.files import is_condition, not_utf8_line, os_error_line

    try:
        app()
    except KeyboardInterrupt:  # one typer did not see (raised outside its command)
        _interrupted(interrupt.signum)
    except SystemExit as stop:
        # typer's silent exit 130 for a KeyboardInterrupt; a command that stops on Ctrl-C by
        # design (the demo's server) exits as it chose, but not on SIGTERM or SIGHUP: a
        # supervisor (systemd, SLURM) reads 143 as "stopped as asked", 0 as "it ended"
        if interrupt.count and (stop.code == 130 or interrupt.signum != signal.SIGINT):
            _interrupted(interrupt.signum)
        raise
    except Warning as warning:  # one the user's filter made an error (`-W error`)
        _refused(f"{warning} ({warning_made_error_words(warning)})")
    except (UsageError, OSError, UnicodeEncodeError, ImportError, RuntimeError) as error:
        if isinstance(error, RuntimeError):  # a loader worker's death, raised mid-step
            message = loader_worker_died(error) or resource_limit_line(error)
            if message is None and _peer_ended(error):
                _labelled_line(_rank_label("error:"), "bold red", PEER_ENDED_LINE)
                sys.exit(2)  # not told to torchrun: the peer's own cause is the run's
            if message is None:
                raise
        elif isinstance(
            error, ImportError
        ):  # a command's own import (torch, bpy): absent or broken
            message = missing_dependency_line(error)
            if message is None:
                raise
        elif isinstance(error, UnicodeEncodeError):  # a name that is not UTF-8, else a bug
            message = not_utf8_line(error)
            if message is None:
                raise
        elif isinstance(error, OSError) and (line := resource_limit_line(error)) is not None:
            message = line  # a limit of the node's (`ulimit -n`, `-u`): the remedy named
        elif isinstance(error, OSError) and not is_condition(error):
            raise
        else:
            message = os_error_line(error) if isinstance(error, OSError) else str(error)
        _refused(message)


def warning_made_error_words(warning: Warning) -> str:
    """Why a warning stopped the command: the warnings filter the user set (PYTHONWARNINGS=error,
    `python -W error`) raises it, and the command's traceback (exit 1) read as a bug."""
    given = ",".join(sys.warnoptions)
    source = f" {given!r} (PYTHONWARNINGS, python -W)" if given else ""
    return f"a {type(warning).__name__} made an error by the warnings filter{source}"


def _refused(message: str) -> None:
    """`error: MESSAGE` on stderr, exit code 2; under torchrun, `rank N: error: MESSAGE`, also
    told to torchrun (`_tell_launcher`)."""
    label = _rank_label("error:")
    _labelled_line(label, "bold red", message)
    _tell_launcher(f"{label} {printable(message)}")
    sys.exit(2)


# What a collective raises in the ranks left when another rank of the run ends: gloo's words,
# and NCCL's for ncclRemoteError
PEER_ENDED_WORDS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "remote process exited",
)
PEER_ENDED_LINE = "another process of this run ended (its own line says why); this one stops too"


def _peer_ended(error: RuntimeError) -> bool:
    """Whether `error` is a collective's, raised because another rank of the run ended (a
    user error or a crash of its own): it was a traceback ("[rank0]: RuntimeError: [.../gloo/
    transport/tcp/pair.cc:561] Connection closed by peer ...") among, or after, the line that
    said the cause."""
    return _process_rank()[1] > 1 and any(words in str(error) for words in PEER_ENDED_WORDS)


def _tell_launcher(line: str) -> None:
    """`line` as this process's failure in torchrun's closing summary, its last lines: the
    file torchrun names in TORCHELASTIC_ERROR_FILE, in the form torch's `@record` writes. The
    summary said only "exitcode: 2 ... To enable traceback see: https://pytorch.org/...", and
    the rank's one-line cause was lost above the other ranks' lines and torchrun's traceback."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    with suppress(OSError):  # the summary only: the line is on stderr already
        # `@record`'s form: torchrun quotes "py_callstack" and sets the exit code in its copy.
        # The stamp is no duration: torchrun compares it with its own wall-clock stamps to name
        # the first failure (the root cause)
        stamp = str(calendar.timegm(time.gmtime()))
        said = {"message": line, "extraInfo": {"py_callstack": line, "timestamp": stamp}}
        Path(path).write_text(json.dumps({"message": said}))


def _stdout_failed_line(error: OSError) -> str:
    from cg3d.files import os_error_line

    return f"writing the output stream (stdout) failed: {os_error_line(error)}"
