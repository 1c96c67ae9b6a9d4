"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

import errno
import importlib.metadata
import importlib.util
import re
import resource
import subprocess
import sys
from pathlib import Path


class UsageError(Exception):
    """A wrong parameter, a missing input, or an unusable file, named in the message."""


class ConfigWarning(UserWarning):
    """A warning about what the command was given (its config, the weights a checkpoint
    records), which every process of a torchrun run meets alike: rank 0 says it for the run,
    where each rank said it (8 times on an 8-GPU node). Any other warning may be one process's
    own (a shard only it reads): each rank says it, naming itself."""


def printable(text: str) -> str:
    """`text` with every character a terminal acts on shown escaped (`\\x1b`, `\\n`, `\\x00`):
    an error, a warning or a line on stdout (a summary, an inspect table's id, class or reason)
    quotes what the user typed or a file held, and must stay one line that cannot recolour,
    move or retitle the terminal (an ANSI sequence in a path or a failure reason). Ordinary
    text, non-ASCII letters included, is unchanged."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# Import names that pip installs under another name.
PIP_NAMES = {"open_clip": "open_clip_torch", "yaml": "pyyaml", "PIL": "pillow"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_command(module: str) -> str:
    """`pip install 'REQUIREMENT'` for the top-level `module`, with the version range cg3d's
    install asks for (a partial install, a conda env or an HPC module lacks or mis-pins it).
    Where cg3d itself is not installed in this Python (a source checkout on PYTHONPATH, `python
    -m cg3d` from its root), the checkout's own editable install: every package at once."""
    name = PIP_NAMES.get(module, module)
    checkout = Path(__file__).resolve().parents[1]
    # cg3d's metadata as this Python installed it: not the checkout's own `cg3d.egg-info`,
    # which an install into another venv leaves in the root, where `python -m cg3d` finds it.
    elsewhere = [entry for entry in sys.path if Path(entry or ".").resolve() != checkout]
    installed = next(iter(importlib.metadata.distributions(name="cg3d", path=elsewhere)), None)
    if installed is None and (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}' (cg3d from this checkout, with all it needs)"
    requirements = (installed.requires if installed else None) or []
    for requirement in requirements:
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        match = re.match(r"[A-Za-z0-9._-]+", spec)
        if match and _canonical(match.group()) == _canonical(name):
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker)
            return f"pip install '{spec}'" + (
                f" (cg3d's [{extra.group(1)}] extra)" if extra else ""
            )
    return f"pip install '{name}'"


# Import-checked in a child Python, not in the command's: Blender held 250 MiB in a stage
# process whose work is in its workers, for the whole stage (0.4 s there; 0.8 s in a child).
IMPORTED_APART = ("bpy",)
IMPORT_CHECK_TIMEOUT_S = 300


