"""What a user typed or a file held, printed back by a command, is shown as written: never read
as rich markup or emoji codes (a path `o[/]` was a MarkupError traceback after the meshes stage
had done its work; a label `[bold]lamp` lost its brackets), and an error line never carries a
raw control character (an ANSI sequence recoloured or retitled the terminal, a newline split
the one line in two)."""

import numpy as np

from tests.app.command_line import cg3d
from tests.eval.files import cube


def test_a_stage_summary_prints_its_out_folder_as_written(tmp_path):
    out = tmp_path / "o[/]:train:[bold]"
    run = cg3d("meshes", "--out", out, "--per-class", "1", "--workers", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    # one line, however long the path (rich wrapped it at 80 columns into a pipe)
    summary = run.stdout.splitlines()[-1]
    assert summary.startswith("10 objects from synthetic in 10 classes into ")
    assert summary.endswith(
        f"into {out}: ok 10; failed 0 (1 of 1 chunks validated, the rest already done)"
    )


def test_labels_that_look_like_markup_are_shown_as_typed(tmp_path, tiny_checkpoint):
    np.save(tmp_path / "shape.npy", cube(200, np.random.default_rng(0)).astype(np.float32))
    labels = ["[/]", "[bold]lamp", ":train:"]
    run = cg3d(
        "classify",
        "shape.npy",
        "--checkpoint",
        tiny_checkpoint,
        "--labels",
        ",".join(labels),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    shown = {line.split("│")[2].strip() for line in run.stdout.splitlines() if "│" in line}
    assert shown == set(labels)  # the header row is drawn with ┃


def test_an_error_quoting_control_characters_is_one_line_with_them_escaped(tmp_path):
    hostile = "\x1b]0;retitled\x07\x1b[31mred\nsecond line\r\x00"
    run = cg3d("sample", "--meshes", hostile.replace("\x00", ""), "--out", "o", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == (
        "error: no manifest at \\x1b]0;retitled\\x07\\x1b[31mred\\nsecond line\\r/manifest.parquet:"
        " run `cg3d meshes` first\n"
    )
    (tmp_path / "params.yaml").write_text('sample:\n  executor: "lo\\e[2Jcal\\nx"\n')
    run = cg3d("sample", "--meshes", ".", "--out", "o", "--params", "params.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "\x1b" not in run.stderr
    assert "'lo\\x1b[2Jcal\\nx'" in run.stderr
