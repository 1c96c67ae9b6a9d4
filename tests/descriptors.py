"""What this process holds open, for the tests of code called in-process again and again (a
notebook, a sweep script, this test run): a descriptor a call kept is one fewer for the next,
and CI's run once held numbers past 1024."""

import os
from contextlib import suppress
from pathlib import Path


def open_files() -> dict[int, str]:
    """This process's descriptors: number → what it points to (a path, `pipe:[…]`, …)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the listing's own descriptor, closed by now
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def open_under(folder: Path) -> list[str]:
    """The files under `folder` this process holds open."""
    inside = str(Path(folder).resolve()) + os.sep
    return sorted(target for target in open_files().values() if target.startswith(inside))


def mapped_under(folder: Path) -> list[str]:
    """The files under `folder` this process has memory-mapped (an open file of another kind)."""
    inside = str(Path(folder).resolve()) + os.sep
    with open("/proc/self/maps") as maps:
        paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line}
    return sorted(path for path in paths if path.startswith(inside))
