"""What a dead worker process is said to have died of (issue t84a, a review of t83a): only a
SIGKILL, or a death whose cause is unknown, is put down to the out-of-memory killer. A crash
(SIGSEGV in a library's C code) or a shared memory too small for the loader (SIGBUS; a
container's /dev/shm is 64 MiB by default) named the wrong remedy, a larger memory limit. A
/dev/shm too small for the loader's batch buffers was a traceback."""

import dataclasses
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cg3d.errors import UsageError
from tests.descriptors import open_files


def die_of(folder: Path, signum: int) -> int:
    """A pool task whose worker dies of `signum`."""
    os.kill(os.getpid(), signum)
    return 1


def exit_with(folder: Path, code: int) -> int:
    """A pool task whose worker exits with `code`, as one that printed its own error."""
    os._exit(code)


def test_a_pool_worker_that_exits_with_a_code_is_not_said_to_be_killed(tmp_path):
    """Before: "a worker process was killed (most often by the out-of-memory killer ...)"."""
    from cg3d.pipeline.chunks import _run_pool

    with pytest.raises(UsageError, match=r"a worker process exited with code 3 \(") as refused:
        _run_pool(exit_with, iter([((tmp_path, 3), 1) for _ in range(4)]), 2, lambda n: None)
    assert "out-of-memory" not in str(refused.value)


def test_a_failed_pools_error_holds_no_pipe_of_its_workers(tmp_path):
    """The error a pool stopped with kept its workers' processes (its traceback, the frame that
    named them), and each process its two pipes: 4 descriptors a failed 2-worker pool, for as
    long as the error lived (a notebook's last one) or until a full garbage collection."""
    from cg3d.pipeline.chunks import _run_pool

    def fail() -> UsageError:
        with pytest.raises(UsageError) as failed:
            _run_pool(exit_with, iter([((tmp_path, 3), 1) for _ in range(4)]), 2, lambda n: None)
        return failed.value

    fail()  # the first pool of the process starts its resource tracker (one, by design)
    gc.collect()
    before = open_files()
    errors = [fail(), fail()]  # kept, as a caller keeps an error it reports later
    after = open_files()
    assert {fd: to for fd, to in after.items() if before.get(fd) != to} == {}, errors


SCRIPT_WITHOUT_MAIN_GUARD = """
from pathlib import Path
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import sample_points
from tests.pipeline.meshes import make_meshes, shapes
root = Path("data")
if not root.exists():
    make_meshes(root, shapes(6))
print(sample_points(root / "meshes", root / "points", SampleConfig(points=64, workers=2, chunk_size=2)))
"""


def test_a_script_that_runs_a_stage_without_a_main_guard_is_told_so(tmp_path):
    """A researcher's script without `if __name__ == "__main__":`: each spawned worker ran
    the script again (its stage refused: the folder is locked) and exited 1, which the
    stage put down to the out-of-memory killer."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_WITHOUT_MAIN_GUARD)
    checkout = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": checkout},
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("cg3d.errors.UsageError: a worker process")
    assert 'if __name__ == "__main__":' in last and "out-of-memory" not in last


@pytest.mark.parametrize(
    ("signum", "words"),
    [
        (signal.SIGKILL, r"was killed \(SIGKILL, most often by the out-of-memory killer"),
        (signal.SIGSEGV, r"died of SIGSEGV \(a crash in"),
        (signal.SIGBUS, r"died of SIGBUS \(most often a shared memory"),
    ],
)
def test_a_dead_pool_worker_is_said_to_die_of_its_signal(tmp_path, signum, words):
    """Before: every one of them "was killed (most often by the out-of-memory killer ...)"."""
    from cg3d.pipeline.chunks import _run_pool

    with pytest.raises(UsageError, match=words) as refused:
        _run_pool(die_of, iter([((tmp_path, signum), 1) for _ in range(4)]), 2, lambda n: None)
    if signum != signal.SIGKILL:
        assert "out-of-memory" not in str(refused.value)


class DiesInWorker(torch.utils.data.IterableDataset):
    """A loader worker's dataset whose worker dies of a signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __iter__(self):
        os.kill(os.getpid(), self.signum)
        yield {}


def _loader(monkeypatch, signum: int):
    from cg3d.params import TrainConfig
    from cg3d.train import data

    real_loader = torch.utils.data.DataLoader
    monkeypatch.setattr(
        data.torch.utils.data,
        "DataLoader",
        lambda dataset, **kwargs: real_loader(DiesInWorker(signum), **kwargs),
    )
    monkeypatch.setattr(data, "BatchSlots", lambda *args: None)
    config = dataclasses.replace(
        data.LoaderConfig.of_params(TrainConfig(batch_size=1), image_size=8), workers=1
    )
    shards = type("S", (), {"names": ["a.tar"], "preprocess": data.ClipPreprocess(8)})()
    return data.Loader(shards, config, train=False, samples=1)