def require(*modules: str) -> None:
    """Raise ModuleNotFoundError for the first of `modules` this Python lacks, then ImportError
    for the first that is there but fails to import (a system library its wheel links is
    missing, a wheel for another Python), before any work: a command that imported one only
    per object (in its worker processes) made a failure row of every object and exited 0, and
    one that imported it mid-stage left a half-made --out behind. Absence is found without
    importing; the import itself costs a command 0.1 s (fpsample) to 0.4-0.7 s (trimesh), ray
    0.3 s, bpy 0.8 s (IMPORTED_APART), and nothing for train's four, which the run imports
    anyway (t88d, measured on a shared 2-core machine beside other work)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package that fails, a broken __spec__
            found = False
        if not found:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    for module in modules:
        _import_check(module)


def _import_check(module: str) -> None:
    """ImportError naming `module` (for `missing_dependency_line`) unless it imports."""
    if module in IMPORTED_APART:
        try:
            done = subprocess.run(
                [sys.executable, "-c", f"import {module}"],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=IMPORT_CHECK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise ImportError(
                f"its import did not finish in {IMPORT_CHECK_TIMEOUT_S} s", name=module
            ) from None
        if done.returncode != 0:
            # the traceback's last line: "ImportError: libXi.so.6: cannot open ..."
            said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            kind, _, words = said.partition(": ")
            if kind == "ModuleNotFoundError":  # a module of the package's own, missing
                raise ModuleNotFoundError(words, name=module)
            raise ImportError(words if kind == "ImportError" else said, name=module)
        return
    try:
        # __import__, not importlib.import_module: a module calling that imports by name, and
        # the stages' code digest (`pipeline.closure`) would count all of cg3d as this one's
        __import__(module)
    except ImportError:
        raise
    except Exception as error:  # a wheel's own check that raises another type
        raise ImportError(f"{type(error).__name__}: {error}", name=module) from error


def _package_of(error: ImportError) -> str | None:
    """The top-level package an ImportError is about: the module it names, else the first
    module its traceback enters after cg3d's last frame, importlib's aside (a wheel's own
    `raise ImportError`, a shared library its extension links that is missing). None: cg3d's
    own (its traceback ends in cg3d)."""
    # An extension module's own failure names it without its package (torch's "_C" whose
    # libtorch_cpu.so could not be mapped): its file says whose it is.
    top = _package_of_file(error.path) or (error.name or "").partition(".")[0]
    if top:
        return top
    package = None
    trace = error.__traceback__
    while trace is not None:
        module = str(trace.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        if module == "cg3d":
            package = None  # the frames before (typer's, click's) called cg3d: not the import
        elif package is None and module not in {"", "importlib", "__main__"}:
            package = module
        trace = trace.tb_next
    return package


def _package_of_file(path: str | None) -> str | None:
    """The top-level package whose file `path` is (an ImportError's `path`), by the deepest
    entry of sys.path it is under; None when it is under none. The deepest: the project root
    is on sys.path too (`python -m cg3d` from it), and the README's venv lies inside it, so
    torch's `_C` is also under the root, as `.venv/...`."""
    if not path:
        return None
    file = Path(path).resolve()
    bases = [Path(entry or ".").resolve() for entry in sys.path]
    under = [base for base in bases if file != base and file.is_relative_to(base)]
    if not under:
        return None
    base = max(under, key=lambda base: len(base.parts))
    return file.relative_to(base).parts[0].partition(".")[0]


def memory_limits_words() -> str | None:
    """This process's finite address-space and data-segment limits in words (`ulimit -v`,
    `ulimit -d`, which a shared node sets through PAM's limits.conf or Slurm's
    PropagateResourceLimits); None when both are unlimited."""
    words = []
    for name, flag, what in (("RLIMIT_AS", "-v", "address space"), ("RLIMIT_DATA", "-d", "data")):
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft != resource.RLIM_INFINITY:
            words.append(f"{what} {soft / 2**30:.2f} GiB (`ulimit {flag}`, {name})")
    return ", ".join(words) or None


def resource_limit_line(error: BaseException) -> str | None:
    """The line for an error of a per-process limit (`ulimit`) that a stage's processes,
    threads or files ran into, else None: too many open files (EMFILE, `ulimit -n`), a process
    or a thread that could not start (EAGAIN of fork or clone, "can't start new thread": `ulimit
    -u`, or the memory for its stack). Each was a traceback ("OSError: [Errno 24] Too many open
    files" from a pool's or a Blender's pipe) that named neither the limit nor the remedy. A
    file past the file size limit (EFBIG under `ulimit -f`: Python ignores SIGXFSZ, so the write
    fails) named its file but not the limit."""
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    if code == errno.EMFILE:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        where = f"{error.filename}: " if getattr(error, "filename", None) is not None else ""
        return (
            f"{where}too many open files (EMFILE): this process may open {_limit_words(soft)}"
            f" (`ulimit -n`, RLIMIT_NOFILE; its hard limit {_limit_words(hard)}); raise it"
            " (`ulimit -n`, or ask the node's administrator), or run fewer workers (--workers)"
        )
    size_limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if code == errno.EFBIG and size_limit != resource.RLIM_INFINITY:
        # else a file system's own largest file (FAT32's 4 GiB): the errno's words say it
        where = f"{error.filename}: " if getattr(error, "filename", None) is not None else ""
        return (
            f"{where}file too large (EFBIG): a file may hold {size_limit} bytes here (`ulimit"
            " -f`, RLIMIT_FSIZE); raise the limit and run the same command again: it resumes"
        )
    started = isinstance(error, BlockingIOError) and code == errno.EAGAIN and _in_a_start(error)
    if started or (isinstance(error, RuntimeError) and "can't start new thread" in str(error)):
        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
        return (
            f"could not start a process or a thread ({printable(str(error))}): this user may"
            f" run {_limit_words(soft)} processes and threads (`ulimit -u`, RLIMIT_NPROC) and"
            " the machine's memory bounds them too; raise the limit, or run fewer workers"
            " (--workers)"
        )
    return None


def _limit_words(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


# The modules whose EAGAIN is a process that could not start (fork or clone refused: `ulimit
# -u`), the kernel's error passed on from their C calls (_posixsubprocess.fork_exec).
STARTING_MODULES = ("subprocess", "multiprocessing", "concurrent")


def _in_a_start(error: BaseException) -> bool:
    """Whether `error` was raised starting a process: its traceback passes through subprocess,
    multiprocessing or a process pool (an EAGAIN elsewhere is a non-blocking stream's)."""
    trace = error.__traceback__
    while trace is not None:
        module = str(trace.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        if module in STARTING_MODULES:
            return True
        trace = trace.tb_next
    return False


# What the dynamic loader says when a limit refused the memory a shared library maps, and what
# bpy says when its start-up's allocation was refused ("Calloc returns null: len=272 in keymap
# list"; was "reinstall it").
NO_MEMORY_WORDS = (
    "failed to map segment",
    "cannot allocate memory",
    "cannot map",
    "returns null",
    "out of memory",
)


def _installed_at(package: str) -> str | None:
    """Where this Python finds `package` (its folder), without importing it; None if absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    return locations[0] if locations else spec.origin


def missing_dependency_line(error: ImportError, command: str = "cg3d") -> str | None:
    """The line for a package of the project's install that this Python lacks, or has but
    cannot import, else None (a module of cg3d's own: a bug or a broken checkout): the
    package, the `command` that needs it and the pip command. Every stage of dvc.yaml runs
    `python -m cg3d`: a `dvc` run outside the project's venv runs the `python` on PATH, which
    imports cg3d from the project root and lacked typer or torch, a ModuleNotFoundError
    traceback. A package that is there but fails (a torch whose shared library is missing,
    `No module named 'torch._C'` of a wheel for another Python) is named as broken: "lacks"
    sent the user to install what they have (t86a)."""
    top = _package_of(error)
    if not top or top == "cg3d":
        return None
    reason = printable(" ".join(f"{type(error).__name__}: {error}".split()))
    limits = memory_limits_words()
    if limits and any(words in str(error).lower() for words in NO_MEMORY_WORDS):
        # Under `ulimit -v` (or -d) torch's libraries could not be mapped: the package is
        # there and whole, the limit is too small (was "lacks '_C'": pip install '_C').
        return (
            f"`{command}` could not load the package {top!r} ({reason}): this process's memory"
            f" limit is too small for its libraries: {limits}; raise it (`ulimit -v unlimited`,"
            " `ulimit -d unlimited`, or ask the node's scheduler for more memory)"
        )
    where = _installed_at(top)
    if where is None:
        return (
            f"`{command}` needs the package {top!r}, which this Python ({sys.executable}) lacks:"
            f" {install_command(top)}{_project_environment_words()}"
        )
    reinstall = install_command(top).replace("pip install '", "pip install --force-reinstall '")
    return (
        f"`{command}` needs the package {top!r}, which this Python ({sys.executable}) has"
        f" ({where}) but cannot import ({reason}): reinstall it ({reinstall})"
        f"{_project_environment_words()}"
    )


# The source checkout this cg3d was imported from, or site-packages for an installed one.
CHECKOUT = Path(__file__).resolve().parents[1]


def _project_environment_words() -> str:
    """The words that send the user to the README's venv (.venv), where cg3d runs from a
    checkout that holds one and this Python is not that venv's; "" else: a wheel, conda or HPC
    install has no .venv to activate (the line sent the user to one)."""
    venv = CHECKOUT / ".venv"
    if not (CHECKOUT / "pyproject.toml").is_file() or not (venv / "bin" / "activate").is_file():
        return ""
    if Path(sys.prefix).resolve() == venv.resolve():  # in it already: nothing to activate
        return ""
    return f", or run it in the project's environment (`. {venv}/bin/activate`; README's install)"
