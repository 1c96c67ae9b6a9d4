"""cg3d driven from a real Jupyter kernel (ipykernel), as a researcher's notebook does: its
stdout and stderr are ipykernel's streams, its `__main__` has no `__file__` (what a spawn
pool's workers re-import), and the notebook's "interrupt" button is a SIGINT to the kernel.
ipykernel and jupyter_client are test dependencies ([dev]), not cg3d's."""

import queue
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

SETUP = """
import signal, sys
from pathlib import Path
from tests.pipeline.meshes import make_meshes, shapes
from cg3d.params import SampleConfig
from cg3d.pipeline.sample import sample_points
root = Path({root!r})
meshes = make_meshes(root, shapes(40))
config = SampleConfig(points=64, seed=0, workers=2, chunk_size=2)
"""


class Kernel:
    """A started ipykernel and a client of it; `run` executes one cell."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(cwd))
        self.process = psutil.Process(self.manager.provisioner.process.pid)

    def run(self, code: str, interrupt_at: str | None = None, timeout: float = 300) -> dict:
        """The cell's outputs: "text" (its streams and displays, joined), "stdout" (its prints)
        and "error" (the exception's name, or None). `interrupt_at`: press "interrupt" once an output holds it."""
        msg_id = self.client.execute(code)
        text, stdout, error, pressed = [], [], None, False
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                assert time.monotonic() < deadline, f"the cell ran past {timeout} s: {text}"
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                text.append(content["text"])
                if content["name"] == "stdout":
                    stdout.append(content["text"])
            elif kind in ("display_data", "execute_result"):
                text.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                error = content["ename"]
            elif kind == "status" and content["execution_state"] == "idle":
                return {"text": "".join(text), "stdout": "".join(stdout), "error": error}
            if interrupt_at and not pressed and interrupt_at in "".join(text):
                self.manager.interrupt_kernel()
                pressed = True

    def pool_workers(self) -> list[psutil.Process]:
        """The kernel's spawned pool workers still alive (its resource tracker aside, which
        lives as long as the kernel by design)."""
        children = self.process.children(recursive=True)
        return [child for child in children if "spawn_main" in " ".join(child.cmdline())]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    checkout = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", checkout)  # the kernel imports this checkout's cg3d
    started = Kernel(tmp_path)
    yield started
    started.close()


def test_a_notebook_runs_a_stage_twice_stops_it_and_resumes_it(kernel, tmp_path):
    setup = kernel.run(SETUP.format(root=str(tmp_path / "data")))
    assert setup["error"] is None, setup["text"]
    main_file = kernel.run("print('__file__' in vars(sys.modules['__main__']))")
    assert main_file["text"].strip() == "False"  # what spawn's workers meet in a kernel

    first = kernel.run("print(sample_points(meshes, root / 'points', config))")
    assert first["error"] is None, first["text"]
    assert "sampled=40" in first["text"] and "chunks_run=20" in first["text"]
    assert "sampling points:" in first["text"]  # the progress reaches the notebook
    again = kernel.run("print(sample_points(meshes, root / 'points', config))")
    assert "sampled=40" in again["text"] and "chunks_run=0" in again["text"]

    stopped = kernel.run(
        "print(sample_points(meshes, root / 'stopped', config))", interrupt_at="sampling points:"
    )
    assert stopped["error"] == "KeyboardInterrupt", stopped["text"]
    assert not kernel.pool_workers()
    assert not (tmp_path / "data/stopped/.cg3d.lock").exists()
    resumed = kernel.run("print(sample_points(meshes, root / 'stopped', config))")
    assert resumed["error"] is None, resumed["text"]
    assert "sampled=40" in resumed["text"] and "chunks_run=20" not in resumed["text"]


def test_a_notebook_loads_a_model_and_runs_a_command_in_process(kernel, tiny_checkpoint):
    """The API in a cell, and `cli.main()` in one: the kernel keeps its own SIGTERM handler
    (main's stayed installed, so the kernel's SIGTERM raised KeyboardInterrupt in its loop)."""
    cell = f"""
import signal, sys
import numpy as np
import cg3d
from cg3d import cli
model = cg3d.load({str(tiny_checkpoint)!r})
shape = np.random.default_rng(0).normal(size=(64, 3))
print(model.classify(shape, labels=["cube", "sphere"], top=1)[0].label in ("cube", "sphere"))
print(model.embed_points(shape).shape)
before = signal.getsignal(signal.SIGTERM)
sys.argv = ["cg3d", "--help"]
try:
    cli.main()
except SystemExit as stop:
    print("exit", stop.code)
print("kept", signal.getsignal(signal.SIGTERM) is before)
"""
    done = kernel.run(cell)
    assert done["error"] is None, done["text"]
    lines = done["stdout"].splitlines()
    assert lines[0] == "True" and lines[1].startswith("(1, "), done["text"]
    assert "exit 0" in lines and "kept True" in lines, done["text"]
