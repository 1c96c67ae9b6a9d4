"""`cg3d export --format hub`: config.json, model.safetensors (no pickle), README.md; and every
consumer (cg3d.load, classify, index) takes the folder like a checkpoint file (issue 23 §4)."""

import html
import json
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cg3d
from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.models import hub as hub_module
from cg3d.models.checkpoint import (
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_VALUES,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from cg3d.models.model import build_model
from tests.models.helpers import export_hub_folder as export
from tests.models.helpers import (
    nested,
    save_fell_back_checkpoint,
    save_random_clip,
    tiny_model_config,
)

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


@pytest.fixture
def trained(tmp_path):
    """Our run's checkpoint: CLIP from a weights file, prompts trained, a run identity."""
    weights = save_random_clip(tmp_path / "clip-micro.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights), classes=["cube", "cone"]))
    with torch.no_grad():
        model.visual.prompts.add_(1.0)
    path = tmp_path / "run" / "last.pt"
    run = {"config": {"shards": "data/shards"}, "data": "f1e2d3c4" * 8}
    save_checkpoint(path, model, training={"epoch": 3, "run": run})
    return path


def safetensors_header(path) -> dict:
    """The file's JSON header, read by its documented layout (u64 length, then JSON)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length])


def test_a_hub_folder_holds_config_weights_and_card_and_loads_as_the_checkpoint(trained, tmp_path):
    out = tmp_path / "hub"
    measured = tmp_path / "lvis.json"  # a benchmark result, with the audit it was run with
    audit = {
        "folder": "runs/audit",
        "train": "data/shards",
        "test": "lvis",
        "leaked_test_shapes": 0,
    }
    result = {"dataset": "objaverse-lvis", "metrics": {"acc1": 0.5125}, "audit": audit}
    measured.write_text(json.dumps(result))
    printed = export(trained, out, "--measured", str(measured))
    assert "config.json, model.safetensors, README.md" in printed
    config = json.loads((out / "config.json").read_text())
    for key in ("encoder", "encoder_params", "n_points", "point_channels", "up_axis"):
        assert key in config
    assert config["normalisation"] and config["protocol"] == "cg3d"
    assert config["teacher"]["model"] == "CG3D-ViT-Micro-32"
    assert config["teacher"]["pretrained"] == "clip-micro.pt" and config["embed_dim"] == 64
    # the weights: the trained part only (CLIP is named), as tensors with no pickle
    header = safetensors_header(out / "model.safetensors")
    names = {name for name in header if name != "__metadata__"}
    stored = read_checkpoint(trained)["model"]
    assert names == set(stored) and not any(n.startswith("clip.transformer") for n in names)
    assert b"\x80\x04" not in (out / "model.safetensors").read_bytes()[:16]
    card = (out / "README.md").read_text()
    assert "f1e2d3c4" * 8 in card and "data/shards" in card  # the data fingerprint
    assert "objaverse-lvis: leakage audit (`cg3d audit`, runs/audit): none of its" in card
    assert "| objaverse-lvis | – | 51.2 |" in card
    # loaded from the folder: the same model
    folder, file = cg3d.load(out), cg3d.load(trained)
    shape = np.random.default_rng(0).uniform(-1, 1, (300, 3))
    assert np.array_equal(folder.embed_points(shape), file.embed_points(shape))
    assert np.array_equal(folder.embed_text(["a cube"]), file.embed_text(["a cube"]))
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    assert np.array_equal(folder.embed_images(image), file.embed_images(image))
    assert folder.classify(shape, top=2) == file.classify(shape, top=2)
    assert folder.sha256 != file.sha256  # an index tells the two apart


def test_a_random_clip_model_stores_all_of_clip_and_needs_no_weights(tiny_checkpoint, tmp_path):
    export(tiny_checkpoint, tmp_path / "hub")
    names = set(safetensors_header(tmp_path / "hub" / "model.safetensors")) - {"__metadata__"}
    assert any(n.startswith("clip.transformer.") for n in names)
    folder, file = cg3d.load(tmp_path / "hub"), cg3d.load(tiny_checkpoint)
    assert np.array_equal(folder.embed_text(["a cone"]), file.embed_text(["a cone"]))


def test_the_card_of_a_model_whose_clip_fell_back_to_random_names_no_tag(tmp_path):
    """Asked for "openai", given a random CLIP: config.json, the card and the printed line say
    what was loaded (they used to name "openai"); the identity still says random."""
    checkpoint = save_fell_back_checkpoint(tmp_path / "fell-back.pt")
    printed = export(checkpoint, tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["teacher"] == {
        "model": "CG3D-ViT-Micro-32",
        "pretrained": "none (random init)",
        "weights": {"kind": "random"},
    }
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "| teacher | `CG3D-ViT-Micro-32` / `none (random init)` (embedding 64) |" in card
    assert "teacher CG3D-ViT-Micro-32/none (random init)," in printed
    assert "openai" not in card + printed


def test_a_broken_hub_folder_is_one_line_naming_the_file(tiny_checkpoint, tmp_path):
    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    (hub / "model.safetensors").write_bytes(b"not tensors")
    with pytest.raises(UsageError, match=r"model\.safetensors: not a readable safetensors"):
        cg3d.load(hub)
    (hub / "config.json").write_text("{}")
    with pytest.raises(UsageError, match=r"config\.json: not a CG3D hub config"):
        cg3d.load(hub)
    result = CliRunner().invoke(
        app, ["export", "--format", "zip", "--checkpoint", "x", "--out", "y"]
    )
    assert result.exit_code != 0


# A hub folder is checked as a checkpoint file is (tests/models/test_checkpoint_bounds.py,
# tests/app/test_bounds_app.py): its config's shape is bounded, NaN weights refused, each in
# one line naming the file in the folder.


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "hub"
    export(tiny_checkpoint, out)
    return out


def forged_hub(exported, tmp_path, key, value):
    """A copy of the exported folder whose model config has `key` set to `value`."""
    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def recorded_sha256(folder) -> None:
    """Record the folder's weights file, as it is now, as the one its export wrote."""
    import hashlib

    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = hashlib.sha256(
        (folder / "model.safetensors").read_bytes()
    ).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def test_a_hub_folder_with_a_nan_weight_is_one_line_naming_the_file(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    state = load_file(str(folder / "model.safetensors"))
    name = next(n for n, t in state.items() if n.startswith("point_encoder.") and t.ndim == 2)
    state[name][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    recorded_sha256(folder)  # exported so: the NaN is in the file its config.json names
    line = f"model.safetensors: the weight {name} holds NaN or infinite values"
    with pytest.raises(UsageError, match=line) as caught:
        read_checkpoint(folder)
    assert str(caught.value).startswith(str(folder / "model.safetensors"))
    np.save(tmp_path / "shape.npy", np.random.default_rng(0).uniform(-1, 1, (100, 3)))
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "classify", tmp_path / "shape.npy", "--checkpoint", folder,
         "--labels", "a, b"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert line in result.stderr


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("classes", ["x"] * (MAX_CONFIG_VALUES + 1), r"config\.json: its model config holds more"),
        ("encoder_params", {"w": nested(MAX_CONFIG_DEPTH + 1)}, r"config\.json: .* nests deeper"),
        ("n_points", "many", r"hub: model config: train\.n_points must be an integer"),
        ("clip_weights", "openai", r"hub: its model config has a malformed clip_weights"),
    ],
)
def test_a_hub_folder_with_an_absurd_or_mistyped_config_is_one_line(
    exported, tmp_path, key, value, message
):
    folder = forged_hub(exported, tmp_path, key, value)
    with pytest.raises(UsageError, match=message) as caught:
        load_model(folder)
    assert "\n" not in str(caught.value) and str(folder) in str(caught.value)
    np.save(tmp_path / "shape.npy", np.random.default_rng(0).uniform(-1, 1, (100, 3)))
    words = ["classify", str(tmp_path / "shape.npy"), "--checkpoint", str(folder)]
    result = CliRunner().invoke(app, words)
    assert isinstance(result.exception, UsageError) and str(result.exception) == str(caught.value)


def test_a_hub_config_too_deep_or_too_large_to_read_is_one_line(exported, tmp_path, monkeypatch):
    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    deep = '{"format": "cg3d-hub-1", "model": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (folder / "config.json").write_text(deep)  # json's parser recurses: RecursionError
    with pytest.raises(UsageError, match=r"config\.json: not readable JSON") as caught:
        read_checkpoint(folder)
    assert "\n" not in str(caught.value)
    shutil.copy(exported / "config.json", folder / "config.json")
    assert read_checkpoint(folder)["config"]["n_points"] > 0
    monkeypatch.setattr(hub_module, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(UsageError, match=r"config\.json: larger than 100 bytes"):
        read_checkpoint(folder)


@pytest.mark.timeout(120)  # without the check, reading or hashing a FIFO waits forever
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_hub_file_that_is_a_fifo_is_named_as_not_a_regular_file(exported, tmp_path, name):
    """model.safetensors as a FIFO (or a symlink to a device) was "no model.safetensors",
    though it is there; a FIFO config.json blocked the read. Both are named as what they are,
    by the loader and by the hash an index and the benchmark take of a hub folder."""
    import os

    from cg3d.models.hub import model_sha256

    folder = tmp_path / "hub"
    shutil.copytree(exported, folder)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    line = f"{folder / name}: not a regular file"
    for read in (read_checkpoint, model_sha256):
        with pytest.raises(UsageError) as caught:
            read(folder)
        assert str(caught.value) == line
    np.save(tmp_path / "shape.npy", np.random.default_rng(0).uniform(-1, 1, (100, 3)))
    words = ["classify", str(tmp_path / "shape.npy"), "--checkpoint", str(folder)]
    result = CliRunner().invoke(app, words)
    assert isinstance(result.exception, UsageError) and str(result.exception) == line
    (folder / name).unlink()
    if name == "model.safetensors":  # absent: said so
        with pytest.raises(UsageError, match=f"{folder}: no {name}"):
            read_checkpoint(folder)
    os.mkfifo(tmp_path / "last.pt")  # a checkpoint file, the same
    for read in (read_checkpoint, model_sha256):
        with pytest.raises(UsageError) as caught:
            read(tmp_path / "last.pt")
        assert str(caught.value) == f"{tmp_path / 'last.pt'}: not a regular file"


def _hub_files(folder) -> dict:
    return {
        name: (folder / name).read_bytes()
        for name in ("config.json", "model.safetensors", "README.md")
    }


def test_an_export_that_fails_part_way_leaves_the_earlier_model_whole(
    tiny_checkpoint, trained, tmp_path, monkeypatch
):
    """Before: each file was renamed in on its own, so an export into an earlier export's folder
    that died writing README.md (a full disk, a kill) left the new weights beside the old
    config.json: another model's classes and teacher read with them."""
    import errno
    from pathlib import Path

    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    before = _hub_files(hub)
    write_text = Path.write_text

    def disk_full_at_the_card(self, *args, **kwargs):
        if "README.md" in self.name:  # the card, or a temporary file of it
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_at_the_card)
    result = CliRunner().invoke(app, ["export", "--format", "hub", "--checkpoint", str(trained),
                                      "--out", str(hub)])  # fmt: skip
    assert isinstance(result.exception, OSError) and "README.md" in str(result.exception)
    assert _hub_files(hub) == before
    monkeypatch.undo()
    export(trained, hub)
    assert cg3d.load(hub).classes == ["cube", "cone"]


def test_an_export_into_a_folder_another_run_writes_is_refused_and_changes_nothing(
    tiny_checkpoint, trained, tmp_path
):
    import fcntl

    from cg3d.files import LOCK_NAME

    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    before = _hub_files(hub)
    with open(hub / LOCK_NAME, "a") as held:  # what another process's output_lock holds
        fcntl.flock(held, fcntl.LOCK_EX)
        result = CliRunner().invoke(app, ["export", "--format", "hub", "--checkpoint",
                                          str(trained), "--out", str(hub)])  # fmt: skip
    assert isinstance(result.exception, UsageError)
    assert "another run is writing into" in str(result.exception)
    assert _hub_files(hub) == before


def test_an_export_refused_for_its_measured_file_leaves_no_folder(tiny_checkpoint, tmp_path):
    bad = tmp_path / "measured.json"
    bad.write_text("[1, 2]")
    out = tmp_path / "new" / "hub"
    result = CliRunner().invoke(app, ["export", "--format", "hub", "--checkpoint",
                                      str(tiny_checkpoint), "--out", str(out), "--measured",
                                      str(bad)])  # fmt: skip
    assert isinstance(result.exception, UsageError) and "--measured" in str(result.exception)
    assert not (tmp_path / "new").exists()


def test_a_hub_folders_weights_cut_short_or_zero_say_so(tiny_checkpoint, tmp_path):
    """Before: "incomplete metadata, file not fully covered" (cut) and "invalid JSON in
    header: EOF while parsing a value" (zeros), safetensors' words for either."""
    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    weights = hub / "model.safetensors"
    whole = weights.read_bytes()
    for share in (50, 99):
        weights.write_bytes(whole[: len(whole) * share // 100])
        with pytest.raises(UsageError) as error:
            cg3d.load(hub)
        assert str(error.value) == (
            f"{weights}: not a readable safetensors file (truncated: its tensors run to byte "
            f"{len(whole)}, the file holds {len(whole) * share // 100})"
        )
    weights.write_bytes(whole[:6])
    with pytest.raises(UsageError, match=r"\(truncated: 6 bytes, short of its 8-byte header"):
        cg3d.load(hub)
    header = struct.unpack("<Q", whole[:8])[0]
    weights.write_bytes(whole[: 8 + header // 2])
    with pytest.raises(UsageError) as error:
        cg3d.load(hub)
    assert str(error.value).endswith(
        f"(truncated: its header declares {header} bytes, the file holds {header // 2} after "
        "its length)"
    )
    weights.write_bytes(bytes(len(whole)))
    with pytest.raises(UsageError) as error:
        cg3d.load(hub)
    assert str(error.value) == (
        f"{weights}: not a readable safetensors file (its first 4096 bytes (of {len(whole)}) "
        "are all zero: nothing was written there, as in a preallocated or sparse file never filled)"
    )


def test_a_hub_folders_weights_with_a_deeply_nested_header_are_one_line(tiny_checkpoint, tmp_path):
    """The damage probe, run once safetensors refused the file, parsed its header with
    json.loads: 100,000 `[` were a RecursionError traceback instead of the refusal's line."""
    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    weights = hub / "model.safetensors"
    header = b"[" * 100_000
    weights.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(UsageError) as error:
        cg3d.load(hub)
    assert str(error.value).startswith(f"{weights}: not a readable safetensors file (")


def test_a_hub_folders_weights_cut_and_zero_filled_back_to_size_are_refused(
    tiny_checkpoint, tmp_path
):
    """Before: the header is whole and the tensors reach the file's end, so safetensors read the
    zeros as weights and the model loaded. config.json now records the file's sha256."""
    import hashlib

    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    weights = hub / "model.safetensors"
    whole = weights.read_bytes()
    config = json.loads((hub / "config.json").read_text())
    assert config["weights_sha256"] == hashlib.sha256(whole).hexdigest()
    assert cg3d.load(hub) is not None  # untouched: loads
    cut = len(whole) - 4096
    assert any(whole[cut:])  # the zeros replace real weights
    weights.write_bytes(whole[:cut] + bytes(len(whole) - cut))
    with pytest.raises(UsageError) as error:
        cg3d.load(hub)
    assert str(error.value) == (
        f"{weights}: damaged (its sha256 is not the weights_sha256 its config.json records: "
        "cut and zero-filled, or changed since export)"
    )
    np.save(tmp_path / "shape.npy", np.random.default_rng(0).uniform(-1, 1, (100, 3)))
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "classify", tmp_path / "shape.npy", "--checkpoint", hub,
         "--labels", "a, b"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{weights}: damaged (its sha256" in result.stderr
    # an export from before the key: not checked, loads as it did
    del config["weights_sha256"]
    (hub / "config.json").write_text(json.dumps(config))
    weights.write_bytes(whole)
    assert cg3d.load(hub) is not None
    config["weights_sha256"] = "not a digest"
    (hub / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError) as error:
        cg3d.load(hub)
    assert (
        str(error.value) == f"{hub / 'config.json'}: weights_sha256 is not a sha256 (64 hex digits)"
    )


def test_the_model_card_shows_names_from_users_files_literally():
    """The card's names come from the checkpoint and the result files a user gives: a model,
    a path or a dataset holding `|`, HTML, backticks or a newline stays one cell and one line,
    shown as it is (a `|` split the table's row, `<script>` reached the page as HTML)."""
    from markdown_it import MarkdownIt

    hostile = "a|b <script>alert(1)</script> `tick` *em*\nnext"
    shown = hostile.replace("\n", "\\n")
    config = {"encoder": hostile, "encoder_params": {"depth": hostile}, "n_points": 1024}
    config |= {"point_channels": 3}
    payload = {"config": config}
    hub = {"card": hostile, "up_axis": "y", "normalisation": "bbox", "protocol": hostile}
    hub |= {"teacher": {"model": hostile, "pretrained": "/w/a|b.pt"}, "embed_dim": 64}
    hub |= {"license": ""}
    run = {"config": {"shards": hostile}, "data": "f1e2d3c4" * 8}
    audits = {hostile: {"folder": hostile, "train": hostile, "leaked_test_shapes": 0}}
    card = hub_module.model_card(payload, hub, None, {hostile: 51.25}, audits, run)
    page = MarkdownIt("commonmark").enable(["table"]).render(card)
    assert "<script" not in page and "<em>" not in page
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert text.startswith(shown + "\n")  # the title, one line
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    cells = [[html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r, re.S)] for r in rows]
    assert [len(row) for row in cells] == [2] * 6 + [3, 3]  # the model's table, the numbers'
    assert cells[1] == ["encoder", f"{shown} {json.dumps({'depth': hostile})}"]
    assert cells[3] == ["teacher", f"{shown} / /w/a|b.pt (embedding 64)"]
    assert cells[4] == ["protocol", shown]
    assert cells[-1] == [shown, "–", "51.2"]
    assert f"Our run on {shown}; data fingerprint" in text
    assert f"{shown}: leakage audit (cg3d audit, {shown}): none of its test objects" in text
    # a plain name stays inline code
    assert "<code>f1e2d3c4" in page
