"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

import sys


class UsageError(Exception):
    """A wrong parameter, a missing input, or an unusable file, named in the message."""


def printable(text: str) -> str:
    """`text` with every character a terminal acts on shown escaped (`\\x1b`, `\\n`, `\\x00`):
    an error, a warning or a line on stdout (a summary, an inspect table's id, class or reason)
    quotes what the user typed or a file held, and must stay one line that cannot recolour,
    move or retitle the terminal (an ANSI sequence in a path or a failure reason). Ordinary
    text, non-ASCII letters included, is unchanged."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def missing_dependency_line(error: ModuleNotFoundError) -> str | None:
    """The line for a package of the project's install that this Python lacks, else None (a
    module of cg3d's own: a bug or a broken checkout). Every stage of dvc.yaml runs `python -m
    cg3d`: a `dvc` run outside the project's venv runs the `python` on PATH, which imports cg3d
    from the project root and lacked typer or torch, a ModuleNotFoundError traceback."""
    top = (error.name or "").partition(".")[0]
    if not top or top == "cg3d":
        return None
    return (
        f"this Python ({sys.executable}) has no module named {top!r}, which cg3d needs: run it"
        " in the project's environment (`. .venv/bin/activate`, then `dvc repro` or `cg3d`;"
        " README's install)"
    )
