"""Issue 26 item 8: help texts a new user reads first."""

import yaml
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.options import PIPELINE_SECTIONS

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def commands(typer_app):
    for info in typer_app.registered_commands:
        yield info.callback
    for group in typer_app.registered_groups:
        yield from commands(group.typer_instance)


def test_each_command_summary_is_one_line():
    """`cg3d --help` shows a docstring's first paragraph as it is written: a summary wrapped in
    the source broke mid-phrase there ("… plus" / "free-text names")."""
    for callback in commands(app):
        summary = (callback.__doc__ or "").strip().split("\n\n")[0]
        assert summary and "\n" not in summary, callback.__name__


def test_every_option_of_classify_has_help():
    from cg3d.app.commands import classify_command

    result = CliRunner().invoke(app, ["classify", "--help"], env={"COLUMNS": "200"})
    assert "How many labels" in result.output
    assert classify_command.__doc__


def test_param_options_say_what_a_bare_command_uses():
    result = CliRunner().invoke(app, ["meshes", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert (
        "meshes.per_class; without --params: 0" in text
    )  # not "default 0" beside params.yaml's 60
    assert "schema defaults of cg3d/params.py" in text


def test_params_help_names_only_sections_params_yaml_has():
    sections = yaml.safe_load((ROOT / "params.yaml").read_text())
    present = {f"eval.{k}" for k in sections.get("eval", {})} | set(sections) - {"eval"}
    assert set(PIPELINE_SECTIONS) == present
    for command in ("finetune", "index", "demo", "scene-query"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        text = " ".join(result.output.split())
        assert "params.yaml has none" in text, command
