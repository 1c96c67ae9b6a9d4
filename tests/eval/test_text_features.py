"""`cg3d eval text-features` writes class features once; `cg3d eval zeroshot --text-features`
scores with them and builds no text tower (issue 23 §2)."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval.protocols import get_protocol
from cg3d.eval.zeroshot import zeroshot
from cg3d.formats import textfeatures as textfeatures_module
from cg3d.models import checkpoint as checkpoint_module
from cg3d.models.checkpoint import load_model
from cg3d.params import ZeroShotConfig
from tests.eval.files import write_modelnet

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def predictions(out) -> list[dict]:
    with (out / "predictions.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_zeroshot_from_a_text_feature_file_matches_the_tower_and_builds_none(
    tiny_checkpoint, tmp_path, monkeypatch
):
    root = tmp_path / "mn"
    write_modelnet(root, 40, per_class=2)
    features = tmp_path / "features" / "modelnet40.npy"
    args = ["eval", "text-features", "--checkpoint", str(tiny_checkpoint), "--out", str(features)]
    result = CliRunner().invoke(app, [*args, "--dataset", "modelnet40", "--root", str(root)])
    assert result.exit_code == 0, result.output
    about = json.loads(features.with_suffix(".json").read_text())
    assert len(about["classes"]) == 40 and about["protocol"] == "cg3d"
    assert about["templates"] == len(get_protocol("cg3d").templates)
    # one class by hand: each prompt's feature normalised, averaged, renormalised
    model = load_model(tiny_checkpoint)
    captions = [t.format("night stand") for t in get_protocol("cg3d").templates]
    with torch.no_grad():
        by_hand = F.normalize(F.normalize(model.encode_text(captions), dim=-1).mean(0), dim=0)
    row = about["classes"].index("night stand")
    assert np.allclose(np.load(features)[row], by_hand.numpy(), atol=1e-5)

    config = ZeroShotConfig(dataset="modelnet40", root=str(root), text_cache="", batch_size=4)
    zeroshot(tiny_checkpoint, tmp_path / "tower", config)

    def refuse(*args, **kwargs):
        raise AssertionError("a CLIP tower was constructed")

    monkeypatch.setattr(checkpoint_module, "load_clip", refuse)
    parsed = []  # the file is read once: checked, fitted to the model and recorded from that
    real_read_npy = textfeatures_module.read_npy
    monkeypatch.setattr(
        textfeatures_module, "read_npy", lambda source: parsed.append(1) or real_read_npy(source)
    )
    metrics = zeroshot(tiny_checkpoint, tmp_path / "file", config, text_features=features)
    assert len(parsed) == 1
    assert metrics["templates"] == f"file {features}"
    assert predictions(tmp_path / "file") == predictions(tmp_path / "tower")
    # about.json says which file and what made it; the tower's run names no file
    recorded = json.loads((tmp_path / "file" / "about.json").read_text())["text_features"]
    made_by = {k: v for k, v in about.items() if k not in ("format", "classes")}
    digest = hashlib.sha256(features.read_bytes()).hexdigest()
    assert recorded == {"file": "modelnet40.npy", "sha256": digest, **made_by}
    assert made_by["checkpoint"] == str(tiny_checkpoint) and made_by["protocol"] == "cg3d"
    assert "text_features" not in json.loads((tmp_path / "tower" / "about.json").read_text())


def test_a_feature_file_missing_a_benchmark_class_is_one_line(tiny_checkpoint, tmp_path):
    root = tmp_path / "mn"
    write_modelnet(root, 40)
    features = tmp_path / "two.npy"
    args = ["eval", "text-features", "--checkpoint", str(tiny_checkpoint), "--out", str(features)]
    result = CliRunner().invoke(app, [*args, "--classes", "airplane,bathtub"])
    assert result.exit_code == 0, result.output
    zeroshot_args = ["eval", "zeroshot", "--checkpoint", str(tiny_checkpoint)]
    zeroshot_args += ["--out", str(tmp_path / "o"), "--dataset", "modelnet40", "--root", str(root)]
    result = CliRunner().invoke(app, [*zeroshot_args, "--text-features", str(features)])
    assert result.exit_code != 0
    assert "two.json lacks the classes bed, bench, bookshelf (+35 more)" in str(result.exception)


@pytest.mark.parametrize("name", ["features.txt", "folder"])
def test_text_features_names_its_out_option_before_loading_the_model(tmp_path, name):
    # it said "--text-features: … must end in .npy" (zeroshot's option), after encoding all
    (tmp_path / "folder").mkdir()
    out = tmp_path / name
    words = ["eval", "text-features", "--checkpoint", str(tmp_path / "absent.pt")]
    result = CliRunner().invoke(app, [*words, "--out", str(out), "--classes", "a,b"])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == f"--out: {out} must end in .npy"  # not: no checkpoint


@pytest.mark.parametrize(
    "classes,line",
    [
        ("chair,a\x1b[2Jb", "--classes: the class 'a\\x1b[2Jb' holds the unprintable character"),
        ("chair,a\nb", "--classes: the class 'a\\nb' holds the unprintable character"),
        # one prompt for two rows: zero-shot split the shapes of both by the tie rule
        (
            "night_stand,chair,night stand",
            "--classes: the classes 'night_stand' and 'night stand' are one",
        ),
        ("Chair,chair", "--classes: the classes 'Chair' and 'chair' are one text to CLIP"),
    ],
)
def test_a_class_name_a_shard_set_could_never_hold_is_refused_before_the_model_loads(
    tmp_path, classes, line
):
    """Before: written as a class zero-shot could never match with a shard set's (a source
    refuses such a class name) and, in the sidecar's list, a class with a newline in it."""
    words = ["eval", "text-features", "--checkpoint", str(tmp_path / "absent.pt")]
    result = CliRunner().invoke(
        app, [*words, "--out", str(tmp_path / "f.npy"), "--classes", classes]
    )
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception).startswith(line)  # not: no checkpoint at absent.pt
    assert not (tmp_path / "f.npy").exists()


