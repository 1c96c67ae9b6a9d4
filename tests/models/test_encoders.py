import math

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.encoders import build_encoder, encoder_names
from cg3d.models.encoders.ops import ball_group, farthest_point_sample, gather_points, knn
from tests.models.public_networks import (
    public_point_transformer_project,
    reference_point_transformer_project,
)


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
    """Sizes of a pointtransformer (v1) encoder."""
    layers = encoder.blocks.layers
    return dict(
        groups=encoder.groups,
        group_size=encoder.group_size,
        depth=len(layers),
        width=encoder.norm.normalized_shape[0],
        heads=layers[0].self_attn.num_heads,
    )


def test_named_sizes_build_the_encoders_they_name_and_params_override_them():
    # until issue 17 the paper's size; its network now has a name of its own
    v1 = dict(groups=64, group_size=32, depth=12, width=384, heads=6)
    assert transformer_shape(build_encoder("pointtransformer-v1-base", 16)) == v1
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
    # the Point-BERT network's defaults are the paper's size
    assert shapes(build_encoder("pointbert", 512)) == shapes(
        build_encoder("pointtransformer-base", 512)
    )


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def test_the_paper_encoder_is_point_transformer_project_key_for_key():
    public = public_point_transformer_project()
    # all of it but the fine-tuning head, which the CLIP-aligned features never pass through
    features = {key: shape for key, shape in public.items() if "cls_head_finetune" not in key}
    encoder = build_encoder("pointtransformer-base", 512)
    assert shapes(encoder) == features
    assert sum(p.numel() for p in encoder.parameters()) == sum(
        math.prod(shape) for key, shape in features.items() if "running" not in key and shape
    )
    # a released `base_model` (DDP-prefixed) loads strictly once `module.` is stripped
    released = {f"module.{key}": torch.randn(shape) for key, shape in features.items()}
    stripped = {key.removeprefix("module."): value for key, value in released.items()}
    encoder.load_state_dict(stripped, strict=True)
    # stochastic depth linear over the 12 blocks, 0 to 0.1 (the public config's drop_path_rate)
    rates = [block.drop_path for block in encoder.blocks.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert rates[1] == pytest.approx(0.1 / 11)


def test_the_paper_encoder_computes_what_the_public_network_computes():
    torch.manual_seed(0)
    encoder = build_encoder("pointtransformer-base", 512)
    # weights as a trained model's: batch-norm statistics and every parameter away from init
    weights = {
        key: (torch.rand(value.shape) + 0.5 if "running_var" in key else torch.randn(value.shape))
        * (0.2 if value.ndim >= 2 else 1.0)
        for key, value in encoder.state_dict().items()
        if "num_batches_tracked" not in key
    }
    encoder.load_state_dict(weights, strict=False)
    clouds = torch.rand(2, 512, 3) * 2 - 1
    with torch.no_grad():
        ours = encoder.eval()(clouds).double()
    reference = reference_point_transformer_project(weights, clouds, kernel=False)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())


def test_stochastic_depth_is_random_in_training_only():
    encoder = build_encoder("pointbert-micro", 16)
    cloud = torch.rand(4, 128, 3)
    with torch.no_grad():
        encoder.eval()
        assert torch.equal(encoder(cloud), encoder(cloud))
        encoder.train()
        torch.manual_seed(0)
        first = encoder(cloud)
        assert any(not torch.equal(first, encoder(cloud)) for _ in range(10))


@pytest.mark.parametrize("name", ["pointbert-micro", "pointtransformer-micro", "pointnet2-micro"])
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


def test_batched_farthest_point_sample_picks_what_one_cloud_at_a_time_picks():
    """The whole batch in one loop: each cloud's picks are those of a plain per-cloud FPS
    (start at point 0, then always the point farthest from every pick so far)."""
    clouds = np.random.default_rng(5).random((4, 300, 3))

    def one_cloud(points: np.ndarray, count: int) -> list[int]:
        picks, distance = [0], np.full(len(points), np.inf)
        for _ in range(count - 1):
            distance = np.minimum(distance, ((points - points[picks[-1]]) ** 2).sum(-1))
            picks.append(int(distance.argmax()))
        return picks

    for count in (1, 2, 37):
        got = farthest_point_sample(torch.from_numpy(clouds), count)
        assert got.tolist() == [one_cloud(cloud, count) for cloud in clouds]


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
    for name in ("pointbert-micro", "pointtransformer-micro", "pointnet2-micro"):
        plain = build_encoder(name, 16).eval()
        coloured = build_encoder(name, 16, {"in_channels": 6}).eval()
        with torch.no_grad():
            # xyz only: the colour columns are ignored
            assert torch.equal(plain(points), plain(points[..., :3]))
            recoloured = torch.cat([points[..., :3], 1 - points[..., 3:]], dim=-1)
            assert not torch.allclose(coloured(points), coloured(recoloured))
