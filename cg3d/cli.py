"""The `cg3d` command: one subcommand per stage, each a thin wrapper over a stage function.

Each area registers its own commands (`cg3d/<area>/commands.py`); heavy imports (torch,
bpy, ray) happen inside the commands so that `cg3d --help` is instant.
"""

import sys

import typer
from rich.console import Console

from cg3d.errors import UsageError

app = typer.Typer(
    name="cg3d",
    help="CLIP goes 3D: meshes → points, views, captions → shards → a CLIP-aligned 3D encoder → metrics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    from cg3d.app import commands as app_commands
    from cg3d.eval import commands as eval_commands
    from cg3d.models import commands as model_commands
    from cg3d.pipeline import commands as pipeline_commands
    from cg3d.render import commands as render_commands
    from cg3d.train import commands as train_commands

    modules = (pipeline_commands, render_commands, train_commands, eval_commands, model_commands)
    modules += (app_commands,)
    for module in modules:
        module.register(app)


_register_all()


def main() -> None:
    """Entry point: user errors, and what the machine refused (a full disk, a read-only
    folder: any OSError, named by its file and its errno's meaning), become one line on
    stderr and exit code 2."""
    from cg3d.files import os_error_line

    try:
        app()
    except (UsageError, OSError) as error:
        message = os_error_line(error) if isinstance(error, OSError) else str(error)
        # the message is the user's text (paths, keys like `:train:`): no markup, no emoji codes
        console = Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)
        console.print("[bold red]error:[/]", end=" ")
        console.print(message, markup=False)
        sys.exit(2)
