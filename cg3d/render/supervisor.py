"""The pipeline side of a Blender worker: start it, send it objects, survive its crashes.

The render stage asks it for views, the sample stage for points: the same import of the same
file (`worker.py`), so the two agree.

A `BlenderWorker` owns one `cg3d.render.worker` subprocess (run as `python -m` would:
`WORKER_START`) and talks to it over stdin/stdout in JSON lines. Blender starts once and
renders many objects; when an object crashes Blender or runs past the per-object timeout, only
that process is killed, the object gets a failure reason, and a fresh Blender is started for
the next one.
"""

import contextlib
import functools
import importlib.util
import json
import os
import resource
import selectors
import signal
import site
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

import cg3d
from cg3d.errors import UsageError, printable
from cg3d.files import NAME_MAX, LiveTempDir, make_live_folder, remove_live_folder
from cg3d.geometry.meshio import BLENDER_FILE_MAX, lone_file_root
from cg3d.params import cpu_count, memory_limit, thread_variables
from cg3d.stopping import (
    STOP_SIGNALS,
    AwakeTimer,
    cpu_limit_words,
    cpu_time_limit,
    killed_words,
    no_core_files,
)

# Starting Blender and compiling its shaders once takes seconds, more on a busy machine.
STARTUP_TIMEOUT_S = 180.0
# One hash seed for every worker: Blender's importers iterate sets (the glTF importer's custom
# attributes did), whose order otherwise changes with each process, and so could the reading.
WORKER_HASH_SEED = "0"


# A worker's temp folder is nested in the stage's folder, which may be deep (`check_out_dir`
# allows ~3,800 bytes): the worker is told a short alias of it when the paths it builds there
# (`source/<a 255-byte name>`) could reach what Blender opens (BLENDER_FILE_MAX).
# Bytes the worker adds to its temp folder's path: `/source/` and a file's name of NAME_MAX
TMP_ROOM = len("/source/") + NAME_MAX


# The prefix of the alias folders in the system's temp folder, and of the worker temp folders
# (made there when a command owns no folder): both `make_live_folder`'s, swept alike.
ALIAS_PREFIX = "cg3d-render-"


# Blender's variables that name folders of code it runs at start-up or takes its own install
# from: BLENDER_SYSTEM_SCRIPTS' startup scripts ran in every worker even after
# `read_factory_settings`, and a BLENDER_SYSTEM_RESOURCES of another Blender crashed it at start.
# The worker's Blender is the bpy package's own; the BLENDER_USER_* folders stay (where Blender
# writes its caches and would read preferences the worker ignores: `Renderer`).
BLENDER_CODE_VARIABLES = ("BLENDER_USER_SCRIPTS",)
BLENDER_SYSTEM_PREFIX = "BLENDER_SYSTEM_"


# Blender takes its colour management from the OCIO variable, else the user's datafiles
# (BLENDER_USER_DATAFILES, then ~/.config/blender/5.0/datafiles or BLENDER_USER_RESOURCES'),
# before its own: a researcher's Filmic or ACES install there changed every rendered pixel,
# silently. The worker is given the bpy package's own datafiles as the user's.
BLENDER_COLOUR_VARIABLES = ("OCIO",)


@functools.cache
def bundled_datafiles() -> str | None:
    """The bpy package's `datafiles` folder (found, not imported: that is all of Blender);
    None where there is no bpy (the worker then says so)."""
    try:
        spec = importlib.util.find_spec("bpy")
    except (ImportError, ValueError):  # a broken install, or a finder that refuses it
        return None
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*/datafiles"))
    return str(found[-1]) if found else None


def worker_environment() -> dict[str, str]:
    """This process's environment less the Blender variables that would make the worker run
    code other than its own or another install's (Blender never auto-runs scripts), or render
    through a colour configuration other than its own."""
    dropped = BLENDER_CODE_VARIABLES + BLENDER_COLOUR_VARIABLES
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(BLENDER_SYSTEM_PREFIX) and name not in dropped
    }
    if sys.flags.ignore_environment:  # python -E or -I: the command ran without them
        environment = {k: v for k, v in environment.items() if not k.startswith("PYTHON")}
    datafiles = bundled_datafiles()
    if datafiles is not None:
        environment["BLENDER_USER_DATAFILES"] = datafiles
    return environment


