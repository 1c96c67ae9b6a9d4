"""`python -m cg3d` and the `cg3d` script (pyproject's [project.scripts]) run the `cg3d`
command the same way."""

import sys
from pathlib import Path

import cg3d
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


def other_checkout_line() -> str | None:
    """One line when `python -m cg3d` would run another cg3d than the working folder's: under
    PYTHONSAFEPATH=1 (`python -P`) Python leaves the working folder off its path, so a DVC
    stage's `python -m cg3d` (dvc.yaml: an experiment's copy runs its own code) ran the
    installed checkout's code, silently, under a dvc.lock naming the folder's; else None.
    A folder's cg3d/ package without a `__main__.py` is no checkout (a user's own library of
    that name, which `python -m cg3d` could not run there without -P either): no line."""
    here = Path.cwd() / "cg3d"
    imported = Path(cg3d.__file__).resolve().parent
    if not (sys.flags.safe_path and (here / "__main__.py").is_file()):
        return None
    if here.resolve() == imported:
        return None
    return (
        f"PYTHONSAFEPATH is set (python -P): python -m cg3d would run {imported}, not"
        f" this folder's cg3d/; unset PYTHONSAFEPATH"
    )


if __name__ == "__main__":
    if (line := other_checkout_line()) is not None:
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    run()
