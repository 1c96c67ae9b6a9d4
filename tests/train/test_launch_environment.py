"""`cg3d train` in a launcher's environment that is malformed or half set (a torchrun, srun,
salloc shell or a job script): one line naming the variable and exit 2, never a traceback, nor
a lone process waiting half an hour for peers that never come."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.train.distributed import init_distributed, join_timeout_s  # noqa
from tests.train.helpers import params_file

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")
LAUNCH_VARIABLES += ("MASTER_PORT", "CG3D_JOIN_TIMEOUT_S")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(shards, tmp_path, **variables: str) -> subprocess.CompletedProcess:
    """`cg3d train` of a micro model with `variables` in its environment (and no launcher's
    others), within 120 s: torch's own bound on a rendezvous is 30 minutes."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and "SLURM" not in k}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | variables
    command = [sys.executable, "-m", "cg3d", "train", "--shards", str(shards)]
    command += ["--out", str(tmp_path / "run"), "--params", str(params_file(tmp_path, epochs=1))]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
        ({"WORLD_SIZE": ""}, "WORLD_SIZE=''"),
        ({"WORLD_SIZE": "-1"}, "WORLD_SIZE='-1'"),  # torch took it for one process
        ({"WORLD_SIZE": "2.0"}, "WORLD_SIZE='2.0'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'"),
        ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
        ({"WORLD_SIZE": "1", "RANK": "3"}, "RANK=3 is not below WORLD_SIZE=1"),
        ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1'"),
        ({"LOCAL_WORLD_SIZE": "1.5"}, "LOCAL_WORLD_SIZE='1.5'"),
        (
            {"LOCAL_RANK": "4", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8", "RANK": "4"},
            "LOCAL_RANK=4",
        ),
        ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "4"}, "LOCAL_WORLD_SIZE=4 is above"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR is not set"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h"}, "MASTER_PORT is not set"),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "70000"},
            "MASTER_PORT='70000' is not a port",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "0"},
            "MASTER_PORT='0' is not a port",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
            | {"CG3D_JOIN_TIMEOUT_S": "soon"},
            "CG3D_JOIN_TIMEOUT_S='soon'",
        ),
        # a host that cannot be found: torch tried it until the join timed out, then said the
        # other processes had not come
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "no-such-host.invalid"}
            | {"MASTER_PORT": "29500", "CG3D_JOIN_TIMEOUT_S": "2"},
            "MASTER_ADDR='no-such-host.invalid' is not a host this machine finds",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "[::1]", "MASTER_PORT": "29500"}
            | {"CG3D_JOIN_TIMEOUT_S": "2"},
            "an IPv6 address goes without brackets (::1)",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "a..b", "MASTER_PORT": "29500"}
            | {"CG3D_JOIN_TIMEOUT_S": "2"},
            "MASTER_ADDR='a..b' is not a host",
        ),
    ],
)
def test_a_malformed_or_partial_launch_is_named_before_any_wait(monkeypatch, variables, named):
    """torch read these with int() (a ValueError traceback), took WORLD_SIZE=-1 for one process,
    and asked for RANK/MASTER_ADDR only as a traceback from its rendezvous."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as error:
        init_distributed()
    assert named in str(error.value)


@pytest.mark.parametrize("seconds", ["99999999999999999", "604801"])
def test_a_join_timeout_beyond_a_week_is_named(monkeypatch, seconds):
    """timedelta's OverflowError traceback (99999999999999999); a week is the most it takes."""
    monkeypatch.setenv("CG3D_JOIN_TIMEOUT_S", seconds)
    with pytest.raises(UsageError) as error:
        join_timeout_s()
    assert f"CG3D_JOIN_TIMEOUT_S='{seconds}' is not a whole number of seconds from 1" in str(
        error.value
    )


def test_a_malformed_world_size_is_one_line_from_the_command(shards, tmp_path):
    line = one_line(train(shards, tmp_path, WORLD_SIZE="2.0"))
    assert "WORLD_SIZE='2.0' is not a whole number" in line