def test_classes_whose_prompts_agree_in_their_first_77_tokens_are_not_written(
    tmp_path, tiny_checkpoint
):
    """Before: written as two identical rows, which zero-shot then split by the tie rule."""
    long = "box " * 80
    out = tmp_path / "f.npy"
    words = ["eval", "text-features", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*words, "--classes", f"lamp,{long}a,{long}b"])
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)
    assert message.startswith("--classes: 'box box") and "have one text feature" in message
    assert not out.exists()


def test_a_second_text_features_run_into_the_same_file_is_refused_at_once(tmp_path):
    """Before: two `cg3d eval text-features --out same.npy` at once were not locked against
    each other, so an interleaving could leave one run's rows beside the other's sidecar. The
    second now meets the file locked, and is refused before its checkpoint is read."""
    from cg3d.files import file_lock

    out = tmp_path / "features" / "same.npy"
    out.parent.mkdir()
    out.write_bytes(b"the first run's rows")
    out.with_suffix(".json").write_bytes(b"the first run's sidecar")
    words = ["eval", "text-features", "--checkpoint", str(tmp_path / "absent.pt")]
    with file_lock(out):  # the first run, writing
        result = CliRunner().invoke(app, [*words, "--out", str(out), "--classes", "a,b"])
    assert isinstance(result.exception, UsageError), result.output
    (line,) = str(result.exception).splitlines()
    holder = f"held by 'pid {os.getpid()} of "  # this process holds it (file_lock above)
    assert line.startswith(
        f"--out: another run is writing {out} (it holds .same.npy.cg3d.lock: {holder}"
    )
    assert line.endswith("); wait for it to finish or choose another file")
    assert out.read_bytes() == b"the first run's rows"
    assert out.with_suffix(".json").read_bytes() == b"the first run's sidecar"
    # once it is done, a run goes ahead (here to the missing checkpoint) and leaves no lock
    result = CliRunner().invoke(app, [*words, "--out", str(out), "--classes", "a,b"])
    assert "absent.pt" in str(result.exception)
    assert sorted(p.name for p in out.parent.iterdir()) == ["same.json", "same.npy"]


def test_two_text_features_runs_into_two_files_of_one_folder_both_go_ahead(tmp_path):
    """Before: the lock was the folder's, so a run writing other.npy was refused while one
    wrote same.npy beside it, though the two pairs share no file."""
    from cg3d.files import file_lock

    folder = tmp_path / "features"
    words = ["eval", "text-features", "--checkpoint", str(tmp_path / "absent.pt")]
    with file_lock(folder / "same.npy"):  # the first run, writing
        result = CliRunner().invoke(
            app, [*words, "--out", str(folder / "other.npy"), "--classes", "a,b"]
        )
        assert isinstance(result.exception, UsageError), result.output
        assert "absent.pt" in str(result.exception)  # past the lock, to the checkpoint
        assert "another run" not in str(result.exception)
    assert list(folder.iterdir()) == []  # both locks released, nothing written


def test_an_out_name_of_255_bytes_is_refused_before_the_work_for_its_sidecar(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """FILE.npy of 255 bytes is a name the system takes, but its sidecar FILE.json (256) is
    not. Before: the teacher was loaded and the classes encoded, then the write failed "File
    name too long"."""

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(checkpoint_module, "load_model", no_load)
    out = tmp_path / "f" / ("z" * 251 + ".npy")
    args = ["eval", "text-features", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--classes", "cube,sphere"])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == (
        f"--out: {'z' * 20 + '…' + 'z' * 36 + '.npy'!r} (255 characters) leaves no room for the name of the file written "
        "beside it (its .json: 256 bytes, more than the 255 a file name may hold); give a "
        "shorter name"
    )
    assert not (tmp_path / "f").exists()
