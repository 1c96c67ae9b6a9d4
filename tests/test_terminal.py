"""Everything CG3D prints goes through one escaping console (cg3d/terminal.py): a path, id,
class name or failure reason holding ESC or a newline is shown escaped wherever it is printed,
in a line or a table cell, without every call site having to remember to escape it."""

import ast
import io
from pathlib import Path

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
