import hashlib
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from cg3d.errors import UsageError
from cg3d.models.checkpoint import (
    FORMAT,
    export_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
    write_payload,
)
from cg3d.models.clip import RandomClipWarning
from cg3d.models.commands import register
from cg3d.models.model import build_model
from tests.models.helpers import save_random_clip, tiny_model_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def test_a_saved_model_reloads_to_the_same_features(tmp_path):
    model = build_model(tiny_model_config())
    with torch.no_grad():
        model.visual.prompts.add_(1.0)  # as if trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    with pytest.warns(RandomClipWarning, match="model.pt"):
        loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.config["clip_pretrained_loaded"] is False
    points, images = torch.randn(2, 256, 3), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_points(points), model.encode_points(points))
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(["a cube"]), model.encode_text(["a cube"]))
        features = loaded.encode_points(points)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2))
    # random-init CLIP: the whole CLIP state travels in the file
    assert any(name.startswith("clip.transformer.") for name in read_checkpoint(path)["model"])


def test_missing_corrupt_and_foreign_files_are_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(UsageError, match="absent.pt"):
        load_model(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, build_model(tiny_model_config()))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(UsageError, match="truncated.pt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(UsageError, match=f"foreign.pt.*{FORMAT}"):
        load_model(foreign)


def forge(source, path, change) -> Path:
    """A copy of checkpoint `source` at `path` with `change(payload)` applied."""
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("random") / "random.pt"
    save_checkpoint(path, build_model(tiny_model_config()))
    return path


def one_line_error(path) -> str:
    with pytest.raises(UsageError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert path.name in message
    return message


def test_a_forged_state_dict_is_one_line_naming_the_first_mismatches(random_checkpoint, tmp_path):
    garbage = {f"garbage.{index}": torch.zeros(64, 64) for index in range(500)}
    forged = forge(random_checkpoint, tmp_path / "forged.pt", lambda p: p.update(model=garbage))
    message = one_line_error(forged)
    assert "do not fit" in message and "garbage.0" in message and "(+497 more)" in message

    def reshape(payload):
        payload["model"]["point_encoder.proj.weight"] = torch.zeros(3, 3)

    message = one_line_error(forge(random_checkpoint, tmp_path / "reshaped.pt", reshape))
    assert "point_encoder.proj.weight (3, 3) for (64, 64)" in message

    def drop_encoder(payload):
        payload["model"] = {k: v for k, v in payload["model"].items() if "point_encoder" not in k}

    message = one_line_error(forge(random_checkpoint, tmp_path / "no_encoder.pt", drop_encoder))
    assert "missing: point_encoder." in message
    not_tensors = forge(random_checkpoint, tmp_path / "list.pt", lambda p: p.update(model=[1]))
    assert "not a state dict" in one_line_error(not_tensors)
    slim = forge(random_checkpoint, tmp_path / "slim.pt", lambda p: p.update(full_clip=False))
    assert "a random CLIP, but not its weights" in one_line_error(slim)


def test_a_config_describing_a_model_of_many_gigabytes_is_refused_before_it_is_built(
    random_checkpoint, tmp_path
):
    """A file of a tiny model whose config says depth 64, width 4096 (within the params'
    bounds): about 50 GB of weights. Before, the model was built for real before its weights
    were compared, and the kernel killed the process (24 GB resident at the kill). Run under a
    2 GiB data limit: the one-line refusal must come before anything that size is allocated."""

    def enlarge(payload):
        payload["config"]["encoder_params"] = {"depth": 64, "width": 4096, "heads": 8}

    forged = forge(random_checkpoint, tmp_path / "enlarged.pt", enlarge)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))\n"
        "from cg3d.errors import UsageError\n"
        "from cg3d.models.checkpoint import load_model\n"
        "try:\n"
        "    load_model(sys.argv[1])\n"
        "except UsageError as error:\n"
        "    print(error)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(forged)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    [line] = run.stdout.splitlines()
    assert "enlarged.pt: weights do not fit the model it describes" in line
    assert "point_encoder.cls_token (1, 1, 32) for (1, 1, 4096)" in line


