"""`cg3d convert cg3d-release`: the authors' released checkpoints as ours. Files are built in
the release's layout (tools/builder.save_checkpoint: base_model, visual_clip_model with its
prompts, optimizer, epoch, metrics); the converted model must compute what the public networks
compute with those weights, written out in the tests (not by calling our modules)."""

import hashlib
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import cg3d
from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.models.checkpoint import load_model, read_checkpoint
from cg3d.models.clip import RandomClipWarning
from cg3d.models.model import build_model, model_config
from cg3d.models.release import release_layout
from cg3d.models.slip import SLIP_CONFIGS
from cg3d.params import TrainConfig
from cg3d.protocol import class_names
from tests.models.public_networks import (
    MICRO,
    file_state,
    public_point_transformer_project,
    public_prompted_image_features,
    reference_point_transformer_project,
    released_base_model,
    slip_layout,
    timm_vit,
    write_release,
    write_slip_file,
)

N_POINTS = 512


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    slip_file = write_slip_file(folder / "slip_base_100ep.pt")
    return slip_file, write_release(folder / "ckpt.pth", slip_file)


def convert(checkpoint, slip_file, out, *extra):
    arguments = ["convert", "cg3d-release", "--checkpoint", str(checkpoint)]
    arguments += ["--clip-pretrained", str(slip_file), "--out", str(out)]
    arguments += ["--clip-model", MICRO, "--n-points", str(N_POINTS), *extra]
    return CliRunner().invoke(app, arguments)


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory):
    slip_file, checkpoint = files
    out = tmp_path_factory.mktemp("converted") / "cg3d_release.pt"
    result = convert(checkpoint, slip_file, out)
    assert result.exit_code == 0, result.output
    return out


def test_point_features_are_point_berts_with_the_released_weights(files, converted):
    _, checkpoint = files
    base = {k[7:]: v for k, v in torch.load(checkpoint)["base_model"].items()}
    model = load_model(converted)
    # points on the unit sphere and, from index 1, a cluster within 0.01 of the origin: plain
    # FPS takes one of those as a centre, the public misc.fps (pointnet2_ops) never does
    clouds = F.normalize(torch.randn(2, N_POINTS, 3), dim=-1)
    clouds[:, 1:33] *= 0.01
    with torch.no_grad():
        ours = model.encode_points(clouds).double()
    reference = F.normalize(reference_point_transformer_project(base, clouds), dim=-1)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_image_features_are_timms_vit_with_the_released_prompts_inserted(files, converted):
    slip_file, checkpoint = files
    tower = torch.load(checkpoint)["visual_clip_model"]
    state = file_state(slip_file)
    model = load_model(converted)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = public_prompted_image_features(
            timm_vit(SLIP_CONFIGS[MICRO], state),
            state["image_projection"],
            tower["prompt_embeddings"],
            tower["deep_prompt_embeddings"],
            images,
        )
        torch.testing.assert_close(model.encode_image(images), F.normalize(expected, dim=-1))


def test_the_converted_checkpoint_names_slip_by_sha256_and_loads_through_the_api(files, converted):
    slip_file, _ = files
    payload = read_checkpoint(converted)
    assert not payload["full_clip"]  # SLIP's weights stay in their file
    config = payload["config"]
    assert config["clip_weights"]["sha256"] == hashlib.sha256(slip_file.read_bytes()).hexdigest()
    assert (config["encoder"], config["clip_model"]) == ("pointtransformer-base", MICRO)
    assert (config["prompts"], config["deep_prompts"], config["n_points"]) == (5, True, N_POINTS)
    assert config["classes"] == class_names("shapenet55")
    model = cg3d.load(converted)
    cloud = np.random.default_rng(0).uniform(-1, 1, (2048, 3)).astype(np.float32)
    predictions = model.classify(cloud, top=3)
    assert len(predictions) == 3 and predictions[0].label in class_names("shapenet55")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 40, 3), np.uint8))
    assert model.embed_images(image).shape == (1, 64)


@pytest.mark.parametrize(
    ("drop", "replace", "message"),
    [
        ("module.blocks.blocks.1.attn.qkv.weight", {}, "base_model: missing blocks.blocks.1.attn"),
        ("", {"module.reduce_dim.weight": torch.zeros(384, 128)}, "reduce_dim.weight is"),
        ("", {"deep_prompt_embeddings": torch.zeros(2, 5, 64)}, r"deep_prompt_embeddings is \(2,"),
        ("", {"prompt_embeddings": torch.zeros(1, 5, 32)}, r"prompt_embeddings is \(1, 5, 32\)"),
        ("norm.weight", {}, "visual_clip_model: missing norm.weight"),
        ("", {"pos_embed": torch.zeros(1, 17, 64)}, "pos_embed is not .*slip_base_100ep.pt's"),
    ],
)
def test_a_wrong_layout_is_one_line_naming_the_first_bad_tensor(
    files, tmp_path, drop, replace, message
):
    slip_file, _ = files
    checkpoint = write_release(tmp_path / "bad.pth", slip_file, drop=drop, **replace)
    result = convert(checkpoint, slip_file, tmp_path / "out.pt")
    assert isinstance(result.exception, UsageError), result.output
    assert "bad.pth" in str(result.exception) and "\n" not in str(result.exception)
    assert re.search(message, str(result.exception)), str(result.exception)
    assert not (tmp_path / "out.pt").exists()


