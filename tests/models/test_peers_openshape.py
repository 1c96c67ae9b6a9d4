"""OpenShape's PointBERT (PPAT) converted (`cg3d convert openshape-pointbert`): its ball query
(the first k by index within the radius), its layout and its forward."""

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.protocols import get_protocol
from cg3d.models.cards import get_card
from cg3d.models.encoders.ops import ball_group, ball_query_first
from cg3d.models.peers import expected_layout, peer_checkpoint, point_encoder
from tests.models.peer_networks import (
    cosine,
    ppat_layout,
    public_ball_query,
    random_state,
    reference_ppat,
)


def test_ball_query_takes_the_first_k_by_index_padded_with_the_first():
    # on a line: the query at 0, points at distances 0.9, 0.1, 5, 0.3, 0.2 (radius 1)
    xyz = torch.tensor([[0.9, 0, 0], [0.1, 0, 0], [5, 0, 0], [0.3, 0, 0], [0.2, 0, 0]])
    query = torch.zeros(1, 1, 3)
    first = ball_query_first(query, xyz[None], radius=1.0, k=3)
    assert first.tolist() == [[[0, 1, 3]]]  # by index, not the nearest (1, 4, 3)
    assert ball_group(query, xyz[None], radius=1.0, k=3).tolist() == [[[1, 4, 3]]]
    # fewer inside than k: padded with the first inside (index 1 here, not the nearest)
    padded = ball_query_first(query, xyz[None], radius=0.25, k=4)
    assert padded.tolist() == [[[1, 4, 1, 1]]]


def test_ball_query_equals_the_public_query_ball_point():
    generator = torch.Generator().manual_seed(3)
    xyz = torch.rand(2, 400, 3, generator=generator) * 2 - 1
    centres = xyz[:, torch.randperm(400, generator=generator)[:50]]
    for radius, k in ((0.2, 64), (0.5, 16), (1.5, 32)):
        ours = ball_query_first(centres, xyz, radius, k)
        for cloud in range(2):
            public = public_ball_query(radius, k, xyz[cloud], centres[cloud])
            assert torch.equal(ours[cloud], public)


def test_full_size_layout_is_the_public_one():
    """`make` with scaling 4 and in_channel 6, projected to 1280: every key and shape."""
    public = ppat_layout()
    ours = {
        f"module.{key}": shape
        for key, shape in expected_layout(get_card("openshape-pointbert")).items()
    }
    assert ours == public


# OpenShape's PPAT at smaller width and depth; the set abstraction's channels as released. A
# radius of 0.5 with 16 points holds more than 16 points of 512: which ones are taken matters.
SMALL = {"width": 64, "depth": 2, "heads": 2, "head_dim": 32, "mlp": 96, "patches": 48}
SMALL_QUERY = {"radius": 0.5, "group_size": 16}


def test_point_features_equal_the_public_forward(tmp_path):
    layout = ppat_layout(width=64, depth=2, mlp=96, heads=2, head_dim=32)
    state = random_state(layout, seed=5)
    file = tmp_path / "model.pt"
    logit_scale = {"module.logit_scale": torch.tensor(4.2)}  # LogitScaleNetwork, saved apart
    torch.save({"state_dict": state, "logit_scale": logit_scale, "epoch": 9}, file)
    checkpoint = peer_checkpoint("openshape-pointbert", file, encoder_params=SMALL | SMALL_QUERY)
    assert torch.equal(checkpoint["model"]["clip.logit_scale"], torch.tensor(4.2))
    encoder = point_encoder(checkpoint)
    clouds = torch.cat([torch.rand(2, 512, 3) * 2 - 1, torch.rand(2, 512, 3)], dim=-1)
    with torch.no_grad():
        ours = encoder(clouds)
    public = reference_ppat(state, clouds, patches=48, heads=2, **SMALL_QUERY)
    assert ours.shape == (2, 1280)
    assert cosine(ours, public).min() > 0.9999
    # the order of the points changes which ones a ball holds: not a permutation-free model
    order = torch.randperm(512)
    order = torch.cat([torch.zeros(1, dtype=torch.long), order[order != 0]])  # same FPS start
    with torch.no_grad():
        shuffled = encoder(clouds[:, order])
    assert (
        cosine(shuffled, reference_ppat(state, clouds[:, order], 48, heads=2, **SMALL_QUERY)).min()
        > 0.9999
    )


def test_a_file_of_another_layout_names_the_first_missing_key(tmp_path):
    state = random_state(ppat_layout(width=64, depth=2, mlp=96, heads=2, head_dim=32))
    del state["module.ppat.lift.2.weight"]
    file = tmp_path / "model.pt"
    torch.save({"state_dict": state}, file)
    with pytest.raises(UsageError, match=r"no tensor module\.ppat\.lift\.2\.weight"):
        peer_checkpoint("openshape-pointbert", file, encoder_params=SMALL | SMALL_QUERY)
    # a ULIP-2 file given as OpenShape's: its first expected tensor is named
    torch.save({"state_dict": {"module.point_encoder.cls_token": torch.zeros(1)}}, file)
    with pytest.raises(UsageError, match=r"OpenShape .*no tensor module\.ppat\.cls_token"):
        peer_checkpoint("openshape-pointbert", file)


def test_protocol_and_card():
    protocol = get_protocol("openshape")
    assert (protocol.up_axis, protocol.point_normalisation, protocol.n_points) == (
        "z",
        "centroid",
        10000,
    )
    assert protocol.templates == ("{}",)
    card = get_card("openshape-pointbert")
    assert card.published["objaverse-lvis"]["acc1"] == 46.8
    assert card.published["modelnet40"]["acc1"] == 84.4
    assert (card.teacher_model, card.embed_dim, card.license) == ("ViT-bigG-14", 1280, "Apache-2.0")
