"""What a user typed or a file held, printed back by a command, is shown as written: never read
as rich markup or emoji codes (a path `o[/]` was a MarkupError traceback after the meshes stage
had done its work; a label `[bold]lamp` lost its brackets), and an error line never carries a
raw control character (an ANSI sequence recoloured or retitled the terminal, a newline split
the one line in two)."""

import subprocess
import sys

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


def test_a_stage_summary_shows_control_characters_in_its_out_folder_escaped(tmp_path):
    """Before: the summary on stdout wrote the path's ESC sequence and newline raw (the error
    lines on stderr were already escaped)."""
    out = tmp_path / "o\x1b]0;retitled\x07\x1b[31mred\nx"
    run = cg3d("meshes", "--out", out, "--per-class", "1", "--workers", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout and "\x07" not in run.stdout
    summary = run.stdout.splitlines()[-1]
    assert summary.endswith(
        f"into {tmp_path}/o\\x1b]0;retitled\\x07\\x1b[31mred\\nx: ok 10; failed 0 "
        "(1 of 1 chunks validated, the rest already done)"
    )


def test_inspect_shows_control_characters_of_class_names_and_reasons_escaped(tmp_path):
    """Before: `cg3d inspect` printed a class name or a failure reason (what a file held) raw:
    the ESC sequence cleared the terminal, the newline broke the table's row in two."""
    from cg3d.formats.manifest import MeshRecord, write_manifest

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    write_manifest(
        [
            MeshRecord("a", "test", "a.obj", "chair\x1b[2J\nlamp", "train"),
            MeshRecord(
                "b", "test", "b.obj", "chair", "train", status="failed", error="bad\x1b[31m\nmesh"
            ),
        ],
        meshes,
    )
    run = cg3d("inspect", meshes, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout
    lines = run.stdout.splitlines()
    assert any(line.split() == ["chair\\x1b[2J\\nlamp", "1"] for line in lines), run.stdout
    failure = [line for line in lines if line.lstrip().startswith("b ")]
    assert len(failure) == 1 and "bad\\x1b[31m\\nmesh" in failure[0], run.stdout


def test_ordinary_text_prints_unchanged():
    from cg3d.errors import printable

    text = "10 objects → /data/café/o [x]: ok 10; top-1 50.00%  ★"
    assert printable(text) == text


def test_a_log_line_quoting_control_characters_is_one_line_with_them_escaped():
    """Before: a stage's log warning (a shard reader's "skipping KEY: reason", with a key from
    a tar member's name) reached the terminal raw; warnings.warn and error lines were escaped."""
    script = (
        "import logging; from cg3d.cli import quiet_warnings; quiet_warnings(); "
        "logging.getLogger('cg3d.formats.shards').warning("
        "'skipping %s: %s', 'k\\x1b]0;retitled\\x07', 'bad\\nmember')"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "warning: skipping k\\x1b]0;retitled\\x07: bad\\nmember\n"
