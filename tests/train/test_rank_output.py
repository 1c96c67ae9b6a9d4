"""What the ranks of one run print: rank 0 speaks for the run; a line one rank alone says
names it."""

import dataclasses
import logging

import pytest

import cg3d.train.distributed as distributed
import cg3d.train.loop as loop
import cg3d.train.resume as resume
from cg3d import cli
from cg3d.models.clip import RandomClipWarning
from cg3d.params import TrainConfig
from tests.train.helpers import tiny_train_config


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
    monkeypatch.setattr(distributed, "world", lambda: (rank, size))
    show = cli._OneLineWarnings()
    show(RandomClipWarning("CLIP is random"), RandomClipWarning, cli.__file__, 1)
    show(UserWarning("shard a.tar skipped"), UserWarning, cli.__file__, 1)
    assert _lines(capsys) == expected


def test_a_log_warning_names_its_rank(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: (3, 8))
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
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    monkeypatch.setattr(distributed, "world", lambda: (1, 2))
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    with pytest.raises(SystemExit) as stop:
        cli._refused("shard a.tar is refused: \x1b[31m")
    assert stop.value.code == 2
    line = "rank 1: error: shard a.tar is refused: \\x1b[31m"
    assert _lines(capsys) == [line]
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=str(error_file))
    assert failure.message == line


def test_a_lone_process_s_error_is_as_before(monkeypatch, capsys):
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    with pytest.raises(SystemExit):
        cli._refused("no such file")
    assert _lines(capsys) == ["error: no such file"]