def test_a_file_that_is_not_a_release_is_refused(files, tmp_path):
    slip_file, _ = files
    torch.save({"base_model": released_base_model(64)}, tmp_path / "points_only.pth")
    result = convert(tmp_path / "points_only.pth", slip_file, tmp_path / "out.pt")
    assert "no 'visual_clip_model' state dict" in str(result.exception)
    torch.save({"base_model": {}, "visual_clip_model": {}, "x": RandomClipWarning}, tmp_path / "g")
    result = convert(tmp_path / "g", slip_file, tmp_path / "out.pt")
    assert "Unsupported global" in str(result.exception) and "--allow-pickle" in str(
        result.exception
    )
    result = convert(tmp_path / "absent.pth", slip_file, tmp_path / "out.pt")
    assert "no file" in str(result.exception)


def test_a_release_is_read_once_by_the_rule_of_every_released_file(files, tmp_path, monkeypatch):
    """One loader for released files (`peers.load_released`): a release holding its run's
    `args` (an argparse.Namespace, as ULIP's and SLIP's files do) is read without
    --allow-pickle, and the multi-GB file is loaded once, not again for the conversion."""
    import argparse

    slip_file, checkpoint = files
    release = torch.load(checkpoint, weights_only=True)
    with_args = tmp_path / "with_args.pth"
    torch.save({**release, "args": argparse.Namespace(npoints=N_POINTS)}, with_args)
    loads = []
    real_load = torch.load

    def counted(path, *args, **kwargs):
        loads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    result = convert(with_args, slip_file, tmp_path / "out.pt")
    assert result.exit_code == 0, result.output
    assert loads.count(str(with_args)) == 1


@pytest.mark.slow  # builds the full-size model (~170M parameters): 25 s on a busy CPU
@pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
def test_the_full_size_release_layout_is_the_public_one():
    params = TrainConfig(clip_model="SLIP-ViT-B-16", clip_pretrained="none")
    model = build_model(model_config(params, []))
    layout = release_layout(model)
    public_points = public_point_transformer_project()
    assert layout["base_model"] == {
        k: v for k, v in public_points.items() if not k.startswith("cls_head_finetune.")
    }
    slip = slip_layout(SLIP_CONFIGS["SLIP-ViT-B-16"])
    vit = {k[7:]: v for k, v in slip.items() if k.startswith("visual.")}
    prompts = {"prompt_embeddings": (1, 5, 768), "deep_prompt_embeddings": (11, 5, 768)}
    assert layout["visual_clip_model"] == vit | prompts


def test_cg3d_eval_zeroshot_runs_on_the_converted_checkpoint(converted, tmp_path):
    import json

    from tests.eval.files import write_modelnet

    write_modelnet(tmp_path / "modelnet", n=600)
    arguments = ["eval", "zeroshot", "--checkpoint", str(converted), "--out", str(tmp_path / "o")]
    arguments += ["--dataset", "modelnet40", "--root", str(tmp_path / "modelnet")]
    arguments += ["--text-cache", str(tmp_path / "text")]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    about = json.loads((tmp_path / "o" / "about.json").read_text())
    assert metrics["n_shapes"] == 3 and about["clip_model"] == MICRO


def test_a_full_disk_leaves_no_folder_the_conversion_made(files, tmp_path, monkeypatch):
    """ENOSPC at the checkpoint's write: the folders `--out new/deeper/out.pt` made are removed
    with the partial file (the empty `new/deeper` was left behind)."""
    import errno

    from cg3d.models import checkpoint

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint._WriteErrors, "write", full)
    slip_file, release = files
    result = convert(release, slip_file, tmp_path / "new" / "deeper" / "out.pt")
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.ENOSPC
    assert result.exception.filename == str(tmp_path / "new" / "deeper" / "out.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_real_full_disk_is_one_line_and_leaves_nothing(files, tmp_path):
    from tests.pipeline.disks import cg3d, mounted

    slip_file, release = files
    with mounted(tmp_path / "disk", "size=64k") as disk:
        out = disk / "new" / "out.pt"
        done = cg3d(
            *["convert", "cg3d-release", "--checkpoint", release, "--clip-pretrained", slip_file],
            *["--out", out, "--clip-model", MICRO, "--n-points", N_POINTS],
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"error: {out}: No space left on device (ENOSPC)" in " ".join(done.stderr.split())
        assert list(disk.iterdir()) == []
