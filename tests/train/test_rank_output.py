"""What the ranks of one run print: rank 0 speaks for the run; a line one rank alone says
names it."""

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed

import cg3d.train.loop as loop
import cg3d.train.resume as resume
from cg3d import cli
from cg3d.models.clip import RandomClipWarning
from cg3d.params import TrainConfig
from cg3d.stopping import Interrupt
from tests.train.helpers import tiny_train_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rank,shown", [(0, True), (1, False)])
def test_the_loader_workers_line_is_said_by_rank_0_only(monkeypatch, capsys, rank, shown):
    """Every rank printed 'train.workers is 8, but ...': an 8-GPU node's log showed it 8 times."""
    monkeypatch.setattr(loop, "world", lambda: (rank, 2))
    config = dataclasses.replace(TrainConfig(), workers=8)
    kept = loop.say_loader_workers(config, 2, resumed=False)
    assert kept.workers == 2  # every rank still runs with the workers it may use
    said = " ".join(capsys.readouterr().err.split())
    assert ("train.workers is 8, but this process may use" in said) is shown


@pytest.mark.parametrize("rank,shown", [(0, True), (1, False)])
@pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
def test_the_resume_from_scratch_line_is_said_by_rank_0_only(
    monkeypatch, capsys, tmp_path, rank, shown
):
    """Every rank printed '--resume: no checkpoint at ... yet' (and 'not resuming: ...'): each
    reads the one out folder and takes the same branch, and a node's log showed it per GPU."""
    monkeypatch.setattr(resume, "world", lambda: (rank, 2))
    model, training = resume.prepare_model(
        tiny_train_config(), ["cube", "sphere"], tmp_path, "always"
    )
    assert training is None and model is not None  # every rank still builds its fresh model
    said = " ".join(capsys.readouterr().err.split())
    assert ("--resume: no checkpoint at" in said) is shown


def _as_rank(monkeypatch, rank: int, size: int) -> None:
    """This process as rank `rank` of a joined group of `size`, as torch.distributed says."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: size)


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "rank,size,expected",
    [
        (0, 1, ["warning: CLIP is random", "warning: shard a.tar skipped"]),
        (0, 2, ["warning: CLIP is random", "rank 0: warning: shard a.tar skipped"]),
        (1, 2, ["rank 1: warning: shard a.tar skipped"]),
    ],
)
def test_a_config_warning_is_said_by_rank_0_and_a_process_s_own_names_its_rank(
    monkeypatch, capsys, rank, size, expected
):
    """The random-CLIP warning (and a checkpoint's provenance) said the same on every rank,
    once per GPU; a warning one rank alone meets did not say whose it was."""
    _as_rank(monkeypatch, rank, size)
    show = cli._OneLineWarnings()
    show(RandomClipWarning("CLIP is random"), RandomClipWarning, cli.__file__, 1)
    show(UserWarning("shard a.tar skipped"), UserWarning, cli.__file__, 1)
    assert _lines(capsys) == expected


def test_a_log_warning_names_its_rank(monkeypatch):
    _as_rank(monkeypatch, 3, 8)
    record = logging.LogRecord(
        "cg3d.formats.shards", logging.WARNING, "", 1, "skipping %s", ("a",), None
    )
    assert cli._PrintableFormatter("warning: %(message)s").format(record) == (
        "rank 3: warning: skipping a"
    )


def test_a_rank_s_error_names_it_and_ends_torchrun_s_summary(monkeypatch, capsys, tmp_path):
    """A rank's one-line cause was lost above the other ranks' lines and torchrun's closing
    summary, which said only 'exitcode: 2 ... To enable traceback see: https://...'. The line
    names the rank, and torchrun's summary (its own reader of the error file) quotes it."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    _as_rank(monkeypatch, 1, 2)
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    with pytest.raises(SystemExit) as stop:
        cli._refused("shard a.tar is refused: \x1b[31m")
    assert stop.value.code == 2
    line = "rank 1: error: shard a.tar is refused: \\x1b[31m"
    assert _lines(capsys) == [line]
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=str(error_file))
    summary = ChildFailedError("cg3d", {1: failure}).format_msg()
    assert f"traceback : {line}\n" in summary


def test_a_lone_process_s_error_is_as_before(monkeypatch, capsys):
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    with pytest.raises(SystemExit):
        cli._refused("no such file")
    assert _lines(capsys) == ["error: no such file"]


GLOO_PEER_ENDED = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed "
    "by peer [127.0.0.1]:1960. This is typically caused by a remote worker crashing."
)


@pytest.mark.parametrize("size", [2, 1])
def test_a_rank_whose_peer_ended_says_so_in_one_line(monkeypatch, capsys, tmp_path, size):
    """When rank 1 ended (its own error line said why), rank 0's next collective raised gloo's
    'Connection closed by peer' as a traceback of 40 lines after the cause. It is one line now,
    and not what torchrun's summary quotes (the peer's cause is the run's). A lone process
    never has a peer: such an error is a bug there, with its traceback."""
    _as_rank(monkeypatch, 0, size)
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))

    def collective() -> None:
        raise RuntimeError(GLOO_PEER_ENDED)

    monkeypatch.setattr(cli, "app", collective)
    if size == 1:
        with pytest.raises(RuntimeError):
            cli._run_app(Interrupt())
        return
    with pytest.raises(SystemExit) as stop:
        cli._run_app(Interrupt())
    assert stop.value.code == 2
    assert _lines(capsys) == [f"rank 0: error: {cli.PEER_ENDED_LINE}"]
    assert not error_file.exists()


FAILS_THEN_SIGTERMED = """
import atexit, os, signal, sys
from cg3d import cli
from cg3d.errors import UsageError

def command():
    # torchrun's SIGTERM, which reaches a failed rank while its exit handlers run
    atexit.register(lambda: [os.kill(os.getpid(), signal.SIGTERM)] + [0] * 1000)
    raise UsageError("the cause")

cli.app = command
sys.argv = ["cg3d"]
cli.main(whole_process=True)
"""


def run_python(source: str) -> subprocess.CompletedProcess:
    """`python -c source` with this checkout's cg3d, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", source],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_stop_signal_during_a_failed_command_s_exit_adds_no_traceback(tmp_path):
    """torchrun SIGTERMs the other ranks when one fails; a rank that had failed too and was
    running its exit handlers printed "Exception ignored in atexit callback" and a
    KeyboardInterrupt traceback after its one error line."""
    done = run_python(FAILS_THEN_SIGTERMED)
    assert (done.returncode, done.stderr) == (2, "error: the cause\n")


def test_an_error_line_imports_no_model_code():
    """The rank an error line names is torch.distributed's: asking cg3d.train.distributed
    imported the model's code (open_clip) for every error line of any command with torch
    loaded, `cg3d pack`'s too, where an absent open_clip would have made it a traceback."""
    script = (
        "import sys, torch\nfrom cg3d import cli\ntry:\n    cli._refused('x')\n"
        "except SystemExit:\n    print('cg3d.models.model' in sys.modules)\n"
    )
    done = run_python(script)
    assert (done.stdout, done.stderr) == ("False\n", "error: x\n")
