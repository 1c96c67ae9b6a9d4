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


def run_python(
    *args: str, timeout: float, cwd: Path | None = None, **options
) -> subprocess.CompletedProcess:
    """`python ARGS` with this checkout's cg3d importable, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": CHECKOUT},
        capture_output=True,
        text=True,
        timeout=timeout,
        **options,
    )


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
    done = run_python("-c", IMPORT_TORCH.format(limit=limit, size=size), timeout=120)
    line = done.stdout.strip()
    if line == "imported":
        pytest.skip(f"this torch loads under {limit} = {size} bytes")
    assert done.returncode == 0, done.stderr
    assert "could not load the package 'torch'" in line, line
    assert f"`{flag}`" in line and limit in line, line
    assert "_C'" not in line and "lacks" not in line


BPY_REFUSED = """
import resource
resource.setrlimit(resource.RLIMIT_AS, (64 << 30, 64 << 30))
from cg3d.errors import missing_dependency_line
# the last line of bpy's import under `ulimit -v` 1.2 GB (cg3d render's import check, t89a);
# the import itself is not run here: it crashed or hung as often as it said so
said = "Calloc returns null: len=272 in keymap list, total 5914276"
print(missing_dependency_line(ImportError(said, name="bpy"), "cg3d render"))
"""


def test_bpy_refused_by_a_memory_limit_names_the_limit():
    """Before: "has 'bpy' but cannot import (ImportError: Calloc returns null: len=272 in
    keymap list ...): reinstall it"."""
    done = run_python("-c", BPY_REFUSED, timeout=60)
    line = done.stdout.strip()
    assert "could not load the package 'bpy'" in line, line + done.stderr
    assert "`ulimit -v`" in line and "reinstall" not in line, line


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
    done = run_python("-c", script, timeout=60)
    assert "needs the package 'no_such_package_t89a', which this Python" in done.stdout
    assert "lacks" in done.stdout and "ulimit" not in done.stdout


# `cg3d sample` with 8 workers, as on a node of 8 CPUs (this one may have fewer: the count of
# CPUs is set), its meshes made first.
SAMPLE_ON_EIGHT_CPUS = """
import sys
from pathlib import Path

if __name__ == "__main__":
    import cg3d.params
    from tests.pipeline.meshes import make_meshes, shapes

    cg3d.params._affinity_count = lambda: 8
    if not Path("data/meshes").exists():
        make_meshes(Path("data"), shapes(16))
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
    from cg3d.__main__ import run

    sys.argv = ["cg3d", "sample", "--meshes", "data/meshes", "--out", "data/points",
                "--points", "64", "--workers", "8", "--chunk-size", "2"]
    run()
"""


def sample_on_eight_cpus(tmp_path: Path, soft: int, hard: int) -> subprocess.CompletedProcess:
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE_ON_EIGHT_CPUS.format(soft=soft, hard=hard))
    return run_python(str(script), timeout=300, cwd=tmp_path)


def test_too_few_open_files_is_one_line_naming_the_limit_and_the_workers(tmp_path):
    """`ulimit -n 24` (soft and hard) on 8 workers: was "OSError: [Errno 24] Too many open
    files", a traceback from a pool worker's pipe. The rerun under a larger limit resumes."""
    done = sample_on_eight_cpus(tmp_path, 24, 24)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert last.startswith("error: too many open files (EMFILE)"), last
    assert "`ulimit -n`" in last and "24" in last and "--workers" in last
    assert "Traceback" not in done.stderr
    done = sample_on_eight_cpus(tmp_path, 4096, 4096)
    assert done.returncode == 0, done.stderr
    assert "sampled 16/16 objects" in done.stdout + done.stderr


def test_a_low_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path):
    """A login node's soft limit below its hard one (PAM's limits.conf): the stage raises it
    and finishes, as Go's runtime and the JVM do; was the EMFILE traceback."""
    done = sample_on_eight_cpus(tmp_path, 24, 4096)
    assert done.returncode == 0, done.stderr
    assert "sampled 16/16 objects" in done.stdout + done.stderr


