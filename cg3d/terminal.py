"""The one kind of console CG3D prints through. What it prints quotes what a user typed or a
file held (paths, ids, class names, failure reasons), so every string it renders, in a line or
a table cell, is shown escaped (`errors.printable`) and is never read as markup or emoji codes:
a site that forgets to escape cannot recolour, move or retitle the terminal."""

import os
import threading
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import Progress, Task, TaskID
from rich.text import Text

from cg3d.errors import printable

LOG_WIDTH = 80  # the least width of a table written to a file or a pipe


class EscapingConsole(Console):
    """A rich Console whose every string is escaped before it is rendered."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)


def is_a_tty(stream: Any) -> bool:
    """Whether `stream` is a terminal (not a file or a pipe), whatever the environment says."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def drop_zero_sizes() -> None:
    """Remove COLUMNS and LINES from this process's environment where they say 0 (an editor's
    shell, a CI's runner set COLUMNS=0): rich took 0 for the width, and `cg3d --help` printed
    nothing, nor `cg3d inspect` on a terminal. Without them rich asks the terminal, or takes
    80 columns; other values that are no number rich ignores already."""
    for name in ("COLUMNS", "LINES"):
        value = os.environ.get(name, "")
        if value.isascii() and value.isdigit() and int(value) == 0:
            del os.environ[name]


def redraw_only_on_a_tty(made: Console) -> None:
    """No bar redrawn in place into a file or a pipe, whatever the environment says. FORCE_COLOR
    (or TTY_COMPATIBLE=1) set by a CI or a shell's profile asks for colours, but rich then
    redrew its bars into the log too: a carriage return a frame, and none of the plain lines
    a log gets (`LoggedProgress`). A caller's force_terminal, or TTY_INTERACTIVE=1, still can."""
    forced = made._force_terminal is not None or made._environ.get("TTY_INTERACTIVE") == "1"
    if not (forced or is_a_tty(made.file)):
        made.is_interactive = False


def console(*, stderr: bool = False, **options: Any) -> Console:
    """An escaping console on stdout (or stderr), without markup or emoji codes (a style is given
    as a rich Text: `cli._labelled_line`); `options` are rich's.

    Its lines are soft-wrapped: printed as written, one line however long, as a terminal
    wraps them (a table still fits the width). rich would break them at the width, 80
    columns in a log file, which split a summary line and the path it names over lines."""
    defaults = {"markup": False, "emoji": False, "soft_wrap": True}
    made = EscapingConsole(stderr=stderr, **{**defaults, **options})
    if "force_interactive" not in options:
        redraw_only_on_a_tty(made)
    if "width" not in options and not made.is_terminal and made.width < LOG_WIDTH:
        # a log file has no width: COLUMNS there is the submitting shell's (a narrow pane, a
        # CI's 10), at which inspect's tables showed `…` for every id and class name
        made.width = LOG_WIDTH
    return made


def say(line: str) -> None:
    """A command's summary on stdout, as written and soft-wrapped (a long path stays one line);
    stderr is for what went wrong."""
    console(soft_wrap=True).print(line)


class LoggedProgress(Progress):
    """rich's Progress, which redraws its bar on a terminal but writes nothing to a log file
    (no terminal: a batch job's output; nor on a TERM=dumb one) until it stops, and nothing at
    all when transient (zero-shot, retrieval): a stage of hours showed no sign of life. There
    it writes one plain line at each tenth of the total, no carriage returns, and while a
    tenth takes longer than `heartbeat_s` one line each `heartbeat_s` (a render's chunk of
    1000 objects, an epoch of hours: the log was silent for an hour between its tenths, as
    if the job hung), saying the time elapsed."""

    heartbeat_s = 60.0

    def start(self) -> None:
        redraw_only_on_a_tty(self.console)  # rich's own console where none was given
        super().start()
        self._beating = threading.Event()
        if self._logs():  # a thread, as rich's own redraws: a chunk finishes nothing for minutes
            self._heart = threading.Thread(target=self._beat, name="progress-log", daemon=True)
            self._heart.start()

    def stop(self) -> None:
        beating = getattr(self, "_beating", None)
        if beating is not None and not beating.is_set():
            beating.set()
            if getattr(self, "_heart", None) is not None:
                self._heart.join()
        super().stop()

    def update(self, task_id: TaskID, **fields: Any) -> None:
        super().update(task_id, **fields)
        if self._logs():
            self._log_tenth(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _logs(self) -> bool:
        """Whether the bar is not redrawn in place: a file, a pipe, a dumb terminal."""
        return not self.console.is_interactive

    def _beat(self) -> None:
        while not self._beating.wait(self.heartbeat_s / 6):
            self._log_the_silent()

    def _log_the_silent(self) -> None:
        """A line for each running task whose last line is `heartbeat_s` old or more."""
        now = self.get_time()
        for task in self.tasks:
            last = task.fields.get("logged_at", task.start_time)  # None: not started
            if last is not None and not task.finished and now - last >= self.heartbeat_s:
                self._log_line(task, beat=True)

    def _log_tenth(self, task_id: TaskID) -> None:
        task = next(task for task in self.tasks if task.id == task_id)
        if not task.total:
            return
        tenth = min(int(10 * task.completed / task.total), 10)
        if tenth > task.fields.get("logged_tenth", 0) and task.completed < task.total:
            task.fields["logged_tenth"] = tenth  # the finished bar is printed on stop
            self._log_line(task)

    def _log_line(self, task: Task, beat: bool = False) -> None:
        task.fields["logged_at"] = self.get_time()
        done = f"{task.completed:g}/{task.total:g}" if task.total else f"{task.completed:g}"
        if task.total:  # the share done, not the tenth passed: 1 of 3 objects is 33 %, not 30 %
            done += f" ({int(100 * task.completed / task.total)}%)"
        elapsed = f"still working, {timedelta(seconds=int(task.elapsed or 0))} elapsed"
        parts = (f"{task.description}: {done}", task.fields.get("rate", ""), beat and elapsed)
        line = " ".join(part for part in parts if part)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
