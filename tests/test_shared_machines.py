"""Containers, Slurm jobs and shared machines (issue t83a): the CPUs and memory a process may
use are its cgroup's (`docker --cpus=4 --memory=16g` on a 64-core host), its pool workers share
them instead of each starting a thread per CPU, and a worker the OOM killer ends is one line
that names memory. The cgroup files are read under a fake root folder."""

import calendar
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

import cg3d.params
from cg3d.errors import UsageError
from cg3d.params import (
    cgroup_cpu_quota,
    cgroup_memory_limit,
    cpu_count,
    limit_threads,
    memory_limit,
    thread_variables,
)

GIB = 2**30


@pytest.fixture
def threads_unset():
    """No thread variable set, and the environment as it was afterwards (monkeypatch's
    delenv of an unset variable does not remove it again)."""
    before = dict(os.environ)
    for name in cg3d.params.THREAD_VARIABLES:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture
def host_of_64(monkeypatch):
    """A process that may run on 64 CPUs (its affinity)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))


def fake_root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    """A root folder with /proc/self/cgroup and the cgroup files (paths under it)."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


V2 = "0::/system.slice/job42\n"


@pytest.mark.parametrize(
    "cgroup,files,expected",
    [
        # docker --cpus=4, cgroup v2 with a cgroup namespace: its own cgroup is the root
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "400000 100000\n"}, 4),
        # a Slurm job's cgroup (v2): 1.5 CPUs' time is 2 CPUs
        (V2, {"sys/fs/cgroup/system.slice/job42/cpu.max": "150000 100000\n"}, 2),
        # a parent's quota holds for its children
        (
            V2,
            {
                "sys/fs/cgroup/system.slice/cpu.max": "300000 100000\n",
                "sys/fs/cgroup/system.slice/job42/cpu.max": "max 100000\n",
            },
            3,
        ),
        # cgroup v1, the container's cgroup mounted as the root (its path is not there)
        (
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
            {
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "800000\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            8,
        ),
        # no quota
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "max 100000\n"}, 64),
        (
            "4:cpu,cpuacct:/\n",
            {
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            64,
        ),
        # odd files: never an error, the affinity's count
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "lots\n"}, 64),
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "400000 0\n"}, 64),
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "\x00\xff" * 1000}, 64),
        ("garbage without colons\n0::relative/../path\n", {}, 64),
        ("0::/../../etc\n", {"sys/fs/cgroup/cpu.max": "200000 100000\n"}, 2),
    ],
)
def test_cpu_count_is_the_cgroup_quota(host_of_64, tmp_path, cgroup, files, expected):
    assert cpu_count(fake_root(tmp_path, cgroup, files)) == expected


def test_cpu_count_without_cgroup_files(host_of_64, tmp_path):
    assert cpu_count(tmp_path) == 64  # no /proc/self/cgroup
    (tmp_path / "proc/self/cgroup").mkdir(parents=True)  # a folder where a file should be
    assert cpu_count(tmp_path) == 64
    assert cgroup_cpu_quota(tmp_path) is None


def test_memory_limit_is_the_cgroup_limit(tmp_path, monkeypatch):
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    v2 = fake_root(tmp_path / "v2", V2, {"sys/fs/cgroup/system.slice/job42/memory.max": f"{GIB}\n"})
    assert memory_limit(v2) == min(GIB, machine)
    unlimited = fake_root(tmp_path / "max", "0::/\n", {"sys/fs/cgroup/memory.max": "max\n"})
    assert cgroup_memory_limit(unlimited) is None
    assert memory_limit(unlimited) == machine
    v1 = fake_root(
        tmp_path / "v1",
        "9:memory:/docker/abc\n",
        {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},  # none
    )
    assert memory_limit(v1) == machine


def test_blender_workers_share_the_cgroups_memory_not_the_hosts(monkeypatch):
    """Before: 3/4 of the host's RAM shared by the Blenders: in a 4 GiB container on a host
    of 64 GiB, each of 2 was let grow to 24 GiB, so the cgroup's OOM killer, not the limit,
    ended the object."""
    from cg3d.render.supervisor import worker_memory_bytes

    monkeypatch.setattr(cg3d.params, "cgroup_memory_limit", lambda root=None: 4 * GIB)
    assert worker_memory_bytes(0, 2) == int(1.5 * GIB)


