"""Fixtures shared by the test folders: a tiny checkpoint, the headless browser; a guard
against mounts a test leaves, and a report of what the whole run left open."""

import gc
import os
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.descriptors import open_files

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.model import build_model
    from tests.models.helpers import tiny_model_config

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    # Seeded: the same random weights every run, whatever ran before (a chance init once left
    # the linear probe test one shape short of 100%).
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        save_checkpoint(
            path, build_model(tiny_model_config(n_points=64, classes=["cube", "sphere", "cone"]))
        )
    return path


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (no browser download)."""
    if not Path(CHROMIUM).is_file() or shutil.which("chromium") is None:
        message = f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def mount_points_under(root: Path) -> set[str]:
    """The mount points under `root`: this session's tmp folders (another session's mounts,
    or the machine's, are none of its business)."""
    inside = f"{root}{os.sep}"
    with open("/proc/self/mountinfo") as info:
        return {point for line in info if (point := line.split()[4]).startswith(inside)}


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path_factory):
    """Fails a test that leaves a mount under the session's tmp folders, and takes it off: a
    small tmpfs of the full-disk tests outlived the run under /tmp/pytest-of-root, where
    pytest's pruning of old folders failed on it."""
    root = tmp_path_factory.getbasetemp()
    before = mount_points_under(root)
    yield
    left = sorted(mount_points_under(root) - before, reverse=True)  # the deepest first
    for point in left:
        subprocess.run(["umount", "-l", point], check=False)
    if left:
        pytest.fail(f"the test left mounted: {', '.join(left)}")


def live_children() -> list[str]:
    """This process's child processes still running (zombies aside), as "pid command"."""
    try:
        import psutil
    except ImportError:  # a pytest outside the project's environment: the report goes on
        return []
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            # multiprocessing's resource tracker: one a process, by design, ends with pytest
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in command:
                found.append(f"{child.pid} {command[:100]}")
        except psutil.Error:  # it ended meanwhile
            pass
    return found


OPEN_AT_START = pytest.StashKey[int]()


def pytest_sessionstart(session) -> None:
    session.config.stash[OPEN_AT_START] = len(open_files())
    # A shell without job control starts a background command (`bash .ci/run &` in a script)
    # with SIGINT ignored, and the commands the tests start inherit that: every Ctrl-C test
    # failed ("the first Ctrl-C did not stop the command", a 300 s timeout). Python's own
    # handler again, so that the tests see what a user's terminal gives.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """What the run left open in pytest's process, reported at its end after one garbage
    collection, never failed (a descriptor of garbage not yet collected is no leak, and a
    per-test count would say so of many): 3,400 tests share the process, and the last CI's
    held descriptors numbered past 1024."""
    gc.collect()
    now = list(open_files().values())
    kinds: dict[str, int] = {}
    for target in now:  # "pipe:[123]" counts as "pipe", a file as its folder
        kind = target.split(":[")[0] if ":[" in target else os.path.dirname(target)
        kinds[kind] = kinds.get(kind, 0) + 1
    start = config.stash.get(OPEN_AT_START, "?")
    terminalreporter.write_sep("-", "left open by the run")
    terminalreporter.write_line(f"descriptors: {start} at the start, {len(now)} at the end")
    for kind, count in sorted(kinds.items(), key=lambda item: -item[1])[:5]:
        terminalreporter.write_line(f"  {count:5d} {kind}")
    for child in live_children():
        terminalreporter.write_line(f"child process: {child}")
