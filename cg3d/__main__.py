"""`python -m cg3d` runs the `cg3d` command."""

from cg3d.cli import main

main()