def test_the_soft_open_files_limit_is_put_back_after_an_in_process_call():
    """`cg3d.cli.main` called in a notebook leaves the caller's soft limit as it found it."""
    from cg3d.params import MAX_OPEN_FILES, open_files_raised

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = MAX_OPEN_FILES if before[1] == resource.RLIM_INFINITY else before[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, before[1]))
        with open_files_raised():
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(hard, MAX_OPEN_FILES)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (256, before[1])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


# `cg3d sample` where the kernel refuses a new process or thread, as under `ulimit -u` just
# above the user's count (root is exempt from RLIMIT_NPROC, so its refusal is put in place of
# the call that meets it: the clone of a pool's process, or of a thread).
SAMPLE_REFUSED = """
import errno
import sys
import threading
import multiprocessing.util
from pathlib import Path

if __name__ == "__main__":
    import cg3d.params
    from tests.pipeline.meshes import make_meshes, shapes

    cg3d.params._affinity_count = lambda: 2
    make_meshes(Path("data"), shapes(4))

    def refuse_process(*args, **kwargs):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def refuse_thread(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    if sys.argv[1] == "process":
        multiprocessing.util.spawnv_passfds = refuse_process
    else:
        threading._start_new_thread = refuse_thread
    from cg3d.__main__ import run

    sys.argv = ["cg3d", "sample", "--meshes", "data/meshes", "--out", "data/points",
                "--points", "64", "--workers", "2", "--chunk-size", "2"]
    run()
"""


