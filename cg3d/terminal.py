"""The one kind of console CG3D prints through. What it prints quotes what a user typed or a
file held (paths, ids, class names, failure reasons), so every string it renders, in a line or
a table cell, is shown escaped (`errors.printable`) and is never read as markup or emoji codes:
a site that forgets to escape cannot recolour, move or retitle the terminal."""

from typing import Any

from rich.console import Console
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
