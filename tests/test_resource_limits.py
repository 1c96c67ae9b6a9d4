"""The per-process limits a shared node sets (`ulimit`, PAM's limits.conf, Slurm's
PropagateResourceLimits; issue t89a). Under `ulimit -v` or `-d` torch's shared libraries could
not be mapped and every torch command said "needs the package '_C', which this Python lacks:
pip install '_C'". A worker (a pool's, a Blender) that `ulimit -t` ended was put down to the
out-of-memory killer (SIGKILL, which `ulimit -t N` sends at once: its soft and hard limits are
equal) or to a crash in native code (SIGXCPU, at a soft limit below the hard one)."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cg3d.errors import UsageError

CHECKOUT = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def cpu_limit_of_the_job():
    """A finite CPU time limit on this process, as `ulimit -S -t` in the job's shell sets it
    (large: the test's own seconds never reach it), restored afterwards."""
    before = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (100_000, before[1]))
    yield 100_000
    resource.setrlimit(resource.RLIMIT_CPU, before)


def spin_under(folder: Path, soft: int, hard: int) -> int:
    """A pool task that lowers its worker's CPU time limit to `soft`, `hard` seconds beyond
    what it used, and spins until the kernel ends it."""
    used = int(resource.getrusage(resource.RUSAGE_SELF).ru_utime)
    resource.setrlimit(resource.RLIMIT_CPU, (used + soft, used + hard))
    while True:
        pass


@pytest.mark.parametrize(("soft", "hard"), [(1, 1), (1, 60)])
def test_a_pool_worker_past_the_cpu_time_limit_is_said_so(
    tmp_path, cpu_limit_of_the_job, soft, hard
):
    """Before: SIGKILL "most often by the out-of-memory killer", SIGXCPU "a crash in a
    library's native code"."""
    from cg3d.pipeline.chunks import _run_pool

    tasks = iter([((tmp_path, soft, hard), 1) for _ in range(2)])
    with pytest.raises(UsageError) as refused:
        _run_pool(spin_under, tasks, 2, lambda n: None)
    line = str(refused.value)
    assert "SIGXCPU" in line if soft != hard else "SIGKILL" in line
    assert "the CPU time limit" in line and "`ulimit -t`" in line, line
    assert "native code" not in line


@pytest.mark.parametrize(("limits", "words"), [("1 1", "SIGKILL"), ("1 60", "SIGXCPU")])
def test_a_blender_past_the_cpu_time_limit_is_a_failure_row_naming_it(
    tmp_path, cpu_limit_of_the_job, limits, words
):
    """The object's failure row names the limit; before, "SIGKILL, most often by the
    out-of-memory killer" or "exited with code -24"."""
    from cg3d.render.supervisor import BlenderWorker

    class CpuWorker(BlenderWorker):
        module = "tests.render.cpu_worker"

    path = tmp_path / "a.obj"
    path.write_text(limits)
    with CpuWorker({}, timeout_s=120, tmp_root=tmp_path / "workers") as worker:
        _, _, reason = worker.points("a", path, "y", {}, tmp_path)
    assert reason is not None and reason.startswith("crash: Blender"), reason
    assert words in reason and "the CPU time limit" in reason, reason


IMPORT_TORCH = """
import resource, sys
resource.setrlimit(resource.{limit}, ({size}, {size}))
from cg3d.errors import missing_dependency_line
try:
    import torch
except ImportError as error:
    print(missing_dependency_line(error, "cg3d train"))
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("limit", "size", "flag"),
    [("RLIMIT_AS", 1 << 30, "ulimit -v"), ("RLIMIT_DATA", 300 << 20, "ulimit -d")],
)
def test_torch_refused_by_a_memory_limit_names_the_limit(limit, size, flag):
    """Before: "`cg3d train` needs the package '_C', which this Python lacks: pip install
    '_C'" (the ImportError of torch's extension names it without its package)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_TORCH.format(limit=limit, size=size)],
        env={**os.environ, "PYTHONPATH": CHECKOUT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stdout.strip()
    if line == "imported":
        pytest.skip(f"this torch loads under {limit} = {size} bytes")
    assert done.returncode == 0, done.stderr
    assert "could not load the package 'torch'" in line, line
    assert f"`{flag}`" in line and limit in line, line
    assert "_C'" not in line and "lacks" not in line


def test_a_missing_package_is_still_named_under_a_memory_limit():
    """The limit is named only for a library the loader could not map: a package that is
    not installed stays "lacks"."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))\n"
        "from cg3d.errors import missing_dependency_line\n"
        "try:\n    import no_such_package_t89a\n"
        "except ImportError as error:\n    print(missing_dependency_line(error, 'cg3d x'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": CHECKOUT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "needs the package 'no_such_package_t89a', which this Python" in done.stdout
    assert "lacks" in done.stdout and "ulimit" not in done.stdout