@pytest.mark.parametrize(
    "layout", ["state_dict", "model", "module", "base_model"]
)  # ULIP's and OpenShape's, Uni3D's, the CG3D release's
def test_another_projects_checkpoint_points_at_convert(random_checkpoint, tmp_path, layout):
    weights = {
        f"module.{name}": tensor
        for name, tensor in torch.load(random_checkpoint, weights_only=True)["model"].items()
    }
    path = tmp_path / "theirs.pt"
    torch.save({layout: weights, "epoch": 3}, path)
    message = one_line_error(path)
    assert "not a CG3D checkpoint" in message and "turned into one by `cg3d convert`" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"prompts": "five"}, "prompts must be an integer"),
        ({"n_points": True}, "n_points must be an integer"),
        ({"classes": "cube"}, "classes must be a list"),
        ({"encoder": "pointnet3"}, "unknown encoder 'pointnet3'"),
        ({"encoder_params": {"depthh": 1}}, "no parameter 'depthh'"),
        ({"colour": "red", "size": 3}, "unknown keys: colour, size"),
        ({"clip_weights": "openai"}, "malformed clip_weights"),
        ({"clip_weights": {"kind": "file", "name": "x.pt"}}, "malformed clip_weights"),
    ],
)
def test_a_config_with_wrong_types_or_unknown_keys_is_one_line(
    random_checkpoint, tmp_path, change, named
):
    forged = forge(
        random_checkpoint, tmp_path / "bad_config.pt", lambda p: p["config"].update(change)
    )
    assert named in one_line_error(forged)


def test_a_checkpoint_of_the_unnamed_encoder_params_era_still_loads(random_checkpoint, tmp_path):
    def old_style(payload):
        # before named sizes and CLIP identities: architecture name + every param, no clip_weights
        payload["config"]["encoder"] = "pointtransformer"
        payload["config"]["encoder_params"] = dict(
            groups=8, group_size=8, width=32, depth=1, heads=2, patch_hidden=32
        )
        del payload["config"]["clip_weights"]
        del payload["config"]["point_channels"]  # before colour: xyz

    old = forge(random_checkpoint, tmp_path / "old.pt", old_style)
    assert load_model(old).config["point_channels"] == 3
    points = torch.randn(2, 256, 3)
    with torch.no_grad():
        assert torch.equal(
            load_model(old).encode_points(points),
            load_model(random_checkpoint).encode_points(points),
        )


