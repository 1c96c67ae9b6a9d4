"""How a process of ours stops on a signal: SIGINT (Ctrl-C), SIGTERM (`kill`, `scancel`, a SLURM
time limit, `docker stop`, systemd), SIGHUP (a dropped ssh session) and SIGUSR1 or SIGUSR2
(Slurm's `--signal`, ahead of a time limit) alike.

Left to Python's defaults, SIGTERM, SIGHUP and SIGUSR1 killed a command where it stood: no
cleanup ran, the output folder kept its lock file and temp files, pool workers were orphaned and
multiprocessing's resource tracker warned of leaked semaphores. Here the first of these
signals raises KeyboardInterrupt, which every cleanup already handles (finally blocks, a
pool's shutdown, the output lock's release); the command line (`cg3d.cli.main`) then names the
signal in one line and exits 128 + its number. The same handler runs in worker processes:
the process pools' (`stop_tasks_as_interrupt`: the task being run is interrupted; the chunk
and zeroshot pools also send its workers SIGINT, or SIGTERM where SIGINT is ignored (`interrupt_workers`),
when the command stops, so that a signal sent to one process, `kill PID`, stops them as one
sent to the whole group does) and the training
DataLoader's (`stop_as_interrupt`). The render stage stops its Blender processes itself
(`cg3d.render.stage._run_threads`).
"""

import contextlib
import ctypes
import os
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

from cg3d.errors import UsageError

# SIGUSR1 and SIGUSR2 too: Slurm's `sbatch --signal=USR1@90` sends one ahead of a job's time
# limit, and a job's script may forward one with `kill -USR1`. Their default action ended the
# process where it stood (exit -10, nothing printed): its pool workers orphaned, the folder's
# .cg3d.lock and a part's temp file left. Each stops as SIGTERM does, and the same command
# resumes (train from its last finished epoch: nothing is saved on the signal itself).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# The command's own process also stops on SIGXCPU, which the kernel sends at a soft CPU time
# limit below the hard one (`ulimit -S -t`), then once a CPU second until the hard one, then
# SIGKILL: Python's default died at once, leaving the folder's lock file and a partial
# chunk or `.resume/`. Not a worker's: one that dies of it is named by its parent
# (`worker_died_line`), and a worker that took it for a stop raised "interrupted" there.
COMMAND_STOP_SIGNALS = (*STOP_SIGNALS, signal.SIGXCPU)


def stopped_words(signum: int) -> str:
    """How an error line names a stop: "interrupted" (Ctrl-C), "terminated (SIGTERM)"."""
    if signum == signal.SIGINT:
        return "interrupted"
    if signum == signal.SIGXCPU:
        # no seconds: the kernel raised the soft limit by one at each SIGXCPU it sent
        return f"stopped at {cpu_limit_words(None)} (SIGXCPU); rerun to resume"
    return f"terminated ({signal.Signals(signum).name})"


class Interrupt:
    """The handler of the stop signals. The first raises KeyboardInterrupt; the second is
    ignored, so that the cleanup the first started (finally blocks, the output lock's release,
    temp files, a pool's shutdown, the interpreter's exit handlers) runs to its end: a second
    Ctrl-C landing there printed a KeyboardInterrupt traceback (`cg3d index`) or left the
    folder's .cg3d.lock behind; a signal sent both to a process group and, forwarded, to each
    worker reaches a worker twice. A third stops the process at once (`exit_line`, exit
    128 + the first signal's number), for a cleanup that hangs (a server's, a worker pool's).
    Any mix of the stop signals counts alike (a SLURM time limit after its USR1). SIGXCPU
    (`COMMAND_STOP_SIGNALS`) stops as the first, but a later one is the kernel's repeat, once a
    CPU second, not a user's insistence: counted, it ended a cleanup two CPU seconds long."""

    def __init__(self, exit_line: bool = True, only_in_task: bool = False) -> None:
        self.count = 0
        self.signum = signal.SIGINT  # the first signal's, which names the exit
        self.exit_line = exit_line
        self.only_in_task = only_in_task  # a pool worker's: see `run_task`

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        global _stop_seen, _held
        if signum == signal.SIGXCPU and (self.count or _held is not None):
            return
        if self.only_in_task:
            _stop_seen = True  # the tasks still queued for this worker are a stopping pool's
            if not _in_task:
                return
        if _holding and self.count == 0:
            if _held is None:
                _held = (self, signum)  # raised when `workers_start_deaf` ends
                return
            # A second while held: the user insists (a start that hangs), so stop now, and
            # count both: a third still ends the process at once, as everywhere else.
            self.count, self.signum, _held = 2, signal.Signals(_held[1]), None
            raise KeyboardInterrupt
        self.count += 1
        if self.count == 1:
            self.signum = signal.Signals(signum)
            raise KeyboardInterrupt
        if self.count >= 3:
            if self.exit_line:
                words = stopped_words(self.signum)
                os.write(
                    2, f"error: {words} three times: stopped before its cleanup ended\n".encode()
                )
            os._exit(128 + self.signum)

    def install(self, signals: tuple[int, ...] = STOP_SIGNALS) -> "Interrupt":
        """Handle `signals` with this (from the main thread, where Python runs them), but
        those this process was started ignoring: `nohup` ignores SIGHUP so that the command
        outlives its ssh session, and a shell script's `command &` ignores SIGINT."""
        for signum in signals:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self)
        return self


