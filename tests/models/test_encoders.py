import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.encoders import build_encoder, encoder_names
from cg3d.models.encoders.ops import ball_group, farthest_point_sample, gather_points, knn


def test_registry_lists_architectures_and_sizes_and_rejects_unknown_names_in_one_line():
    names = set(encoder_names())
    assert {"pointtransformer", "pointnet2", "pointtransformer-base", "pointnet2-ssg"} <= names
    with pytest.raises(UsageError) as caught:
        build_encoder("pointnet3", 16)
    message = str(caught.value)
    assert "'pointnet3'" in message and "pointtransformer-tiny" in message and "\n" not in message
    with pytest.raises(UsageError, match="no parameter 'depthh'.*depth"):
        build_encoder("pointtransformer-tiny", 16, {"depthh": 2})
    with pytest.raises(UsageError, match="pointtransformer-micro.*bad encoder_params"):
        build_encoder("pointtransformer-micro", 16, {"heads": 3})  # width 32 not divisible


def transformer_shape(encoder) -> dict:
    layers = encoder.blocks.layers
    return dict(
        groups=encoder.groups,
        group_size=encoder.group_size,
        depth=len(layers),
        width=encoder.norm.normalized_shape[0],
        heads=layers[0].self_attn.num_heads,
    )


def test_named_sizes_build_the_encoders_they_name_and_params_override_them():
    # the paper's encoder (Point-BERT's): FPS 64 centres, kNN 32, 12 blocks, width 384, 6 heads
    paper = dict(groups=64, group_size=32, depth=12, width=384, heads=6)
    assert transformer_shape(build_encoder("pointtransformer-base", 16)) == paper
    tiny = dict(groups=64, group_size=32, depth=4, width=128, heads=4)
    assert transformer_shape(build_encoder("pointtransformer-tiny", 16)) == tiny
    # an override changes only what it names
    deeper = build_encoder("pointtransformer-tiny", 16, {"depth": 2, "groups": 32})
    assert transformer_shape(deeper) == tiny | {"depth": 2, "groups": 32}
    # a bare architecture name is that architecture's defaults (what old checkpoints say)
    micro_params = dict(groups=8, group_size=8, width=32, depth=1, heads=2, patch_hidden=32)
    bare = build_encoder("pointtransformer", 16, micro_params).state_dict()
    micro = build_encoder("pointtransformer-micro", 16).state_dict()
    assert {name: tensor.shape for name, tensor in bare.items()} == {
        name: tensor.shape for name, tensor in micro.items()
    }
    ssg = build_encoder("pointnet2-ssg", 16)
    assert [level.centres for level in ssg.levels] == [512, 128, None]


@pytest.mark.parametrize("name", ["pointtransformer-micro", "pointnet2-micro"])
def test_encoders_map_batches_of_points_to_features(name):
    encoder = build_encoder(name, 24).eval()
    features = encoder(torch.randn(3, 200, 3))
    assert features.shape == (3, 24)
    assert torch.isfinite(features).all()
    # a point cloud is a set: reordering its points (FPS starts at point 0, kept first)
    # does not change the features
    cloud = torch.randn(1, 200, 3)
    order = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(199)])
    with torch.no_grad():
        assert torch.allclose(encoder(cloud), encoder(cloud[:, order]), atol=1e-4)


def test_farthest_point_sample_spreads_out_and_never_repeats():
    # two tight clusters far apart: the first two samples must come from different clusters
    cluster = torch.randn(50, 3) * 0.01
    points = torch.cat([cluster, cluster + 10]).unsqueeze(0)
    index = farthest_point_sample(points, 10)
    assert index.shape == (1, 10)
    assert len(set(index[0].tolist())) == 10
    chosen = gather_points(points, index)[0]
    assert (chosen[0, 0] < 5) != (chosen[1, 0] < 5)
    with pytest.raises(ValueError):
        farthest_point_sample(points, 101)


def test_knn_matches_brute_force_and_ball_group_respects_the_radius():
    points = torch.rand(2, 64, 3)
    query = points[:, :5]
    index = knn(query, points, 4)
    brute = ((query.unsqueeze(2) - points.unsqueeze(1)) ** 2).sum(-1).argsort(-1)[..., :4]
    assert torch.equal(index.sort(-1).values, brute.sort(-1).values)
    grouped = ball_group(query, points, 0.1, 8)
    distance = (gather_points(points, grouped) - query.unsqueeze(2)).norm(dim=-1)
    assert (distance <= 0.1 + 1e-6).all()
    assert torch.equal(grouped[..., 0], index[..., 0])  # the point itself is always in


def test_encoders_take_xyz_or_xyz_rgb_and_colour_changes_the_output():
    import torch

    from cg3d.models.encoders import build_encoder

    torch.manual_seed(0)
    points = torch.rand(2, 128, 6)
    for name in ("pointtransformer-micro", "pointnet2-micro"):
        plain = build_encoder(name, 16).eval()
        coloured = build_encoder(name, 16, {"in_channels": 6}).eval()
        with torch.no_grad():
            # xyz only: the colour columns are ignored
            assert torch.equal(plain(points), plain(points[..., :3]))
            recoloured = torch.cat([points[..., :3], 1 - points[..., 3:]], dim=-1)
            assert not torch.allclose(coloured(points), coloured(recoloured))
