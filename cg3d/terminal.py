"""The one kind of console CG3D prints through. What it prints quotes what a user typed or a
file held (paths, ids, class names, failure reasons), so every string it renders, in a line or
a table cell, is shown escaped (`errors.printable`) and is never read as markup or emoji codes:
a site that forgets to escape cannot recolour, move or retitle the terminal."""

from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.text import Text

from cg3d.errors import printable


class EscapingConsole(Console):
    """A rich Console whose every string is escaped before it is rendered."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)


def console(*, stderr: bool = False, **options: Any) -> Console:
    """An escaping console on stdout (or stderr), without markup or emoji codes unless a call
    asks for them (`print("[bold red]error:[/]", markup=True)`); `options` are rich's.

    Its lines are soft-wrapped: printed as written, one line however long, as a terminal
    wraps them (a table still fits the width). rich would break them at the width, 80
    columns in a log file, which split a summary line and the path it names over lines."""
    defaults = {"markup": False, "emoji": False, "soft_wrap": True}
    return EscapingConsole(stderr=stderr, **{**defaults, **options})


def say(line: str) -> None:
    """A command's summary on stdout, as written and soft-wrapped (a long path stays one line);
    stderr is for what went wrong."""
    console(soft_wrap=True).print(line)


class LoggedProgress(Progress):
    """rich's Progress, which redraws its bar on a terminal but writes nothing to a log file
    (no terminal: a batch job's output) until it stops, and nothing at all when transient
    (zero-shot, retrieval): a stage of hours showed no sign of life. There it writes one
    plain line at each tenth of the total, no carriage returns."""

    def update(self, task_id: TaskID, **fields: Any) -> None:
        super().update(task_id, **fields)
        if not self.console.is_terminal:
            self._log_tenth(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _log_tenth(self, task_id: TaskID) -> None:
        task = next(task for task in self.tasks if task.id == task_id)
        if not task.total:
            return
        tenth = min(int(10 * task.completed / task.total), 10)
        if tenth > task.fields.get("logged_tenth", 0) and task.completed < task.total:
            task.fields["logged_tenth"] = tenth  # the finished bar is printed on stop
            # the share done, not the tenth passed: 1 of 3 objects is 33 %, not 30 %
            percent = int(100 * task.completed / task.total)
            rate = task.fields.get("rate", "")
            line = f"{task.description}: {task.completed:g}/{task.total:g} ({percent}%) {rate}"
            self.console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)
