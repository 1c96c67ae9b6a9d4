"""The test run sees the signals a user's terminal gives, however it is launched."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ctrl_c_reaches_the_tests_and_the_commands_they_start():
    """A command a test starts inherits pytest's SIGINT: ignored, it never stopped on Ctrl-C."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    child = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"]
    assert "default_int_handler" in subprocess.run(child, capture_output=True, text=True).stdout


def test_a_run_launched_with_ctrl_c_ignored_gives_its_tests_ctrl_c():
    """`bash .ci/run &` from a script (a shell without job control) starts pytest with SIGINT
    ignored: the Ctrl-C tests failed there, each after a 300 s timeout."""
    inner = "tests/test_suite_launch.py::test_ctrl_c_reaches_the_tests_and_the_commands_they_start"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", inner],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
