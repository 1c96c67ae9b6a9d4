"""`python -m cg3d` runs the `cg3d` command."""

import sys

from cg3d.errors import missing_dependency_line

try:
    from cg3d.cli import main
except ModuleNotFoundError as error:  # a Python without the project's install (typer, rich)
    line = missing_dependency_line(error)
    if line is None:
        raise
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)

main()
