"""Tar files: the deterministic writer, and the one reader every tar artifact goes through.

Members are named `<key>.<suffix>` (WebDataset's convention: the key is everything up to the
first dot; object ids never contain dots). A member named otherwise is a `FormatError`
naming it, never an unpacking traceback.
"""

import io
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cg3d.files import atomic_path, shown_name, stand_in

BLOCK = 512
# Member data is read in blocks of this: a header claiming 8 GiB costs no 8 GiB allocation
# before the short read shows the file is not that long.
READ_BLOCK = 1 << 20
# No member of our artifacts (a points.npy, a view PNG, captions) comes near this; a header
# claiming more is a damaged or forged tar, refused before anything is read.
MAX_MEMBER_BYTES = 1 << 30
END_BLOCK = bytes(BLOCK)  # two of them end a tar; the first is where a reader stops
# The most a whole tar holds after its first end block: the second, then zeros up to a whole
# record (20 blocks: tarfile's and GNU tar's). A copy cut short into a preallocated file reads
# as a whole tar that stops where its zeros start; this tells the two apart.
END_PADDING = 20 * BLOCK
# The records a whole tar's end may pad to: that default, or the power-of-two blocking factor
# `tar -b N` is given for tapes and disks (64 blocks: 32 KiB, up to 2048: 1 MiB). Padding to
# one of them is a whole tar's, however many zeros it is.
RECORD_SIZES = (END_PADDING, *(BLOCK << k for k in range(12)))
# Member kinds that name something other than bytes to read: no writer of ours makes them, and
# skipping one dropped the member it was named as without a word (a sample with one view less).
NOT_FILES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a folder",
    b"6": "a FIFO",
}


class FormatError(ValueError):
    """An artifact that does not follow its format; the message names the file or member."""


# The fields of every member header but its name, size and checksum: ustar, a regular file,
# mode 0644, owner 0/"" and mtime 0, so that a shard is the same bytes on every machine. They
# are the bytes `tarfile` (Python 3.11's, format USTAR) wrote for the same member, which shards
# were written with before; ours stay so whatever Python's tarfile does next.
_MODE_OWNER = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
_MTIME = b"%011o\0" % 0
_CHECKSUM_SPACES = b" " * 8  # summed as spaces, then overwritten
_AFTER_CHECKSUM = (
    b"0"  # regular file
    + bytes(100)  # link name
    + b"ustar\x0000"  # magic and version
    + bytes(32 + 32)  # user and group names
    + bytes(8 + 8 + 155)  # device numbers (none for a file), name prefix (unused)
)
# The largest size the 11 octal digits of a ustar header hold (8 GiB less one byte).
USTAR_MAX_SIZE = 8**11 - 1
RECORD = 20 * BLOCK  # a tar's length is padded to whole records of this (tarfile's, GNU tar's)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header of a member `name` of `size` bytes (fixed metadata as above).
    ValueError naming the member when its name is more than 100 bytes or its size beyond
    ustar's: no member of ours comes near either (`MAX_KEY_BYTES`)."""
    encoded = name.encode()
    if len(encoded) > USTAR_NAME_BYTES:
        raise ValueError(f"tar member name {name!r} is longer than {USTAR_NAME_BYTES} bytes")
    if not 0 <= size <= USTAR_MAX_SIZE:
        raise ValueError(f"tar member {name!r} of {size} bytes: a ustar header holds at most 8 GiB")
    head = encoded.ljust(USTAR_NAME_BYTES, b"\0") + _MODE_OWNER + b"%011o\0" % size + _MTIME
    header = (head + _CHECKSUM_SPACES + _AFTER_CHECKSUM).ljust(BLOCK, b"\0")
    checksum = b"%06o\0 " % header_checksum(header)
    return head + checksum + header[len(head) + len(checksum) :]