def test_a_loader_worker_dead_of_sigbus_names_shared_memory(monkeypatch):
    """Before: "a worker process was killed (most often by the out-of-memory killer ...);
    rerun ... with a larger memory limit": SIGBUS is a full /dev/shm, which --memory does
    not grow."""
    with pytest.raises(UsageError, match=r"died of SIGBUS .*/dev/shm") as refused:
        list(_loader(monkeypatch, signal.SIGBUS))
    assert "out-of-memory" not in str(refused.value)


def test_a_loader_worker_killed_names_memory(monkeypatch):
    with pytest.raises(UsageError, match=r"was killed \(SIGKILL, most often .*out-of-memory"):
        list(_loader(monkeypatch, signal.SIGKILL))


def test_a_shared_memory_too_small_for_the_batch_buffers_is_one_line(monkeypatch):
    """Before: torch's `RuntimeError: unable to allocate shared memory(shm) for file
    </torch_...>: No space left on device (28)` traceback: `cg3d train` with train.workers 2
    under a 2 MiB /dev/shm (`unshare -m`, `mount -t tmpfs -o size=2m`). The refusal is
    torch's own words, raised here as the full tmpfs raised them."""
    from cg3d.params import TrainConfig
    from cg3d.train import data

    def full(tensor):
        raise RuntimeError(
            "unable to allocate shared memory(shm) for file </torch_1_2_0>: "
            "No space left on device (28)"
        )

    monkeypatch.setattr(torch.Tensor, "share_memory_", full)
    config = data.LoaderConfig.of_params(TrainConfig(batch_size=4), image_size=8)
    with pytest.raises(UsageError) as refused:
        data.BatchSlots(2, 3, config, 8)
    line = str(refused.value)
    assert line.startswith("train.workers: ")
    assert "/dev/shm" in line and "No space left on device" in line and "--shm-size" in line


# A command whose loader worker dies while the main process is busy elsewhere (an optimizer
# step): torch's SIGCHLD handler raises its RuntimeError there, outside the loader's loop.
_LOADER_DIES_MID_STEP = """
import os, signal, sys, time
import torch
from cg3d import cli

class DiesInWorker(torch.utils.data.IterableDataset):
    def __iter__(self):
        time.sleep(0.5)  # the main process is past its `next`, in its step
        os.kill(os.getpid(), int(sys.argv[-1]))
        yield 1

@cli.app.command("talk")
def talk(signum: int) -> None:
    batches = iter(torch.utils.data.DataLoader(DiesInWorker(), num_workers=1, batch_size=None))
    for _ in range(600):  # a long step: the handler raises inside it
        time.sleep(0.1)

cli.main(whole_process=True)
"""


@pytest.mark.parametrize(
    ("signum", "words"),
    [(signal.SIGKILL, "was killed (SIGKILL, most often by the out-of-memory killer"),
     (signal.SIGBUS, "died of SIGBUS (most often a shared memory, /dev/shm")],
)  # fmt: skip
def test_a_loader_worker_dead_mid_step_is_one_line(signum, words):
    """Before: `cg3d train --set train.workers=2` with a loader worker SIGKILLed (or dead of
    SIGBUS) mid-epoch: "RuntimeError: DataLoader worker (pid 24290) is killed by signal:
    Killed." raised by torch's SIGCHLD handler in the optimizer step, a traceback (exit 1)."""
    import subprocess
    import sys

    command = [sys.executable, "-c", _LOADER_DIES_MID_STEP, "talk", str(int(signum))]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    last = run.stderr.splitlines()[-1]  # after torch's own SIGBUS line, which ends in a NUL
    assert last.removeprefix("\x00").startswith(f"error: a worker process {words}")


@pytest.mark.parametrize("command", ["cg3d", "python -m cg3d", "a script"])
def test_only_a_scripts_worker_that_exits_with_a_code_is_told_of_a_main_guard(
    tmp_path, monkeypatch, command
):
    """The hint for a script without `if __name__ == "__main__":` was added wherever
    `__main__` had a file: the `cg3d` command's own (pip's script, `python -m cg3d`) too."""
    import types

    import cg3d.__main__
    from cg3d.stopping import pool_worker_died_line

    main = types.ModuleType("__main__")
    if command == "cg3d":  # pip's script: `from cg3d.__main__ import run`
        main.__file__, main.run = str(tmp_path / "bin" / "cg3d"), cg3d.__main__.run
    elif command == "python -m cg3d":
        main.__file__, main.__spec__ = cg3d.__main__.__file__, cg3d.__main__.__spec__
    else:
        main.__file__ = str(tmp_path / "train.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    line = pool_worker_died_line([types.SimpleNamespace(exitcode=1)])
    assert line.startswith("a worker process exited with code 1 (its own error is printed above)")
    assert ('if __name__ == "__main__":' in line) == (command == "a script")
