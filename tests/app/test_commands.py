"""The classify, index and demo commands: every option of their params sections reaches the
config; classify's results; the command line's warnings, help and early checks."""

import dataclasses
import os
import subprocess
import sys
import typing

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.params import DemoConfig, IndexConfig, option_fields
from tests.app.command_line import cg3d
from tests.eval.files import cube
from tests.param_values import flag_words, other_value

COMMANDS = [
    (["index"], "cg3d.app.index.build_index", IndexConfig, ["--shards", "s", "--out", "o"]),
    (["demo"], "cg3d.app.demo.serve", DemoConfig, ["--index", "i"]),
]


class Captured(Exception):
    """Stops a command right after it built its config."""


@pytest.mark.parametrize("words,stage,cls,own", COMMANDS, ids=lambda v: str(v))
def test_every_option_reaches_its_config(monkeypatch, tmp_path, words, stage, cls, own):
    def capture(*args, **kwargs):
        raise Captured(next(a for a in args if dataclasses.is_dataclass(a)))

    monkeypatch.setattr(stage, capture)
    monkeypatch.chdir(tmp_path)
    hints = typing.get_type_hints(cls)
    expected = {f.name: other_value(f, hints[f.name]) for f in option_fields(cls)}
    arguments = [*words, "--checkpoint", "c", *own]
    arguments += [w for name, v in expected.items() for w in flag_words(name, v)]
    result = CliRunner().invoke(app, arguments)
    assert isinstance(result.exception, Captured), result.output
    config = result.exception.args[0]
    assert dataclasses.asdict(config) == dataclasses.asdict(cls()) | expected


def test_random_clip_is_one_clear_line_once(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "box.npy", cube(200, rng).astype(np.float32))
    run = cg3d("classify", "box.npy", "--checkpoint", tiny_checkpoint, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    # before: the warning with file:line, the raw source line, then open_clip's
    # "WARNING:root:No pretrained weights loaded" from inside the library
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("warning: ") and "RANDOMLY INITIALISED" in lines[0]


def test_classify_command(tmp_path, tiny_checkpoint):
    np.save(tmp_path / "shape.npy", cube(200, np.random.default_rng(0)))
    shape = ["classify", "shape.npy", "--checkpoint", tiny_checkpoint]
    result = cg3d(*shape, "--labels", "chair,lamp", "--top", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chair" in result.stdout and "lamp" in result.stdout
    (tmp_path / "labels.txt").write_text("cube\nsphere\n")
    for labels, shown in [
        (["--labels-file", "labels.txt"], "sphere"),
        (["--labels", "/etc/passwd"], "/etc/passwd"),  # a label, not the file's lines
    ]:
        result = cg3d(*shape, *labels, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert shown in result.stdout and "root:" not in result.stdout
    result = cg3d(*shape, "--labels", "x", "--labels-file", "labels.txt", cwd=tmp_path)
    assert result.returncode == 2 and "give one or the other" in result.stderr


def test_classify_checks_its_file_before_loading_the_model(tmp_path):
    # the checkpoint does not exist either: the file's error must come first, before any load
    missing = CliRunner().invoke(app, ["classify", "chair.obj", "--checkpoint", "no.pt"])
    assert isinstance(missing.exception, UsageError)
    assert str(missing.exception) == "no such file chair.obj"
    (tmp_path / "chair.fbx").write_bytes(b"Kaydara FBX Binary  \x00")
    fbx = CliRunner().invoke(app, ["classify", str(tmp_path / "chair.fbx"), "--checkpoint", "no"])
    assert isinstance(fbx.exception, UsageError)
    assert "FBX is not read here: convert it to glTF" in str(fbx.exception)
    (tmp_path / "chair.obj").write_text("v 0 0 0\n")
    axis = ["classify", str(tmp_path / "chair.obj"), "--checkpoint", "no.pt", "--up-axis", "w"]
    wrong = CliRunner().invoke(app, axis)
    assert "--up-axis must be one of" in str(wrong.exception)
    protocol = [*axis[:-2], "--protocol", "paper"]  # an unknown protocol: before the load
    wrong = CliRunner().invoke(app, protocol)
    assert str(wrong.exception).startswith("--protocol: unknown protocol 'paper'")


def test_classify_up_axis_help_names_every_axis():
    from cg3d.geometry.frame import UP_AXES

    classify = typer.main.get_command(app).commands["classify"]
    (up_axis,) = [p for p in classify.params if p.name == "up_axis"]
    named = up_axis.help.rstrip(".").split(": ", 1)[1].replace(" or ", ", ").split(", ")
    assert sorted(named) == sorted(UP_AXES)


@pytest.mark.parametrize("words", [[], ["sample"], ["eval", "zeroshot"], ["classify"]])
def test_help_shows_no_bool_type_beside_flags(words):
    result = CliRunner().invoke(app, [*words, "--help"], terminal_width=160)
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output


def test_search_takes_an_embedding_file(tiny_index, tmp_path):
    import pyarrow.parquet as pq

    first = np.load(tiny_index / "points.npy")[0]
    np.save(tmp_path / "query.npy", 3.0 * first)  # any length: the query is normalised
    words = ["search", str(tiny_index), "--embedding", str(tmp_path / "query.npy"), "--top", "1"]
    result = CliRunner().invoke(app, words, terminal_width=200)
    assert result.exit_code == 0, result.output
    first_id = pq.read_table(tiny_index / "objects.parquet").column("id")[0].as_py()
    assert first_id in result.output and "1.0000" in result.output


def test_search_embedding_errors_name_the_option(tiny_index, tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "matrix.npy", np.zeros((2, 64), np.float32))
    for name, reason in [
        ("missing.npy", "no such file"),
        ("objects.npy", "not a numeric .npy array"),
        ("matrix.npy", "not one vector"),
    ]:
        words = ["search", str(tiny_index), "--embedding", str(tmp_path / name)]
        result = CliRunner().invoke(app, words)
        assert isinstance(result.exception, UsageError), result.output
        assert str(result.exception).startswith("--embedding: ") and reason in str(result.exception)


def test_library_warnings_and_log_lines_stay_out_unless_asked_for(tmp_path):
    script = """
import logging, warnings
from cg3d.cli import quiet_warnings
quiet_warnings()
exec(compile("import warnings; warnings.warn('deep inside')", "/lib/site-packages/x.py", "exec"))
logging.error("Failed to download weights")  # as open_clip logs, on the root logger
logging.getLogger("cg3d.formats.shards").warning("skipping a sample: truncated")
"""
    env = os.environ | {"PYTHONWARNINGS": ""}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.stderr.splitlines() == ["warning: skipping a sample: truncated"]
    asked = [sys.executable, "-W", "default", "-c", script]
    run = subprocess.run(asked, capture_output=True, text=True, env=env)
    assert "warning: deep inside" in run.stderr.splitlines()
