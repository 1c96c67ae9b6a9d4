"""File helpers every layer uses: atomic writes, content hashes and the output-folder lock.

The ground floor of the package: it imports nothing of ours except the error type, so
`formats`, `models`, `train`, `eval`, `app` and `params` can all use it without reaching up into
`pipeline` (tests/test_layers.py).

One run at a time per output folder: a stage holds an exclusive lock on its `out_dir` while it
runs (`locks_out_dir`), so two runs with different params cannot mix their parts, nor remove
each other's temp files.
"""

import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cg3d.errors import UsageError

log = logging.getLogger(__name__)

# Inside the locked folder, removed when the run ends; .dvcignore names it too, so that a file
# left by a killed run never enters a DVC output's hash.
LOCK_NAME = ".cg3d.lock"
WRITE_CHECK_NAME = ".cg3d-write-check"
# Bytes in one name of a folder (Linux's NAME_MAX, on every file system it mounts but a few):
# a user's name may be all of it, so ours built from theirs must fit in it too.
NAME_MAX = 255
# Bytes in a path the system opens, its NUL included (Linux's PATH_MAX): a longer one is
# refused (ENAMETOOLONG) whatever it names.
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A failed block leaves nothing behind (a full disk leaves no partial file). An OSError of
    the write itself (it names the temp file, or no file: a write to an open handle) is raised
    again naming `path`, the file the user asked for, so that the CLI prints one line about it.
    """
    path = Path(path)
    check_not_special(path)
    tmp = path.with_name(derived_name(path.name, ".", f".{os.getpid()}.tmp"))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.filename not in (None, str(tmp), tmp):
            raise  # about another file the block read or wrote: its own name is the right one
        raise _naming(error, path) from error
    finally:
        with contextlib.suppress(OSError):  # a read-only folder: nothing was created anyway
            tmp.unlink(missing_ok=True)


# A writer of several files stages them in a hidden folder, renamed to COMMIT_NAME once all are
# written (`atomic_files`); .dvcignore names both, as a kill can leave either behind.
STAGE_PREFIX = ".cg3d-stage."
COMMIT_NAME = ".cg3d-commit"


@contextmanager
def atomic_files(folder: Path, names: Iterable[str]) -> Iterator[dict[str, Path]]:
    """Temporary paths for the files `names` of `folder`, all renamed over those files only if
    the block succeeds and wrote every one: the folder then holds the previous set or the new
    one, never some of each (a write that fails part way, as on a full disk, changes nothing).

    The block writes into a hidden staging folder beside the files. When all are written the
    staging folder is renamed to `.cg3d-commit` (one atomic step: the commit), whose files are
    then renamed in. A kill between those renames leaves `.cg3d-commit` behind, and the next
    `atomic_files` of the folder renames the rest in first: the set is whole again before
    anything else is written. Two writers must not interleave: the caller holds the folder's
    `output_lock`. An OSError naming a staged file is raised again naming the file the user
    asked for, as `atomic_path` does (write each file through `atomic_path` for the errors of
    writes to an open handle, which name no file)."""
    folder, names = Path(folder), list(names)
    _finish_commit(folder)
    for stale in folder.glob(f"{STAGE_PREFIX}*"):  # a killed writer's: nothing was committed
        shutil.rmtree(stale, ignore_errors=True)
    # A new name, not one of the pid: a killed writer's folder that NFS keeps (a `.nfs…` file
    # in it, `remove_tree`) may bear this pid's name, reused.
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=".tmp", dir=folder))
    try:
        yield {name: stage / name for name in names}
        for name in names:
            if not (stage / name).is_file():  # a writer's bug: committing would mix two sets
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(stage / name))
        os.rename(stage, folder / COMMIT_NAME)
    except OSError as error:
        if error.filename is None or Path(error.filename).parent != stage:
            raise  # about another file the block read or wrote: its own name is the right one
        raise _naming(error, folder / Path(error.filename).name) from error
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _finish_commit(folder)


# An NFS client keeps a file removed while some process still has it open as `.nfsXXXX…` in its
# folder ("silly rename") until it is closed; meanwhile it cannot be removed (EBUSY), nor can
# its folder (ENOTEMPTY). Such a file is never ours nor a user's: no rule counts it.
NFS_LEFTOVER_PREFIX = ".nfs"


def is_nfs_leftover(name: str) -> bool:
    """Whether the file name `name` is an NFS client's silly-renamed file (NFS_LEFTOVER_PREFIX)."""
    return name.startswith(NFS_LEFTOVER_PREFIX)


def remove_tree(folder: str | Path) -> None:
    """`shutil.rmtree` of `folder`, leaving what an NFS client keeps busy: its `.nfs…` files
    and the folders that hold them, which go when the files are closed. A work folder whose
    file a reader still held ended a finished stage with EBUSY or ENOTEMPTY. Any other error
    is raised."""

    def keep_nfs_leftovers(function: Callable, path: str, exc_info: tuple) -> None:
        if is_nfs_leftover(os.path.basename(path)):
            return
        if function is os.rmdir and _holds_nfs_leftovers_only(path):
            return
        raise exc_info[1]

    shutil.rmtree(folder, onerror=keep_nfs_leftovers)


def _holds_nfs_leftovers_only(folder: str) -> bool:
    """Whether every file under `folder` is an NFS leftover (`is_nfs_leftover`)."""
    try:
        return all(is_nfs_leftover(name) for _, _, names in os.walk(folder) for name in names)
    except OSError:
        return False


def _finish_commit(folder: Path) -> None:
    """Rename the committed files of `atomic_files` into `folder` (none if nothing waits)."""
    commit = folder / COMMIT_NAME
    if not commit.is_dir():
        return
    for file in sorted(commit.iterdir()):
        if not is_nfs_leftover(file.name):  # a removed file NFS keeps: no file of the set
            os.replace(file, folder / file.name)
    remove_tree(commit)
    if commit.exists():  # NFS keeps it: moved aside (a stale staging folder) to free its name
        os.replace(commit, tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=".tmp", dir=folder))


def require_regular_file(path: Path, missing: str, option: str = "") -> None:
    """UsageError unless `path` (symlinks followed) is a regular file: a FIFO would block the
    read and a device be read as data, so either is named as what it is, after the `option`
    that gave it; `missing` is the message when nothing is there. A name that reaches no file
    (a symlink loop, too long, a NUL byte) says so (`why_not_a_file`)."""
    why = why_not_a_file(path)
    if not why:
        return
    where = f"{option}: " if option else ""
    if why == "does not exist":
        if broken := why_a_broken_link(path):  # `ls` lists it: "no such file" sent one looking
            raise UsageError(f"{where}{shown_name(path)} {broken}")
        raise UsageError(missing)
    if os.path.exists(path):  # a folder, a FIFO, a device
        raise UsageError(f"{where}{path}: not a regular file")
    raise UsageError(f"{where}{shown_name(path)} {why}")