@pytest.fixture
def trained_with_a_weights_file(tmp_path):
    """A checkpoint trained with CLIP weights from a local file (so it stores only the path)."""
    weights = save_random_clip(tmp_path / "clip-micro.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights)))
    with torch.no_grad():
        model.visual.prompts.add_(1.0)  # as if trained
    checkpoint = tmp_path / "run" / "last.pt"
    save_checkpoint(checkpoint, model, training={"epoch": 1})
    return checkpoint, weights, model


def same_features(loaded, model) -> bool:
    points, images = torch.randn(2, 256, 3), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return (
            torch.equal(loaded.encode_points(points), model.encode_points(points))
            and torch.equal(loaded.encode_image(images), model.encode_image(images))
            and torch.equal(loaded.encode_text(["a cube"]), model.encode_text(["a cube"]))
        )


def test_a_checkpoint_records_its_clip_file_by_name_and_hash(trained_with_a_weights_file):
    checkpoint, weights, model = trained_with_a_weights_file
    payload = read_checkpoint(checkpoint)
    recorded = payload["config"]["clip_weights"]
    assert recorded["name"] == "clip-micro.pt"
    assert recorded["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # only the trained part is stored: CLIP comes from the file
    assert not payload["full_clip"]
    assert not any(name.startswith("clip.transformer.") for name in payload["model"])
    assert same_features(load_model(checkpoint), model)


def test_moved_clip_weights_are_named_in_the_error_and_found_with_an_override(
    trained_with_a_weights_file, tmp_path
):
    checkpoint, weights, model = trained_with_a_weights_file
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    moved = weights.rename(tmp_path / "elsewhere.pt")
    with pytest.raises(UsageError) as caught:
        load_model(checkpoint)
    message = str(caught.value)
    assert "clip-micro.pt" in message and sha256 in message and "--clip-pretrained PATH" in message
    assert "neither a file nor a tag" not in message
    assert same_features(load_model(checkpoint, clip_pretrained=str(moved)), model)


def test_a_copied_project_s_checkpoint_reads_its_own_clip_file_not_the_old_place_s(tmp_path):
    """`cp -a`/`rsync -a`/tar of a project elsewhere: its checkpoint recorded the weights
    file's absolute path only, so the copy read the old project's file (or, that gone or
    changed, could not load without --clip-pretrained)."""
    import shutil

    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "models").mkdir()
    weights = save_random_clip(project / "models" / "clip-micro.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights)))
    save_checkpoint(project / "runs" / "last.pt", model, training={"epoch": 1})
    copy = tmp_path / "scratch" / "project"
    shutil.copytree(project, copy)
    save_random_clip(weights, seed=2)  # the old place now holds other weights
    loaded = load_model(copy / "runs" / "last.pt")
    assert same_features(loaded, model)
    assert Path(loaded.config["clip_weights"]["path"]) == copy / "models" / "clip-micro.pt"
    # a run resumed there saves the new place, still spelled from the checkpoint's folder
    save_checkpoint(copy / "runs" / "again.pt", loaded)
    recorded = read_checkpoint(copy / "runs" / "again.pt")["config"]["clip_weights"]
    assert recorded["relative"] == "../models/clip-micro.pt"
    assert Path(recorded["path"]) == copy / "models" / "clip-micro.pt"
    shutil.rmtree(project)  # the old place gone
    assert same_features(load_model(copy / "runs" / "again.pt"), model)


def test_other_clip_weights_are_refused_naming_both(trained_with_a_weights_file, tmp_path):
    checkpoint, weights, _ = trained_with_a_weights_file
    other = save_random_clip(tmp_path / "other.pt", seed=2)
    with pytest.raises(UsageError, match=r"--clip-pretrained: .*clip-micro\.pt.*not other\.pt"):
        load_model(checkpoint, clip_pretrained=str(other))
    with pytest.raises(UsageError, match=r"clip-micro\.pt.*not random weights"):
        load_model(checkpoint, clip_pretrained="none")
    # the recorded path now holding other weights is refused as well
    weights.write_bytes(other.read_bytes())
    with pytest.raises(UsageError, match=r"needs the CLIP weights clip-micro\.pt.*now holds"):
        load_model(checkpoint)


def test_other_clip_weights_are_refused_before_the_checkpoints_weights_are_read(
    trained_with_a_weights_file, tmp_path, monkeypatch
):
    """Before: the mismatch was found after the whole checkpoint was read and its weights
    checked (a multi-GB read for a real one). Its config alone decides it: a checkpoint file's
    pickle (tensors memory-mapped, not read), a hub folder's config.json."""
    from cg3d.models import checkpoint as checkpoint_module
    from cg3d.models.hub import export_hub

    checkpoint, weights, _ = trained_with_a_weights_file
    other = save_random_clip(tmp_path / "other.pt", seed=2)
    hub = tmp_path / "hub"
    export_hub(checkpoint, hub)
    legacy = tmp_path / "legacy.pt"  # torch's old format: no config without the whole read
    torch.save(torch.load(checkpoint), legacy, _use_new_zipfile_serialization=False)
    mismatch = r"--clip-pretrained: .*clip-micro\.pt.*not other\.pt"
    with pytest.raises(UsageError, match=mismatch):
        load_model(legacy, clip_pretrained=str(other))

    def never(path):
        raise AssertionError(f"{path}: the weights were read")

    monkeypatch.setattr(checkpoint_module, "read_checkpoint", never)
    for source in (checkpoint, hub):
        with pytest.raises(UsageError, match=mismatch):
            load_model(source, clip_pretrained=str(other))
    with pytest.raises(AssertionError, match="the weights were read"):  # past the check
        load_model(checkpoint, clip_pretrained=str(weights))


def test_a_checkpoint_from_before_weights_identities_names_its_path_and_takes_an_override(
    trained_with_a_weights_file, tmp_path
):
    checkpoint, weights, model = trained_with_a_weights_file
    old = forge(checkpoint, tmp_path / "old.pt", lambda p: p["config"].pop("clip_weights"))
    moved = weights.rename(tmp_path / "moved.pt")
    with pytest.raises(UsageError) as caught:
        load_model(old)
    message = str(caught.value)
    assert str(weights) in message and "--clip-pretrained PATH" in message
    assert not message.startswith("--")  # the user gave no option
    # nothing recorded to check the override against: it is taken as given
    assert same_features(load_model(old, clip_pretrained=str(moved)), model)


def test_a_random_clip_checkpoint_refuses_real_weights(random_checkpoint, tmp_path):
    weights = save_random_clip(tmp_path / "clip.pt", seed=1)
    with pytest.raises(UsageError, match="random weights, not clip.pt"):
        load_model(random_checkpoint, clip_pretrained=str(weights))


def test_a_self_contained_export_loads_with_no_clip_weights_anywhere(
    trained_with_a_weights_file, tmp_path
):
    checkpoint, weights, model = trained_with_a_weights_file
    moved = weights.rename(tmp_path / "moved.pt")
    exported = tmp_path / "export" / "model.pt"
    export_checkpoint(checkpoint, exported, embed_clip=True, clip_pretrained=str(moved))
    moved.unlink()
    payload = torch.load(exported, weights_only=True)
    assert "training" not in payload and payload["full_clip"]
    assert payload["config"]["clip_weights"]["name"] == "clip-micro.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RandomClipWarning: these are the real weights
        loaded = load_model(exported)
    assert same_features(loaded, model)
    slim = tmp_path / "slim.pt"
    export_checkpoint(exported, slim, embed_clip=False)
    assert not read_checkpoint(slim)["full_clip"]
    with pytest.raises(UsageError, match="clip-micro.pt"):
        load_model(slim)  # its CLIP weights are nowhere


def test_the_export_command_writes_a_self_contained_checkpoint(
    trained_with_a_weights_file, tmp_path
):
    checkpoint, weights, model = trained_with_a_weights_file
    app = typer.Typer()
    register(app)
    app.command("unused")(lambda: None)  # two commands: typer then expects the command's name
    out = tmp_path / "model.pt"
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--embed-clip"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "self-contained" in result.output
    weights.unlink()
    assert same_features(load_model(out), model)


class RunsAShellCommand:
    """Pickled as a call of os.system: what a tampered checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_a_command_is_refused_naming_what_it_calls(tmp_path):
    """Before: "not a readable checkpoint (UnpicklingError)", and convert's hint for
    --allow-pickle missed it (torch words a blocked module's global otherwise than an
    unlisted one)."""
    from cg3d.models.peers import read_payload

    marker = tmp_path / "RAN"
    tampered = tmp_path / "tampered.pt"
    torch.save({"format": FORMAT, "model": {}, "x": RunsAShellCommand(marker)}, tampered)
    plain = tmp_path / "plain.pkl"  # not a torch file at all: a bare pickle of the same
    plain.write_bytes(__import__("pickle").dumps(RunsAShellCommand(marker)))
    with pytest.raises(UsageError) as error:
        load_model(tampered)
    assert str(error.value) == (
        f"{tampered}: not a readable checkpoint (Trying to load unsupported GLOBAL posix.system "
        "whose module posix is blocked; a CG3D checkpoint holds no pickled objects, and they "
        "are never loaded)"
    )
    with pytest.raises(UsageError) as error:
        read_payload(tampered)
    assert "GLOBAL posix.system" in str(error.value)
    assert str(error.value).endswith("; --allow-pickle for a trusted file)")
    with pytest.raises(UsageError) as error:
        load_model(plain)
    assert "Unsupported operand" in str(error.value) and "never loaded" in str(error.value)
    assert not marker.exists()


def _a_last_pt(folder: Path) -> Path:
    """A checkpoint as training's last.pt holds it: the model and an optimiser's state."""
    model = build_model(tiny_model_config())
    optimiser = torch.optim.AdamW(model.parameters())
    path = folder / "last.pt"
    save_checkpoint(path, model, training={"optimizer": optimiser.state_dict(), "step": 3})
    return path


def _load_line(path: Path) -> str:
    with pytest.raises(UsageError) as error:
        load_model(path)
    return str(error.value)


def test_a_checkpoint_cut_short_says_truncated_not_torchs_words(tmp_path):
    """Before: "not a readable checkpoint (RuntimeError: PytorchStreamReader failed reading zip
    archive: failed finding central directory)" for each of these."""
    whole = _a_last_pt(tmp_path).read_bytes()
    for share in (50, 99):
        cut = tmp_path / f"cut{share}.pt"
        cut.write_bytes(whole[: len(whole) * share // 100])
        assert _load_line(cut) == (
            f"{cut}: not a readable checkpoint (truncated: the file ({cut.stat().st_size} "
            "bytes) ends before its zip's central directory, the index a whole zip ends with)"
        )
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[:-200])  # the zip's end record and part of its directory gone
    assert _load_line(cut) == (
        f"{cut}: not a readable checkpoint (truncated: the file ({len(whole) - 200} bytes) "
        "ends inside its zip's central directory; the zip's end record is gone)"
    )
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert _load_line(empty) == f"{empty}: not a readable checkpoint (empty: 0 bytes)"


def test_a_zip_whose_headers_hold_sizes_names_the_member_it_is_cut_in(tmp_path):
    """Python's zipfile (not torch's writer) puts each member's size in its local header: the
    member the file stops in is named. Each member: a 30-byte header, its 3-byte name, 5000
    bytes of data, so `a/y` ends at 2 * (30 + 3 + 5000) = 10066."""
    import zipfile

    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("a/x", b"1" * 5000)
        archive.writestr("a/y", b"2" * 5000)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:7000])
    assert _load_line(cut) == (
        f"{cut}: not a readable checkpoint (truncated: its member 'a/y' runs to byte 10066, "
        "the file holds 7000)"
    )


