"""The CSV tables and Markdown cells CG3D writes for people: per_class.csv, predictions.csv,
top_confusions.csv, history.csv, results.csv and results.md, pairs.csv, classify/embed's tables.

Their text cells hold names from users' folders and files (class names, model names, paths,
failure reasons), which a researcher opens in a spreadsheet or pastes into a paper:
- CSV: UTF-8 without a byte-order mark, quoted by Python's csv module (a `,`, `"` or newline
  stays inside its cell); NaN and infinity are an empty cell (`finite_or_none`). A text cell
  that a spreadsheet would run as a formula (it begins with `=`, `+`, `-`, `@`, a tab or a
  carriage return) is written with a `'` before it, as OWASP advises (CSV injection: a class
  folder named `=HYPERLINK(...)` ran in Excel); so is such a text already behind `'`s, so
  `read_csv` gives back exactly what was written. Other text (a path quoted as '/data/x') and
  every number (-0.5) are written as they are.
- Markdown: `markdown_text` shows a name literally, on one line, whatever it holds (`|`, a
  newline, `<img onerror=...>`, backticks, `_ % & # $`).
"""

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from cg3d.errors import printable
from cg3d.files import atomic_path, finite_or_none

# What spreadsheets read as the start of a formula (OWASP's list), after any guards: a text
# matching it is written behind one guard more
FORMULA = re.compile(r"^'*[=+\-@\t\r]")
GUARD = "'"


def guarded(value: object) -> object:
    """A cell as written: a text that a spreadsheet would run (or such a text behind guards of
    its own) behind one guard more; anything else, a number or `'s Gravenhage`, as it is."""
    if isinstance(value, str) and FORMULA.match(value):
        return GUARD + value
    return value


def unguarded(text: str) -> str:
    """A cell as `guarded` took it: one guard fewer where it added one."""
    return text[1:] if text.startswith(GUARD) and FORMULA.match(text) else text


def write_csv(path: Path, rows: list[dict], fieldnames: Iterable[str] | None = None) -> None:
    """`rows` as a CSV, atomically, with a header of `fieldnames` (the first row's keys when
    None). The one CSV writer (see the module docstring). A name that is not UTF-8 (its bad
    bytes as lone surrogates) is written with them as `\\udcXX`, not a crash."""
    names = list(fieldnames) if fieldnames is not None else list(rows[0]) if rows else []
    with (
        atomic_path(path) as tmp,
        tmp.open("w", newline="", encoding="utf-8", errors="backslashreplace") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in finite_or_none(rows):
            writer.writerow({key: guarded(value) for key, value in row.items()})


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV of `write_csv`'s: its header and its rows, each cell as the text written (an
    empty cell is ""). OSError, UnicodeDecodeError or csv.Error when it cannot be read."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        table = csv.DictReader(handle)
        rows = [
            {
                key: unguarded(value) if isinstance(value, str) else value
                for key, value in row.items()
            }
            for row in table
        ]
        return list(table.fieldnames or ()), rows


# What starts Markdown or HTML inside a line: code, emphasis, links, HTML and entities, a table's
# cell border, strike-through and (GitHub's) math. CommonMark lets a backslash escape any ASCII
# punctuation; these alone are escaped, so a raw results.md stays readable (48.7, my-model.pt).
_INLINE = re.compile(r"([\\`*_\[\]<>&|~$])")
# What starts a block at the beginning of a line: a heading, a list item, a rule; an ordered
# item's number ("1. x", not "48.7")
_BLOCK_START = re.compile(r"^(?=[#+\-=])")
_ORDERED_START = re.compile(r"^(\d+)(?=[.)](?:\s|$))")


def markdown_text(text: str) -> str:
    """`text` shown literally by Markdown and on one line (a table cell, the demo's status):
    what a terminal or a table would act on (a newline, a tab) is written escaped (`\\n`,
    `errors.printable`), then the punctuation that starts Markdown syntax is backslash-escaped,
    so `|` stays in its cell, `<img src=x onerror=...>` is text, not HTML, `_`, `*`, `` ` ``,
    `$` and `&` start no emphasis, code, math or entity, and a name beginning `# `, `- ` or
    `1. ` is no heading or list."""
    text = _INLINE.sub(r"\\\1", printable(text))
    return _ORDERED_START.sub(r"\1\\", _BLOCK_START.sub("\\\\", text))
