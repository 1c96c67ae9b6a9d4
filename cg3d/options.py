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


def with_params(cls: type, section: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the wrapped command takes `config: cls` built from the schema's layers."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "config"]
        names = {f.name for f in option_fields(cls)}

        @functools.wraps(command)
        def run(**arguments: Any) -> Any:
            params_file = arguments.pop(PARAMS_OPTION)
            assignments = arguments.pop(SET_OPTION)
            options = {name: arguments.pop(name) for name in names}
            config = load_section(cls, section, params_file, assignments, options)
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
                        help=f"A params file whose `{section}` section configures the run "
                        "(none is read unless given).",
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
                            help=f"{help_text} ({section}.{f.name}; default {default!r})",
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
