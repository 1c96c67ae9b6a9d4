"""Tar headers are data: both size encodings are parsed, a size is checked against the bytes the
file has, and member data is read in bounded blocks (issue 25 §2). The headers here are made
by Python's `tarfile` (GNU format writes base-256 sizes), an independent writer."""

import io
import tarfile

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.formats.tar import (
    READ_BLOCK,
    FormatError,
    header_checksum,
    header_number,
    tar_members,
)
from tests.pipeline.fakes import fake_pipeline


def header(name: str, size: int, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=fmt)


class Unseekable(io.RawIOBase):
    """A stream that cannot tell its length (HTTP, pipe:), recording the largest read asked."""

    def __init__(self, data: bytes) -> None:
        self.inner, self.largest = io.BytesIO(data), 0

    def read(self, size: int = -1) -> bytes:
        self.largest = max(self.largest, size)
        return self.inner.read(size)

    def seekable(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 5, 0o7777, 8 << 30, 10 << 30, (1 << 40) + 3])
def test_header_numbers_read_as_tarfile_writes_them(size):
    block = header("a.npy", size)
    assert header_number(block[124:136]) == size
    assert tarfile.TarInfo.frombuf(block, "utf-8", "strict").size == size  # the reference


@pytest.mark.parametrize("filler", [0, 1, 127, 128, 255])
def test_header_checksums_agree_with_tarfiles(filler):
    """Real headers, and headers of one byte value (all 255: the largest sum each half can
    have), against `tarfile.calc_chksums`, the standard library's reference."""
    blocks = [header("a.npy", 5), header("b.png", 1 << 33)[:512], bytes([filler]) * 512]
    for block in blocks:
        assert header_checksum(block) == tarfile.calc_chksums(block)[0]


def test_a_header_with_one_byte_changed_fails_its_checksum():
    data = header("key.points.npy", 3) + b"abc".ljust(512, b"\0") + bytes(1024)
    assert list(tar_members(io.BytesIO(data))) == [("key.points.npy", b"abc")]
    damaged = bytearray(data)
    damaged[3] ^= 0x01  # the name, inside the first half of the header
    with pytest.raises(FormatError, match="checksum"):
        list(tar_members(io.BytesIO(bytes(damaged))))
    damaged = bytearray(data)
    damaged[400] = 1  # the ustar prefix, in the second half
    with pytest.raises(FormatError, match="checksum"):
        list(tar_members(io.BytesIO(bytes(damaged))))


class Trickle(Unseekable):
    """A pipe that gives a header block whole but at most 300 bytes of a larger read."""

    def read(self, size: int = -1) -> bytes:
        return super().read(size if 0 <= size <= 512 else 300)


def test_members_of_a_stream_that_gives_short_reads_are_read_whole():
    payload = bytes(range(256)) * 5  # 1,280 bytes: five reads
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("key.points.npy")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert list(tar_members(Trickle(buffer.getvalue()))) == [("key.points.npy", payload)]


def test_a_negative_or_non_octal_number_is_a_format_error():
    with pytest.raises(FormatError):
        header_number(b"\xff" * 12)
    with pytest.raises(FormatError):
        header_number(b"0000009x\0\0\0\0")


# ustar states sizes below 8 GiB in octal; GNU's base-256 states larger ones
@pytest.mark.parametrize(
    "size,fmt",
    [
        (10 << 30, tarfile.GNU_FORMAT),
        (8 << 30, tarfile.GNU_FORMAT),
        (READ_BLOCK * 3, tarfile.GNU_FORMAT),
        ((8 << 30) - 1, tarfile.USTAR_FORMAT),
        (READ_BLOCK * 3, tarfile.USTAR_FORMAT),
    ],
)
def test_a_size_beyond_the_file_is_refused_before_reading(size, fmt):
    data = header("a.npy", size, fmt) + bytes(1024)
    with pytest.raises(FormatError, match="truncated"):
        list(tar_members(io.BytesIO(data)))
    stream = Unseekable(data)  # no length known: read in blocks, the short read tells
    with pytest.raises(FormatError, match="truncated|at most"):
        list(tar_members(stream))
    assert stream.largest <= READ_BLOCK


def test_a_member_larger_than_a_block_is_read_whole():
    payload = bytes(range(256)) * (READ_BLOCK // 256 * 2 + 7)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    stream = Unseekable(buffer.getvalue())
    assert list(tar_members(stream)) == [("a.bin", payload)]
    assert stream.largest <= READ_BLOCK


def test_verify_reports_a_forged_member_size_as_one_line(tmp_path):
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    forged = header("synthetic-chair-000.cls", 10 << 30)  # a base-256 size, checksum redone
    data[:512] = forged
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "shard-000000.tar: unreadable tar (FormatError: truncated tar" in result.output
    assert "Traceback" not in result.output
