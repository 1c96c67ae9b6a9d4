"""Uni3D converted (`cg3d convert uni3d-{ti,s,b,l,g}`): the layouts of its five released sizes,
its EVA blocks (each of timm's three MLP and two attention forms) against a reference forward
written from timm 0.9.7 and Uni3D's PointcloudEncoder, and the command itself."""

import pytest
import torch
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval.protocols import get_protocol
from cg3d.geometry.fps import POINTNET2_SKIP_NORM2
from cg3d.models.cards import get_card
from cg3d.models.checkpoint import read_checkpoint
from cg3d.models.encoders import build_encoder
from cg3d.models.encoders.ops import farthest_point_sample
from cg3d.models.peers import expected_layout, peer_checkpoint, point_encoder
from tests.models.peer_networks import (
    cosine,
    kernel_fps,
    random_state,
    reference_uni3d,
    uni3d_layout,
)

# scripts/inference.sh's sizes: timm model, its width, depth, MLP ratio, MLP form, fused qkv,
# image size and classifier classes (timm's default pretrained tag of that name)
FULL_SIZES = {
    "uni3d-ti": dict(width=192, depth=12, mlp_ratio=8 / 3, mlp="glu", qkv_fused=True,
                     img_size=224, num_classes=0),
    "uni3d-s": dict(width=384, depth=12, mlp_ratio=8 / 3, mlp="glu", qkv_fused=True,
                    img_size=224, num_classes=0),
    "uni3d-b": dict(width=768, depth=12, mlp_ratio=8 / 3, mlp="swiglu", qkv_fused=False,
                    img_size=448, num_classes=1000),
    "uni3d-l": dict(width=1024, depth=24, mlp_ratio=8 / 3, mlp="swiglu", qkv_fused=False,
                    img_size=448, num_classes=1000),
    "uni3d-g": dict(width=1408, depth=40, mlp_ratio=6144 / 1408, mlp="plain", qkv_fused=True,
                    img_size=560, num_classes=1000),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FULL_SIZES))
def test_full_size_layout_is_the_public_one(name):
    """Every key and shape, on the meta device (Uni3D-g has a billion parameters)."""
    public = uni3d_layout(**FULL_SIZES[name])
    del public["logit_scale"]
    ours = {f"point_encoder.{key}": shape for key, shape in expected_layout(get_card(name)).items()}
    assert ours == public


def test_full_size_giant_has_a_billion_parameters():
    layout = uni3d_layout(**FULL_SIZES["uni3d-g"])
    assert 1.0e9 < sum(torch.Size(shape).numel() for shape in layout.values()) < 1.03e9


# Small versions of each EVA form: (card, our encoder_params, the public layout's arguments)
SMALL_GROUPS = {"groups": 24, "group_size": 16}
VARIANTS = {
    # eva_giant: GELU MLP, fused qkv with q_bias and v_bias, a classifier head
    "uni3d-g": (
        dict(width=64, depth=2, heads=4, mlp_ratio=1.5, img_size=28, num_classes=10),
        dict(width=64, depth=2, mlp_ratio=1.5, mlp="plain", qkv_fused=True, img_size=28,
             num_classes=10),
    ),
    # eva02 tiny / small: packed SwiGLU (GluMlp), fused qkv, no head
    "uni3d-ti": (
        dict(width=48, depth=2, heads=4, img_size=28),
        dict(width=48, depth=2, mlp_ratio=8 / 3, mlp="glu", qkv_fused=True, img_size=28,
             num_classes=0),
    ),
    # eva02 base / large: SwiGLU with its LayerNorm, separate q, k, v projections
    "uni3d-b": (
        dict(width=48, depth=2, heads=4, img_size=28, num_classes=10),
        dict(width=48, depth=2, mlp_ratio=8 / 3, mlp="swiglu", qkv_fused=False, img_size=28,
             num_classes=10),
    ),
}  # fmt: skip


