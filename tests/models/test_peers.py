"""ULIP and ULIP-2 converted (`cg3d convert ulip-pointbert | ulip2-pointbert`): the layout of
their released files, point features equal to ULIP's own forward, and one-line refusals."""

import argparse
import dataclasses
import hashlib
import math
import subprocess
import sys

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.protocols import get_protocol
from cg3d.models.cards import card_names, get_card
from cg3d.models.checkpoint import FORMAT, read_checkpoint
from cg3d.models.encoders import points_needed
from cg3d.models.model import ModelConfig
from cg3d.models.peers import (
    TOWER_WIDTHS,
    convert_peer,
    expected_layout,
    peer_checkpoint,
    point_encoder,
)
from cg3d.models.slip import SLIP_CONFIGS
from tests.models.peer_networks import cosine, random_state, reference_ulip, ulip_layout


def public_names(name: str) -> dict[str, tuple[int, ...]]:
    """Our encoder's layout for card `name` under ULIP's names (module.point_encoder.*)."""
    return {
        ("module." if key == "pc_projection" else "module.point_encoder.") + key: shape
        for key, shape in expected_layout(get_card(name)).items()
    }


@pytest.mark.parametrize(
    ("name", "depth", "channels", "out_dim"),
    [("ulip-pointbert", 12, 3, 512), ("ulip2-pointbert", 18, 6, 1280)],
)
def test_full_size_layout_is_the_public_one(name, depth, channels, out_dim):
    """Every point-side tensor of the real file, by name and shape, built on the meta device."""
    public = ulip_layout(depth, channels, out_dim)
    del public["module.logit_scale"]  # the temperature, stored apart from the encoder
    assert public_names(name) == public


def write_ulip2_file(path, depth=2, seed=0, **extra) -> dict[str, torch.Tensor]:
    """A ULIP-2 file in the real layout (depth `depth`), with what else a real one holds: the
    OpenCLIP towers' tensors under module.open_clip_model, optimiser state, argparse args."""
    state = random_state(ulip_layout(depth, 6, 1280), seed)
    state["module.open_clip_model.text_projection"] = torch.randn(4, 4)  # not the point side
    torch.save({"state_dict": state, "epoch": 3, **extra}, path)
    return state


SMALL = {"depth": 2, "groups": 32}  # ULIP-2's widths, channels and group size; fewer blocks


def test_ulip2_point_features_equal_the_public_forward(tmp_path):
    file = tmp_path / "ulip2.pt"
    state = write_ulip2_file(file)
    out = tmp_path / "ours.pt"
    convert_peer("ulip2-pointbert", file, out, encoder_params=SMALL)
    checkpoint = read_checkpoint(out)  # our format, read back with weights_only
    encoder = point_encoder(checkpoint)
    clouds = torch.cat([torch.rand(2, 256, 3) * 2 - 1, torch.rand(2, 256, 3)], dim=-1)
    with torch.no_grad():
        ours = encoder(clouds)
    public = reference_ulip(state, clouds, groups=32, channels=6)
    assert ours.shape == (2, 1280)
    assert cosine(ours, public).min() > 0.9999
    # the colours matter: the first conv reads them
    grey = clouds.clone()
    grey[..., 3:] = 0.4
    with torch.no_grad():
        assert cosine(encoder(grey), ours).min() < 0.9999


def test_ulip_point_features_equal_the_public_forward(tmp_path):
    """ULIP (v1): xyz only, 768 → 512 against SLIP; the file also holds SLIP's towers."""
    file = tmp_path / "ulip.pt"
    state = random_state(ulip_layout(2, 3, 512), seed=1)
    state["module.visual.cls_token"] = torch.randn(1, 1, 8)  # SLIP's image tower: not ours
    torch.save({"state_dict": state}, file)
    checkpoint = peer_checkpoint("ulip-pointbert", file, encoder_params=SMALL)
    encoder = point_encoder(checkpoint)
    clouds = torch.rand(2, 300, 3) * 2 - 1
    with torch.no_grad():
        ours = encoder(clouds)
    assert cosine(ours, reference_ulip(state, clouds, groups=32)).min() > 0.9999


