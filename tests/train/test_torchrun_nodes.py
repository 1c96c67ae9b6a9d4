"""Training on two nodes: two torchrun agents of one process each, joined by a c10d rendezvous
on 127.0.0.1 as two machines would be (gloo), train to the weights of one process that updates
on the whole batch."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.helpers import tiny_train_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("torchrun_nodes.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_train_to_the_weights_of_one_process_on_the_global_batch(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
    node += ["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "cg3d-nodes"]
    node += ["--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0"]
    # its logs here: by default each agent left a /tmp/torchelastic_* folder for good
    node += ["--log-dir", str(tmp_path / "torchrun-logs")]
    node += [str(SCRIPT), str(tmp_path)]
    nodes = [
        subprocess.Popen(
            node,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # an agent and its worker, ended together below
        )
        for _ in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=600)[0] for process in nodes]
    finally:
        # A node that failed or hung: the other waits at the rendezvous, its agent and worker
        # outlived the test (and held its pipe in pytest's process).
        for process in nodes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    for process, output in zip(nodes, outputs, strict=True):
        assert process.returncode == 0, output.decode()[-3000:]
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, check=True, timeout=600)

    single = torch.load(tmp_path / "world1-rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"world2-rank{r}.pt", weights_only=True) for r in range(2)]
    assert single["encoder"].norm() > 0 and single["prompts"].norm() > 0  # both updates moved
    # AdamW's first step is lr * g / (|g| + eps): where a gradient is near eps (1e-8) it turns
    # the float noise of a reduction in another order (1e-7 of it, which differs between CPUs)
    # into a step of up to lr either way. Elsewhere the step is the gradient's sign, and the
    # weights agree.
    noise_floor = single["weight_grads"].abs() < 1e-6
    assert noise_floor.sum() < 0.1 * noise_floor.numel()  # still a test of most weights
    for result in ranks:
        for key in ("encoder", "prompts"):
            error = (result[key] - single[key]).norm() / single[key].norm()
            assert error < 1e-5, (key, float(error))
        differ = result["weights"] - single["weights"]
        error = differ[~noise_floor].norm() / single["weights"][~noise_floor].norm()
        assert error < 1e-5, ("weights", float(error))
        assert differ[noise_floor].abs().max() <= 2 * tiny_train_config().encoder_lr
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])