TRACKER_BLOCKED = set(STOP_SIGNALS) - {signal.SIGINT, signal.SIGTERM}


def start_resource_tracker() -> bool:
    """Start multiprocessing's resource tracker (the process that frees a pool's semaphores
    and shared memory), unless one runs; True if started here. It ignores SIGINT and SIGTERM
    itself, but a SIGHUP to the whole group (a dropped ssh session) killed it: its
    replacement then printed a KeyError traceback for each semaphore freed (a SIGUSR1 too).
    Started with those blocked, which it keeps; blocked, not ignored, so that one arriving
    meanwhile here is kept pending, then handled."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker  # private: Python has no public handle on it
    if tracker._fd is not None:  # one that was running before is someone else's
        return False
    # SIGHUP, SIGUSR1, SIGUSR2: the stop signals the tracker does not ignore itself
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, TRACKER_BLOCKED)
    try:
        tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    _stop_resource_tracker_at_exit()
    return True


def worker_stop_signal() -> signal.Signals:
    """The signal with which to stop a worker process of this one: the first stop signal this
    process was not started ignoring. A worker started from here ignores the same ones (a
    signal ignored at start stays ignored across fork and exec, and `Interrupt.install` leaves
    it so): the SIGINT of a script's `cg3d sample ... &` is ignored, and a chunk pool's SIGINT
    to its workers then stopped none, so `kill PID` waited for every running chunk."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            return signum
    return signal.SIGTERM  # all three ignored: nothing would stop this process either


def interrupt_workers(pool: Any) -> None:
    """Stop the tasks a stopping process pool (a `ProcessPoolExecutor`) works on, as a Ctrl-C
    in a terminal does (it reaches the whole process group): a SIGTERM sent to this process
    only (`kill PID`, `docker stop`) would otherwise wait for every running task, and for
    those already handed to a worker, to finish. Each worker's `Interrupt` ignores the copy
    of a signal it also got from its group; an interrupted chunk leaves no part."""
    stop_signal = worker_stop_signal()  # SIGINT, unless started ignoring it (`cmd &`)
    for process in list(pool._processes.values()):  # private: no public list of the workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, stop_signal)


@contextlib.contextmanager
def pool_stops_whole(pool: Any) -> Iterator[None]:
    """Around the work of a process pool (a `ProcessPoolExecutor`) whose tasks run through
    `run_task`: a stop (`interrupt_workers`), a failed task or a closed generator drops the
    tasks still queued instead of running them all before the command ends (the pool's `with`
    alone shuts down without cancelling them)."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            interrupt_workers(pool)  # those a `kill PID` did not reach
        workers = list((pool._processes or {}).values())  # private: shutdown forgets them
        pool.shutdown(wait=True, cancel_futures=True)
        died = pool_worker_died_line(workers) if isinstance(error, BrokenProcessPool) else None
        close_ended(workers)
        if died:  # was a traceback
            raise UsageError(died) from error
        raise


def close_ended(processes: Iterable[Any]) -> None:
    """Close the `multiprocessing` processes of `processes` that have ended: their two pipes
    each. The error a pool stops with keeps this frame (its traceback), and so the processes:
    4 descriptors for each failed 2-worker pool, for as long as the error lived (a notebook's
    last one) or until a full garbage collection. One still running stays as it is."""
    for process in processes:
        with contextlib.suppress(ValueError):  # still running: `close` refuses
            process.close()


def pool_worker_died_line(workers: Iterable[Any]) -> str:
    """Why a process pool broke: a worker that exited with a code of its own (an error it
    printed itself) or, none, one that a signal ended (`worker_died_line`). A script that
    ran a stage without `if __name__ == "__main__":` had each spawned worker run the script
    again (the stage again, refused: its folder is locked) and exit 1, which was said to be
    the out-of-memory killer's doing."""
    died = dead_worker_signal(workers)
    codes = [getattr(worker, "exitcode", None) for worker in workers]
    exited = [code for code in codes if isinstance(code, int) and code > 0]
    if died is not None or not exited:
        return worker_died_line(died)
    line = f"a worker process exited with code {exited[0]} (its own error is printed above)"
    if _run_from_a_script():
        line += (
            '; a script that runs a stage must run it under `if __name__ == "__main__":`,'
            " because each worker process imports the script again"
        )
    return line


