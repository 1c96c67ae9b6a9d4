"""`python -m cg3d` and the `cg3d` script (pyproject's [project.scripts]) run the `cg3d`
command the same way."""

import sys

from cg3d.errors import missing_dependency_line


def run() -> None:
    """`cg3d.cli.main`, or one line where this Python lacks what it imports (typer, rich): a
    `pip install --no-deps`, a conda env, `python -m cg3d` outside the project's venv. The
    script pointed at `cg3d.cli:main` itself, whose import failed as a traceback."""
    try:
        from cg3d.cli import main
    except ImportError as error:  # absent, or there but broken
        line = missing_dependency_line(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    main(whole_process=True)


if __name__ == "__main__":
    run()