# How a worker starts: `python -P -c WORKER_START FOLDER MODULE PARENT SETTINGS` puts FOLDER (the
# command's own cg3d, `own_code_folder`; "" for none) first on sys.path and runs MODULE as
# `python -m` would, SETTINGS its sys.argv[1]. Not through PYTHONPATH, which splits a folder
# whose name holds ':' in two: the worker then imported another cg3d. PARENT (the stage's
# pid, or 0: `BlenderWorker.thread_outlives_it`): the worker ends with it (`end_with_parent`);
# after a `kill -9` of `cg3d render` it rendered on to the end of its object, its stdin unread.
WORKER_START = (
    "import runpy, sys\n"
    "folder, module, parent = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))\n"
    "if folder:\n"
    "    sys.path.insert(0, folder)\n"
    "if parent:\n"
    "    from cg3d.stopping import end_with_parent\n"
    "    end_with_parent(parent)\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def own_code_folder() -> str | None:
    """The folder this process imported `cg3d` from, put first on the worker's path (it starts
    with -P: `python -m` alone puts the working folder first, so a `cg3d render` run from
    another checkout's root, or any folder holding a cg3d/ package, had its Blenders run that
    code while the command ran its own); None where that folder is a site-packages folder,
    which every Python of this environment searches anyway (first on the path, it would come
    before the standard library)."""
    folder = os.path.realpath(Path(cg3d.__file__).parent.parent)
    site_folders = [*site.getsitepackages(), site.getusersitepackages()]
    return None if folder in {os.path.realpath(f) for f in site_folders} else folder


def blender_tmp_dir(tmp_dir: Path) -> tuple[str, Path | None, int | None]:
    """(the path the worker is told for `tmp_dir`, the alias folder to remove at the end or
    None, the descriptor holding its lock or None: `remove_live_folder`): `tmp_dir` itself when
    every path built in it is short enough for Blender, else a symlink to it in a folder of the
    system's temp folder (/tmp), which a SIGKILLed run's next one removes (`make_live_folder`)."""
    if len(os.fsencode(str(tmp_dir))) + TMP_ROOM < BLENDER_FILE_MAX:
        return str(tmp_dir), None, None
    alias, lock = make_live_folder(ALIAS_PREFIX, alias_root())
    (alias / "tmp").symlink_to(tmp_dir, target_is_directory=True)
    return str(alias / "tmp"), alias, lock


def alias_root() -> str:
    """The folder the aliases go in: the system's temp folder, or /tmp when that is itself too
    deep for them (a TMPDIR nested past what an alias and the paths built in it may take: the
    alias was as deep, and Blender failed as without one)."""
    root = tempfile.gettempdir()
    alias = f"{root}/{ALIAS_PREFIX}{'x' * 8}/tmp"  # mkdtemp's names: 8 characters
    return root if len(os.fsencode(alias)) + TMP_ROOM < BLENDER_FILE_MAX else "/tmp"


# The smallest memory limit given a worker: Blender itself takes about 300 MiB to start.
MIN_WORKER_MEMORY = 1 << 30


def worker_memory_bytes(gib: float, workers: int) -> int:
    """The memory limit of each of `workers` Blender processes: `gib` GiB (render.worker_memory),
    or, for 0, 3/4 of the memory this process may use (`memory_limit`: a container's or job's
    cgroup limit, not the host's RAM) shared by them: together they leave a quarter to
    everything else, so one hostile file (a 1 KB glTF grew a worker to 21 GB) fails its own
    object instead of waking the kernel's OOM killer. Never below MIN_WORKER_MEMORY."""
    limit = gib * 2**30 if gib else memory_limit() * 3 / 4 / max(workers, 1)
    return max(int(limit), MIN_WORKER_MEMORY)


class WorkerDied(Exception):
    """The Blender process exited or hung; the message says which and why."""


class WorkerNotStarted(WorkerDied, UsageError):
    """The Blender process did not start: it exited, hung or printed something other than its
    ready line (another cg3d's worker, a broken bpy). The stage stops here, with one line; it
    was a WorkerDied traceback."""


class WorkerStopped(UsageError):
    """The stage is stopping (Ctrl-C, SIGTERM, SIGHUP, SIGUSR1): the Blender process was
    stopped with it, and its object is not finished, nor failed; its chunk writes no part.
    Raised as such only where the signal reached Blender alone (the stage itself stops on its
    own KeyboardInterrupt): then one line, as the stage was not stopped by its user."""


# How a Blender process ends when the signal that stops the stage reaches it too (a terminal's
# Ctrl-C, `scancel` and a dropped ssh session signal every process of the job): no crash of
# its object, which must not become a failure row in a part.
STOPPED_CODES = {-signum for signum in STOP_SIGNALS}


def source(path: Path, root: Path | None, sha256: str) -> dict:
    """What the worker checks before it imports a file (`meshio.blender_input`): the folder it
    and its references must stay in (a manifest's source root; a lone file's own folder by
    default) and, when known, the sha256 it was listed with."""
    root = lone_file_root(path) if root is None else root
    return {"path": str(path), "root": str(root), "sha256": sha256}


class BlenderWorker:
    """A persistent Blender process; `render` returns None when done, else a failure reason."""

    # What runs the worker: `python -m <module> <settings JSON>`.
    module = "cg3d.render.worker"

    def __init__(
        self,
        settings: dict,
        timeout_s: float,
        memory_bytes: int | None = None,
        tmp_root: Path | None = None,
        threads: int = 0,
        thread_outlives_it: bool = False,
    ) -> None:
        """`memory_bytes`: the limit of the process's data segment (RLIMIT_DATA: what malloc
        and anonymous mappings take; bpy's shared libraries map far more address space, which
        RLIMIT_AS would count); None: `worker_memory_bytes(0, 1)`. `tmp_root`: the folder its
        temp folder goes in (a stage's `ChunkedOutput.scratch`, which a resumed run clears);
        None: the system's (/tmp), for the commands that own no folder. `threads`: the most
        its math libraries and rasteriser may start (`thread_variables`; 0: the CPUs this
        process may use), its share of the CPUs among the stage's Blenders.
        `thread_outlives_it`: the thread that starts Blender closes it before it ends (the
        render stage's threads). Blender ends with this process (`end_with_parent`) when started
        from such a thread or the main thread; the kernel sends that signal when the starting
        *thread* ends, so from another (a web handler's pool thread that ends when idle) it
        would have killed Blender between, or during, requests."""
        self.settings = dict(settings)
        self.thread_outlives_it = thread_outlives_it
        self.threads = threads or cpu_count()
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes or worker_memory_bytes(0, 1)
        if tmp_root is not None:
            tmp_root = Path(tmp_root).resolve()  # the worker is told it as an absolute path
            tmp_root.mkdir(parents=True, exist_ok=True)
        # A command that owns no folder (`show`, `classify`) makes it in /tmp: one a SIGKILL
        # left is removed by the next worker (`LiveTempDir`).
        self.tmp = LiveTempDir(ALIAS_PREFIX, tmp_root)
        self.settings["tmp_dir"], self.alias, lock = blender_tmp_dir(Path(self.tmp.name))
        # Removed by `close`, else when this object goes or the process exits (a constructor
        # or start that raised, an actor dropped): only a SIGKILL leaves it for the next run.
        self._remove_alias = (
            weakref.finalize(self, remove_live_folder, self.alias, lock) if self.alias else None
        )
        self.log_path = Path(self.tmp.name) / "blender.log"
        # Blender's own temp folder (`blender_XXXXXX`, made at start-up) goes in ours, not in
        # TMPDIR: a worker killed (timeout, memory, Ctrl-C) left it in /tmp, one per kill.
        self.blender_tmp = Path(self.tmp.name) / "tmp"
        self.blender_tmp.mkdir()
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.retries = 0  # failures asked again of a fresh worker
        self.served = 0  # requests the running process has had
        self.last_rss_mb = 0.0
        self.stopping = False  # `stop` was called: no object is asked for again

    @property
    def out_dir(self) -> Path:
        """Where the worker writes PNGs; the caller reads and deletes them."""
        return Path(self.tmp.name)

    def start(self) -> None:
        self._forget_process()  # one that exited by itself
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",  # not the working folder's cg3d: `own_code_folder`
                    "-c",
                    WORKER_START,
                    own_code_folder() or "",
                    self.module,
                    str(os.getpid() if self._starting_thread_outlives_it() else 0),
                    json.dumps({**self.settings, "threads": self.threads}),
                ],
                env={
                    **worker_environment(),
                    **thread_variables(self.threads),
                    "PYTHONHASHSEED": WORKER_HASH_SEED,
                    # Through the alias: from a deep TMPDIR Blender made no temp folder ("Could
                    # not generate a temp session subdirectory") and used a cut path.
                    "TMPDIR": str(Path(self.settings["tmp_dir"]) / "tmp"),
                },
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        # Set from here, not by a preexec_fn (unsafe with the render stage's threads): the
        # limit holds before the first object is sent; only the start-up runs without it.
        limit = (self.memory_bytes, self.memory_bytes)
        resource.prlimit(self.process.pid, resource.RLIMIT_DATA, limit)
        # No core dump: a Blender that crashes is restarted and its object retried or failed,
        # and under `ulimit -c unlimited` (a debugging node's default) each crash wrote a core
        # of Blender's size into the folder the command was run from.
        no_core_files(self.process.pid)
        try:
            message = self._read(STARTUP_TIMEOUT_S, "start-up")
        except WorkerDied as error:
            if self.process is not None and self.process.poll() is None:
                self.kill()  # one that printed something else; a dead one's code is kept
            reason = str(error).removeprefix("crash: ")
            raise WorkerNotStarted(f"{self._who()} did not start: {reason}") from None
        if message.get("error"):  # settings this machine cannot honour: the stage stops here
            self.kill()
            raise UsageError(message["error"])
        if not message.get("ready"):
            self.kill()
            raise WorkerNotStarted(
                f"{self._who()} did not start: it answered {printable(str(message)[:200])}"
                " (not its ready line)"
            )

    def _starting_thread_outlives_it(self) -> bool:
        return self.thread_outlives_it or threading.current_thread() is threading.main_thread()

    def _who(self) -> str:
        """The worker, as a line names it: the module and the Python that ran it."""
        return f"the Blender worker (`{sys.executable} -m {self.module}`)"

    def render(
        self,
        object_id: str,
        path: Path,
        up_axis: str,
        views: list[dict],
        root: Path | None = None,
        sha256: str = "",
    ) -> str | None:
        """Render the views of one object into `out_dir`; None on success, else the reason.
        `root`, `sha256`: see `source`."""
        request = {
            "op": "render",
            "id": object_id,
            **source(path, root, sha256),
            "up_axis": up_axis,
            "out_dir": self.settings["tmp_dir"],
            "views": [{"name": v["name"], "world_to_camera": v["world_to_camera"]} for v in views],
        }
        reply = self._ask(request)
        return None if reply["ok"] else reply["reason"]

    def points(
        self,
        object_id: str,
        path: Path,
        up_axis: str,
        sample: dict,
        root: Path | None = None,
        sha256: str = "",
    ) -> tuple[np.ndarray | None, bool, str | None]:
        """Sample one object's points from Blender's reading of it: (cloud, has_color, None),
        or (None, False, reason). `sample`: every field of the sample stage's `SampleConfig`;
        `root`, `sha256`: see `source`."""
        out = self.out_dir / f"{object_id}.points.npy"
        request = {
            "op": "points",
            "id": object_id,
            **source(path, root, sha256),
            "up_axis": up_axis,
            "out": str(out),
            "sample": sample,
        }
        reply = self._ask(request)
        if not reply["ok"]:
            return None, False, reply["reason"]
        cloud = np.load(out, allow_pickle=False)
        out.unlink()
        return cloud, bool(reply.get("has_color")), None

    def _ask(self, request: dict) -> dict:
        """Send one request; the reply, or {"ok": False, "reason"} when Blender died or hung.
        A failure Blender raised in a worker that had read other objects is asked again of a
        fresh worker, whose answer is final: an object's outcome never depends on the objects
        read before it (their order, the chunking, the stage)."""
        reply = self._ask_once(request)
        if not reply["ok"] and reply.get("retry") and self.served > 1:
            self.kill()
            self.retries += 1
            reply = self._ask_once(request)
        return reply

    def _ask_once(self, request: dict) -> dict:
        object_id = request["id"]
        if self.stopping:
            raise WorkerStopped(f"Blender was stopped before object {object_id}: rerun to resume")
        if self.process is None or self.process.poll() is not None:
            try:
                self.start()
            except WorkerDied as error:
                code = None if self.process is None else self.process.poll()  # None: timed out
                if self.stopping or code in STOPPED_CODES:  # killed starting
                    self.kill()
                    raise WorkerStopped(
                        "Blender was stopped as it started: rerun to resume"
                    ) from error
                raise
            if self.stopping:  # `stop` came while it started, before there was a process to kill
                self.kill()
                raise WorkerStopped(
                    f"Blender was stopped before object {object_id}: rerun to resume"
                )
            self.served = 0
        self.served += 1
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            reply = self._read(self.timeout_s, f"object {object_id}")
        except (WorkerDied, BrokenPipeError) as error:
            code = None if self.process is None else self.process.poll()  # None: timed out
            if self.stopping or code in STOPPED_CODES:
                self.kill()
                how = f" by {signal.Signals(-code).name}" if code in STOPPED_CODES else ""
                raise WorkerStopped(
                    f"Blender was stopped{how} during object {object_id}: rerun to resume"
                ) from error
            self.kill()
            self.restarts += 1
            reason = str(error) if isinstance(error, WorkerDied) else "crash: Blender exited"
            if reason.startswith("crash:"):  # an allocation refused kills Blender's C code
                reason += f" (its memory limit: {self.memory_bytes / 2**20:.0f} MiB)"
            return {"ok": False, "reason": reason}
        if reply.get("id") != object_id:
            self.kill()
            return {"ok": False, "reason": f"crash: protocol out of step (got {reply})"}
        if reply.get("no_room"):  # a full disk: the stage stops with one line naming the file
            code, file = reply["no_room"]["errno"], reply["no_room"]["file"]
            raise OSError(code, os.strerror(code), file)
        self.last_rss_mb = reply.get("rss_mb", self.last_rss_mb)
        if reply.get("exiting"):  # it ran out of memory: the next object gets a fresh one
            self.kill()
        return reply

    def _read(self, timeout_s: float, what: str) -> dict:
        """One reply line, or WorkerDied on timeout or exit."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            # Time Blender or this process spent stopped does not count (`AwakeTimer`)
            timer = AwakeTimer(timeout_s, self.process.pid)
            while (wait := timer.wait_s()) > 0:
                if selector.select(wait):
                    line = self.process.stdout.readline()
                    if line:
                        return self._reply(line, what)
                    code = self.process.wait()
                    how = f"exited with code {code}"
                    memory = f"this process may use {memory_limit() / 2**30:.1f} GiB"
                    if code == -signal.SIGKILL:  # nothing of Blender's own kills it so
                        how = f"was killed (SIGKILL, {killed_words(cpu_time_limit(), memory)})"
                    elif code == -signal.SIGXCPU:  # Blender's own default: it dumps core
                        how = f"reached {cpu_limit_words(cpu_time_limit())} (SIGXCPU)"
                    raise WorkerDied(f"crash: Blender {how} on {what}{self._log_tail()}")
        self.kill()
        raise WorkerDied(f"timeout: {what} took longer than {timeout_s:g} s")

    def _reply(self, line: str, what: str) -> dict:
        """A reply line as the protocol's object, else WorkerDied quoting it (a worker that
        prints to stdout: another cg3d's, a module's start-up message): it was a
        JSONDecodeError traceback."""
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            said = printable(line.strip()[:200])
            raise WorkerDied(f"crash: Blender printed {said!r} on {what}, not a reply")
        return reply

    def _log_tail(self) -> str:
        lines = (
            self.log_path.read_text(errors="replace").strip().splitlines()
            if self.log_path.exists()
            else []
        )
        return f" ({lines[-1][:200]})" if lines else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._forget_process()

    def _forget_process(self) -> None:
        """Close the pipes of the process, which has exited, and forget it: left to the garbage
        collector, each was a ResourceWarning (`PYTHONDEVMODE=1`, `-W error`)."""
        if self.process is None:
            return
        for pipe in (self.process.stdin, self.process.stdout):
            # what a dead Blender's stdin still buffered cannot be sent
            with contextlib.suppress(BrokenPipeError):
                pipe.close()
        self.process = None

    def stop(self) -> None:
        """From another thread than the one asking: kill Blender now, and make the object it
        works on raise WorkerStopped (not a failure). The stage is stopping."""
        self.stopping = True
        process = self.process
        if process is not None:
            process.kill()  # a no-op on one that has exited; the asking thread reaps it

    def close(self) -> None:
        """Stop Blender (end of input lets it exit cleanly) and remove the temp folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget_process()
        self.tmp.cleanup()
        if self._remove_alias:
            self._remove_alias()

    def __enter__(self) -> "BlenderWorker":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # a Ctrl-C or SIGTERM, a full disk: do not wait for its object
            self.kill()
        self.close()
