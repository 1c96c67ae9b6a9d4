"""The eval commands as a user runs them: results on stdout, mistakes as one line and exit 2."""

import json
import subprocess
import sys

import pytest

from tests.eval.files import write_modelnet


def cg3d(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cg3d", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["eval", "zeroshot", "--dataset", "modelnet41", "--root", "."],
            "--dataset must be one of",
        ),
        (
            ["eval", "zeroshot", "--dataset", "modelnet40", "--root", "absent_dir"],
            "no such file or folder",
        ),
        (
            ["eval", "zeroshot", "--dataset", "modelnet40", "--protocol", "paper"],
            "--protocol: unknown protocol 'paper'; choose one of",
        ),
        (
            [
                "eval",
                "zeroshot",
                "--dataset",
                "scanobjectnn",
                "--root",
                ".",
                "--variant",
                "hardest",
            ],
            "--variant must be one of",
        ),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = cg3d(*args, "--checkpoint", tmp_path / "c.pt", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def zeroshot_on_modelnet40(tmp_path, checkpoint, *extra):
    """`cg3d eval zeroshot` on a small ModelNet40 folder written under tmp_path."""
    write_modelnet(tmp_path / "mn", 40)
    return cg3d(
        "eval", "zeroshot", "--dataset", "modelnet40", "--root", tmp_path / "mn",
        "--checkpoint", checkpoint, "--out", tmp_path / "o", *extra,
    )  # fmt: skip


def test_missing_checkpoint_is_one_line(tmp_path):
    result = zeroshot_on_modelnet40(tmp_path, tmp_path / "c.pt")
    assert result.returncode == 2 and "no checkpoint at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_zeroshot_command(tmp_path, tiny_checkpoint):
    result = zeroshot_on_modelnet40(tmp_path, tiny_checkpoint, "--protocol", "cg3d-public")
    assert result.returncode == 0, result.stderr
    about = json.loads((tmp_path / "o" / "about.json").read_text())
    assert "top-1" in result.stdout and about["protocol"] == "cg3d-public"
    assert about["templates"] == "'This is a {}' (1)"