class TarWriter:
    """A ustar tar written member by member to a file (`add`), with the header of our own
    (`ustar_header`): `tarfile`'s TarInfo, header building and copy per member took most of
    the pack stage's time, 4 times this writer's (BENCHMARKS.md, "Writing shards"). The bytes
    are `tarfile`'s for the same members (tests/formats/test_tar_writer.py). Leaving the
    `with` block normally writes the end-of-archive blocks; an exception leaves the file
    without them (a reader calls it truncated; `atomic_path` removes it anyway)."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close() or __exit__
        self.offset = 0

    def add(self, name: str, data: bytes) -> None:
        """Append `data` as member `name`."""
        self.file.write(ustar_header(name, len(data)))
        self.file.write(data)
        padding = -len(data) % BLOCK
        self.file.write(bytes(padding))
        self.offset += BLOCK + len(data) + padding

    def close(self) -> None:
        """End the tar as tarfile does: two zero blocks, then zeros to a whole record. The file
        is closed whatever the write says: on a full disk the end's write fails, and the temp
        file `atomic_path` then unlinks would stay open, its blocks held, while the error is
        handled."""
        end = 2 * BLOCK
        try:
            self.file.write(bytes(end + -(self.offset + end) % RECORD))
        finally:
            self.file.close()

    def __enter__(self) -> "TarWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.file.close()


def open_tar_writer(path: Path) -> TarWriter:
    """A deterministic ustar tar open for `add` calls (a `with` block closes it)."""
    return TarWriter(path)


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    """A deterministic tar written atomically: members sorted by name, fixed metadata."""
    with atomic_path(path) as tmp, open_tar_writer(tmp) as tar:
        for name in sorted(members):
            tar.add(name, members[name])


# A key is an object id (`cg3d.pipeline.ids`, checked in the manifest): letters, digits, '_'
# and '-'; a member `../x.png` or `/abs/x.png` names no object (inspect listed them as ids).
OBJECT_KEY = re.compile(r"[A-Za-z0-9_-]+")
# The longest a key may be: the ustar header our writer makes holds names of 100 bytes, and the
# longest member of an object is `<key>.captions.json` (a shard's; `<key>.view_999.png` and
# `<key>.cameras.json` are shorter). `object_id` makes keys of 81 at most.
USTAR_NAME_BYTES = 100
MAX_KEY_BYTES = USTAR_NAME_BYTES - len(".captions.json")


def member_key(name: str) -> tuple[str, str]:
    """(key, suffix) of a member name `<key>.<suffix>`; FormatError naming it otherwise."""
    key, dot, suffix = name.partition(".")
    if not dot or not suffix or not OBJECT_KEY.fullmatch(key):
        raise FormatError(f"tar member {name!r} is not named <object id>.<suffix>")
    return key, suffix


def tar_members(
    stream: BinaryIO, read_data: bool | Callable[[str], bool] = True
) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a tar stream, read header by header.

    The same format webdataset and `tarfile` read (ustar, GNU long names, pax paths). It is
    hand-written because it is faster than both: BENCHMARKS.md, "Shard reading" (measured by
    `bench/bench_loader.py --read-only`), where `tarfile`'s per-member objects, which
    webdataset's `tar_file_expander` builds too, dominated the cost. With `read_data` False,
    member data is seeked over (a seekable stream) and b"" given instead: a cheap integrity
    walk. A damaged header, a short read or a missing end-of-archive block (a tar cut between
    members) raises FormatError. `read_data` may also be a
    function of the member name: only those members are read (a lookup of a few objects).
    A link, device, folder or FIFO member raises FormatError naming it (`NOT_FILES`).
    """
    long_name = ""
    length, stream_position = stream_length(stream), 0
    while True:
        header = stream.read(BLOCK)
        stream_position += BLOCK
        if stream_position == BLOCK and (said := stand_in(header)):
            raise FormatError(said)  # a Git LFS pointer was a "truncated tar header"
        if header == END_BLOCK:  # the end-of-archive block: the tar is whole
            left = None if length is None else length - stream_position
            if (
                left is not None
                and left > END_PADDING
                and not _record_padded(stream_position + BLOCK, length)
                and _zeros_to_end(stream, left)
            ):
                raise FormatError(
                    f"truncated and zero-filled: its members stop at byte "
                    f"{stream_position - BLOCK} and {left + BLOCK} zero bytes follow (a tar's "
                    f"end is at most {END_PADDING} bytes), as a copy cut short into a "
                    "preallocated file leaves"
                )
            return
        if not header:
            # Every tar writer ends with zero blocks; a file that stops at a member boundary
            # without them was cut there (on a 512-byte boundary), and members may be lost.
            raise FormatError("truncated tar: it ends without its end-of-archive blocks")
        if len(header) < BLOCK:
            raise FormatError("truncated tar header")
        if header_checksum(header) != header_number(header[148:156]):
            raise FormatError("tar header checksum mismatch")
        size = header_number(header[124:136])
        if length is not None and size > length - stream_position:
            raise FormatError(
                f"truncated tar: a member of {size} bytes, {length - stream_position} bytes "
                "left in the file"
            )
        kind = header[156:157]
        if kind in NOT_FILES:
            name = long_name or header[:100].split(b"\0", 1)[0].decode(errors="replace")
            raise FormatError(
                f"tar member {shown_name(name, 200)} is {NOT_FILES[kind]}, not a file"
            )
        regular = kind in (b"0", b"\0")
        padding = -size % BLOCK
        if regular:
            name = long_name or header[:100].split(b"\0", 1)[0].decode()
            prefix = header[345:500].split(b"\0", 1)[0].decode()
            name = f"{prefix}/{name}" if prefix and not name.startswith(prefix) else name
            wanted = read_data(name) if callable(read_data) else read_data
        stream_position += size + padding
        if regular and not wanted:
            data = b""
            _skip(stream, size + padding)
        else:
            if size > MAX_MEMBER_BYTES:
                raise FormatError(f"tar member of {size} bytes (at most {MAX_MEMBER_BYTES})")
            data = _read_exactly(stream, size)
            if len(stream.read(padding)) < padding:
                raise FormatError("truncated tar member")
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode()
        elif kind == b"x":
            fields = dict(
                line.split(b" ", 1)[1].split(b"=", 1) for line in data.splitlines() if b"=" in line
            )
            long_name = fields.get(b"path", b"").decode()
        elif regular:
            long_name = ""
            yield name, data


