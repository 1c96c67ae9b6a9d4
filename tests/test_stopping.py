"""The stop-signal handler of a pool worker (`cg3d.stopping`): a signal interrupts the task it
runs, as Ctrl-C does, and an idle worker ignores it. Before: an idle pool worker of `cg3d pack`
hit by a group's SIGHUP (or Ctrl-C) raised KeyboardInterrupt where it waited for work, and
printed a traceback; SIGTERM and SIGHUP killed a busy one mid-part."""

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cg3d.stopping import STOP_SIGNALS, AwakeTimer, Stopwatch
from tests.stopping import still_running

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """`python *args` (`-c` and a script, or a script's file, then its arguments) with this
    checkout's `cg3d` importable, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )


WORKER = """
import os, signal, sys, time
from cg3d.stopping import run_task, stop_tasks_as_interrupt

signum = signal.Signals[sys.argv[1]]
stop_tasks_as_interrupt()


def signalled() -> str:
    os.kill(os.getpid(), signum)
    time.sleep(0.2)  # the handler runs between bytecodes: here
    return "not interrupted"


print("idle:", signalled())
try:
    print("task:", run_task(signalled))
except KeyboardInterrupt:
    print("task: interrupted")
print("idle again:", signalled())
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_pool_worker_is_interrupted_in_a_task_only(name):
    result = run_script("-c", WORKER, name, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "idle: not interrupted",
        "task: interrupted",
        "idle again: not interrupted",
    ]


NOHUP = """
import os, signal, time
from cg3d.stopping import Interrupt

signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a command
Interrupt().install()
os.kill(os.getpid(), signal.SIGHUP)
time.sleep(0.2)
print("still running")
"""