@pytest.mark.slow
def test_a_lone_process_of_two_stops_within_the_join_timeout(shards, tmp_path):
    """WORLD_SIZE=2 left in a shell (or a peer that never started): the first process waited
    for the second 30 minutes (torch's default), silent and deaf to SIGTERM; the second, for a
    first that never listens, as long. Each now stops after CG3D_JOIN_TIMEOUT_S, in one line
    (torch's C++ logged each try with its stack frames)."""
    where = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    for rank in ("0", "1"):
        result = train(shards, tmp_path, RANK=rank, CG3D_JOIN_TIMEOUT_S="2", **where)
        line = one_line(result)
        assert f"RANK={rank} of WORLD_SIZE=2: the other processes did not join" in line
        assert "within 2 s (CG3D_JOIN_TIMEOUT_S)" in line


def test_a_taken_master_port_is_named(shards, tmp_path):
    """Another run (or anything) listening on MASTER_PORT: torch's DistNetworkError
    traceback (EADDRINUSE)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        where = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "CG3D_JOIN_TIMEOUT_S": "5"}
        result = train(shards, tmp_path, WORLD_SIZE="2", RANK="0", **where)
    line = one_line(result)
    assert f"MASTER_PORT={port}: the port is taken on this machine" in line


@pytest.mark.slow
def test_an_salloc_shell_trains_as_one_process(shards, tmp_path):
    """Slurm's variables of a 4-task allocation, the command run once (not under srun): only
    torchrun's variables are read, so it trains alone and waits for nobody (a guard: no code
    changed for it)."""
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_NNODES": "1"}
    result = train(shards, tmp_path, **slurm)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 1


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_stop_signal_ends_the_wait_for_peers(shards, tmp_path):
    """SIGTERM (`scancel`, `timeout`) or Ctrl-C while a lone process waits for its peers: torch
    waits in C++, and the signal was heard only when the join timed out (here 300 s; 600 by
    default). It now stops at once, as anywhere else: exit 143, one line."""
    port = free_port()
    where = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and "SLURM" not in k}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CG3D_JOIN_TIMEOUT_S": "300"}
    command = [sys.executable, "-m", "cg3d", "train", "--shards", str(shards)]
    command += ["--out", str(tmp_path / "run"), "--params", str(params_file(tmp_path, epochs=1))]
    process = subprocess.Popen(command, env=env | where, stderr=subprocess.PIPE, text=True)
    try:
        while not listening(port):  # the first process's store is up: it waits for the second
            assert process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:  # on a failure above too: no process left, nor its pipe open in pytest's
        process.kill()
        process.wait()
        process.stderr.close()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines() == ["error: terminated (SIGTERM)"]


@pytest.mark.parametrize("stderr", ["closed", "/dev/full"])
def test_a_stderr_that_cannot_be_written_does_not_end_a_join(stderr):
    """Descriptor 2 is held during the join and what torch wrote there written back after:
    a closed stderr was an AttributeError (sys.stderr is None), /dev/full an OSError (ENOSPC)
    on the way out of a join that had succeeded."""
    held = "from cg3d.train.distributed import _native_stderr_held\n"
    if stderr == "closed":
        held += "os.close(2)\nsys.stderr = None\n"
    # as torch's C++ logging: a write to descriptor 2, its failure ignored
    held += "with _native_stderr_held():\n    try:\n        os.write(2, b'torch said')\n"
    held += "    except OSError:\n        pass\nprint('met')\n"
    code = "import os, sys\n" + held
    with open(os.devnull if stderr == "closed" else stderr, "w") as sink:
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            timeout=120,
        )
    assert (result.returncode, result.stdout) == (0, "met\n")


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "zeroshot", "--checkpoint", "{in}/last.pt", "--out", "{out}"],
        ["embed", "{in}", "--checkpoint", "{in}/last.pt", "--out", "{out}/e.npy"],
        ["sample", "--meshes", "{in}", "--out", "{out}"],
        ["render", "--meshes", "{in}", "--out", "{out}"],
        ["export", "--checkpoint", "{in}/last.pt", "--out", "{out}/model.pt"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_other_than_train_refuses_a_launcher(tmp_path, command):
    """Under `torchrun --nproc-per-node 2 -m cg3d eval ...` every rank ran the whole command
    into the same folder: each now stops with one line before making it."""
    given = tmp_path / "in"
    given.mkdir()
    (given / "last.pt").write_bytes(b"")
    out = tmp_path / "out"
    args = [part.format(**{"in": given, "out": out}) for part in command]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env |= {"PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", *args], env=env, capture_output=True, text=True, timeout=120
    )
    line = one_line(result)
    assert "WORLD_SIZE=2" in line and "only `cg3d train`" in line, line
    assert not out.exists()