def colored_clouds(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    xyz = torch.rand(2, n, 3, generator=generator) * 2 - 1
    return torch.cat([xyz, torch.rand(2, n, 3, generator=generator)], dim=-1)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_eva_blocks_and_features_equal_the_public_forward(name, tmp_path):
    params, public_args = VARIANTS[name]
    state = random_state(uni3d_layout(**public_args), seed=len(name))
    # saved under DDP (module.), in the `module` entry as Uni3D's DeepSpeed checkpoints
    file = tmp_path / "model.pt"
    torch.save({"module": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, file)
    checkpoint = peer_checkpoint(name, file, encoder_params=params | SMALL_GROUPS)
    encoder = point_encoder(checkpoint)
    clouds = colored_clouds(200)
    with torch.no_grad():
        ours = encoder(clouds)
    public = reference_uni3d(state, clouds, heads=params["heads"], **SMALL_GROUPS)
    assert ours.shape == (2, 1024)
    assert cosine(ours, public).min() > 0.9999
    assert torch.equal(checkpoint["model"]["clip.logit_scale"], state["logit_scale"])


def test_convert_command_writes_the_full_size_tiny_model(tmp_path):
    """`cg3d convert uni3d-ti` on a file of the real size: features equal Uni3D's forward."""
    state = random_state(uni3d_layout(**FULL_SIZES["uni3d-ti"]), seed=2)
    file, out = tmp_path / "model.pt", tmp_path / "uni3d-ti.pt"
    torch.save({"module": state}, file)
    arguments = ["convert", "uni3d-ti", "--checkpoint", str(file), "--out", str(out)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "EVA02-E-14-plus" in result.output
    checkpoint = read_checkpoint(out)
    config = checkpoint["config"]
    assert (config["clip_model"], config["clip_pretrained"]) == (
        "EVA02-E-14-plus",
        "laion2b_s9b_b144k",
    )
    assert (config["protocol"], config["n_points"], config["point_channels"]) == ("uni3d", 10000, 6)
    assert checkpoint["model"]["visual.prompts"].shape == (1, 0, 1792)
    encoder = point_encoder(checkpoint)
    clouds = colored_clouds(600, seed=1)[:1]
    clouds[:, 1:41, :3] *= 0.01  # near the origin: FPS of 512 from 600 would pick some
    with torch.no_grad():
        ours = encoder(clouds)
    public = reference_uni3d(state, clouds, 512, 64, heads=3, dtype=torch.float32)
    assert cosine(ours, public).min() > 0.9999


def test_centres_are_pointnet2_kernel_fps_skipping_points_near_the_origin():
    """ULIP's and Uni3D's Group samples centres with pointnet2_ops' kernel, which never picks a
    point of squared norm ≤ 1e-3 after point 0; our encoders do the same."""
    generator = torch.Generator().manual_seed(4)
    xyz = torch.rand(1, 200, 3, generator=generator) * 2 - 1
    xyz[0, 5:25] *= 0.01  # 20 points within 0.0173 of the origin (squared norm ≤ 3e-4)
    xyz[0, 0] *= 0.01  # the start point, near the origin too: still taken first
    ours = farthest_point_sample(xyz, 190, POINTNET2_SKIP_NORM2)[0]
    assert torch.equal(ours, kernel_fps(xyz[0], 190))
    assert not set(range(5, 25)) & set(ours.tolist())
    plain = farthest_point_sample(xyz, 190)[0]  # without the skip, some are taken
    assert set(range(5, 25)) & set(plain.tolist())
    for name in ("uni3d-ti", "ulip2-pointbert"):
        with torch.device("meta"):
            encoder = build_encoder(name, 16)
        assert encoder.fps_skip_norm2 == 1e-3


def test_a_file_of_another_size_names_the_first_mismatched_tensor(tmp_path):
    """A Uni3D-s file given as Uni3D-ti: the first tensor of another shape is named."""
    file = tmp_path / "model.pt"
    params, public_args = VARIANTS["uni3d-ti"]
    state = random_state(uni3d_layout(**public_args | {"width": 64}))
    torch.save({"module": state}, file)
    with pytest.raises(
        UsageError, match=r"point_encoder\.cls_token is \(1, 1, 64\), not \(1, 1, 48\)"
    ):
        peer_checkpoint("uni3d-ti", file, encoder_params=params | SMALL_GROUPS)
    torch.save({"state_dict": state}, file)
    with pytest.raises(UsageError, match=r"not a Uni3D-ti checkpoint \(no 'module' state dict\)"):
        peer_checkpoint("uni3d-ti", file)


def test_protocol_and_cards():
    protocol = get_protocol("uni3d")
    assert (protocol.n_points, protocol.point_normalisation, protocol.fps_start) == (
        10000,
        "centroid",
        "first",
    )
    assert len(protocol.templates) == 64
    giant = get_card("uni3d-g")
    assert giant.published["objaverse-lvis"]["acc1"] == 55.3
    assert giant.published["modelnet40"]["acc1"] == 88.2
    assert (giant.teacher_model, giant.embed_dim, giant.license) == ("EVA02-E-14-plus", 1024, "MIT")


def test_a_convert_onto_its_own_input_is_refused_and_the_released_file_kept(tmp_path):
    """Before: `--out` naming the released checkpoint (or through a link to it) replaced it
    with the converted one: the original, a download, was gone. export refused it already."""
    state = random_state(uni3d_layout(**FULL_SIZES["uni3d-ti"]), seed=2)
    file = tmp_path / "model.pt"
    torch.save({"module": state}, file)
    (tmp_path / "link.pt").symlink_to(file.name)
    released = file.read_bytes()
    for out in (file, tmp_path / "link.pt"):
        arguments = ["convert", "uni3d-ti", "--checkpoint", str(file), "--out", str(out)]
        result = CliRunner().invoke(app, arguments)
        assert isinstance(result.exception, UsageError), result.output
        assert str(result.exception) == (
            f"--out: {out} is the --checkpoint itself; convert writes another file"
        )
        assert file.read_bytes() == released