def test_thread_variables_lower_and_keep_a_smaller_one(host_of_64, monkeypatch, threads_unset):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "32")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "nonsense")
    env = thread_variables(4)
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["LP_NUM_THREADS"] == "4"
    assert thread_variables(64) == {}  # the libraries' own defaults: nothing changes


def test_limit_threads_lowers_torchs_threads(host_of_64, threads_unset):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        limit_threads(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_the_cli_limits_threads_to_a_cpu_quota_and_puts_them_back(
    monkeypatch, capsys, threads_unset
):
    """Before: in `docker --cpus=4` on 64 cores torch and BLAS started 64 threads. And an
    in-process `main()` (a notebook, a script over configs) then left the caller's torch on 4
    threads and the variables set for every process it started after."""
    from cg3d import cli

    seen = {}

    def command() -> None:
        seen.update(os.environ, torch=torch.get_num_threads())
        raise SystemExit(0)

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(cg3d.params, "cgroup_cpu_quota", lambda root=None: 4.0)
    monkeypatch.setattr(cli, "app", command)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")  # the caller's own, smaller: kept
    before = torch.get_num_threads()
    torch.set_num_threads(6)
    try:
        with pytest.raises(SystemExit):
            cli.main()
        assert seen["OMP_NUM_THREADS"] == seen["LP_NUM_THREADS"] == "4"
        assert seen["MKL_NUM_THREADS"] == "2" and seen["torch"] == 4
        assert torch.get_num_threads() == 6
        assert "OMP_NUM_THREADS" not in os.environ and "LP_NUM_THREADS" not in os.environ
        assert os.environ["MKL_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


def report_threads(folder: Path, index: int) -> int:
    """A pool task: the thread counts its worker's libraries have."""
    import torch

    seen = {"omp": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads()}
    (folder / f"{index}.json").write_text(json.dumps(seen))
    return 1


def die_killed(folder: Path, index: int) -> int:
    """A pool task whose worker the kernel kills (as its OOM killer does)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


def test_pool_workers_share_the_cpus(tmp_path, threads_unset):
    """Before: each of N chunk workers ran torch and BLAS with a thread per CPU."""
    from cg3d.pipeline.chunks import _run_pool

    if cpu_count() < 2:
        pytest.skip("needs 2 CPUs")
    share = cpu_count() // 2
    _run_pool(report_threads, iter([((tmp_path, i), 1) for i in range(4)]), 2, lambda n: None)
    seen = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(seen) == 4
    assert all(s["torch"] <= share for s in seen)
    assert all(s["omp"] == str(share) for s in seen)


def test_a_worker_killed_by_the_oom_killer_is_one_line_naming_memory(tmp_path):
    """Before: a BrokenProcessPool traceback ("terminated abruptly")."""
    from cg3d.pipeline.chunks import _run_pool

    with pytest.raises(UsageError, match=r"worker process was killed .*out-of-memory.* GiB"):
        _run_pool(die_killed, iter([((tmp_path, i), 1) for i in range(4)]), 2, lambda n: None)


def test_a_blender_killed_by_sigkill_names_memory(tmp_path):
    """Before: "crash: Blender exited with code -9", which says nothing of memory."""
    from cg3d.render.supervisor import BlenderWorker, WorkerDied

    worker = BlenderWorker.__new__(BlenderWorker)  # a process in Blender's place
    worker.log_path = tmp_path / "worker.log"
    worker.process = subprocess.Popen(["sh", "-c", "kill -9 $$"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(WorkerDied, match=r"Blender was killed \(SIGKILL, .*out-of-memory.*GiB"):
        worker._read(10, "object a")


def test_a_held_lock_names_who_holds_it(tmp_path):
    """Two users, one data root: before, user B read "another run is writing into ... (it
    holds .cg3d.lock)" with no word of whose run."""
    from cg3d.files import LOCK_NAME, output_lock

    with output_lock(tmp_path / "out"), pytest.raises(UsageError) as refused:
        output_lock(tmp_path / "out").__enter__()  # a second run's lock, refused
    line = str(refused.value)
    assert f"(it holds {LOCK_NAME}: held by 'pid {os.getpid()} of " in line
    assert os.uname().nodename in line


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "garbage"])
def test_a_held_lock_says_since_when_in_utc(tmp_path, monkeypatch, zone):
    """The holder's start is UTC, labelled so, whatever the holder's TZ: the run it refuses may
    be another user's in another zone; `TZ=garbage` labelled UTC's time "garbage"."""
    import time

    from cg3d.files import output_lock

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        with output_lock(tmp_path / "out"), pytest.raises(UsageError) as refused:
            output_lock(tmp_path / "out").__enter__()
    finally:
        monkeypatch.undo()
        time.tzset()
    since = re.search(r"since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)'", str(refused.value))
    assert since and since.group(2) == "UTC"
    written = calendar.timegm(time.strptime(since.group(1), "%Y-%m-%d %H:%M:%S"))
    assert abs(written - time.time()) < 120  # UTC's time, not Kathmandu's (5 h 45 min off)