def _run_from_a_script() -> bool:
    """Whether `__main__` is a user's script (a file, which each spawned worker imports again),
    not the `cg3d` command: `python -m cg3d` runs cg3d/__main__.py, and the `cg3d` script pip
    writes calls its `run`. The command's workers were told to add a main guard too."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not file:
        return False  # a notebook, `python -c`, an interactive session
    run = getattr(getattr(main, "run", None), "__code__", None)
    ran = {os.path.realpath(file), os.path.realpath(getattr(run, "co_filename", file))}
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "__main__.py") not in ran


def worker_died_line(died: int | None = None) -> str:
    """What a worker process that died without a word means, from the signal `died` that
    ended it (`dead_worker_signal`, `loader_worker_died`). SIGKILL, or no signal known: the
    kernel's OOM killer most often (a container's or a Slurm job's cgroup), naming the memory
    it had. SIGBUS: a shared memory (/dev/shm) too small for the loader's batches, which a
    larger memory limit does not grow. Another signal: a crash in native code. Each was said
    to be the OOM killer's, with a larger memory limit for remedy."""
    from cg3d.params import memory_limit

    # The kernel's answers to `ulimit -t`: SIGXCPU at the soft limit, SIGKILL at the hard one
    # (at once where both are equal, as `ulimit -t N` sets them). Both were said to be a
    # crash or the out-of-memory killer's, whose remedy (more memory) does not help.
    cpu = cpu_time_limit()
    memory = f"this process may use {memory_limit() / 2**30:.1f} GiB of memory"
    if died == signal.SIGXCPU:
        return (
            f"a worker process reached {cpu_limit_words(cpu)} (SIGXCPU); rerun to resume,"
            " with a larger limit"
        )
    if died == signal.SIGKILL and cpu is not None:
        return (
            f"a worker process was killed (SIGKILL: {killed_words(cpu, memory)}); rerun to resume,"
            " with a larger CPU time limit, fewer workers or a larger memory limit"
        )
    if died is None or died == signal.SIGKILL:
        how = "SIGKILL, most often" if died else "most often"
        return (
            f"a worker process was killed ({how} by the out-of-memory killer: {memory}); rerun"
            " to resume, with fewer workers or a larger memory limit"
        )
    if died == signal.SIGBUS:
        return (
            "a worker process died of SIGBUS (most often a shared memory, /dev/shm, too small "
            "for its batches: a container's is 64 MiB unless given more, `docker --shm-size`); "
            "rerun to resume, with fewer workers or more shared memory"
        )
    return (
        f"a worker process died of {signal_name(died)} (a crash in a library's native code); "
        "rerun to resume: a crash again on the same objects is a bug to report"
    )


