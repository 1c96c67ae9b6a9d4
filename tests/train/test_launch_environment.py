"""`cg3d train` in a launcher's environment that is malformed or half set (a torchrun, srun,
salloc shell or a job script): one line naming the variable and exit 2, never a traceback, nor
a lone process waiting half an hour for peers that never come."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.train.distributed import init_distributed  # noqa
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
