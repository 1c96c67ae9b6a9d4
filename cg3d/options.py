"""Command-line options made from the params schema, so a param is declared once.

`with_params(SampleConfig, "sample")` turns `def sample(meshes, out, config)` into a typer
command whose options are the command's own (paths), `--params FILE`, `--set key=value` and one
`--flag` per field of the section: `cg3d sample --points 1024` and
`cg3d sample --params params.yaml --set sample.points=1024` fill the same config.
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cg3d.params import field_type, load_section, option_fields

PARAMS_OPTION = "params_file"
SET_OPTION = "assignments"
# The sections params.yaml holds: those of the DVC stages (tests/test_first_day.py checks it)
PIPELINE_SECTIONS = (
    "meshes",
    "sample",
    "render",
    "caption",
    "pack",
    "train",
    "eval.zeroshot",
    "eval.retrieval",
)


def params_help(section: str) -> str:
    """The `--params` help: which file to give, and what a command without it uses."""
    if section in PIPELINE_SECTIONS:
        given = f"A params file whose `{section}` section configures the run (params.yaml: the DVC pipeline's)."
    else:
        given = (
            f"A params file with a `{section}` section (params.yaml has none: write one, or use "
            "the options below)."
        )
    return given + " Without it no file is read: the schema defaults of cg3d/params.py apply."


def with_params(cls: type, section: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the wrapped command takes `config: cls` built from the schema's layers."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        parameters = inspect.signature(command).parameters
        own = [p for name, p in parameters.items() if name not in ("config", PARAMS_OPTION)]
        wants_file = PARAMS_OPTION in parameters  # a command may read other sections of it
        names = {f.name for f in option_fields(cls)}

        @functools.wraps(command)
        def run(**arguments: Any) -> Any:
            params_file = arguments.pop(PARAMS_OPTION)
            assignments = arguments.pop(SET_OPTION)
            options = {name: arguments.pop(name) for name in names}
            config = load_section(cls, section, params_file, assignments, options)
            if wants_file:
                arguments[PARAMS_OPTION] = params_file
            return command(**arguments, config=config)

        extra = [
            inspect.Parameter(
                PARAMS_OPTION,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    Path | None,
                    typer.Option(
                        "--params",
                        help=params_help(section),
                    ),
                ],
            ),
            inspect.Parameter(
                SET_OPTION,
                inspect.Parameter.KEYWORD_ONLY,
                default=[],
                annotation=Annotated[
                    list[str],
                    typer.Option(
                        "--set",
                        metavar="KEY=VALUE",
                        help=f"Override a param, e.g. --set {section}.KEY=VALUE (repeatable).",
                    ),
                ],
            ),
        ]
        for f in option_fields(cls):
            kind = field_type(cls, f.name)
            choices = f.metadata.get("choices")
            help_text = f.metadata["help"] + (f" One of: {', '.join(choices)}." if choices else "")
            flag = f"--{f.name.replace('_', '-')}"
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            extra.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[
                        kind | None,
                        typer.Option(
                            flag if kind is not bool else f"{flag}/--no-{flag[2:]}",
                            help=f"{help_text} ({section}.{f.name}; without --params: {default!r})",
                            show_default=False,
                        ),
                    ],
                )
            )
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        # typer reads both the signature and the annotations
        run.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + extra}
        return run

    return decorate
