"""What researchers open and paste: the CSVs (spreadsheets, pandas), results.md (papers, GitHub)
and the demo's Markdown, with names from users' folders (class, model, file names) that hold
table syntax, formulas, HTML, LaTeX, RTL text, or bytes that are not UTF-8."""

import csv
import html
import re
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt

from cg3d.app.batch import write_table
from cg3d.eval.audit import write_outputs
from cg3d.eval.benchmark import markdown_table
from cg3d.eval.results import write_rows
from cg3d.files import write_json
from cg3d.formats.tables import read_csv
from cg3d.pipeline.inspect import benchmark_pairs

NAMES = [
    "a|b",
    "two\nlines",
    "tab\there",
    "com,ma",
    'q"uote',
    "back`tick",
    "<b>bold</b>",
    "<img src=x onerror=alert(1)>",
    "back\\slash",
    "_ % & # $",
    '=HYPERLINK("http://x","y")',
    "+SUM(A1:A2)",
    "-2+3",
    "@cmd",
    "'quoted",
    "'=already",
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew, right to left
    "e\u0301",  # a combining accent
    "x" * 300,
]
FORMULA = re.compile(r"^[=+\-@\t\r]")


def raw_cells(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def per_class(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "per_class.csv"
    write_rows(path, [{"class": name, "shapes": 1, "top1": 50.0} for name in names])
    return path


def audit_pairs(tmp_path: Path, names: list[str]) -> Path:
    pairs = [{"train_key": n, "test_key": "t", "kind": "same_file", "distance": 0.0} for n in names]
    write_outputs(tmp_path, {"pairs": len(pairs)}, pairs)
    return tmp_path / "pairs.csv"


def classify_table(tmp_path: Path, names: list[str]) -> Path:
    rows = [{"class": name, "status": "ok", "error": ""} for name in names]
    return write_table(rows, tmp_path / "labels.csv")


@pytest.mark.parametrize("write", [per_class, audit_pairs, classify_table])
def test_no_cell_is_a_spreadsheet_formula_and_every_name_reads_back(tmp_path, write):
    path = write(tmp_path, NAMES)
    column = "train_key" if path.name == "pairs.csv" else "class"
    written = raw_cells(path, column)
    # a class folder named =HYPERLINK(...) ran as a formula when per_class.csv was opened
    assert [cell for cell in written if FORMULA.match(cell)] == []
    assert written[NAMES.index('=HYPERLINK("http://x","y")')].startswith("'=HYPERLINK(")
    # a text that runs nothing is as it was (an error quoting a path: '/data/x.obj' is ...)
    assert written[NAMES.index("'quoted")] == "'quoted"
    # every name (a comma, a quote, a newline inside) reads back exactly as it was
    header, rows = read_csv(path)
    assert column in header
    assert [row[column] for row in rows] == NAMES


def test_numbers_are_written_as_numbers_and_a_name_not_utf_8_is_no_crash(tmp_path):
    path = tmp_path / "per_class.csv"
    values = [float("nan"), float("inf"), 1e-320, -0.0, -0.5]
    write_rows(path, [{"class": "\udcff", "top1": v} for v in values])  # was UnicodeEncodeError
    assert raw_cells(path, "top1") == ["", "", "1e-320", "-0.0", "-0.5"]
    assert raw_cells(path, "class") == ["\\udcff"] * 5


def test_inspect_reads_a_benchmark_table_as_written(tmp_path):
    rows = [{"model": name, "dataset": "mn40", "acc1": 48.7, "status": "done"} for name in NAMES]
    write_rows(tmp_path / "results.csv", rows)
    lines = benchmark_pairs(tmp_path / "results.csv")
    assert lines[NAMES.index("-2+3")] == "-2+3 on mn40: top-1 48.7 %, done"
    assert lines[NAMES.index("'quoted")].startswith("'quoted on mn40")


def rendered_cells(markdown: str) -> list[list[str]]:
    """The table's body cells as a GitHub-flavoured renderer shows them (text, entities read)."""
    page = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    assert "<img" not in page and "<b>" not in page  # no HTML of the names reached the page
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1], re.S)
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)] for row in rows]


def test_results_md_keeps_one_row_per_pair_whatever_the_names(tmp_path):
    keys = ["model", "dataset", "protocol", "acc1", "published_acc1", "difference", "acc5"]
    keys += ["mean_per_class_recall", "shapes", "skipped", "status"]
    names = [*NAMES, "- x", "1. x", "*b*", "~~s~~", "&lt;b&gt;", "[l](javascript:x)"]
    rows = [{key: "" for key in keys} | {"model": n, "dataset": n, "acc1": 48.7} for n in names]
    rows[0]["difference"] = -1.3
    cells = rendered_cells(markdown_table(rows))
    # a `|` or a newline in a model's name split its row (a newline: two broken rows)
    assert len(cells) == len(names) and {len(row) for row in cells} == {11}
    expected = [name.replace("\n", "\\n").replace("\t", "\\t") for name in names]
    assert [row[0] for row in cells] == expected
    assert [row[1] for row in cells] == expected
    assert {row[3] for row in cells} == {"48.7"} and cells[0][5] == "-1.3"
    assert "| -1.3 |" in markdown_table(rows)  # a number is written as it is


def test_the_demos_markdown_shows_a_file_name_as_it_is():
    from cg3d.app.demo import markdown_text  # the demo's status lines and title (gradio)

    names = ["<img src=x onerror=alert(1)>.obj", "1. chair.obj", "# big.obj", "a &amp; b.obj"]
    names += ["$x$_1.obj", "two\nlines.obj"]
    for name in names:
        page = MarkdownIt("commonmark").render(f"{markdown_text(name)}: 2048 points.")
        assert page.startswith("<p>") and "<img" not in page, page
        shown = html.unescape(page.removeprefix("<p>").removesuffix("</p>\n"))
        assert shown == name.replace("\n", "\\n") + ": 2048 points."


def test_json_results_keep_non_ascii_names_readable(tmp_path):
    write_json(tmp_path / "about.json", {"classes": ["стул", "椅子", "\u05e9\u05dc\u05d5\u05dd"]})
    text = (tmp_path / "about.json").read_bytes().decode("utf-8")
    assert "стул" in text and "椅子" in text and "\\u" not in text
    # a class-features file's sidecar, its class list read back as written
    from cg3d.formats.textfeatures import read_text_features, sidecar, write_text_features

    features = tmp_path / "tf.npy"
    write_text_features(features, np.ones((2, 4), np.float32), ["стул", "a|b\n"])
    assert "стул" in sidecar(features).read_bytes().decode("utf-8")
    assert read_text_features(features).classes == ["стул", "a|b\n"]


def test_a_labels_file_saved_with_a_byte_order_mark_gives_the_labels_typed(tmp_path):
    # Notepad's and Excel's "UTF-8" begin with U+FEFF, which str.strip() keeps: the first
    # class was "\ufeffchair", a text no one typed, encoded as the first label's prompt
    from cg3d.app.api import read_labels_file

    path = tmp_path / "labels.txt"
    path.write_bytes("chair\r\nlamp\r\n".encode("utf-8-sig"))
    assert read_labels_file(path) == ["chair", "lamp"]