def check_not_special(path: Path, option: str = "") -> None:
    """UsageError when `path` (followed through symlinks) is a device, FIFO or socket: the
    rename of `atomic_path` would replace the node itself (as root, `--out /dev/full` turned
    /dev/full into a regular file and exited 0)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent (or unreadable): nothing to replace, or the write says why
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        where = f"{option}: " if option else ""
        what = _FILE_TYPES.get(stat.S_IFMT(mode), "device")
        raise UsageError(f"{where}{path} is a {what}, not a file to write")


def check_out_file(path: Path, option: str = "--out") -> None:
    """UsageError, before any work, when the output file `path` cannot be written: a folder
    there, a device, FIFO or socket (`check_not_special`), a folder that cannot be written
    (`check_out_dir`), or a name its disk refuses (`check_name_allowed`). The writer found these only at its rename, after the input was read and
    converted. The folders the probe made are removed again: a run refused later (its input)
    leaves nothing behind; the writer makes them."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a folder; name the file to write in it")
    made = _missing_folders(path.parent)
    check_out_dir(path.parent, option)
    try:
        check_name_allowed(path, option)
    finally:
        _remove_empty(made)
    check_not_special(path, option)


def check_name_allowed(path: Path, option: str = "--out") -> None:
    """UsageError, before any work, when the disk refuses to create a file named as `path`
    (when none is there): an exFAT drive or a Windows share refuses `a:b.csv`, `CON.csv`, a
    name ending in a dot; the write after the work failed "Invalid argument", with no rule.
    Tried by creating that very name, and removing it: only the disk knows its rules. It is
    created in a new hidden folder beside `path` (the same disk), never at `path`: there, a
    run that renamed its finished output onto the trial file in that moment lost it to the
    unlink, a reader of the folder saw an empty file, and a kill left one at the user's name."""
    path = Path(path)
    if os.path.lexists(path):
        return
    trial = None
    try:
        trial = tempfile.mkdtemp(prefix=".cg3d-name-", dir=path.parent)
        os.close(os.open(os.path.join(trial, path.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except OSError as error:
        reason = refused_name_reason(error, path.name)
        raise UsageError(f"{option}: cannot create {shown_name(path)}: {reason}") from None
    finally:
        if trial is not None:
            shutil.rmtree(trial, ignore_errors=True)


def refused_name_reason(error: OSError, name: str) -> str:
    """Why a disk refused to create `name` (`error`), with its rules where it only says
    "Invalid argument" (exFAT, FAT, a Windows share: the characters and names they refuse)."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in (errno.EINVAL, errno.EILSEQ):
        return (
            f"{reason}: this disk refuses the name (exFAT and Windows shares take none holding "
            '\\ : * ? " < > | or ending in a dot or space, nor CON, PRN, AUX, NUL, COM1-9, '
            "LPT1-9); give another name"
        )
    if error.errno == errno.ENAMETOOLONG and len(os.fsencode(name)) > NAME_MAX:
        return f"{reason}: {len(os.fsencode(name))} bytes, more than the {NAME_MAX} a name may hold"
    return reason


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first: what a check or a lock
    that creates `folder` makes, for `_remove_empty` to take back."""
    return [p for p in (Path(folder), *Path(folder).parents) if not os.path.lexists(p)]


@contextmanager
def folder_for(path: Path) -> Iterator[None]:
    """Create the folder of file `path` (and its parents) for a writer; when the block fails (a
    full disk at the write), remove those made here again while empty: the failed write leaves
    nothing it created, as `check_out_file` does for its probe."""
    made = _missing_folders(Path(path).parent)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: a refused run leaves no folder
    it made; one holding something now (this run's or another's) is kept, and its parents."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def check_not_the_input(out: Path, path: Path | str, option: str, writer: str) -> None:
    """UsageError when `out` is the file `path` (given as `option`) the command reads, however
    spelt or linked: the output's atomic rename replaced the input (`cg3d convert --out` over
    the released checkpoint it converts)."""
    if same_file(out, path):
        raise UsageError(f"--out: {out} is the {option} itself; {writer} writes another file")


def same_file(first: str | Path, second: str | Path) -> bool:
    """Whether `first` and `second` are one file, as the system (not the spelling) says: on a
    case-insensitive or normalising disk (macOS, exFAT, a Windows share) `X.npy` and `x.npy`,
    or `café` in NFC and NFD, are one file whose real paths differ."""
    first, second = os.fspath(first), os.fspath(second)
    if real_path(first) == real_path(second):
        return True
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):  # one of them is not there (yet): not one file
        return False


def inside_folder(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` (there or not yet) lies in `folder`, however spelt: by their real paths,
    or because a folder on `path`'s way that is there is `folder` itself (`same_file`: on
    macOS `Shapes/e.npy` is inside `shapes`)."""
    target, folder = real_path(path), real_path(folder)
    if target.is_relative_to(folder):
        return True
    return any(parent.exists() and same_file(parent, folder) for parent in target.parents)


def _naming(error: OSError, path: Path) -> OSError:
    """`error` again, naming `path` (the file the user asked for, not a temporary one)."""
    code = _errno_of(error)
    return _os_error(code, path) if code else OSError(None, str(error).splitlines()[0], str(path))


def _errno_in(message: str) -> int | None:
    """The errno a library put in its message only (pyarrow: "… [errno 28] …"; Rust's, as
    safetensors: "… (os error 28)"), if any."""
    match = re.search(r"\[errno (\d+)\]|\(os error (\d+)\)", message, re.IGNORECASE)
    return int(match[1] or match[2]) if match else None


def _errno_of(error: BaseException) -> int | None:
    """The errno of `error`: an OSError's own, else the one a library put in its message only
    (`_errno_in`), as a library's own exception does; None when neither names one."""
    own = error.errno if isinstance(error, OSError) else None
    return own or _errno_in(str(error))


def _os_error(code: int, path: Path) -> OSError:
    """The OSError of errno `code` naming `path`, in the system's words for the errno."""
    return OSError(code, os.strerror(code), str(path))


def os_error_in(error: Exception, path: Path) -> OSError | None:
    """The OSError, naming `path`, that a library's own exception reports in words only (a
    Rust writer's "I/O error: No space left on device (os error 28)"); None when its message
    names no errno (then it is not the file system's refusal)."""
    code = _errno_of(error)
    return _os_error(code, path) if code else None


# The errnos of a write the machine refused for want of room or of a writable disk: not the
# fault of the object being processed, so a stage stops on them (one line naming the file),
# where any other error of one object is that object's failure row.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def out_of_room(error: BaseException) -> int | None:
    """The errno of `error` if it is a write refused by a full disk, a quota or a read-only
    file system (pyarrow puts the errno in its message only: "... [errno 28] ..."), else None.
    The errno itself, for the words: a quota's is not "No space left on device"."""
    code = _errno_of(error) if isinstance(error, OSError) else None
    return code if code in NO_ROOM else None


# The errnos of a network disk (NFS, Lustre, GPFS, BeeGFS) that lost track of a file or did not
# answer: a stale handle after the server changed a folder, a hard mount's timeout, a remote
# I/O error. The machine's condition, not the object's: a stage stops on them as on NO_ROOM,
# where a failure row kept a good mesh out for good (a resume redoes only what has no row). EIO
# stays the file's (t79a: a failing disk's sector is one file's).
NETWORK_DISK = frozenset(
    {errno.ESTALE, errno.ETIMEDOUT, errno.EREMOTEIO, errno.ENOLINK, errno.ECOMM}
)


def stopping_error(error: BaseException) -> OSError | None:
    """The OSError that stops a stage where any other error of one object is its failure row:
    `error` itself or the one it was raised from (a reader's MeshError "cannot open the file"
    names its OSError as its cause), when its errno is a full or read-only disk's (NO_ROOM) or a
    network disk's (NETWORK_DISK). None otherwise."""
    cause: BaseException | None = error
    seen: set[int] = set()  # a chain may loop (`raise error from error`)
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and (out_of_room(cause) or _errno_of(cause) in NETWORK_DISK):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


# Errnos that are the user's or the machine's condition even when the OSError names no file:
# no room or no writable disk, a permission, a missing file, a reader that closed the output
# pipe, a network that did not answer (URL shards, a fetch command's download).
CONDITION_ERRNOS = (
    NO_ROOM
    | NETWORK_DISK
    | frozenset(
        {
            errno.EACCES,
            errno.EPERM,
            errno.ENOENT,
            errno.EPIPE,
            errno.ECONNREFUSED,
            errno.ECONNRESET,
            errno.ECONNABORTED,
            errno.ETIMEDOUT,
            errno.EHOSTUNREACH,
            errno.EHOSTDOWN,
            errno.ENETUNREACH,
            errno.ENETDOWN,
        }
    )
)


def is_condition(error: OSError) -> bool:
    """Whether `error` is the user's or the machine's condition, for one line (`os_error_line`):
    it names its file, or its errno (or the one a library put in its words only, as pyarrow
    does) is a condition (`CONDITION_ERRNOS`), or it is a network's refusal or silence (a name
    that does not resolve, a timeout, a connection closed, urllib's URLError). Any other
    OSError is a bug, which keeps its traceback. By class as well as by errno: http.client's
    RemoteDisconnected (a server that closed the connection without answering, which urllib
    raises as it is) is a ConnectionResetError with no errno; an ssl.SSLError (a certificate
    refused, a connection cut mid-read) carries the SSL library's code, no errno."""
    import socket
    import ssl
    import urllib.error

    if error.filename is not None:
        return True
    network = (socket.gaierror, ssl.SSLError, TimeoutError, ConnectionError, urllib.error.URLError)
    if isinstance(error, network):
        return True
    return _errno_of(error) in CONDITION_ERRNOS


def os_error_line(error: OSError) -> str:
    """One line for an OSError: the file it names and the errno's meaning (and name)."""
    if isinstance(error, shutil.Error) and (line := _copy_error_line(error)) is not None:
        return line
    where = f"{error.filename}: " if error.filename is not None else ""
    if error.errno and error.strerror:
        # none for a resolver's (socket.gaierror) codes; an SSL error's 1 is no EPERM
        name = None if _library_code(error) else errno.errorcode.get(error.errno)
        return f"{where}{error.strerror}" + (f" ({name})" if name else "")
    if where:  # a file but no errno: str() would say "[Errno None] None: 'x'"
        return f"{where}{error.strerror or type(error).__name__}"
    return str(error)


def _copy_error_line(error: shutil.Error) -> str | None:
    """One line for `shutil.copytree`'s error, which lists a (source, target, words) tuple per
    file it could not copy (the words: the OSError's str): the first target and its cause, as
    `os_error_line` words any other, and how many more failed. Printed as it was, the line was
    a Python list of tuples. None for another shutil.Error (a message of its own)."""
    failures = error.args[0] if error.args else None
    if not isinstance(failures, list) or not failures:
        return None
    first = failures[0]
    if not (isinstance(first, tuple) and len(first) == 3):
        return None
    _, target, words = first
    code = _errno_in(str(words))
    if code in errno.errorcode:
        words = f"{os.strerror(code)} ({errno.errorcode[code]})"
    more = len(failures) - 1
    return f"{target}: {words}" + (f" (and {more} other file{'s' * (more > 1)})" if more else "")


def _library_code(error: OSError) -> bool:
    """Whether the errno of `error` is a library's own code, not the OS's."""
    import socket
    import ssl

    return isinstance(error, (socket.gaierror, ssl.SSLError))


def not_utf8_line(error: UnicodeEncodeError) -> str | None:
    """One line for a name that is not UTF-8, or None for another encoding error. Python reads
    such a name from the command line or a folder with its bad bytes as lone surrogates
    (surrogateescape); pyarrow and the JSON records need UTF-8, and refused it deep in a stage
    (an input folder named `bad\\xff`: a traceback)."""
    if error.reason != "surrogates not allowed" or not isinstance(error.object, str):
        return None
    return not_utf8_name(error.object)


NOT_UTF8_NAME = "the file name is not UTF-8; rename it"  # a failure row's reason, every reader


def utf8_name(name: str) -> str:
    """`name` itself if it is UTF-8 text, else its bytes with the undecodable ones as `\\xff`
    (os hands a name that is not UTF-8 over with surrogates, which no Parquet string, CSV or
    JSON file holds): how a failure row names a file it could not take in."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def not_utf8_name(name: str) -> str:
    """The words for a path `name` that is not UTF-8 (its bad bytes as surrogates): one
    wording wherever it is found, an --out folder checked early or a name refused deep in."""
    return f"{shown_name(name)} is not a UTF-8 name; rename it (or give a path that is) to read or write it"


def check_utf8_path(path: str | Path, option: str) -> None:
    """A UsageError naming `option` when `path` (made absolute) is not UTF-8: pyarrow and the
    JSON records hold paths as UTF-8, and a surrogate ended a stage after its work."""
    absolute = os.path.abspath(path)
    try:
        absolute.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{option}: {not_utf8_name(absolute)}") from None


def check_out_dir(folder: Path, option: str = "--out") -> Path:
    """Create the output folder `folder` if needed and check that files can be created in it,
    before any work starts: a read-only, unwritable or misnamed folder is a one-line
    UsageError naming `option` and the folder, not an OSError after hours of work. So is a
    folder whose path leaves no room for a name of NAME_MAX bytes in it (PATH_MAX)."""
    folder = Path(folder)
    check_utf8_path(folder, option)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option}: {folder} is a file, not a folder")
    # Room for one more name of any length (a file and its temporary name, or the folders and
    # file a command nests in it, as train's `.resume/dvclive/plots/metrics/train/loss.tsv`):
    # a deeper folder was found by the first write past PATH_MAX, after an epoch of training.
    size = len(os.fsencode(os.path.abspath(folder)))
    if size + 1 + NAME_MAX >= PATH_MAX:
        raise UsageError(
            f"{option}: {shown_name(os.path.abspath(folder))} is a path of {size} bytes, which "
            f"leaves less than the {NAME_MAX} a name in it may need before the system's limit "
            f"of {PATH_MAX - 1} bytes; choose a folder nearer the root"
        )
    # .dvcignore names the probe: one left by a kill between its creation and removal never
    # enters a DVC output's hash
    probe = folder / f"{WRITE_CHECK_NAME}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as error:
        reason = refused_name_reason(error, folder.name)
        raise UsageError(f"{option}: cannot write into {folder}: {reason}") from None
    return folder


_held_locks: set[Path] = set()  # folders this process holds the lock of


@contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if missing), or fail at once if another run
    holds it. The kernel drops a flock when its process dies, so a killed run never blocks.
    (A second `output_lock` of the folder in the same process conflicts too: flocks belong to
    open files. `locks_folder` is the re-entrant form.) If the block fails, the folders this
    call made on the way to `folder` are removed again while empty: a refused run (an input
    checked after the lock is taken) leaves nothing new behind."""
    with _exclusive(folder, LOCK_NAME, lambda held: f"into {held}", "folder") as held:
        _held_locks.add(held)
        try:
            yield
        finally:
            _held_locks.discard(held)


def file_lock_name(path: Path) -> str:
    """The lock `file_lock` takes for `path`, beside it: `.<name>.cg3d.lock` (.dvcignore)."""
    return derived_name(Path(path).name, ".", ".cg3d.lock")


DIGEST_CHARACTERS = 12


def check_companion_name(companion: Path, path: Path, option: str = "--out") -> None:
    """UsageError, before any work, when the file `companion` written beside `path` (the file
    `option` names: FILE.json beside FILE.npy) has a name over NAME_MAX bytes, which `path`'s
    own name may reach (a 255-byte FILE.npy): its write failed "File name too long" after
    the work."""
    size = len(os.fsencode(Path(companion).name))
    if size > NAME_MAX:
        raise UsageError(
            f"{option}: {shown_name(Path(path).name, 60)} leaves no room for the name of the "
            f"file written beside it (its {Path(companion).suffix}: {size} bytes, more than the "
            f"{NAME_MAX} a file name may hold); give a shorter name"
        )


def path_too_long(path: str | Path) -> bool:
    """Whether the system refuses `path` for its length alone (`PATH_MAX`): a walk must not
    enter such a folder (its listing raised ENAMETOOLONG and ended the whole walk)."""
    return len(os.fsencode(path)) >= PATH_MAX


def name_on_any_disk(name: str) -> str:
    """`name` as a case-insensitive or normalising disk compares file names (macOS's APFS,
    exFAT, a Windows share): one Unicode form, one case. Two names alike in it are one file
    there (the second written replaces the first), though two on this system. Lower case,
    not casefold: those disks map one character to one (`straße` and `STRASSE` are two)."""
    return unicodedata.normalize("NFC", name).lower()


def one_file_on_some_disks(names: Iterable[str]) -> tuple[str, str] | None:
    """Two of `names` that are one file name on a case-insensitive or normalising disk
    (`name_on_any_disk`: `A` and `a`, `café` in NFC and in NFD), or None."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(name_on_any_disk(name), name)
        if first != name:
            return first, name
    return None


def derived_name(name: str, prefix: str, suffix: str) -> str:
    """`prefix + name + suffix`, a name of ours built from a user's `name` (a temporary file, a
    lock): when that is over NAME_MAX bytes (a 250-byte `--out` plus `.<pid>.tmp`: the write
    failed "File name too long", naming a file the user could well create), `name` is cut at
    a character to fit, with a digest of the whole, so that two long names cut alike still
    derive two names. The same `name` always derives the same name (a lock is found again)."""
    whole = f"{prefix}{name}{suffix}"
    if len(os.fsencode(whole)) <= NAME_MAX:
        return whole
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:DIGEST_CHARACTERS]
    room = NAME_MAX - len(os.fsencode(f"{prefix}~{digest}{suffix}"))
    cut = name[:room]
    while len(os.fsencode(cut)) > room:  # multibyte characters: fewer of them fit
        cut = cut[:-1]
    return f"{prefix}{cut}~{digest}{suffix}"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """`output_lock` of one output file (its folder created if missing): two runs writing the
    same file are refused at once, two writing two files of one folder both go ahead. For a
    writer of a set of files named after one (`cg3d eval text-features`: FILE.npy and
    FILE.json), `path` is that one."""
    path = Path(path)
    with _exclusive(path.parent, file_lock_name(path), lambda held: str(held / path.name), "file"):
        yield


@contextmanager
def _exclusive(
    folder: Path, name: str, writing: Callable[[Path], str], other: str
) -> Iterator[Path]:
    """The flock on `folder`/`name` (see `output_lock`), yielding the folder resolved; a held
    lock is one line: another run is writing `writing(folder)`, choose another `other`."""
    made = _missing_folders(folder)
    folder = check_out_dir(folder).resolve()
    lock_file = folder / name
    while True:
        existed = os.path.lexists(lock_file)
        try:
            handle = lock_file.open("a")
        except OSError as error:  # a lock named after the user's file: its disk may refuse it
            _remove_empty(made)
            reason = refused_name_reason(error, name)
            raise UsageError(
                f"--out: cannot create the lock of {writing(folder)} ({name}): {reason}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UsageError(
                f"--out: another run is writing {writing(folder)} (it holds {name}"
                f"{_lock_holder(lock_file)}); wait for it to finish or choose another {other}"
            ) from None
        except OSError as error:  # no locks on this disk, or a network disk's error
            handle.close()
            if not existed:
                with contextlib.suppress(OSError):
                    lock_file.unlink()
            _remove_empty(made)
            # `writing` says "into FOLDER" of a folder's lock: the line names the folder
            raise _unlockable(error, writing(folder).removeprefix("into "), lock_file) from None
        # A run that ended between our open and our flock removed the file we locked: retry
        # on the file now at that path, which other runs lock.
        if _is_file_at(handle, lock_file):
            break
        handle.close()
    _write_holder(handle)
    _say_if_lock_is_node_local(folder)
    try:
        yield folder
    except BaseException:
        _release(lock_file, handle)
        _remove_empty(made)
        raise
    _release(lock_file, handle)


# The errnos of a file system that takes no file locks: Lustre mounted without `flock` (ENOSYS),
# NFS without its lock service (ENOLCK), some FUSE file systems (EOPNOTSUPP, EINVAL).
NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


def _unlockable(error: OSError, target: str, lock_file: Path) -> Exception:
    """The one line for a lock that could not be taken (not held by another run): a disk with
    no locks is refused, as the lock is what keeps two runs (on two nodes too) from writing
    one folder at once, and running without it would let them mix their files; any other
    error (ESTALE, EIO of a network disk) names the lock file."""
    code = error.errno
    if code not in NO_LOCKS:
        return _naming(error, lock_file)
    return UsageError(
        f"--out: {target}: its file system takes no file locks "
        f"({errno.errorcode[code]}: {os.strerror(code)}), which keep two runs from writing "
        "one folder; write to a folder on a disk that has them (a local disk, Lustre mounted "
        "with -o flock, NFS with its lock service running)"
    )


# Mount options under which a flock holds on this node only, and succeeds: Lustre's
# `localflock`, NFS's `local_lock=flock` / `local_lock=all` (locks the client keeps to itself).
NODE_LOCAL_LOCKS = ("localflock", "local_lock=flock", "local_lock=all")
MOUNTINFO = Path("/proc/self/mountinfo")
_said_node_local: set[str] = set()


def node_local_lock_option(folder: Path, mountinfo: Path | None = None) -> str | None:
    """The option (`NODE_LOCAL_LOCKS`) of the mount holding `folder` (a resolved path) under
    which its file locks hold on this node only; None when they are shared, or when it cannot
    be told (no /proc: another OS). The mount is the last of those with the longest mount
    point that holds `folder`, as the kernel resolves it."""
    try:
        lines = (mountinfo or MOUNTINFO).read_text(errors="replace").splitlines()
    except OSError:
        return None
    target, deepest, options = os.fsdecode(folder), -1, []
    for line in lines:
        mount, _, filesystem = line.partition(" - ")
        fields = mount.split()
        if len(fields) < 6:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal[1], 8)), fields[4])
        inside = point == "/" or target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= deepest:
            # its own options and its file system's (where NFS and Lustre show theirs)
            deepest, options = (
                len(point),
                fields[5].split(",") + " ".join(filesystem.split()[2:]).split(","),
            )
    return next((option for option in options if option in NODE_LOCAL_LOCKS), None)


def _say_if_lock_is_node_local(folder: Path) -> None:
    """Warn once per folder when the lock just taken holds on this node only: on such a mount
    (many clusters' default) a run on another node takes its own lock on the same folder, and
    both write into it; cg3d cannot see that, so it says so rather than refuse the mount."""
    option = node_local_lock_option(folder)
    if option is None or str(folder) in _said_node_local:
        return
    _said_node_local.add(str(folder))
    log.warning(
        "%s is on a mount with %s: cg3d's lock on it holds on this node only, so a run on "
        "another node could write into it at the same time; run one node at a time there, or "
        "use a disk mounted with shared locks (Lustre -o flock, NFS without local_lock)",
        folder,
        option,
    )


# The most of a lock file's text a refused run shows (a hostile one may hold anything).
HOLDER_LIMIT = 200


def _write_holder(handle) -> None:
    """Write who holds a lock into its file, for the run it refuses (on a shared machine or
    data root another user's run holds it): process, user and host. A lock file left by a
    killed run (the flock went with it) is taken over and rewritten."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a container's uid with no passwd entry
        user = f"uid {os.getuid()}"
    # UTC, said so: the run it refuses may be another user's with another TZ, and a TZ glibc
    # does not know (`TZ=garbage`) printed UTC's time labelled "garbage"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    holder = f"pid {os.getpid()} of {user} on {socket.gethostname()}, since {since}\n"
    with contextlib.suppress(OSError):  # the lock holds without its note
        handle.truncate(0)
        # UTF-8 bytes, whatever the locale's encoding; a passwd name that is not UTF-8 (its
        # bytes as surrogates) spelled `\xe9`: as text it raised, and no run could start
        os.write(handle.fileno(), utf8_name(holder).encode("utf-8"))


def _lock_holder(lock_file: Path) -> str:
    """ ": held by <who>" from a held lock's file (`_write_holder`); empty when it says
    nothing (written by an older cg3d, or not yet)."""
    try:
        with open(lock_file, "rb") as file:
            text = file.read(HOLDER_LIMIT).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f": held by {shown_name(text.splitlines()[0], HOLDER_LIMIT)}" if text else ""


def _release(lock_file: Path, handle) -> None:
    lock_file.unlink(missing_ok=True)  # still locked: a run that opened it will retry
    handle.close()


def _is_file_at(handle, path: Path) -> bool:
    """Whether the open `handle` is the file now at `path` (not a removed one)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except FileNotFoundError:
        return False


def locks_folder(parameter: str) -> Callable[[Callable], Callable]:
    """Decorate a function (a stage, a command) so that it runs holding `output_lock` of the
    folder its argument `parameter` names: the one rule of every command that writes a folder
    (tests/app/test_output_locks.py holds each command to it). Held already by this process
    (a command locks its --out, then calls a stage that locks it too), it is not taken again."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            # The folder resolved here, at the edge: the function and the libraries it calls
            # (some make paths absolute lexically: `links/link/../out` → `links/out`) all write
            # where the system puts the folder.
            folder = resolved_root(bound.arguments[parameter])
            bound.arguments[parameter] = folder
            if holds_lock(folder):
                return function(*bound.args, **bound.kwargs)
            with output_lock(folder):
                return function(*bound.args, **bound.kwargs)

        return locked

    return decorate


def locks_out_dir(stage: Callable) -> Callable:
    """Decorate a stage function so that it runs holding `output_lock` of its `out_dir`."""
    return locks_folder("out_dir")(stage)


def holds_lock(folder: Path) -> bool:
    """Whether this process holds `output_lock` of `folder` or of a folder above it."""
    folder = Path(folder).resolve()
    return any(held == folder or held in folder.parents for held in _held_locks)


def stored_spelling(real: Path, real_out_dir: Path) -> str:
    """How an output spells a resolved file or folder it names (the manifest a mesh and the
    source root, an index its checkpoint, a checkpoint its CLIP weights file), read back as
    `out_dir / spelling`: relative to the (resolved) output folder when it lies under it,
    or when both lie in one repository (`repository`), as a project's `data/raw` and
    `data/meshes` do: a clone at another place, or a teammate's, writes the same manifest,
    and so the same parts and shards, and DVC reruns nothing; else absolute. The relative
    form is taken between resolved paths, so the system reads it back to the same file."""
    if real.is_relative_to(real_out_dir):
        return real.relative_to(real_out_dir).as_posix()
    project = repository(real_out_dir)
    if project is not None and real.is_relative_to(project):
        return Path(os.path.relpath(real, real_out_dir)).as_posix()
    return str(real)


# Files that mark a repository's top folder: Git's (a folder, or a worktree's file) and DVC's.
REPOSITORY_MARKS = (".git", ".dvc")


@functools.lru_cache(maxsize=8)
def repository(real_out_dir: Path) -> Path | None:
    """The top folder of the repository an output folder lies in: the nearest folder, itself
    or above, holding `.git` or `.dvc`; None outside any. Asked once per folder, not per file."""
    for folder in (real_out_dir, *real_out_dir.parents):
        if folder.parent != folder and any((folder / m).exists() for m in REPOSITORY_MARKS):
            return folder
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (memory flat in the file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_version(path: str | Path) -> tuple[int, ...]:
    """A version of the file at `path`, for a cache of what was read from it in this process:
    its inode, size, mtime and ctime. mtime alone missed a file rewritten in place at the same
    size within its disk's mtime step (1 s or 2 s on some network disks) or its mtime set back
    (`cp -p`, `rsync -t`, `touch -d`); ctime is set to now by any change and no call sets it
    back. Never a persisted key: a copy or restore elsewhere changes inode and ctime."""
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def versioned_sha256(path: Path) -> str:
    """`file_sha256`, hashed once per `file_version` of the file in this process.
    A texture that 10,000 objects share was read whole 10,000 times by the meshes stage."""
    return _sha256_of_version(str(path), file_version(path))


@functools.lru_cache(maxsize=1 << 14)
def _sha256_of_version(path: str, version: tuple[int, ...]) -> str:
    return file_sha256(Path(path))


class FileTooLarge(ValueError):
    """A file that would be larger than its reader takes (`write_json`'s `max_bytes`)."""


class OutsideRoot(ValueError):
    """A path that resolves outside the folder a reader may read (its message names both)."""


def resolved_root(root: str | Path) -> Path:
    """The folder `root` names, absolute and with every symlink and `..` resolved: taken once,
    where a root enters a reader or source (its edge), so that what the reader may open never
    depends on how the root was spelled (relative, through a symlink, with `..`) nor on the
    current folder of whichever process later opens a file under it."""
    return Path(root).resolve()


def real_path(path: str | Path) -> Path:
    """`path` absolute, with every symlink and `..` resolved as the system would, for a path
    that may lead nowhere: a symlink loop is kept as the link's own path (Python 3.11's
    `Path.resolve` raised RuntimeError for it), so that the caller's own check (`is_file`)
    says it names no file. ValueError naming the path for a NUL byte, which no file name
    holds (the message says so; a reader's `except ValueError` gives its one line)."""
    try:
        return Path(os.path.realpath(path))
    except ValueError:
        raise ValueError(f"{shown_name(path)} holds a NUL byte: it names no file") from None


# How far the zero probes look: no real file of a format with a header (a zip, safetensors)
# starts with this many zero bytes, nor does a zip end with them (its end record is last).
ZERO_PROBE_BYTES = 4096


def zero_ends(path: Path, tail: bool = True) -> str:
    """ "" unless the file at `path` starts (or, with `tail`, ends: `zero_tail`) in
    ZERO_PROBE_BYTES zero bytes; then the words saying so. Reads at most twice that (a 3 GB
    sparse file included). `tail` is for formats that never end in zeros (a zip: its end record
    is last), not for a tar (zero blocks end it) or a GLB or safetensors file (zero weights are
    real data)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(ZERO_PROBE_BYTES)
        zeros = zero_tail(path) if tail else ""
    except OSError:
        return ""  # the caller's own read says what is wrong
    if head and not head.strip(b"\0"):
        if size <= ZERO_PROBE_BYTES:
            return f"all its {size} bytes are zero"
        return (
            f"its first {ZERO_PROBE_BYTES} bytes (of {size}) are all zero: nothing was written "
            "there, as in a preallocated or sparse file never filled"
        )
    return f"truncated and zero-filled: {zeros}" if zeros else ""


def zero_tail(path: Path) -> str:
    """ "" unless the file at `path`, longer than ZERO_PROBE_BYTES, ends in that many zero
    bytes; then the words saying so, for a reason after "truncated and zero-filled: " (a zip's,
    a PLY's or STL's) or after what a reading of the zeros came to (a GLB's without area).
    A shorter run proves nothing; a file all zeros is the head check's (`zero_ends`)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= ZERO_PROBE_BYTES:
            return ""
        handle.seek(size - ZERO_PROBE_BYTES)
        if handle.read(ZERO_PROBE_BYTES).strip(b"\0"):
            return ""
    return (
        f"its last {ZERO_PROBE_BYTES} bytes (of {size}) are all zero, as a download cut short "
        "into a preallocated file leaves"
    )


# What a clone or a failed download leaves in place of a file, known from its first bytes.
STAND_IN_PROBE = 1024
LFS_POINTER = re.compile(
    rb"version https://(?:git-lfs|hawser)\.github\.com/spec/v\d+\r?\n"
    rb"(?:.*\n)*?oid sha256:(?P<oid>[0-9a-f]{64})\r?\n(?:.*\n)*?size (?P<size>\d{1,20})"
)
ANNEX_POINTER = re.compile(rb"/annex/objects/(?P<key>[A-Z0-9]+-s(?P<size>\d{1,20})[^\s/]*)")
HTML_TITLE = re.compile(rb"<title[^>]*>\s*([^<]{1,80}?)\s*</title>", re.IGNORECASE)
XML_ERROR = re.compile(
    rb"<Error>\s*<Code>([^<]{1,80})</Code>(?:\s*<Message>([^<]{1,120})</Message>)?"
)
ANNEX_OBJECTS = "/.git/annex/objects/"


def stand_in(head: bytes) -> str:
    """ "" unless `head`, a file's first STAND_IN_PROBE bytes, is what a clone or a failed
    download leaves in place of the file (`pointer`, `error_page`); then what it is and what to
    do, for a failure row or a message. No format read here starts so: meshes, checkpoints,
    safetensors, tars, HDF5 (every reader said what the stand-in's text came to in its
    format: "no geometry", "Unsupported operand 118", "truncated tar header")."""
    return pointer(head) or error_page(head)


def pointer(head: bytes) -> str:
    """ "" unless `head` is a Git LFS pointer (a clone without `git lfs pull` holds 130 bytes
    of text, "version https://git-lfs.github.com/spec/v1", the oid and size, under the file's
    name) or a git-annex pointer file ("/annex/objects/SHA256E-s…": content never fetched);
    then what it is and the command that fetches the file."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if match := LFS_POINTER.match(text):
        return (
            f"a Git LFS pointer (to an object of {int(match['size'])} "
            f"bytes, sha256 {match['oid'][:12].decode()}…), not the file: run `git lfs pull` "
            "in the clone"
        )
    if match := ANNEX_POINTER.match(text):
        return (
            f"a git-annex pointer (to {match['key'][:40].decode(errors='replace')}…, "
            f"{int(match['size'])} bytes), not the file: run `git annex get` in the clone"
        )
    return ""


def error_page(head: bytes) -> str:
    """ "" unless `head` is an HTML page or an XML error document that a download saved under
    the file's name (GitHub's 404 page, a login page, S3's `<Code>AccessDenied</Code>`); then
    what it is, its title or error code, and what to do."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    lowered = text[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        title = HTML_TITLE.search(text)
        named = f" (titled {title[1].decode(errors='replace')!r})" if title else ""
        return (
            f"an HTML page{named}, not the file: a download saved the server's page (an "
            "error, a login or a redirect) under the file's name; download it again"
        )
    if lowered.startswith((b"<?xml", b"<error")) and (error := XML_ERROR.search(text)):
        said = ": " + error[2].decode(errors="replace") if error[2] else ""
        return (
            f"an XML error response ({error[1].decode(errors='replace')}{said}), not the "
            "file: a download saved the server's refusal under the file's name; check the "
            "link or your access and download it again"
        )
    return ""


# Archives and compressed streams by their first bytes: what a dataset is downloaded as
# (ShapeNetCore.v2.zip, a .tar.gz) and what a server that compresses its answer saves
# (`model.obj` starting 1f 8b). A tar is known by its header's magic at byte 257 (`TAR_MAGIC`).
PACKED_MAGIC = {
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!\x1a\x07": "RAR",
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
}
ARCHIVES = ("zip", "7-Zip", "RAR", "tar")  # the others compress one stream
# ustar's "ustar\0" and GNU tar's "ustar  \0": with the NUL, which no text holds (an OBJ's
# "o mustard" may put "ustar" at byte 257)
TAR_MAGIC = (b"ustar\x00", b"ustar  \x00")


def packed_format(head: bytes) -> str:
    """ "" unless `head`, a file's first 512 bytes or more, is an archive or a compressed
    stream; then its format's name (`PACKED_MAGIC`, "tar"; an archive if in `ARCHIVES`). The
    one place such files are known from their bytes: a mesh (`meshio.check_bytes`) and a
    root (`sources.archive_root`) that is one."""
    found = next((name for magic, name in PACKED_MAGIC.items() if head.startswith(magic)), "")
    return found or ("tar" if head[257:265].startswith(TAR_MAGIC) else "")


def file_stand_in(path: Path) -> str:
    """`stand_in` of the file at `path`: "" for a file that is not one, or cannot be read
    (the caller's own read says why)."""
    try:
        with open(path, "rb") as handle:
            return stand_in(handle.read(STAND_IN_PROBE))
    except OSError:
        return ""


def annex_link(target: Path) -> bool:
    """Whether `target`, where a symlink leads, is a git-annex object (`.git/annex/objects/…`:
    git-annex keeps a file's content there and links the file's name to it)."""
    return ANNEX_OBJECTS in Path(target).as_posix()


def why_not_a_file(path: str | Path) -> str:
    """ "" when `path` (symlinks followed) is a regular file to read, else why not, in words a
    message or failure row can end with: it does not exist, is a symlink loop, a folder, a
    FIFO, socket or device (never opened: a read would block or never end), or names no file
    at all (a name too long for the system, a NUL byte, a folder that cannot be searched).
    Never raises: `Path.is_file` raised for some of these (ENAMETOOLONG) and said "missing"
    for the others."""
    return _why_not_a(path, "file")


# The most a list or annotation file a user names (meshes.exclude, --annotations, a taxonomy,
# --labels-file, a list of shapes or of ShapeNet ids) may hold. Each is read whole, and parsed
# JSON takes several times its size in memory: a 600 MB sparse file took 1.3 GB before its
# one-line answer. Objaverse's largest annotation files are tens of MB: this is generous.
MAX_LIST_BYTES = 256 << 20


def read_small_file(path: Path, option: str = "") -> bytes:
    """The bytes of a list or annotation file `option` names (or a positional argument, for
    ""), refused in one line (from its size, before any read) when larger than MAX_LIST_BYTES;
    an OSError is one line too."""
    where = f"{option}: " if option else ""
    try:
        size = path.stat().st_size
        if size <= MAX_LIST_BYTES:
            with path.open("rb") as stream:
                data = stream.read(MAX_LIST_BYTES + 1)  # the file may grow after the stat
                size = max(size, len(data))
    except OSError as error:
        raise UsageError(f"{where}cannot read {path} ({error.strerror})") from None
    if size > MAX_LIST_BYTES:
        raise UsageError(
            f"{where}{path} holds {size} bytes, more than the {MAX_LIST_BYTES >> 20} MiB a "
            "list or annotation file may hold"
        )
    return data


def read_small_text(path: Path, option: str = "") -> str:
    """The text of a list file `option` names (`read_small_file`'s bound), in one line naming
    the file and the first bad byte when it is not UTF-8 (a binary file given by mistake)."""
    data = read_small_file(path, option)
    try:
        # a byte-order mark (a spreadsheet's or Notepad's "UTF-8") is no text: it named all.csv's
        # first column "\ufeffsynsetId" and made a labels file's first class "\ufeffchair"
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        where = f"{option}: " if option else ""
        raise UsageError(
            f"{where}{path} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None


def _mode_or_why_not(path: str | Path, noun: str) -> int | str:
    """`path`'s st_mode (symlinks followed), or why it names no `noun` ("file", "folder") at
    all: a NUL byte, a symlink loop, nothing there, a name the system refuses."""
    try:
        return os.stat(path).st_mode
    except ValueError:
        return f"holds a NUL byte: it names no {noun}"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "is a symlink loop"
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"names no {noun} to read ({error.strerror})"


# Why a folder under a tree a command walks is a row of its own: it cannot be listed.
UNLISTED_FOLDER = (
    "a folder that cannot be read (permission denied): its files are not listed; "
    "give this user read and search permission on it"
)


# Errnos of listing a folder that are the folder's own state, for its row (`why_unlisted`):
# no permission, removed or made a file since its parent was listed, a symlink loop or a name
# too long on the way, a medium that fails its reads. Any other (a stale NFS handle, a timeout,
# no file descriptor or memory left) is the machine's: the walk stops, naming the folder,
# rather than make a whole class rows that a resumed run keeps.
UNLISTED_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EIO,
    }
)


def sorted_entries(folder: str | Path) -> list[os.DirEntry] | None:
    """The entries of `folder` sorted by name, or None when it cannot be listed for a cause of
    its own (`UNLISTED_ERRNOS`: no permission, removed or made a file since its parent was
    listed, an I/O error). Every walk of a user's tree (the mesh sources, classify/embed of a
    folder) gives such a folder a failure row saying `why_unlisted`: a shared dataset's folder
    of another group lost its meshes without a word (`rglob` and the walks passed over it), and
    a folder removed mid-walk ended the stage. Any other OSError is raised (it names `folder`)."""
    try:
        with os.scandir(folder) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        if error.errno in UNLISTED_ERRNOS:
            return None
        raise


def why_unlisted(folder: str | Path) -> str:
    """The reason of the row of `folder`, which `sorted_entries` could not list: its cause,
    asked again (UNLISTED_FOLDER for a permission, never the same words for every cause)."""
    try:
        with os.scandir(folder):
            pass
    except PermissionError:
        return UNLISTED_FOLDER
    except FileNotFoundError:
        return "a folder removed while the tree was walked: its files are not listed"
    except OSError as error:
        return (
            f"a folder that cannot be listed ({error.strerror or error}): its files are not listed"
        )
    return "a folder that could not be listed while the tree was walked: run the command again"


def why_a_broken_link(path: str | Path) -> str:
    """ "is a broken symlink (to TARGET)" when `path` is a symlink that leads nowhere, for
    where `why_not_a_file` (or `_folder`) said "does not exist" of a name `ls` lists; else ""."""
    try:
        target = os.readlink(path)
    except (OSError, ValueError):  # no link (or gone since), a NUL byte
        return ""
    return f"is a broken symlink (to {shown_name(target)})"


def why_not_a_folder(path: str | Path) -> str:
    """ "" when `path` (symlinks followed) is a folder, else why not, as `why_not_a_file` says
    it for files: a file, FIFO, socket or device given where a folder goes is named as what
    it is (before, "no such folder" or "no index.json in" sent the user looking for a typo)."""
    return _why_not_a(path, "folder")


# What a path is, by its file type, in the words of `_why_not_a`; any other is a device.
_FILE_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "folder",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
}


def _why_not_a(path: str | Path, noun: str) -> str:
    """ "" when `path` (symlinks followed) is a `noun` ("file", "folder"), else why not: it
    names none at all (`_mode_or_why_not`), or what it is instead ("is a FIFO, not a file")."""
    mode = _mode_or_why_not(path, noun)
    if isinstance(mode, str):
        return mode
    what = _FILE_TYPES.get(stat.S_IFMT(mode), "device")
    return "" if what == noun else f"is a {what}, not a {noun}"


def require_folder(path: str | Path, option: str = "", missing: str | None = None) -> None:
    """UsageError unless `path` is a folder: `missing` (default "OPTION: no such folder PATH")
    when nothing is there, else the path and what it is (`why_not_a_folder`)."""
    why = why_not_a_folder(path)
    if not why:
        return
    where = f"{option}: " if option else ""
    if why == "does not exist":
        if broken := why_a_broken_link(path):
            raise UsageError(f"{where}{shown_name(path)} {broken}")
        raise UsageError(missing or f"{where}no such folder {path}")
    named = path if os.path.lexists(path) else shown_name(path)
    raise UsageError(f"{where}{named} {why}")


def shown_name(value: Any, limit: int = 120) -> str:
    """`value` for a message, cut to `limit` characters with its length said: a file names
    another of 5000 characters, a params file holds a 900 KB string, and the failure row or
    error should still be a line. A name (str, Path) is quoted; any other value is its repr.
    The cut keeps the head and the tail (`'/very/long/pre…/chair.obj' (5000 characters)`):
    a path's file name, its recognisable part, is at its end (the first 120 lost it)."""
    name = isinstance(value, str | Path)
    text = str(value) if name else repr(value)
    if len(text) <= limit:
        return repr(text) if name else text
    head = limit // 3
    cut = f"{text[:head]}…{text[len(text) - (limit - head) :]}"
    return f"{cut!r} ({len(text)} characters)" if name else f"{cut} ({len(text)} characters)"


def confined_path(root: Path, base_dir: Path, reference: str | Path) -> Path:
    """The path `reference` (relative to `base_dir`, or absolute) names, after symlinks are
    followed, if it lies inside `root`; OutsideRoot when it escapes. The one rule of what a
    reader may open: mesh sources (their references), benchmark readers (their index files'
    paths) and shard readers (the index's shard names) all pass their paths through it.

    `reference` is relative to `base_dir`, never a path already joined onto it: a caller
    holding a whole path passes `inside_root(root, path)` instead."""
    target = real_path(Path(base_dir) / reference)
    if not target.is_relative_to(resolved_root(root)):
        raise OutsideRoot(f"{reference} resolves outside {root}")
    return target


def inside_root(root: Path, path: Path) -> Path:
    """`path` (a whole path, relative to the current folder or absolute) resolved, if it lies
    inside `root`; OutsideRoot naming it when it escapes (`confined_path` from no base)."""
    return confined_path(root, Path(), path)


def loads_json(
    data: str | bytes, object_pairs_hook: Callable[[list[tuple[str, object]]], object] | None = None
) -> object:
    """`json.loads` for a file a stage or a user wrote: nesting past Python's recursion limit
    (100,000 `[`, in a .plan.json, index.json or classes.json) is a ValueError like any other
    JSON that does not parse, so every reader's `except ValueError` gives its one line instead
    of a RecursionError traceback. `object_pairs_hook` as json's (a reader that refuses a key
    named twice)."""
    try:
        return json.loads(data, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise ValueError("the JSON nests too deep") from None


def write_json(
    path: Path,
    values: object,
    indent: int = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    max_bytes: int | None = None,
) -> None:
    """`values` as indented JSON (one value per line, a newline at the end: a person reads these
    and `git diff`s them), written atomically (`atomic_path`): a killed run leaves the previous
    file or none. The one writer of the JSON files of cg3d (results, about, audit, run files,
    classes.json, the shard index, a hub config.json); `indent`, `sort_keys` and `ensure_ascii`
    as `json.dumps`'s, each file keeping the layout it has always had. `max_bytes`: the most
    its reader takes; a larger file is FileTooLarge and nothing is written (a writer that
    wrote it would leave a file its own reader refuses).

    UTF-8 with non-ASCII kept as it is: a class or model named "стул" or "椅子" reads so, not
    "\\u0441\\u0442..."; a name that is not UTF-8 (its bad bytes as lone surrogates) is written
    as the JSON escape `\\udcXX`, as before."""
    text = json_text(values, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    if max_bytes is not None:  # its reader's bound: checked before anything is written
        size = len(text.encode("utf-8", errors="backslashreplace")) + 1
        if size > max_bytes:
            name = Path(path).name
            raise FileTooLarge(f"{name} would be {size:,} bytes, over the {max_bytes:,} read")
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8", errors="backslashreplace")


def json_text(values: object, **options: Any) -> str:
    """`values` as strict JSON: the one encoder of every JSON file and member cg3d writes (plans,
    cameras, shard meta and index, class lists, descriptors, results). Python's `json.dumps`
    writes NaN and infinity as `NaN` / `Infinity`, which jq, JavaScript and most parsers
    refuse; here they are null (`finite_or_none`). `options` as `json.dumps`'s (indent,
    sort_keys, ensure_ascii, separators, default)."""
    return json.dumps(finite_or_none(values), allow_nan=False, **options)


def finite_or_none(values: Any) -> Any:
    """`values` with every NaN and infinity (nested in dicts, lists and tuples too) as None:
    strict JSON has neither (Python wrote `NaN`, which jq, JavaScript and most JSON parsers
    refuse), so a diverged run's number reads `null` in a JSON file, an empty cell in a CSV
    (`cg3d.eval.results.write_rows`): no number, in every file a reader parses."""
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    if isinstance(values, dict):
        return {key: finite_or_none(value) for key, value in values.items()}
    if isinstance(values, list | tuple):
        return [finite_or_none(value) for value in values]
    return values


# The file in a folder of `make_live_folder` its maker holds an flock on while it lives. The lock
# goes with the process however it ends (a SIGKILL too); a pid can be reused, and a folder's
# maker can be out of sight (a run on another machine or container sharing /tmp).
LIVE_LOCK = "lock"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@functools.cache
def this_machine() -> str:
    """What a live folder's lock names as its maker's machine: the kernel's boot id (the
    containers of one machine share it and its locks) and the host name."""
    try:
        with open(BOOT_ID) as file:
            boot = file.read(64).strip()
    except OSError:
        boot = "-"
    return f"{boot} {socket.gethostname()}"


def made_here(identity: str) -> bool:
    """Whether a lock naming `identity` (`this_machine` of its maker) was taken on this machine,
    whose free flock then says its maker is gone: the same kernel, or the same host before a
    reboot. Another machine's flock may be invisible here (NFS mounted nolock, Lustre's
    localflock: a shared TMPDIR on a cluster), and a lock naming nothing (older folders) is
    nobody's to judge."""
    boot, _, host = identity.strip().partition(" ")
    here_boot, _, here_host = this_machine().partition(" ")
    return bool(boot) and (boot == here_boot or host == here_host)


def make_live_folder(prefix: str, root: str | Path) -> tuple[Path, int]:
    """A new folder `root/<prefix>XXXXXXXX` (mkdtemp: 0700, made new, so no path is trusted)
    holding a `lock` this process holds an flock on until it closes the descriptor returned
    (`remove_live_folder`) or ends. The folders of `prefix` whose maker is gone go first
    (`remove_dead_folders`): a SIGKILLed run cannot remove its own, and they piled up in /tmp."""
    remove_dead_folders(root, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    making = folder / f".{LIVE_LOCK}.making"
    lock = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(lock, f"{this_machine()}\n".encode())
    except OSError as error:  # a full disk (the temp folder's): one line naming the file
        os.close(lock)
        shutil.rmtree(folder, ignore_errors=True)
        raise _naming(error, making) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError as error:
        # No locks on this disk (a TMPDIR on Lustre or NFS without them): the folder lives
        # unlocked, which is safe: no sweep can take its lock either, so none removes it (a
        # killed run's then stays). Any other error: one line naming the file.
        if error.errno not in NO_LOCKS:
            os.close(lock)
            shutil.rmtree(folder, ignore_errors=True)
            raise _naming(error, making) from None
    os.rename(making, folder / LIVE_LOCK)  # named once held: no sweep finds it free
    return folder, lock


def remove_live_folder(folder: Path, lock: int) -> None:
    """Remove a folder of `make_live_folder`, then let go of its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    os.close(lock)


def remove_dead_folders(root: str | Path, prefix: str) -> None:
    """Remove the folders `root/<prefix>…` of this user whose lock no process holds, taken on
    this machine (`made_here`). A symlink, another user's folder, a folder with no lock (one
    being made, or not made by `make_live_folder`) and one another machine made are never
    removed."""
    try:
        with os.scandir(root) as listing:
            folders = [entry.path for entry in listing if entry.name.startswith(prefix)]
    except OSError:
        return
    for folder in folders:
        _remove_if_dead(folder)


def _remove_if_dead(folder: str) -> None:
    try:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return
        lock = os.open(os.path.join(folder, LIVE_LOCK), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        maker = os.read(lock, 512).decode(errors="replace")
    except OSError:  # held: a live run's, on this machine or another
        pass
    else:
        if made_here(maker):  # else a free lock may be another machine's live run's
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(lock)


class LiveTempDir:
    """`tempfile.TemporaryDirectory` (`name`, `cleanup`, `with`) for the commands that own no
    folder (`cg3d show`, `classify`, `demo`): removed at the end, or when the object goes or
    the process exits; one a SIGKILL left is removed by the next of its prefix
    (`make_live_folder`), never another live run's or another user's."""

    def __init__(self, prefix: str, dir: str | Path | None = None) -> None:
        folder, lock = make_live_folder(prefix, tempfile.gettempdir() if dir is None else dir)
        self.name = str(folder)
        self._remove = weakref.finalize(self, remove_live_folder, folder, lock)

    def cleanup(self) -> None:
        self._remove()

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