def cpu_time_limit() -> int | None:
    """This process's CPU time limit in seconds (`ulimit -t`, RLIMIT_CPU, which a shared node
    sets through PAM's limits.conf or Slurm's PropagateResourceLimits, and which every child
    process inherits, each counting its own seconds); None when unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    finite = [limit for limit in (soft, hard) if limit != resource.RLIM_INFINITY]
    return min(finite) if finite else None


def cpu_limit_words(cpu: int | None) -> str:
    """The CPU time limit in words, for a line that names it as a cause."""
    seconds = f", {cpu} s" if cpu is not None else ""
    return f"the CPU time limit of each process{seconds} (`ulimit -t`, RLIMIT_CPU)"


def killed_words(cpu: int | None, memory: str) -> str:
    """What most often sends a process of ours (a pool's worker, a Blender) a SIGKILL that we
    did not send: the CPU time limit `cpu` (`cpu_time_limit`) where there is one, and the
    out-of-memory killer (`memory`: the memory this process may use, in words)."""
    oom = f"the out-of-memory killer: {memory}"
    if cpu is None:
        return f"most often by {oom}"
    return f"{cpu_limit_words(cpu)}, or {oom}"


def dead_worker_signal(workers: Iterable[Any]) -> int | None:
    """The signal that ended one of `workers` (multiprocessing Processes, their `exitcode`),
    None when none was: the siblings the pool or the loader ended itself after the death were
    sent SIGTERM (and a worker's own SIGINT handling ends it with a code)."""
    ended = [-code for code in (getattr(worker, "exitcode", None) for worker in workers)]
    signals = [code for code in ended if isinstance(code, int) and code > 0]
    signals = [code for code in signals if code not in (signal.SIGTERM, signal.SIGINT)]
    return signals[0] if signals else None


def loader_worker_died(error: BaseException) -> str | None:
    """`worker_died_line` for torch's DataLoader error of a dead worker, else None. torch's
    SIGCHLD handler raises it wherever the main process is when the worker dies (an optimizer
    step, a checkpoint), so only the command's outermost handler sees it; its words name the
    signal as `strsignal` does ("is killed by signal: Bus error."), or none ("exited
    unexpectedly")."""
    text = str(error)
    if not isinstance(error, RuntimeError) or not text.startswith("DataLoader worker (pid"):
        return None
    named = re.search(r"killed by signal: ([^.]+)\.", text)
    by_words = {signal.strsignal(signum): signum for signum in signal.Signals}
    return worker_died_line(by_words.get(named.group(1)) if named else None)


def signal_name(signum: int) -> str:
    """`SIGSEGV` for 11, the number itself for one this platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def start_pool_worker(parent: int, workers: int) -> None:
    """A process pool's `initializer` (`initargs`: the parent's pid and the pool's size):
    `exit_with_parent`, no core file (`no_core_files`), and this worker's share of the CPUs
    for its math libraries (`limit_threads`): each of N workers ran a thread per CPU."""
    from cg3d.params import cpu_count, limit_threads

    exit_with_parent(parent)
    no_core_files()
    limit_threads(cpu_count() // max(workers, 1))


def no_core_files(pid: int = 0) -> None:
    """Process `pid` (0: this one) dumps no core when it crashes (RLIMIT_CORE's soft limit 0,
    this process's hard one kept): a pool worker, and a Blender worker (`BlenderWorker`), which
    is restarted after a crash. Under `ulimit -c unlimited` each crashed or SIGXCPU-ended one
    wrote a core of its size into the cwd, which its parent names in one line anyway
    (`worker_died_line`)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, hard))


_tracker_owner: int | None = None  # the process whose exit stops the tracker it started


def _stop_resource_tracker_at_exit() -> None:
    """Stop and reap the resource tracker this process started when it exits. Python leaves
    the tracker to outlive its parent: it ends only once the pipe to it closes, after the
    parent is gone, so it outlived every `cg3d train` and `cg3d eval zeroshot` (a zombie
    where nothing reaps orphans, e.g. under a subreaper). The stop runs last in
    multiprocessing's own exit step (`exitpriority` below 0): after the semaphores'
    finalizers have told the tracker they are freed and the child processes, which hold
    the pipe too, were joined; run earlier, the tracker would wait for them, or warn of
    semaphores it had not been told of."""
    global _tracker_owner
    from multiprocessing import util

    if _tracker_owner != os.getpid():
        _tracker_owner = os.getpid()
        util.Finalize(None, _stop_own_resource_tracker, exitpriority=-1)


def _stop_own_resource_tracker() -> None:
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker  # private: Python has no public handle on it
    if _tracker_owner == os.getpid() and tracker._pid is not None:
        # it closes the pipe, then waits for the tracker to end (reaped elsewhere: no wait)
        with contextlib.suppress(ChildProcessError):
            tracker._stop()


def stop_as_interrupt(*args: object) -> None:
    """A DataLoader's `worker_init_fn`: stop on SIGTERM and SIGHUP as on Ctrl-C (the worker
    loop ends quietly on KeyboardInterrupt). Left to torch's own SIGTERM handler, the worker
    died of the signal and the training process reported its death as a traceback. The
    workers start with the stop signals blocked (`workers_start_deaf` around `iter(loader)`):
    one that came meanwhile is handled here, and ends the worker quietly."""
    Interrupt(exit_line=False).install()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


_in_task = False  # in a pool worker: `run_task` is running a task
_stop_seen = False  # in a pool worker: a stop signal came while it was idle
_holding = 0  # `workers_start_deaf` blocks open in the main thread: a first stop signal waits
_held: tuple[Interrupt, int] | None = None  # (handler, signal) held there


@contextlib.contextmanager
def workers_start_deaf() -> Iterator[None]:
    """Around a pool's `submit` (which starts its worker processes) or a DataLoader's `iter`:
    workers start with the stop signals blocked (a signal mask is kept across fork and exec),
    and their initializer, `stop_tasks_as_interrupt` or `stop_as_interrupt`, unblocks them
    once its handler is in place. A signal that reached a worker still starting Python (the
    parent's `interrupt_workers` while the pool started, a Ctrl-C to the group) printed
    "Fatal Python error: init_import_site" and a traceback. This process's own first stop
    signal is held until the block ends: raised mid-spawn, it left a half-started worker that
    hung the pool's shutdown.

    Held in the main thread's blocks only, until the outermost one ends: Python raises a stop
    in the main thread, and a hold released at the end of another thread's block raised it
    there instead (the main thread never stopped); a nested block's end released it while
    the outer one still spawned. Another thread's block only starts its workers deaf."""
    global _holding, _held
    in_main = threading.current_thread() is threading.main_thread()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    _holding += in_main
    try:
        yield
    finally:
        _holding -= in_main
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if in_main and not _holding:
            held, _held = _held, None
            if held is not None:
                handler, signum = held
                handler(signum, None)


def _forget_holds() -> None:
    """In a forked child: it is in none of its parent's `workers_start_deaf` blocks. A
    DataLoader forks its workers inside one, and the count they inherited held their first
    stop signal for ever: `kill -TERM` of a loader worker did nothing, and multiprocessing's
    SIGTERM to its workers at exit was lost, the process waiting on them for ever."""
    global _holding, _held
    _holding, _held = 0, None


os.register_at_fork(after_in_child=_forget_holds)


def stop_tasks_as_interrupt() -> None:
    """A process pool's `initializer`: a stop signal interrupts the task being run (submitted
    through `run_task`) as Ctrl-C does, and is ignored by an idle worker, which its stopping
    parent shuts down: raised while it waited for work, the KeyboardInterrupt printed a
    traceback, and by default SIGTERM and SIGHUP killed a worker mid-part. A task that
    reaches a worker after such a signal is interrupted as it starts: the parent sends the
    signal once, and a task already queued for the worker (which the pool's shutdown does not
    cancel) ran whole after it."""
    Interrupt(exit_line=False, only_in_task=True).install()
    # started blocked by `workers_start_deaf`: one that came meanwhile is handled now
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def exit_with_parent(parent: int) -> None:
    """A process pool's `initializer` (`initargs`: the parent's pid), the chunk pool's and
    zeroshot's: `stop_tasks_as_interrupt`, and exit once the parent is gone (killed with -9,
    it cannot tell us): idle workers waited for work forever, busy ones finished a task no
    one reads. A chunk's part being written is left as a temp file, which the next run's
    `prepare` removes."""
    stop_tasks_as_interrupt()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """In a child process: be sent `signum` (SIGKILL: ended) the moment its parent `parent`
    (its pid, read before the start) ends, a `kill -9` of it included. A training's loader
    workers lived on for up to 5 s (torch's watchdog looks at the parent between batches).
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere, or without libc's prctl, the watchdog
    still ends them.
    The kernel sends it when the *thread* that started this process ends: only for children
    of the main thread, which lives as long as the process (`train.data._parent_to_end_with`)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # a libc without it (or none found): left to the watchdog
        return
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0 and os.getppid() != parent:
        # the parent ended before the request: no signal will come
        if signum == signal.SIGKILL:
            os._exit(1)
        os.kill(os.getpid(), signum)


def run_task(function: Callable[..., Any], *args: object) -> Any:
    """`function(*args)` in a pool worker, interruptible by a stop signal (see above)."""
    global _in_task
    if _stop_seen:
        raise KeyboardInterrupt
    _in_task = True
    try:
        return function(*args)
    finally:
        _in_task = False


# How often a wait measured by `AwakeTimer` must look at its clock, and the longest step of it
# counted as waiting: a longer one means this process was not running (stopped) meanwhile.
AWAKE_TICK_S = 0.5
AWAKE_STEP_S = 2.0


def stopped_part(step: float, cpu_step: float) -> float:
    """Of `step` seconds of `time.monotonic` between two looks meant to be a tick apart, those
    this process was stopped (SIGSTOP, Ctrl-Z, a Slurm suspend, a frozen cgroup): none of a
    step up to AWAKE_STEP_S; of a longer one, the time it did not use the CPU (`cpu_step`: its
    CPU seconds meanwhile, `time.process_time`), less a tick. A thread kept that long from
    the GIL by another one in a single long C call (a `sum` or `sorted` over millions, a large
    unpickling) was not stopped: its process worked on the CPU meanwhile. Counted as a pause,
    7.4 s of such work measured 1.5 s on a Stopwatch. A process stopped while its threads ran
    in parallel (torch's) counts up to a tick of each as work, once per stop."""
    if step <= AWAKE_STEP_S:
        return 0.0
    return max(0.0, step - AWAKE_TICK_S - cpu_step)


def is_stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (SIGSTOP, SIGTSTP, a debugger holding it): its state in
    /proc is T or t. False where there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]  # the name may hold ")"
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


class AwakeTimer:
    """A timeout for a wait on another process (`other`, a pid) that counts only the time in
    which both could run. A paused process is not a hung one: Ctrl-Z then `fg`, a Slurm
    suspend (SIGSTOP to every process of the job, then SIGCONT), a debugger holding one of
    them. Measured with `time.monotonic` and no more, a pause longer than the timeout failed
    an object with `timeout:` the moment it resumed (or a loader worker), and for good.

    The waiting side calls `left()` at least every AWAKE_TICK_S; a step of the clock much
    longer than that, in which this process used no CPU, means it was stopped itself, and
    counts as one tick (`stopped_part`). A tick
    at whose end `other` is stopped does not count. Time a laptop sleeps never counts
    (`time.monotonic` stands still through a suspend)."""

    def __init__(self, seconds: float, other: int | None = None) -> None:
        self.seconds = seconds
        self.other = other
        self.waited = 0.0  # seconds counted
        self.pending = 0.0  # seconds since `other` was last looked at
        self.last, self.cpu = time.monotonic(), time.process_time()

    def left(self) -> float:
        """Seconds of the timeout left (<= 0: it has run out)."""
        now, cpu = time.monotonic(), time.process_time()
        step = now - self.last
        # less the time this process was stopped meanwhile (or starved of the CPU)
        self.pending += step - stopped_part(step, cpu - self.cpu)
        self.last, self.cpu = now, cpu
        # `other` looked at once a tick, not at each call: `BatchSlots.claim` calls it each ms
        if self.pending >= AWAKE_TICK_S or self.waited + self.pending >= self.seconds:
            if self.other is None or not is_stopped(self.other):
                self.waited += self.pending
            self.pending = 0.0
        return self.seconds - self.waited - self.pending

    def wait_s(self) -> float:
        """How long to wait before looking again: the time left (<= 0: none), at most a tick."""
        return min(self.left(), AWAKE_TICK_S)


_paused = 0.0  # seconds this process was seen stopped (`paused_seconds`)
_meter_pid = 0  # the process whose meter thread runs (a forked child has none of its own)
_meter_lock = threading.Lock()


def paused_seconds() -> float:
    """Seconds this process has been seen stopped (Ctrl-Z then `fg`, a Slurm suspend, a
    debugger holding it) since its first call: a thread looks at the clock every AWAKE_TICK_S
    and counts a longer step than AWAKE_STEP_S, less a tick and the CPU time the process used
    meanwhile, as a pause (`stopped_part`). A pause shows up to
    a tick after the process goes on."""
    global _meter_pid
    with _meter_lock:
        if _meter_pid != os.getpid():
            _meter_pid = os.getpid()
            threading.Thread(target=_meter, daemon=True, name="cg3d-pause-meter").start()
    return _paused


def _meter() -> None:
    global _paused
    last, cpu = time.monotonic(), time.process_time()
    while True:
        time.sleep(AWAKE_TICK_S)
        now, cpu_now = time.monotonic(), time.process_time()
        _paused += stopped_part(now - last, cpu_now - cpu)
        last, cpu = now, cpu_now


class Stopwatch:
    """Seconds of work since it was made: `time.perf_counter`'s, less the time this process
    was stopped (`paused_seconds`). Progress rates and the durations in run.json counted a
    night's Ctrl-Z as work: "0.3 samples/s" for a run that did 300."""

    def __init__(self) -> None:
        self.paused = paused_seconds()
        self.start = time.perf_counter()

    def seconds(self) -> float:
        elapsed = time.perf_counter() - self.start - (paused_seconds() - self.paused)
        return max(elapsed, 1e-9)  # a rate divides by it
