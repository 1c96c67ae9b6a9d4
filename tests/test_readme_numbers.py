"""Issue 26: the README's numbers of the default `dvc repro` are the committed metrics.

The zero-shot and retrieval tables under "CLIP weights and the default numbers" and the
held-out accuracy sentence are read from README.md and compared, each cell rounded as printed
(one decimal), with runs/eval/*/metrics.json and runs/train/metrics.json. After a new
`dvc repro`, rewrite the README's cells from those files.
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTION = README.split("## CLIP weights and the default numbers", 1)[1].split("\n## ", 1)[0]
ZEROSHOT_COLUMNS = {"top-1": "top1", "top-3": "top3", "top-5": "top5", "class-mean": "class_mean"}
DIRECTIONS = {
    "point→text": "point_to_text",
    "text→point": "text_to_point",
    "point→image": "point_to_image",
    "image→point": "image_to_point",
}


def metrics(name: str) -> dict:
    return json.loads((ROOT / "runs" / name / "metrics.json").read_text())


def table(first_header: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the markdown table whose first header cell is given."""
    lines = SECTION.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return block[0], block[2:]  # block[1] is the |---| line


def printed(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def test_the_zero_shot_table_is_the_committed_metrics():
    header, rows = table("zero-shot (64 templates)")
    zeroshot = metrics("eval/zeroshot")
    assert len(rows) == 1
    for column, cell in zip(header[1:], rows[0][1:], strict=True):
        assert cell == printed(zeroshot.get(ZEROSHOT_COLUMNS[column])), column


def test_the_retrieval_table_is_the_committed_metrics():
    header, rows = table("retrieval")
    retrieval = metrics("eval/retrieval")
    assert sorted(row[0] for row in rows) == sorted(DIRECTIONS)
    for row in rows:
        scores = retrieval[DIRECTIONS[row[0]]]
        for column, cell in zip(header[1:], row[1:], strict=True):
            # an R@K at or above the gallery size is not in metrics.json: "—"
            assert cell == printed(scores.get(column)), (row[0], column)


def test_the_held_out_numbers_in_the_text_are_the_committed_metrics():
    zeroshot, train = metrics("eval/zeroshot"), metrics("train")
    shapes = re.search(r"synthetic held-out split \((\d+) shapes, (\d+) classes", SECTION)
    assert shapes and int(shapes[1]) == zeroshot["n_shapes"]
    assert round(100 / int(shapes[2]), 6) == round(train["chance_point_text"], 6)  # in %
    accuracy = re.search(r"held-out point→text accuracy ([\d.]+) %", SECTION)
    assert accuracy and accuracy[1] == printed(train["test_point_text_acc"])