@pytest.mark.parametrize("refused", ["process", "thread"])
def test_a_process_or_thread_the_kernel_refuses_is_one_line_naming_ulimit_u(tmp_path, refused):
    """Was "BlockingIOError: [Errno 11] Resource temporarily unavailable" (the pool's start)
    or "RuntimeError: can't start new thread", a traceback."""
    script = tmp_path / "sample.py"
    script.write_text(SAMPLE_REFUSED)
    done = run_python(str(script), refused, timeout=300, cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert last.startswith("error: could not start a process or a thread"), last
    assert "`ulimit -u`" in last and "--workers" in last
    assert "Traceback" not in done.stderr


def test_a_blender_worker_dumps_no_core_under_ulimit_c_unlimited(tmp_path):
    """`ulimit -c unlimited` (a debugging node's default): each crash of a Blender wrote a core
    of its size into the folder the command was run from, the object then retried or failed
    all the same. Its limits as the kernel reports them."""
    import re

    from cg3d.render.supervisor import BlenderWorker

    class FakeWorker(BlenderWorker):
        module = "tests.render.fake_worker"

    before = resource.getrlimit(resource.RLIMIT_CORE)
    if before[1] == 0:
        pytest.skip("core dumps are off for good here (a hard limit of 0)")
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
        with FakeWorker({}, timeout_s=60, tmp_root=tmp_path / "workers") as worker:
            worker.start()
            limits = Path(f"/proc/{worker.process.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, before)
    assert re.search(r"Max core file size\s+0\s", limits), limits


LOADER_UNDER_FEW_FILES = """
import multiprocessing
import resource

import torch

from cg3d.train import data

if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(64)), batch_size=4, num_workers=16,
        persistent_workers=True,
    )
    try:
        getattr(data, "started_workers", iter)(loader)  # iter: torch's own start
    except OSError as error:
        print("refused", error.errno)
    print("alive", len(multiprocessing.active_children()))
"""


def test_a_loader_that_cannot_start_all_its_workers_stops_those_it_started(tmp_path):
    """`cg3d train` under `ulimit -n` too low for its loader's workers: its one line was
    followed by torch's "Exception ignored ... AttributeError: ... '_workers_status'" and the
    workers it had started ran on until the process exited."""
    script = tmp_path / "loader.py"
    script.write_text(LOADER_UNDER_FEW_FILES)
    done = run_python(str(script), timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "refused 24" in done.stdout, done.stdout + done.stderr
    assert "alive 0" in done.stdout, done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr


def crash(folder: Path) -> None:
    """A pool task whose worker crashes in native code, as a library's bug does."""
    os.abort()


CRASHING_POOL = """
from pathlib import Path
from cg3d.errors import UsageError
from cg3d.pipeline.chunks import _run_pool
from tests.test_resource_limits import crash
if __name__ == "__main__":
    try:
        _run_pool(crash, iter([((Path("."),), 1) for _ in range(2)]), 2, lambda n: None)
    except UsageError as error:
        print(error)
"""


def test_a_crashed_pool_worker_dumps_no_core_into_the_cwd(tmp_path):
    """Under `ulimit -c unlimited` each crashed pool worker wrote a core of its size into the
    folder the command was run from (the Blender workers already wrote none, t89a)."""
    pattern = Path("/proc/sys/kernel/core_pattern")
    if not pattern.exists() or not pattern.read_text().startswith("core"):
        pytest.skip("cores here go to a handler, not to the cwd")
    if resource.getrlimit(resource.RLIMIT_CORE)[1] != resource.RLIM_INFINITY:
        pytest.skip("the hard core size limit here is finite")
    (tmp_path / "crash.py").write_text(CRASHING_POOL)
    done = run_python(
        "crash.py",
        timeout=120,
        cwd=tmp_path,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (-1, -1)),
    )
    assert "SIGABRT" in done.stdout, done.stdout + done.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["crash.py"]


REPEATED_SIGXCPU = """
import os, signal, time
from cg3d.stopping import COMMAND_STOP_SIGNALS, Interrupt
Interrupt(exit_line=False).install(COMMAND_STOP_SIGNALS)
try:
    os.kill(os.getpid(), signal.SIGXCPU)
    time.sleep(5)
except KeyboardInterrupt:
    for _ in range(3):  # the kernel's, once a CPU second of the cleanup
        os.kill(os.getpid(), signal.SIGXCPU)
    print("cleaned up")
"""


def test_the_kernels_repeated_sigxcpu_does_not_end_the_cleanup():
    """The first SIGXCPU stops the command; the kernel sends one again each CPU second until
    the hard limit, which counted as a third stop signal ended the cleanup at once."""
    done = run_python("-c", REPEATED_SIGXCPU, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "cleaned up"), done.stderr


def test_a_file_past_the_file_size_limit_is_one_line_naming_the_limit_and_resumes(tmp_path):
    """`ulimit -f 20` (20 KiB) below a part's size: Python ignores SIGXFSZ, so the write fails
    with EFBIG, which stopped the stage with its file named ("File too large (EFBIG)") but not
    the limit, nor the remedy. No part of the file is kept, and a rerun without the limit
    resumes."""
    from tests.pipeline.meshes import make_meshes, shapes

    meshes = make_meshes(tmp_path / "data", shapes(3))
    out = tmp_path / "points"
    command = ["-m", "cg3d", "sample", "--meshes", str(meshes), "--out", str(out)]
    command += ["--points", "5000", "--workers", "1"]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    done = run_python(
        *command,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, limit)),
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr
    assert last.startswith(f"error: {out}/part-") and "(EFBIG)" in last, last
    assert "20480 bytes" in last and "`ulimit -f`" in last, last
    assert "Traceback" not in done.stderr
    assert list(out.glob("part-*")) == [] and not (out / ".cg3d.lock").exists()
    assert [path.name for path in out.iterdir() if path.name.endswith(".tmp")] == []

    done = run_python(*command, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sampled 3/3 objects" in done.stdout, done.stdout


# Blender's copy of an OBJ (`blender_input`) written under a file size limit below its size.
COPY_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from cg3d.geometry.meshio import blender_input

source, folder = Path(sys.argv[1]), Path(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    blender_input(source, source.parent, "", folder)
except OSError as error:
    print(error.errno, error.filename)
"""


def test_blenders_copy_past_the_file_size_limit_names_the_copy(tmp_path):
    """The render stage's copy of an OBJ for Blender, past `ulimit -f` (or on a full disk):
    a write to an open file names no file, and the stage stopped with "error: File too large
    (EFBIG)" alone. Now the error names the copy, and the line the limit
    (`test_a_file_past_the_file_size_limit_is_one_line_naming_the_limit_and_resumes`)."""
    import errno

    import trimesh

    source = tmp_path / "ball.obj"
    trimesh.creation.icosphere(4).export(source)  # 2562 vertices: past 4 KiB
    folder = tmp_path / "copies"
    done = run_python("-c", COPY_UNDER_A_FILE_SIZE_LIMIT, str(source), str(folder), timeout=120)
    assert done.stdout.split() == [str(errno.EFBIG), str(folder / "ball.obj")], done.stderr
