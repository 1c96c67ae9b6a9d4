"""metrics.json holds numbers only; about.json, written with it, says what was measured
(cg3d/formats/metrics.py); the readers of eval results find both."""

import json

import pytest

from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from cg3d.formats.metrics import read_metrics, write_metrics
from cg3d.models.hub import read_measured
from tests.eval.files import write_modelnet


def test_the_two_files_are_written_together(tmp_path):
    numbers = {"top1": 50.0, "n_shapes": 6, "point_to_text": {"R@1": 12.5}}
    about = {"checkpoint": "runs/train/last.pt", "protocol": "cg3d", "clip_pretrained": False}
    write_metrics(tmp_path / "out", numbers, about)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == numbers
    assert json.loads((tmp_path / "out" / "about.json").read_text()) == about
    assert read_metrics(tmp_path / "out") == (numbers, about)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_an_earlier_runs_numbers_never_stay_under_a_new_description(tmp_path, monkeypatch):
    """A rerun into the folder that fails (full disk, kill) after about.json: before, the
    earlier run's metrics.json stayed beside the new about.json, as if they were one run's."""
    import cg3d.formats.metrics as metrics

    out = tmp_path / "out"
    write_metrics(out, {"top1": 90.0}, {"checkpoint": "a.pt"})
    real = metrics.write_json

    def full_disk_at_the_numbers(path, values):
        if path.name == "metrics.json":
            raise OSError(28, "No space left on device", str(path))
        real(path, values)

    monkeypatch.setattr(metrics, "write_json", full_disk_at_the_numbers)
    with pytest.raises(OSError):
        write_metrics(out, {"top1": 10.0}, {"checkpoint": "b.pt"})
    assert read_metrics(out) == ({}, {"checkpoint": "b.pt"})  # no numbers, not a.pt's


@pytest.mark.parametrize(
    "numbers, key",
    [
        ({"top1": 50.0, "protocol": "cg3d"}, "protocol"),
        ({"clip_pretrained": False}, "clip_pretrained"),  # a bool describes, it counts nothing
        ({"point_to_text": {"R@1": 1.0, "relevance": "class"}}, "point_to_text.relevance"),
        ({"top3": None}, "top3"),
    ],
)
def test_a_description_among_the_numbers_is_refused_before_anything_is_written(
    tmp_path, numbers, key
):
    with pytest.raises(ValueError, match=rf"{key} is .*about\.json"):
        write_metrics(tmp_path / "out", numbers, {})
    assert not (tmp_path / "out").exists()


def test_a_results_folder_of_before_the_split_reads_as_numbers_and_no_about(tmp_path):
    (tmp_path / "metrics.json").write_text('{"top1": 50.0, "dataset": "modelnet40"}\n')
    assert read_metrics(tmp_path) == ({"top1": 50.0, "dataset": "modelnet40"}, {})
    (tmp_path / "metrics.json").write_text("cut sh")
    with pytest.raises(ValueError, match=r"metrics\.json: not valid JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").unlink()
    assert read_metrics(tmp_path) == ({}, {})


def test_the_model_card_reads_a_zeroshot_result_through_its_about_json(tmp_path, tiny_checkpoint):
    write_modelnet(tmp_path / "mn", 40, per_class=2)
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), text_cache="")
    with pytest.warns(UserWarning):  # the random micro CLIP says so
        metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    found, audits = read_measured([tmp_path / "out" / "metrics.json"])
    assert found == {"modelnet40": pytest.approx(metrics["top1"])} and audits == {}


def test_a_run_whose_number_is_nan_still_publishes_it_as_null(tmp_path):
    """run.json is strict JSON (a NaN is null); publish hands its numbers to write_metrics,
    which refused the null as "not a number: it belongs in about.json"."""
    from cg3d.train.loop import TRACKED_METRICS, publish, resume_folder, write_run_info

    key = "test_point_text_acc"  # an empty test split's accuracy, say
    assert key in TRACKED_METRICS
    resume_folder(tmp_path).mkdir(parents=True)
    write_run_info(resume_folder(tmp_path), {"epoch": 3, key: float("nan")})
    publish(tmp_path, {"encoder": "tiny"})
    numbers, about = read_metrics(tmp_path)
    assert numbers == {"epoch": 3, key: None} and about == {"encoder": "tiny"}


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("metrics.json", {"dataset": "modelnet40", "top1": None}),
        ("bench.json", {"dataset": "modelnet40", "metrics": {"acc1": None}}),
    ],
)
def test_the_model_card_names_a_measured_top1_that_is_null(tmp_path, name, result):
    """A NaN score is written as null (strict JSON); the export said the file was "neither a
    benchmark result nor metrics.json", as if the wrong file had been given."""
    from cg3d.errors import UsageError

    (tmp_path / name).write_text(json.dumps(result))
    with pytest.raises(UsageError, match=r"^--measured: .*: its top-1 is null"):
        read_measured([tmp_path / name])