def test_converted_checkpoint_names_the_teacher_and_holds_the_point_side_only(tmp_path):
    file = tmp_path / "ulip2.pt"
    state = write_ulip2_file(file)
    checkpoint = peer_checkpoint("ulip2-pointbert", file, encoder_params=SMALL)
    assert checkpoint["format"] == FORMAT and checkpoint["full_clip"] is False
    config = checkpoint["config"]
    assert (config["clip_model"], config["clip_pretrained"]) == (
        "ViT-bigG-14",
        "laion2b_s39b_b160k",
    )
    assert config["clip_weights"] == {"kind": "tag", "tag": "laion2b_s39b_b160k"}
    assert (config["card"], config["protocol"], config["encoder"]) == (
        "ulip2-pointbert",
        "ulip2",
        "ulip2-pointbert",
    )
    assert (config["n_points"], config["point_channels"], config["prompts"]) == (10000, 6, 0)
    assert config["encoder_params"] == SMALL
    # the ModelConfig fields are a valid config (what cg3d.load rebuilds from); the keys a
    # converted model adds are the card and its protocol (names)
    fields = {field.name for field in dataclasses.fields(ModelConfig)}
    ModelConfig(**{key: value for key, value in config.items() if key in fields})
    added = {"clip_pretrained_loaded", "clip_weights", "card", "protocol"}
    assert set(config) - fields == added
    assert checkpoint["source"]["name"] == "ulip2.pt"
    assert checkpoint["source"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    model = checkpoint["model"]
    assert not [k for k in model if not k.startswith(("point_encoder.", "visual.", "clip."))]
    assert model["visual.prompts"].shape == (1, 0, 1664)  # bigG's image tower width
    assert torch.equal(model["clip.logit_scale"], state["module.logit_scale"])
    assert torch.equal(
        model["point_encoder.pc_projection"], state["module.pc_projection"]
    )  # bias-free, as stored (x @ pc_projection)
    assert "point_encoder.projection.weight" not in model


def test_a_file_of_another_layout_is_one_line_naming_the_first_missing_key(tmp_path):
    """Through the `cg3d` entry point: exit code 2 and one line on stderr, no traceback."""
    file = tmp_path / "ulip2.pt"
    write_ulip2_file(file)  # 2 blocks: the real model has 18
    out = tmp_path / "x.pt"
    command = ["convert", "ulip2-pointbert", "--checkpoint", str(file), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", *command], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "module.point_encoder.blocks.blocks.2.norm1.weight" in lines[0]
    assert not out.exists()


def test_mismatched_and_unexpected_tensors_are_named(tmp_path):
    file = tmp_path / "ulip.pt"
    state = random_state(ulip_layout(2, 6, 512))  # a 6-channel first conv, read as ULIP
    torch.save({"state_dict": state}, file)
    with pytest.raises(UsageError, match=r"first_conv\.0\.weight is \(128, 6, 1\), not \(128, 3"):
        peer_checkpoint("ulip-pointbert", file, encoder_params=SMALL)
    state = random_state(ulip_layout(2, 3, 512))
    state["module.point_encoder.cls_head_finetune.0.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": state}, file)
    with pytest.raises(UsageError, match=r"unexpected tensor .*cls_head_finetune"):
        peer_checkpoint("ulip-pointbert", file, encoder_params=SMALL)
    torch.save({"model": state}, file)  # no state_dict at all
    with pytest.raises(UsageError, match="not a ULIP checkpoint"):
        peer_checkpoint("ulip-pointbert", file, encoder_params=SMALL)


def test_argparse_args_are_read_and_other_objects_need_allow_pickle(tmp_path):
    """ULIP saves its argparse args beside the weights: read with weights_only, as SLIP's file.
    Any other object (here a set) needs --allow-pickle."""
    file = tmp_path / "ulip2.pt"
    write_ulip2_file(file, args=argparse.Namespace(model="ULIP2_PointBERT_Colored"))
    checkpoint = peer_checkpoint("ulip2-pointbert", file, encoder_params=SMALL)
    assert checkpoint["config"]["card"] == "ulip2-pointbert"
    write_ulip2_file(file, extra=Unpicklable())
    with pytest.raises(UsageError, match="--allow-pickle"):
        peer_checkpoint("ulip2-pointbert", file, encoder_params=SMALL)
    checkpoint = peer_checkpoint("ulip2-pointbert", file, True, encoder_params=SMALL)
    assert checkpoint["config"]["card"] == "ulip2-pointbert"


class Unpicklable:
    """An object weights_only refuses (any class it was not told about)."""


def test_protocols_and_cards_are_the_public_code_s():
    ulip, ulip2 = get_protocol("ulip"), get_protocol("ulip2")
    assert len(ulip.templates) == 64 and ulip.templates[0] == "a point cloud model of {}."
    assert (ulip.n_points, ulip.point_normalisation, ulip.up_axis) == (8192, "centroid", "y")
    assert (ulip2.n_points, ulip2.constant_color) == (10000, 0.4)
    assert ulip.class_name("flower_pot") == "flower pot"  # data/labels.json writes spaces
    card = get_card("ulip2-pointbert")
    assert card.published["modelnet40"]["acc1"] == 84.7
    assert card.published["objaverse-lvis"]["acc1"] == 50.6
    assert get_card("ulip-pointbert").published["modelnet40"]["acc1"] == 60.4
    assert math.isclose(get_protocol("uni3d").constant_color, 100 / 255)


@pytest.mark.parametrize("name", [n for n in card_names() if n != "cg3d-release"])
def test_each_card_fits_its_teacher_encoder_and_protocol(name):
    """The card's embedding size is its teacher's (the encoder projects into the teacher's
    space), its encoder takes its points, and its protocol is registered."""
    import open_clip
    import timm

    card = get_card(name)
    if card.teacher_model in SLIP_CONFIGS:
        slip = SLIP_CONFIGS[card.teacher_model]
        teacher_dim, tower_width = slip.embed_dim, slip.vision_width
    else:
        config = open_clip.get_model_config(card.teacher_model)
        teacher_dim, vision = config["embed_dim"], config["vision_cfg"]
        tower_width = vision.get("width")
        if "timm_model_name" in vision:  # EVA02-E-14-plus: a timm tower
            with torch.device("meta"):
                tower_width = timm.create_model(vision["timm_model_name"]).embed_dim
        assert card.teacher_pretrained in open_clip.list_pretrained_tags_by_model(
            card.teacher_model
        )
    assert card.embed_dim == teacher_dim
    # the converted checkpoint's empty visual prompts are (1, 0, the image tower's width)
    assert TOWER_WIDTHS[card.teacher_model] == tower_width
    assert points_needed(card.encoder) <= card.n_points
    protocol = get_protocol(card.protocol)
    assert protocol.n_points == card.n_points and protocol.up_axis == card.up_axis
    assert protocol.point_normalisation == card.normalisation
    assert card.license and card.repository


def test_a_converted_checkpoint_spells_its_teacher_file_in_the_project_from_its_folder(tmp_path):
    """`save_checkpoint` records `relative`, `convert_peer` wrote the absolute path only: the
    project moved or copied, its converted checkpoint read the old place's teacher file."""
    from cg3d.models.checkpoint import read_checkpoint
    from cg3d.models.peers import convert_peer

    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "models").mkdir()
    file = project / "models" / "ulip.pt"
    torch.save({"state_dict": random_state(ulip_layout(2, 3, 512))}, file)
    slip = project / "models" / "slip_base_100ep.pt"
    slip.write_bytes(b"not loaded, only hashed")
    out = project / "runs" / "ulip-converted.pt"
    out.parent.mkdir()
    convert_peer("ulip-pointbert", file, out, False, SMALL, str(slip))
    recorded = read_checkpoint(out)["config"]["clip_weights"]
    assert recorded["relative"] == "../models/slip_base_100ep.pt"
    assert recorded["path"] == str(slip)


