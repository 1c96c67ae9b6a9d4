"""`cg3d` subcommands of the train area (thin wrappers over stage functions)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the `cg3d` app."""
