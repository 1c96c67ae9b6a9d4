"""Our ustar writer (`TarWriter`): the bytes Python's `tarfile` wrote for our members before it
replaced it (shards stay the same files), read back by `tarfile`, webdataset and GNU tar."""

import hashlib
import importlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from webdataset.tariterators import tar_file_iterator

from cg3d.formats.tar import (
    USTAR_MAX_SIZE,
    header_number,
    open_tar_writer,
    tar_members,
    ustar_header,
)

# Sizes around the 512-byte blocks and the 10240-byte records; names up to ustar's 100 bytes.
MEMBERS = [
    ("a.points.npy", b"\x93NUMPY" + bytes(1000)),
    ("a.view_00.png", b""),
    ("a.cls", b"7"),
    ("b.view_00.png", b"p" * 511),
    ("b.cameras.json", b"c" * 512),
    ("b.captions.json", b"t" * 513),
    ("k" * 86 + ".captions.json", b"m" * 10240),
]


BENCH = Path(__file__).resolve().parents[2] / "bench"


def tarfile_bytes(path: Path, members: list[tuple[str, bytes]], monkeypatch) -> bytes:
    """The tar the pack stage wrote with `tarfile` until now (ustar, fixed metadata): the
    bench's "before" writer, so the bench compares what this test holds equal."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("bench_tar_writer").write_with_tarfile(path, members)
    return path.read_bytes()


def ours(path: Path, members: list[tuple[str, bytes]]) -> bytes:
    with open_tar_writer(path) as tar:
        for name, data in members:
            tar.add(name, data)
    return path.read_bytes()


@pytest.mark.parametrize("count", [0, 1, 3, len(MEMBERS)])
def test_the_bytes_are_those_tarfile_wrote(tmp_path, count, monkeypatch):
    members = MEMBERS[:count]
    reference = tarfile_bytes(tmp_path / "ref.tar", members, monkeypatch)
    assert ours(tmp_path / "ours.tar", members) == reference


# The shard of MEMBERS as Python 3.11's tarfile wrote it: ours must stay these bytes on any
# Python, whatever its tarfile writes next (the test above compares with this Python's).
MEMBERS_SHA256 = "7e43e7e2f8851719c5d64afe3acf5af8b027bcc4cb4ccd9fc9e51f00372194ea"


def test_the_bytes_stay_fixed_whatever_pythons_tarfile_writes(tmp_path):
    data = ours(tmp_path / "s.tar", MEMBERS)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (20480, MEMBERS_SHA256)
    header = ustar_header("a.cls", 1)
    fields = b"0000644\0" + b"0000000\0" * 2 + b"00000000001\0" + b"00000000000\0"
    fields += b"006657\0 " + b"0"  # mode, uid, gid, size, mtime, checksum, a regular file
    assert header[:100] == b"a.cls".ljust(100, b"\0") and header[100:257] == fields + bytes(100)
    assert header[257:265] == b"ustar\x0000" and header[265:] == bytes(512 - 265)


def test_a_member_of_the_largest_size_ustar_holds_has_its_header(tmp_path):
    """8 GiB less one byte is 11 octal sevens; a byte more is refused naming the member
    (written as nothing: only the header is built)."""
    header = ustar_header("a.points.npy", USTAR_MAX_SIZE)
    assert header[124:136] == b"77777777777\0" and header_number(header[124:136]) == 8 * 2**30 - 1
    assert tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape").size == 8 * 2**30 - 1
    with pytest.raises(ValueError, match="'a.points.npy' of 8589934592 bytes"):
        ustar_header("a.points.npy", USTAR_MAX_SIZE + 1)
    assert len(ustar_header("a.cls", 0)) == 512


def test_tarfile_reads_back_names_sizes_and_the_fixed_metadata(tmp_path):
    ours(tmp_path / "s.tar", MEMBERS)
    with tarfile.open(tmp_path / "s.tar") as tar:
        infos = tar.getmembers()
        assert [(i.name, i.size) for i in infos] == [(n, len(d)) for n, d in MEMBERS]
        for info in infos:
            assert info.isreg() and info.mode == 0o644 and info.mtime == 0
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        assert [tar.extractfile(i).read() for i in infos] == [d for _, d in MEMBERS]


def test_webdataset_and_our_reader_read_every_member(tmp_path):
    ours(tmp_path / "s.tar", MEMBERS)
    with open(tmp_path / "s.tar", "rb") as stream:
        assert [(m["fname"], m["data"]) for m in tar_file_iterator(stream)] == MEMBERS
    with open(tmp_path / "s.tar", "rb") as stream:
        assert list(tar_members(stream)) == MEMBERS


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
def test_gnu_tar_lists_the_members_with_their_sizes_owner_and_date(tmp_path):
    ours(tmp_path / "s.tar", MEMBERS)
    listing = subprocess.run(
        ["tar", "-tvf", str(tmp_path / "s.tar")],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "LC_ALL": "C"},
    )
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert [(r[0], r[1], int(r[2]), r[3], r[5]) for r in rows] == [
        ("-rw-r--r--", "0/0", len(d), "1970-01-01", n) for n, d in MEMBERS
    ]
    assert listing.stderr == ""


@pytest.mark.parametrize("tool", ["tarfile-data-filter", "tar", "bsdtar"])
def test_each_extractor_unpacks_every_member_without_a_word(tmp_path, tool):
    """What a researcher unpacks a shard with: Python's tarfile under the 'data' filter (3.14's
    default), GNU tar with every warning on (an "implausibly old time stamp" is one), bsdtar
    (libarchive; `apt-get install libarchive-tools`, absent from CI's image: skipped there)."""
    if tool != "tarfile-data-filter" and shutil.which(tool) is None:
        pytest.skip(f"no {tool} command")
    ours(tmp_path / "s.tar", MEMBERS)
    out = tmp_path / "out"
    out.mkdir()
    if tool == "tarfile-data-filter":
        with tarfile.open(tmp_path / "s.tar") as tar:
            tar.extractall(out, filter="data")
    else:
        warn = ["--warning=all"] if tool == "tar" else []
        done = subprocess.run(
            [tool, *warn, "-xf", str(tmp_path / "s.tar"), "-C", str(out)],
            capture_output=True,
            text=True,
            env={"LC_ALL": "C"},
        )
        assert (done.returncode, done.stderr) == (0, "")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == dict(MEMBERS)


def test_a_name_longer_than_ustar_holds_is_refused_naming_it(tmp_path):
    with (
        pytest.raises(ValueError, match="longer than 100 bytes"),
        open_tar_writer(tmp_path / "s.tar") as tar,
    ):
        tar.add("k" * 87 + ".captions.json", b"x")


def test_a_block_that_fails_leaves_no_end_of_archive(tmp_path):
    """A reader must see the tar as cut short, not as a whole tar of fewer members."""
    with pytest.raises(RuntimeError), open_tar_writer(tmp_path / "s.tar") as tar:
        tar.add(*MEMBERS[0])
        raise RuntimeError("stopped")
    data = (tmp_path / "s.tar").read_bytes()
    assert len(data) == 512 + 1024  # the header, 1006 bytes padded to blocks, nothing more


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_disk_at_the_end_blocks_still_closes_the_file():
    """The end's write (up to a record, more than the file's buffer) fails first on a full disk:
    the file stayed open, so the unlinked temp shard kept its blocks."""
    tar = open_tar_writer(Path("/dev/full"))
    tar.add("a.cls", b"7")
    with pytest.raises(OSError, match="No space left"):
        tar.close()
    assert tar.file.closed