def test_the_teacher_s_weights_are_named_by_tag_or_by_file(tmp_path):
    """SLIP's weights are a file: recorded by name and sha256 (never loaded here); an open_clip
    teacher takes another of its tags; anything else is refused in one line."""
    file = tmp_path / "ulip.pt"
    torch.save({"state_dict": random_state(ulip_layout(2, 3, 512))}, file)
    slip = tmp_path / "slip_base_100ep.pt"
    slip.write_bytes(b"not loaded, only hashed")
    config = peer_checkpoint("ulip-pointbert", file, False, SMALL, str(slip))["config"]
    assert config["clip_weights"] == {
        "kind": "file",
        "name": "slip_base_100ep.pt",
        "sha256": hashlib.sha256(b"not loaded, only hashed").hexdigest(),
        "path": str(slip),
    }
    assert config["clip_pretrained"] == str(slip)
    with pytest.raises(UsageError, match="--clip-pretrained: no file .*SLIP"):
        peer_checkpoint("ulip-pointbert", file, False, SMALL, str(tmp_path / "missing.pt"))
    # without one, the card's file name is what the checkpoint asks for
    config = peer_checkpoint("ulip-pointbert", file, False, SMALL)["config"]
    assert config["clip_weights"] == {"kind": "tag", "tag": "slip_base_100ep.pt"}
    file = tmp_path / "ulip2.pt"
    write_ulip2_file(file)
    config = peer_checkpoint("ulip2-pointbert", file, False, SMALL, "metaclip_fullcc")["config"]
    assert config["clip_weights"] == {"kind": "tag", "tag": "metaclip_fullcc"}
    with pytest.raises(UsageError, match="neither a file nor a tag of ViT-bigG-14"):
        peer_checkpoint("ulip2-pointbert", file, False, SMALL, "laion400m")


def test_every_convert_command_has_a_layout_and_a_card():
    from cg3d.models.convert import PEER_MODELS
    from cg3d.models.peers import LAYOUTS

    assert sorted(LAYOUTS) == sorted(PEER_MODELS)
    assert set(PEER_MODELS) <= set(card_names())
