"""The index and demo commands: every option of their params sections reaches the config."""

import dataclasses
import typing

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.params import DemoConfig, IndexConfig, option_fields
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
