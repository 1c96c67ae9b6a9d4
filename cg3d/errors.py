"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UsageError(Exception):
    """A wrong parameter, a missing input, or an unusable file, named in the message."""


def printable(text: str) -> str:
    """`text` with every character a terminal acts on shown escaped (`\\x1b`, `\\n`, `\\x00`):
    an error, a warning or a line on stdout (a summary, an inspect table's id, class or reason)
    quotes what the user typed or a file held, and must stay one line that cannot recolour,
    move or retitle the terminal (an ANSI sequence in a path or a failure reason). Ordinary
    text, non-ASCII letters included, is unchanged."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
