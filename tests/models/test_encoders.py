import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.encoders import build_encoder, encoder_names
from cg3d.models.encoders.ops import ball_group, farthest_point_sample, gather_points, knn


def test_registry_lists_both_encoders_and_rejects_unknown_names():
    assert {"pointtransformer", "pointnet2"} <= set(encoder_names())
    with pytest.raises(UsageError, match="pointnet3"):
        build_encoder("pointnet3", 16)
    with pytest.raises(UsageError, match="bad parameter"):
        build_encoder("pointtransformer", 16, {"depthh": 2})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pointtransformer", {"groups": 16, "group_size": 8, "width": 32, "depth": 2, "heads": 2}),
        ("pointnet2", {"centres": [32, 8], "group_size": 8, "width": 0.125}),
    ],
)
def test_encoders_map_batches_of_points_to_features(name, params):
    encoder = build_encoder(name, 24, params).eval()
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
