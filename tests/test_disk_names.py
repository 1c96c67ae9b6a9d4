"""Names on the disks researchers have: an exFAT drive or a Windows share refuses `a:b.csv`, a
name ending in a dot, `CON.csv`, with "Invalid argument" (EINVAL). Before, the output of such a
name was refused at its write, after the work, with no rule named. This machine's disk takes
them all, so the disk is simulated: `os.open`, `os.mkdir` and `io.open` refuse, in one folder, the names
exFAT refuses, with the errno Linux's exfat driver gives."""

import errno
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.files import check_name_allowed, check_out_dir

EXFAT_REFUSES = re.compile(r'[\\:*?"<>|]|[. ]$')  # in a name; a dot or space at its end
RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\.|$)", re.IGNORECASE)  # a share's
REFUSED = (
    "cannot create '{}': Invalid argument: this disk refuses the name (exFAT and Windows "
    'shares take none holding \\ : * ? " < > | or ending in a dot or space, nor CON, PRN, AUX, '
    "NUL, COM1-9, LPT1-9); give another name"
)


@pytest.fixture
def exfat(tmp_path, monkeypatch) -> Path:
    """A folder `usb` (in the working folder) whose disk refuses the names exFAT refuses, and
    the names a Windows share refuses (CON, CON.npy, …)."""
    monkeypatch.chdir(tmp_path)
    disk = Path("usb")
    disk.mkdir()

    def refusing(call):
        def on_exfat(path, *args, **kwargs):
            if isinstance(path, int):  # a file descriptor (io.open of os.fdopen)
                return call(path, *args, **kwargs)
            name = os.path.abspath(os.fsdecode(path))
            inside = Path(name).is_relative_to(tmp_path / disk)
            base = os.path.basename(name)
            if inside and (EXFAT_REFUSES.search(base) or RESERVED.match(base)):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), name)
            return call(path, *args, **kwargs)

        return on_exfat

    monkeypatch.setattr(os, "open", refusing(os.open))
    monkeypatch.setattr(os, "mkdir", refusing(os.mkdir))
    monkeypatch.setattr(io, "open", refusing(io.open))  # Path.open's
    return disk


@pytest.mark.parametrize("name", ["a:b.csv", "results.", 'say "hi".csv', "what?.csv"])
def test_a_name_the_disk_refuses_is_one_line_naming_it_and_leaves_nothing(exfat, name):
    with pytest.raises(UsageError) as caught:
        check_name_allowed(exfat / name)
    assert str(caught.value) == "--out: " + REFUSED.format(exfat / name)
    assert os.listdir(exfat) == []


def test_a_name_the_disk_takes_is_tried_and_removed(exfat):
    check_name_allowed(exfat / "results.csv")
    assert os.listdir(exfat) == []
    (exfat / "kept.csv").write_text("earlier")  # there already: not touched
    check_name_allowed(exfat / "kept.csv")
    assert (exfat / "kept.csv").read_text() == "earlier"


def test_the_trial_of_a_name_never_touches_the_name_itself(exfat, monkeypatch):
    """The trial file was created at the user's very name and unlinked: a run that renamed its
    finished output onto it in that moment (two exports to one --out) lost its output."""
    out = exfat / "model.pt"
    finished = exfat / ".model.pt.tmp"
    opened = os.open

    def another_run_finishing(path, *args, **kwargs):
        descriptor = opened(path, *args, **kwargs)
        if os.fsdecode(path).endswith("model.pt"):  # the trial made: the other run renames
            finished.write_bytes(b"finished")
            os.replace(finished, out)
        return descriptor

    monkeypatch.setattr(os, "open", another_run_finishing)
    check_name_allowed(out)
    assert out.read_bytes() == b"finished"
    assert os.listdir(exfat) == ["model.pt"]  # and no trial folder left


def test_an_out_folder_the_disk_refuses_says_why(exfat):
    with pytest.raises(UsageError) as caught:
        check_out_dir(exfat / "run:1")
    assert str(caught.value).startswith(
        f"--out: cannot write into {exfat / 'run:1'}: Invalid argument: this disk refuses the name"
    )


def test_classify_to_a_name_the_disk_refuses_is_refused_before_the_model(exfat, monkeypatch):
    """Before: every shape classified, then the table's write failed 'Invalid argument'."""
    np.save("a.npy", np.random.default_rng(0).uniform(-1, 1, (300, 3)).astype(np.float32))
    out = exfat / "results:v1.csv"
    command = ["classify", "a.npy", "--checkpoint", "absent.pt", "--out", str(out)]
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == "--out: " + REFUSED.format(out)


def test_a_benchmark_model_name_its_disk_refuses_is_refused_before_any_model(exfat):
    """Before: the pair was scored, then `a:b__modelnet40.json` failed 'Invalid argument'."""
    out = exfat / "bench"
    command = ["benchmark", "--models", "a:b=x.pt", "--datasets", "modelnet40"]
    result = CliRunner().invoke(app, [*command, "--roots", "modelnet40=d", "--out", str(out)])
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)  # the folder as the command made it absolute
    assert message.startswith("--models: cannot create '/") and "\n" not in message
    assert message.endswith(REFUSED.format("usb/bench/a:b__modelnet40.json").split("'", 1)[1])
    assert not os.path.lexists(out)  # the folder the refused run made is taken back


def test_an_export_named_as_its_disk_refuses_is_refused_before_the_checkpoint(exfat):
    """Before: the export was made (CLIP's weights loaded), then its write failed."""
    result = CliRunner().invoke(
        app, ["export", "--checkpoint", "absent.pt", "--out", "usb/m:v1.pt"]
    )
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == "--out: " + REFUSED.format("usb/m:v1.pt")
    assert os.listdir(exfat) == []


def test_text_features_named_as_their_disk_refuses_are_refused_before_the_checkpoint(exfat):
    """Before: the lock named after the file failed 'Invalid argument' with a traceback; past
    it, the features were encoded, then their write failed."""
    command = "eval text-features --checkpoint absent.pt --classes a,b --out usb/f:v1.npy"
    result = CliRunner().invoke(app, command.split())
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)  # the folder as the lock resolved it
    assert message.startswith("--out: cannot create the lock of /") and "\n" not in message
    lock = "usb/f:v1.npy (.f:v1.npy.cg3d.lock): "
    assert message.endswith(lock + REFUSED.split(": ", 1)[1])
    assert os.listdir(exfat) == []


def test_text_features_named_as_a_share_refuses_are_refused_before_the_checkpoint(exfat):
    """Its lock `.CON.npy.cg3d.lock` is allowed; `CON.npy` itself was refused at the write."""
    command = "eval text-features --checkpoint absent.pt --classes a,b --out usb/CON.npy"
    result = CliRunner().invoke(app, command.split())
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == "--out: " + REFUSED.format("usb/CON.npy")
    assert os.listdir(exfat) == []