def test_a_command_started_under_nohup_keeps_ignoring_sighup():
    """`nohup cg3d train ...` must outlive the ssh session: a SIGHUP it was started ignoring
    stays ignored, not turned into a stop."""
    result = run_script("-c", NOHUP, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "still running"


SLOW_CHUNK = """
import time
from collections.abc import Callable
from pathlib import Path


def chunk(folder: str, number: int) -> None:
    # Runs for two minutes unless a stop signal interrupts it
    Path(folder, f"started-{number}").touch()
    time.sleep(120)
    Path(folder, f"finished-{number}").touch()
"""

POOL = """
import os, signal, sys
from concurrent.futures import ProcessPoolExecutor

from cg3d.pipeline import chunks
from cg3d.stopping import Interrupt

if sys.argv[2] == "background":  # as a script's `cg3d sample ... &` is started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
Interrupt().install()

if sys.argv[2] == "starting":  # a SIGTERM that lands between the pool's first submits

    class Pool(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            future = super().submit(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)
            return future

    chunks.ProcessPoolExecutor = Pool

import slow_chunk

jobs = iter([((sys.argv[1], number), 1) for number in range(4)])
try:
    chunks._run_pool(slow_chunk.chunk, jobs, 2, lambda size: None)
except KeyboardInterrupt:
    sys.exit(143)
"""


@pytest.mark.parametrize("when", ["background", "starting"])
def test_a_signal_to_the_pool_process_stops_the_running_chunks(tmp_path, when):
    """`kill PID` of a chunk pool run in a script's background (SIGINT ignored from the start,
    so the workers ignored the SIGINT their parent sent them) or landing while the pool starts
    (then outside the code that interrupts the workers): the chunks ran whole, two minutes
    here, before the command stopped."""
    (tmp_path / "slow_chunk.py").write_text(SLOW_CHUNK)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    process = subprocess.Popen(
        [sys.executable, "-c", POOL, str(marks), when],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        if when == "background":
            deadline = time.monotonic() + 60
            while not list(marks.glob("started-*")) and time.monotonic() < deadline:
                time.sleep(0.05)  # polls for the chunk to start: no result depends on timing
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not list(marks.glob("finished-*"))


DEAF = """
import os, signal, sys, threading, time
from cg3d.stopping import Interrupt, workers_start_deaf

# A thread that leaves the stop signals unblocked takes them while the main thread has them
# blocked, as the progress bar's refresh thread does in a stage; Python still runs the handler
# in the main thread.
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()


def signalled() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)  # the handler runs between bytecodes: here


if sys.argv[1] == "nested":
    Interrupt(exit_line=False).install()
    try:
        with workers_start_deaf():
            with workers_start_deaf():
                pass
            signalled()  # still inside the outer block: held
            print("held in the outer block")
    except KeyboardInterrupt:
        print("raised at the outer block's end")

if sys.argv[1] == "insisting":
    Interrupt(exit_line=False).install()
    try:
        with workers_start_deaf():
            signalled()
            print("first held")
            signalled()
            print("second held too")
    except KeyboardInterrupt:
        print("stopped")
    signalled()  # a third: the process ends at once, exit 128 + the first's number
    print("went on after three")

if sys.argv[1] == "thread":
    Interrupt(exit_line=False).install()

    def starts_a_pool() -> None:
        try:
            with workers_start_deaf():
                time.sleep(2.0)
            print("thread: went on")
        except KeyboardInterrupt:
            print("thread: interrupted")

    thread = threading.Thread(target=starts_a_pool)
    thread.start()
    time.sleep(0.3)
    try:
        signalled()
        time.sleep(3.0)
        print("main: went on")
    except KeyboardInterrupt:
        print("main: interrupted")
    thread.join()
"""


@pytest.mark.parametrize(
    ("case", "lines"),
    [
        ("nested", ["held in the outer block", "raised at the outer block's end"]),
        ("thread", ["main: interrupted", "thread: went on"]),
        ("insisting", ["first held", "stopped"]),
    ],
)
def test_a_stop_held_while_workers_start_is_raised_once_in_the_main_thread(case, lines):
    """`workers_start_deaf` holds the first stop signal until the pool's start ends. Nested,
    the inner block's end raised it while the outer one still started workers. In a thread
    other than the main one, the hold moved the stop into that thread: the main thread,
    where Python raises a stop, went on as if none came. A second signal while one is held
    stops at once, and a third ends the process, as anywhere else: every signal was held, so
    a start that hung could not be stopped."""
    result = run_script("-c", DEAF, case, timeout=60)
    assert result.returncode == (143 if case == "insisting" else 0), result.stderr
    assert result.stdout.splitlines() == lines


SLOW_SHAPE = """
import time
from collections.abc import Callable
from pathlib import Path

FOLDER = Path(__file__).parent / "marks"


def prepare(points, n_points, up_axis, seed, *rest):
    # Runs for two minutes unless a stop signal interrupts it
    (FOLDER / f"started-{seed}").touch()
    time.sleep(120)
    (FOLDER / f"finished-{seed}").touch()
    return points, False
"""

ZEROSHOT = """
import sys

import numpy as np

import slow_shape
from cg3d.eval import zeroshot
from cg3d.eval.readers import Benchmark, Shape
from cg3d.stopping import Interrupt

Interrupt().install()
zeroshot.prepare_counted = slow_shape.prepare  # the workers import it by this name
zeroshot.bound_workers = lambda workers, jobs: workers  # two, on a machine of any size

def shapes():
    for index in range(40):
        yield Shape(f"s{index}", np.ones((4, 3), np.float32), 0)

benchmark = Benchmark("slow", "", ["a"], 40, shapes)
try:
    list(zeroshot.prepared_shapes(benchmark, 4, workers=2))
except KeyboardInterrupt:
    sys.exit(143)
"""


def test_a_signal_to_the_zeroshot_process_stops_its_pool_of_shapes(tmp_path):
    """`kill PID` of `cg3d eval zeroshot` while its pool prepares shapes: the pool's `with`
    shut down without cancelling the queued shapes (up to 8 a worker) and the running ones
    were not told of the stop, so each ran whole, two minutes here, before the command
    ended."""
    (tmp_path / "slow_shape.py").write_text(SLOW_SHAPE)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    process = subprocess.Popen(
        [sys.executable, "-c", ZEROSHOT], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls for both workers to start: no result depends on timing
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert not list(marks.glob("finished-*"))
    assert len(list(marks.glob("started-*"))) == 2  # the queued shapes were never prepared


def test_the_zeroshot_pools_workers_exit_when_its_process_is_killed_with_9(tmp_path):
    """`kill -9` of `cg3d eval zeroshot` while its pool prepares shapes: nothing tells the
    workers, which went on with their shapes (two minutes here) and then waited for more
    forever. They now watch for their parent (`exit_with_parent`, the chunk pool's too) and
    exit once it is gone, the resource tracker with them."""
    import psutil

    (tmp_path / "slow_shape.py").write_text(SLOW_SHAPE)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    process = subprocess.Popen([sys.executable, "-c", ZEROSHOT], stderr=subprocess.DEVNULL, env=env)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polls for both workers to start: no result depends on timing
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2  # the two workers (and the resource tracker)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        left = children
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [child for child in left if still_running(child)]
        assert left == []
    finally:
        for child in children:
            if still_running(child):
                child.kill()
        process.kill()
        process.wait()
    assert not list(marks.glob("finished-*"))


TWO_POOLS = """
import os
from multiprocessing import resource_tracker

from cg3d.pipeline import chunks

for _ in range(2):  # two stages' pools in one process
    chunks._run_pool(os.getpid, iter([((), 1)] * 4), 2, lambda size: None)
    print(resource_tracker._resource_tracker._pid, flush=True)
"""


def test_a_process_running_several_pools_keeps_one_resource_tracker_stopped_at_its_exit():
    """One rule for the resource tracker (`start_resource_tracker`): started once, stopped when
    the process exits. The chunk pool stopped its own at each pool's end as well, so a
    process running several stages started one tracker per stage."""
    import psutil

    result = run_script("-c", TWO_POOLS, timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    assert first == second != "None"
    assert "leaked" not in result.stderr
    assert not psutil.pid_exists(int(first)) or not still_running(psutil.Process(int(first)))


# Two stages' pools at once, in two threads of one process; the first ends while the second runs.
POOLS_IN_THREADS = """
import threading
import time
from multiprocessing import resource_tracker

from cg3d.pipeline import chunks


def stage(seconds, jobs):
    chunks._run_pool(time.sleep, iter([((seconds,), 1)] * jobs), 2, lambda size: None)
    print(resource_tracker._resource_tracker._pid, flush=True)


if __name__ == "__main__":
    threads = [threading.Thread(target=stage, args=args) for args in ((0.2, 4), (1.5, 6))]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
"""


def test_pools_run_in_threads_share_the_resource_tracker_to_the_end(tmp_path):
    """A process running two pools at once (an application running stages in threads): the
    first pool's end stopped the tracker under the second, whose semaphores then had none
    ("leaked semaphore objects", a KeyError traceback from the tracker it relaunched)."""
    script = tmp_path / "pools_in_threads.py"  # spawn's workers import the main module
    script.write_text(POOLS_IN_THREADS)
    result = run_script(str(script), timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    assert first == second != "None"
    assert "leaked" not in result.stderr and "Traceback" not in result.stderr, result.stderr


_worker_masks: tuple[list[str], list[str]] | None = None  # in a loader worker: see below


def _stop_signals_blocked() -> list[str]:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return sorted(signal.Signals(s).name for s in blocked if s in STOP_SIGNALS)


def _observed_init(init: Callable[[int], None], worker_id: int) -> None:
    """In a loader worker: the loader's own `worker_init_fn` `init`, with the stop signals the
    worker had blocked before and after it."""
    global _worker_masks
    before = _stop_signals_blocked()
    init(worker_id)
    _worker_masks = (before, _stop_signals_blocked())


def test_the_loader_workers_start_deaf_to_the_stop_signals(monkeypatch):
    """A group's SIGTERM landing in a training DataLoader worker still starting Python could
    print "Fatal Python error: init_import_site" and a traceback: the workers now start with
    the stop signals blocked, as the pools' do, and `stop_as_interrupt` unblocks them once
    its handler is in place. The next epoch reuses the same (persistent) workers."""
    import torch

    from cg3d.params import TrainConfig
    from cg3d.train import data

    real_loader = torch.utils.data.DataLoader

    class Observed(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"key": ["only"], "pid": [os.getpid()], "masks": [_worker_masks]}

    def loader(dataset, **kwargs):
        init = kwargs["worker_init_fn"]
        assert (init.func, init.args) == (data.start_loader_worker, (os.getpid(),))
        observed = functools.partial(_observed_init, init)
        return real_loader(Observed(), **{**kwargs, "worker_init_fn": observed})

    monkeypatch.setattr(data.torch.utils.data, "DataLoader", loader)
    monkeypatch.setattr(data, "BatchSlots", lambda *args: None)  # batches come whole here
    config = dataclasses.replace(
        data.LoaderConfig.of_params(TrainConfig(batch_size=1), image_size=8), workers=1
    )
    shards = type("S", (), {"names": ["a.tar"], "preprocess": data.ClipPreprocess(8)})()
    loader = data.Loader(shards, config, train=False, samples=1)
    first, second = list(loader), list(loader)
    assert first[0]["masks"] == [(["SIGHUP", "SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"], [])]
    assert second[0]["pid"] == first[0]["pid"] != [os.getpid()]
    assert _stop_signals_blocked() == []  # this process's mask is back as it was


# Works 1 s, says so, works 2 s more (the test stops it meanwhile); prints the Stopwatch's
# seconds. Work: short sleeps (one long sleep ends on time however long it was stopped).
STOPWATCH = """
import time
from cg3d.stopping import Stopwatch
clock = Stopwatch()
for _ in range(10):
    time.sleep(0.1)
print("working", flush=True)
for _ in range(20):
    time.sleep(0.1)
print(clock.seconds(), flush=True)
"""


def test_a_stopwatch_leaves_out_the_time_its_process_was_stopped():
    """Ctrl-Z then `fg` (here SIGSTOP, 4 s, SIGCONT): durations and rates count work, not the
    pause (`time.perf_counter` alone counted it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", STOPWATCH],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout.readline() == "working\n"
        process.send_signal(signal.SIGSTOP)
        time.sleep(4)
        process.send_signal(signal.SIGCONT)
        seconds = float(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
    assert 2.5 < seconds < 5.0  # 3 s of work (and a tick's doubt); with the pause: over 7


def hold_the_gil(seconds: float) -> float:
    """Work about `seconds` of CPU time in one C call, which keeps the GIL throughout (no
    bytecode runs in it, so no other thread of this process does); the CPU seconds it took."""
    start = time.process_time()
    sum(range(5_000_000))
    per_item = (time.process_time() - start) / 5_000_000
    start = time.process_time()
    sum(range(int(seconds / max(per_item, 1e-9))))
    return time.process_time() - start


def test_a_stopwatch_counts_work_that_keeps_the_gil_as_work():
    """The pause meter is a thread: a long C call in another thread (a big `sorted`, an
    unpickling) kept it from looking at the clock for as long, which it took for a stop, and
    left out of the duration: 7.4 s of work measured 1.5 s. The process used the CPU all
    along: it was not stopped."""
    clock = Stopwatch()
    time.sleep(0.6)  # the meter ticks
    worked = hold_the_gil(5.0)
    time.sleep(1.2)  # the meter's next look, which saw the long step
    # 1.8 s of sleep + the work; without the CPU time, the work counted as a 0.5 s tick
    assert worked > 2.5
    assert clock.seconds() > worked + 1.5


def test_a_timeout_counts_work_that_keeps_the_gil():
    """The same rule in `AwakeTimer`: a step of its clock in which this process worked (a
    render thread kept from the GIL by another) counts whole, not as the tick a stop does."""
    timer = AwakeTimer(3.0)
    start = time.process_time()
    while time.process_time() - start < 4.0:  # 4 s of work before it looks again
        pass
    assert timer.left() <= 0  # counted as one 0.5 s tick: 2.5 s were left


# A worker forked inside `workers_start_deaf`, as a DataLoader forks its workers; it stops as
# its `worker_init_fn` (`stop_as_interrupt`) says, then gets one SIGTERM.
FORKED_WORKER = """
import multiprocessing, os, signal, time
from cg3d.stopping import stop_as_interrupt, workers_start_deaf

def work(ready):
    stop_as_interrupt()
    try:
        ready.set()
        time.sleep(60)
        print("worker: not stopped", flush=True)
    except KeyboardInterrupt:
        print("worker: stopped", flush=True)

context = multiprocessing.get_context("fork")
ready = context.Event()
with workers_start_deaf():
    worker = context.Process(target=work, args=(ready,), daemon=True)
    worker.start()
ready.wait(30)
os.kill(worker.pid, signal.SIGTERM)
worker.join(30)
print("exit code", worker.exitcode, flush=True)
"""


def test_a_worker_forked_while_workers_start_deaf_stops_on_its_first_signal():
    """The first stop signal of this process is held while a pool or loader starts its
    workers; a forked worker inherited the hold, and with it no end: its first SIGTERM was
    held for ever (`kill -TERM` of a DataLoader worker, or multiprocessing's at exit, which
    then waited on the worker for ever)."""
    result = subprocess.run(
        [sys.executable, "-c", FORKED_WORKER],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.stdout.splitlines() == ["worker: stopped", "exit code 0"], result.stderr


def test_an_in_process_main_puts_the_callers_signal_handlers_back(monkeypatch, capsys):
    """A notebook or a script that runs `cli.main()` keeps its own handlers: main's stayed
    for good, so after a stopped command the caller's next Ctrl-C was ignored and its third
    ended the process, and SIGTERM raised KeyboardInterrupt instead of the caller's handler.
    The `cg3d` command itself (`whole_process`) keeps its handler through the exit."""
    from cg3d import cli
    from cg3d.stopping import Interrupt

    def callers(signum, frame):
        pass

    seen = {}

    def command() -> None:
        seen.update({signum: signal.getsignal(signum) for signum in STOP_SIGNALS})
        raise SystemExit(0)

    monkeypatch.setattr(cli, "app", command)
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, callers)
    try:
        for _ in range(2):
            with pytest.raises(SystemExit):
                cli.main()
            assert all(isinstance(seen[signum], Interrupt) for signum in STOP_SIGNALS)
            assert all(signal.getsignal(signum) is callers for signum in STOP_SIGNALS)
        with pytest.raises(SystemExit):
            cli.main(whole_process=True)
        assert all(isinstance(signal.getsignal(signum), Interrupt) for signum in STOP_SIGNALS)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


# A parent that starts a child asking to end with it (`end_with_parent`), prints the child's
# pid once the child has asked, and waits to be killed.
ENDS_WITH_PARENT = """
import os
import subprocess
import sys
import time

child = subprocess.Popen(
    [sys.executable, "-c", "import sys, time\\nfrom cg3d.stopping import end_with_parent\\n"
     "end_with_parent(int(sys.argv[1]))\\nprint(flush=True)\\ntime.sleep(300)", str(os.getpid())],
    stdout=subprocess.PIPE,
)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_that_asks_to_end_with_its_parent_ends_when_the_parent_is_killed_with_9():
    # a training's loader workers lived on for up to 5 s after a `kill -9` of the training
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", ENDS_WITH_PARENT], stdout=subprocess.PIPE, text=True, env=env
    )
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 60  # without the request: the 300 s sleep, then failed
        while still_running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not still_running(child)
    finally:
        if child is not None and still_running(child):
            child.kill()
        parent.kill()
        parent.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_whose_parent_ended_before_it_asked_exits_at_once():
    # the kernel sends nothing for a parent already gone: the child would have lived on
    result = run_script(
        "-c", "from cg3d.stopping import end_with_parent; end_with_parent(1)", timeout=60
    )
    assert result.returncode == 1, result.stderr


# Wall-clock reads, which NTP, a VM resumed or an admin's `date -s` steps by hours either way.
WALL_CLOCKS = {("time", "time"), ("time", "time_ns"), ("datetime", "now")}
WALL_CLOCKS |= {("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def wall_clock_reads(source: str) -> list[int]:
    """The lines of `source` that read the wall clock (`time.time()`, `datetime.now()`, ...,
    or `time` imported from the time module)."""
    import ast

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):  # `time.time`, `datetime.datetime.now`
            owner = getattr(node.value, "id", getattr(node.value, "attr", None))
            names = [(owner, node.attr)]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        if any(name in WALL_CLOCKS for name in names):
            lines.append(node.lineno)
    return lines


def test_no_duration_timeout_or_lock_reads_the_wall_clock():
    """Durations, timeouts, rates and the output lock measure `time.monotonic` or
    `time.perf_counter` (`AwakeTimer`, `Stopwatch`) and the lock is a file lock, not a time
    stamp: a wall clock stepped by an hour (NTP, a VM resumed) failed no timeout, broke no lock
    and made no ETA negative. A read of the wall clock in cg3d would bring that back; the lock
    holder's start time shown in an error line (`time.gmtime()`, display only) is none."""
    found = {}
    for path in sorted((ROOT / "cg3d").rglob("*.py")):
        if lines := wall_clock_reads(path.read_text()):
            found[str(path.relative_to(ROOT))] = lines
    assert found == {}
    assert wall_clock_reads("import time\nstart = time.time()\n") == [2]  # the scan sees one
    assert wall_clock_reads("import datetime\nnow = datetime.datetime.now()\n") == [2]