def test_a_checkpoint_of_zeros_or_with_a_zero_filled_tail_says_so(tmp_path):
    """Before: "Cannot use ``weights_only=True`` with files saved in the legacy .tar format"
    for zeros, "failed finding central directory" for a zero-filled tail."""
    whole = _a_last_pt(tmp_path).read_bytes()
    size = len(whole)
    filled = tmp_path / "filled.pt"
    filled.write_bytes(whole[: size // 2] + bytes(size - size // 2))
    assert _load_line(filled) == (
        f"{filled}: not a readable checkpoint (truncated and zero-filled: its last 4096 bytes "
        f"(of {size}) are all zero, as a download cut short into a preallocated file leaves)"
    )
    filled.write_bytes(whole[: size * 99 // 100] + bytes(size - size * 99 // 100))
    assert "truncated and zero-filled" in _load_line(filled)
    # 3 GB, sparse: said from its first 4096 bytes, never read whole
    sparse = tmp_path / "sparse.pt"
    with open(sparse, "wb") as handle:
        handle.truncate(3 * 2**30)
    assert _load_line(sparse) == (
        f"{sparse}: not a readable checkpoint (its first 4096 bytes (of {3 * 2**30}) are "
        "all zero: nothing was written there, as in a preallocated or sparse file never filled)"
    )
    few = tmp_path / "few.pt"
    few.write_bytes(bytes(100))
    assert _load_line(few) == f"{few}: not a readable checkpoint (all its 100 bytes are zero)"


def saved_in_a_project(tmp_path: Path) -> tuple[Path, Path, Any]:
    """(checkpoint, its CLIP weights file, the model): both in one project (`.git`)."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "models").mkdir()
    weights = save_random_clip(project / "models" / "clip-micro.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights)))
    save_checkpoint(project / "runs" / "last.pt", model)
    return project / "runs" / "last.pt", weights, model


def with_relative(checkpoint: Path, relative: Any, out: Path) -> Path:
    """A copy of `checkpoint` whose `clip_weights.relative` is `relative`."""
    payload = read_checkpoint(checkpoint)
    weights = {**payload["config"]["clip_weights"], "relative": relative}
    write_payload(out, {**payload, "config": {**payload["config"], "clip_weights": weights}})
    return out


def test_a_copy_s_clip_file_replaced_falls_back_to_the_recorded_place_that_holds_them(tmp_path):
    """The file beside a checkpoint (`relative`) holding other weights was taken, and the
    checkpoint refused, while the recorded absolute path held the right ones."""
    import shutil

    checkpoint, weights, model = saved_in_a_project(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint.parents[1], copy)
    save_random_clip(copy / "models" / "clip-micro.pt", seed=2)  # the copy's own, replaced
    loaded = load_model(copy / "runs" / "last.pt")
    assert same_features(loaded, model)
    assert Path(loaded.config["clip_weights"]["path"]) == weights
    shutil.rmtree(checkpoint.parents[1])  # neither place holds them now: both said
    with pytest.raises(UsageError) as refused:
        load_model(copy / "runs" / "last.pt")
    message = str(refused.value)
    assert f"no longer at {weights}" in message
    assert str(copy / "models" / "clip-micro.pt") in message


@pytest.mark.parametrize(
    "relative", ["a/" * 3000 + "x", "x" * 300, "a\0b", 5, ["../models/clip-micro.pt"]]
)
def test_a_hostile_relative_weights_path_is_passed_over(tmp_path, relative):
    """Too long a name (a traceback: OSError 'File name too long'), a NUL byte, not a string:
    the recorded absolute path is read."""
    checkpoint, weights, model = saved_in_a_project(tmp_path)
    hostile = with_relative(checkpoint, relative, checkpoint.parent / "hostile.pt")
    assert same_features(load_model(hostile), model)


def test_a_relative_weights_path_out_of_the_project_is_not_read(tmp_path):
    """`stored_spelling` writes `relative` only within one repository: a checkpoint's
    "../../outside.pt" (or "../../../etc/x") was hashed, and named in the refusal."""
    checkpoint, weights, _ = saved_in_a_project(tmp_path)
    save_random_clip(tmp_path / "outside.pt", seed=2)
    hostile = with_relative(checkpoint, "../../outside.pt", checkpoint.parent / "hostile.pt")
    weights.unlink()
    with pytest.raises(UsageError, match="no longer at") as refused:
        load_model(hostile)
    assert "outside.pt" not in str(refused.value)


def test_a_symlinked_checkpoint_of_a_moved_project_reads_the_weights_beside_its_target(tmp_path):
    """`relative` is spelled from the checkpoint's real folder: read from the symlink's folder
    (`best.pt -> runs/last.pt`), it named nothing, and a moved project's load asked for
    --clip-pretrained."""
    checkpoint, _, model = saved_in_a_project(tmp_path)
    project = checkpoint.parents[1]
    (project / "best.pt").symlink_to("runs/last.pt")
    moved = project.rename(tmp_path / "moved")
    assert same_features(load_model(moved / "best.pt"), model)


def test_a_hub_export_records_no_weights_file_beside_it(tmp_path):
    """`relative` is spelled from the checkpoint's folder: the hub folder's config.json kept the
    source checkpoint's spelling, which names nothing from the hub folder."""
    import json

    from cg3d.models.hub import export_hub

    checkpoint, weights, model = saved_in_a_project(tmp_path)
    export_hub(checkpoint, tmp_path / "project" / "exports" / "hub")
    config = json.loads((tmp_path / "project" / "exports" / "hub" / "config.json").read_text())
    assert "relative" not in config["model"]["clip_weights"]
    assert "relative" not in config["teacher"]["weights"]
    assert config["model"]["clip_weights"]["path"] == str(weights)
    assert same_features(load_model(tmp_path / "project" / "exports" / "hub"), model)
