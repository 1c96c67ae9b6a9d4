"""Names at the file system's limits (NAME_MAX: 255 bytes a name). A user's output may be named
with all 255; the names we build from it (the temporary file of an atomic write, the lock of an
output file) must still fit. Before, `--out` of 250 bytes failed "File name too long" naming a
file the user could well create: the temporary `.<name>.<pid>.tmp` was the one refused."""

import os
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.files import (
    NAME_MAX,
    atomic_path,
    check_out_dir,
    derived_name,
    file_lock,
    file_lock_name,
    require_regular_file,
)

# 255 bytes each: ASCII, and 3-byte UTF-8 (CJK) characters, which a character cut must not split
FULL_NAMES = ["a" * 252 + ".pt", "椅" * 83 + "xyz.pt"]


@pytest.mark.parametrize("name", FULL_NAMES, ids=["ascii", "utf8"])
def test_an_atomic_write_of_a_name_of_255_bytes_writes_it(tmp_path, name):
    assert len(os.fsencode(name)) == NAME_MAX
    seen = []
    with atomic_path(tmp_path / name) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert os.listdir(tmp_path) == [name]  # the temporary file renamed, none left
    assert seen[0].startswith(".") and seen[0].endswith(f".{os.getpid()}.tmp")  # .dvcignore's


@pytest.mark.parametrize("name", FULL_NAMES, ids=["ascii", "utf8"])
def test_the_lock_of_an_output_file_of_255_bytes_can_be_taken(tmp_path, name):
    with file_lock(tmp_path / name):
        held = [n for n in os.listdir(tmp_path) if n.endswith(".cg3d.lock")]
        assert held == [file_lock_name(tmp_path / name)]
        assert held[0].startswith(".")


def test_two_long_names_cut_alike_derive_two_names():
    first, second = "b" * 250 + "1.pt", "b" * 250 + "2.pt"
    one, two = derived_name(first, ".", ".123.tmp"), derived_name(second, ".", ".123.tmp")
    assert one != two
    assert len(os.fsencode(one)) <= NAME_MAX and len(os.fsencode(two)) <= NAME_MAX
    assert derived_name(first, ".", ".123.tmp") == one  # the same name finds the same lock
    assert derived_name("short.pt", ".", ".123.tmp") == ".short.pt.123.tmp"  # as before


def folder_of_length(base: Path, size: int) -> Path:
    """A (not yet made) folder under `base` whose absolute path is `size` bytes."""
    path = base.resolve()
    while (room := size - len(os.fsencode(path)) - 1) > 0:
        path = path / ("d" * min(200, room))
    assert len(os.fsencode(path)) == size
    return path


def test_an_out_folder_that_leaves_no_room_for_a_name_is_refused(tmp_path):
    """The rule `cg3d train` needs (tests/train/test_stage.py): the folder's path leaves room
    for one more name of 255 bytes."""
    roomy = folder_of_length(tmp_path / "a", 4095 - 1 - NAME_MAX)  # a name of 255 still fits
    assert check_out_dir(roomy) == roomy and roomy.is_dir()
    deep = folder_of_length(tmp_path / "b", 4096 - 1 - NAME_MAX)
    with pytest.raises(UsageError) as caught:
        check_out_dir(deep, "--out")
    assert str(caught.value).endswith(
        "(3840 characters) is a path of 3840 bytes, which leaves less than the 255 a name in "
        "it may need before the system's limit of 4095 bytes; choose a folder nearer the root"
    )
    assert not (tmp_path / "b").exists()


def test_a_path_cut_for_a_message_keeps_its_file_name(tmp_path):
    """`shown_name` kept a long path's first 120 characters: `/tmp/…/dddd…`, never the file
    name that tells the user which file it is."""
    path = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 4000) / "chair.obj"
    with pytest.raises(UsageError) as caught:
        require_regular_file(path, "missing", "--shape")
    message = str(caught.value)
    assert f"/chair.obj' ({len(str(path))} characters)" in message
    assert message.startswith(f"--shape: '{str(tmp_path)[:30]}")
    assert len(message) < 200