def header_checksum(header: bytes) -> int:
    """What a 512-byte header's checksum field must hold: the sum of its bytes, the field
    itself counted as 8 spaces. zlib sums the bytes in C, a tenth of Python's `sum` (a fifth
    of the walk's time per member): the sum of 256 bytes, at most 65,280, is below Adler-32's
    modulus 65,521, so the low half of a half's adler32 is 1 + its byte sum."""
    halves = (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2
    return halves - sum(header[148:156]) + 8 * ord(" ")


def header_number(field: bytes) -> int:
    """A tar header's number field: octal text (ustar), or base-256 (GNU and pax writers, for
    sizes of 8 GiB and more: the first byte's high bit set, then big-endian bytes). A field
    that is neither, or a negative base-256 number, is a FormatError."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] and field[0] & 0x80:  # 0xff: a negative number, which no size or sum is
        raise FormatError("tar header holds a negative number")
    text = field.replace(b"\0", b" ").strip() or b"0"
    try:
        return int(text, 8)
    except ValueError:
        raise FormatError(f"tar header number {field!r} is not octal") from None


def stream_length(stream: BinaryIO) -> int | None:
    """The bytes from the stream's position to its end, when it can tell: a seekable stream,
    or one that says (`length`, as `shards.HashingReader` does for a local file); else None."""
    length = getattr(stream, "length", None)
    if length is not None:
        return int(length)
    try:
        if stream.seekable():
            here = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(here)
            return end - here
    except (OSError, AttributeError, ValueError):
        pass
    return None


def _record_padded(end: int, length: int) -> bool:
    """Whether a tar whose second end block stops at byte `end` fills its `length` bytes the way
    a whole one does: zeros up to the first boundary, after `end`, of one of RECORD_SIZES."""
    return any(length % size == 0 and length - size < end for size in RECORD_SIZES)


def _zeros_to_end(stream: BinaryIO, left: int) -> bool:
    """Whether the `left` bytes after the stream's position are zeros: a seekable stream by its
    last 4096 (a zero-filled copy's zeros run to its end), any other read through in bounded
    blocks (a hashing reader hashes them as it would at the end anyway)."""
    if stream.seekable():
        here = stream.tell()
        stream.seek(max(here, here + left - 4096))
        tail = stream.read(4096)
        stream.seek(here)
        return not tail.strip(b"\0")
    return all(not part.strip(b"\0") for part in _blocks(stream, left))


def _blocks(stream: BinaryIO, size: int) -> Iterator[bytes]:
    """The next `size` bytes of the stream, in reads of at most READ_BLOCK (a forged size is
    never one allocation); FormatError if the stream ends first."""
    left = size
    while left:
        part = stream.read(min(left, READ_BLOCK))
        if not part:
            raise FormatError("truncated tar member")
        left -= len(part)
        yield part


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """`size` bytes: one read for a member up to READ_BLOCK that the stream gives whole (a
    file); otherwise, and for the rest of a short read, `_blocks` joined."""
    if size <= READ_BLOCK:
        data = stream.read(size)
        if len(data) == size:
            return data
        return b"".join([data, *_blocks(stream, size - len(data))])
    return b"".join(_blocks(stream, size))


def _skip(stream: BinaryIO, size: int) -> None:
    """Move past `size` bytes (member data and padding). Seeking past the end of a file cut
    inside them is found by the next header read (short or empty: a truncated tar); a stream
    that cannot seek is read through in bounded blocks."""
    if size and stream.seekable():
        stream.seek(size, io.SEEK_CUR)
    else:
        for _ in _blocks(stream, size):
            pass


def tar_samples(stream: BinaryIO, read_data: bool | Callable[[str], bool] = True) -> Iterator[dict]:
    """Samples of a tar stream: consecutive members with one key grouped as
    {"__key__": key, suffix: bytes, ...}. `read_data` as for `tar_members` (members not read
    come as b"").

    One bad member is one bad object, never a sample split in three: a member that is badly
    named, or that names another object, between two members of one sample is inside that
    sample, which gets an "__error__" naming it (one member is held back to tell). A badly
    named member between samples comes as its own {"__key__": name, "__error__": why}.
    Readers skip and count each such sample once and go on. A stream that fails (a damaged
    tar: FormatError; a remote read that timed out) raises after the samples read before the
    failure (the last one whole when the cut fell between samples; a reader's decode tells:
    meta.json, every sample's last member, is missing if not).
    """
    sample: dict = {}
    held: tuple[str, str, str, bytes] | None = None  # (name, key, suffix or error, data)
    members = tar_members(stream, read_data)

    def resolved() -> Iterator[dict]:
        """The held member was not inside `sample`: `sample` is finished, the held member
        starts the next one (or is its own bad object)."""
        nonlocal sample, held
        name, key, suffix, data = held
        held = None
        if sample:
            yield sample
        sample = {"__key__": key, suffix: data} if key else {}
        if not key:
            yield {"__key__": name, "__error__": suffix}

    while True:
        try:
            name, data = next(members)
        except StopIteration:
            break
        except Exception:  # damaged, cut short, timed out: what was read whole still counts
            if sample:  # whole when a member of the next one was read (`held`); else maybe not
                yield sample
            raise
        try:
            key, suffix = member_key(name)
        except FormatError as error:
            key, suffix = "", str(error)
        if held is not None:
            if key and key == sample.get("__key__"):  # the held member was inside `sample`
                why = held[2] if not held[1] else f"member {held[0]!r} of another object"
                sample.setdefault("__error__", f"{why} inside sample {key}")
                held = None
            else:
                yield from resolved()
        if not key or (sample and key != sample["__key__"]):
            held = (name, key, suffix, data)  # a bad name, or the next sample's first member
            continue
        sample.setdefault("__key__", key)
        if suffix in sample:  # which of the two is the object's? neither is trusted
            sample.setdefault("__error__", f"member {name!r} appears twice in sample {key}")
        sample[suffix] = data
    if held is not None:
        yield from resolved()
    if sample:
        yield sample