def test_a_hostile_lock_file_is_shown_cut_and_escaped(tmp_path):
    from cg3d.files import LOCK_NAME, _lock_holder

    (tmp_path / LOCK_NAME).write_bytes(b"\x1b[2J" + b"x" * 10_000)
    shown = _lock_holder(tmp_path / LOCK_NAME)
    assert "\x1b" not in shown and len(shown) < 300


def test_a_blender_is_told_its_share_of_the_cpus(monkeypatch, tmp_path, threads_unset):
    """Before: each of the stage's Blenders ran Cycles and Mesa with a thread per CPU."""
    from cg3d.render import supervisor

    started = {}

    class Started(Exception):
        pass

    def popen(args, env, **options):
        started.update(settings=json.loads(args[-1]), env=env)
        raise Started

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    worker = supervisor.BlenderWorker({"role": "points"}, 10, 1 << 30, tmp_path, threads=4)
    with pytest.raises(Started):
        worker.start()
    worker.close()
    assert started["settings"]["threads"] == 4  # Cycles' render.threads
    assert started["env"]["LP_NUM_THREADS"] == started["env"]["OMP_NUM_THREADS"] == "4"


class KilledInWorker(torch.utils.data.IterableDataset):
    """A loader worker's dataset whose worker the kernel kills (as its OOM killer does)."""

    def __iter__(self):
        os.kill(os.getpid(), signal.SIGKILL)
        yield {}


def test_a_loader_worker_killed_by_the_oom_killer_is_one_line_naming_memory(monkeypatch):
    """Before: "RuntimeError: DataLoader worker (pid(s) 31997) exited unexpectedly", a
    traceback of `cg3d train` with train.workers 2 whose loader worker was SIGKILLed."""
    import dataclasses

    import torch

    from cg3d.params import TrainConfig
    from cg3d.train import data

    real_loader = torch.utils.data.DataLoader
    monkeypatch.setattr(
        data.torch.utils.data,
        "DataLoader",
        lambda dataset, **kwargs: real_loader(KilledInWorker(), **kwargs),
    )
    monkeypatch.setattr(data, "BatchSlots", lambda *args: None)
    config = dataclasses.replace(
        data.LoaderConfig.of_params(TrainConfig(batch_size=1), image_size=8), workers=1
    )
    shards = type("S", (), {"names": ["a.tar"], "preprocess": data.ClipPreprocess(8)})()
    with pytest.raises(UsageError, match=r"worker process was killed .*out-of-memory.* GiB"):
        list(data.Loader(shards, config, train=False, samples=1))


def test_a_user_whose_passwd_name_is_not_utf8_can_take_a_lock(tmp_path, monkeypatch):
    """Issue t84a: a passwd entry written in Latin-1 (`Jos\\xe9`, which Python's pwd hands over
    as a surrogate) made writing the holder raise UnicodeEncodeError: that user's every
    stage ended at its output lock."""
    import types

    from cg3d import files

    user = types.SimpleNamespace(pw_name="Jos\udce9")
    monkeypatch.setattr(files.pwd, "getpwuid", lambda uid: user)
    with files.output_lock(tmp_path / "out"), pytest.raises(UsageError) as refused:
        files.output_lock(tmp_path / "out").__enter__()
    assert "of Jos\\\\xe9 on " in str(refused.value)  # repr's spelling of `Jos\xe9`
