"""Stop a `cg3d` command as a cluster or a dropped ssh session does, for the tests of each kind
of command: `kill PID`, `docker stop` (SIGTERM to the command alone), `scancel`, a SLURM time
limit (SIGTERM to every process of the job: here its process group) or an ssh hang-up (SIGHUP
to the group).

The command runs under a child subreaper (as an init or a container runtime is): a process it
leaves behind becomes the subreaper's child, and is reported. The signal is sent once a sign
of progress (a file) exists: no fixed sleep that a slow machine would race."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STOPPER = r"""
import ctypes, glob, json, os, signal, subprocess, sys, time
import psutil
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
signum, whom, sign, timeout_s, log = sys.argv[1:6]
signum, timeout_s = int(signum), float(timeout_s)
with open(log, "wb") as stderr:
    command = subprocess.Popen(sys.argv[6:], stdout=subprocess.DEVNULL, stderr=stderr,
                               start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not glob.glob(sign) and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    signalled = command.poll() is None and bool(glob.glob(sign))
    if signalled:
        (os.kill if whom == "process" else os.killpg)(command.pid, signum)
    try:
        code = command.wait(timeout_s)
    except subprocess.TimeoutExpired:
        command.kill()
        code = "hung"
left = []
for child in psutil.Process().children(recursive=True):
    try:
        status = child.status()
        named = "" if status == psutil.STATUS_ZOMBIE else " ".join(child.cmdline())[:120]
        left.append(f"{child.pid} {status} {named}")
        child.kill()
    except psutil.Error:  # it ended meanwhile
        pass
print(json.dumps({"signalled": signalled, "code": code, "left": left}))
"""


@dataclass
class Stopped:
    signalled: bool  # False: it ended (or timed out) before the sign appeared
    code: int | str  # its exit status, or "hung"
    stderr: str
    left: list[str]  # processes it left behind: "pid status command"

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def stop_command(
    command: list[str],
    sign: Path | str,
    signum: int = signal.SIGTERM,
    whom: str = "process",
    timeout_s: float = 300.0,
) -> Stopped:
    """Run `cg3d <command>`, send `signum` to it (`whom`: "process") or to its process group
    ("group") once the glob `sign` matches a file, and wait for it to end."""
    handle, name = tempfile.mkstemp(prefix="cg3d-stopped-", suffix=".log")
    os.close(handle)
    log = Path(name)
    cg3d = [sys.executable, "-m", "cg3d", *command]
    arguments = [str(int(signum)), whom, str(sign), str(timeout_s), str(log), *cg3d]
    root = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", STOPPER, *arguments],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
            timeout=3 * timeout_s,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        stderr = log.read_text(errors="replace")
    finally:  # a failed or timed-out stopper left its log in /tmp for good
        log.unlink(missing_ok=True)
    return Stopped(report["signalled"], report["code"], stderr, report["left"])


def run_to_its_end(command: list[str], timeout_s: float = 300.0) -> Stopped:
    """Run `cg3d <command>` as `stop_command` does, but send no signal: what it leaves behind
    once it has ended by itself."""
    return stop_command(command, "", timeout_s=timeout_s)  # "" matches no file


def tree_bytes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) by relative path, but those named in
    `skip`."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip
    }


def still_running(process) -> bool:
    """Whether `process` (a psutil.Process) still runs: an ended orphan that nothing has reaped
    yet (a zombie) does not."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stopped_for(seconds: float, group: int, pid: int | None = None) -> None:
    """Ctrl-Z then `fg`, a Slurm suspend: SIGSTOP to the process group `group` (to `pid` alone
    when given, a process of that group), `seconds`, then SIGCONT to the whole group."""
    if pid is None:
        os.killpg(group, signal.SIGSTOP)
    else:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.killpg(group, signal.SIGCONT)
