"""Batched point-cloud operations in plain PyTorch (CPU and GPU alike, no CUDA extensions).

The public CG3D code needs compiled CUDA kernels for these; here they are a few tensor ops,
so the same model trains and evaluates on a laptop CPU or a GPU.
"""

import torch


def gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`points[b, index[b, ...]]` for (B, N, C) points and (B, ...) integer index → (B, ..., C)."""
    batch = points.shape[0]
    flat = index.reshape(batch, -1)
    picked = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return picked.reshape(*index.shape, points.shape[-1])


def farthest_point_sample(
    xyz: torch.Tensor, count: int, skip_norm2: float | None = None
) -> torch.Tensor:
    """Indices (B, count) of `count` farthest-point samples of (B, N, 3) `xyz`.

    Starts from point 0 (deterministic); `count` sequential steps over the whole batch at once,
    each O(B·N) on the device: on a GPU the loop is bound by launches, so the picks are stacked
    once at the end rather than written one by one, and the last step's distances are skipped.
    With `skip_norm2`, points of squared norm at most that are never picked after the first
    (pointnet2_ops' kernel: `cg3d.geometry.fps.POINTNET2_SKIP_NORM2`, by which ULIP and Uni3D
    chose their patch centres); in a cloud of only those, point 0 repeats.
    """
    batch, n_points, _ = xyz.shape
    if count > n_points:
        raise ValueError(f"cannot sample {count} centres from {n_points} points")
    distance = torch.full((batch, n_points), float("inf"), device=xyz.device, dtype=xyz.dtype)
    farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    eligible = None if skip_norm2 is None else (xyz**2).sum(-1) > skip_norm2
    chosen = [farthest]
    for _ in range(count - 1):
        centre = torch.gather(xyz, 1, farthest.view(batch, 1, 1).expand(batch, 1, 3))
        distance = torch.minimum(distance, ((xyz - centre) ** 2).sum(-1))
        if eligible is None:
            farthest = distance.argmax(-1)
        else:  # the kernel's best starts at -1 with index 0: ineligible points never win
            farthest = torch.where(eligible, distance, -1.0).argmax(-1)
        chosen.append(farthest)
    return torch.stack(chosen, dim=1)


def knn(query: torch.Tensor, xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, M, k) of the `k` nearest points in (B, N, 3) `xyz` to each (B, M, 3) query."""
    return torch.cdist(query, xyz).topk(k, dim=-1, largest=False).indices


def ball_group(query: torch.Tensor, xyz: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """PointNet++ ball query: up to `k` neighbours within `radius`, padded with the nearest one.

    Taken from the k nearest (so the nearest is always present): neighbours beyond the radius
    are replaced by the nearest point, as the CUDA ball query pads with its first hit.
    """
    distance = torch.cdist(query, xyz)
    nearest = distance.topk(k, dim=-1, largest=False)
    index = nearest.indices
    outside = nearest.values > radius
    return torch.where(outside, index[..., :1].expand_as(index), index)


def points_for_patches(groups: int, group_size: int) -> int:
    """Points a cloud needs for `group_patches`: FPS picks `groups` centres, kNN takes
    `group_size` neighbours of each."""
    return max(groups, group_size)


def group_patches(
    points: torch.Tensor, groups: int, group_size: int, fps_skip_norm2: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-BERT's Group: (B, G, K, C) patches and their (B, G, 3) centres.

    `groups` FPS centres of the xyz columns (`fps_skip_norm2`: see farthest_point_sample), each
    with its `group_size` nearest points; xyz relative to the centre, further columns (colours)
    as they are.
    """
    xyz = points[..., :3]
    centres = gather_points(xyz, farthest_point_sample(xyz, groups, fps_skip_norm2))
    patches = gather_points(points, knn(centres, xyz, group_size))
    relative = torch.cat([patches[..., :3] - centres.unsqueeze(2), patches[..., 3:]], dim=-1)
    return relative, centres


def ball_query_first(query: torch.Tensor, xyz: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """Indices (B, M, k): the first `k` points BY INDEX within `radius` of each query, padded with
    the first of them (PointNet++'s PyTorch `query_ball_point`, as OpenShape's PPAT groups).

    Unlike `ball_group` (the k nearest), which points are taken depends on the cloud's order.
    A point exactly at `radius` is inside. Every query must have a point within `radius` (a
    query that is a point of the cloud always has itself), and the cloud at least k points.
    """
    n_points = xyz.shape[1]
    inside = torch.cdist(query, xyz) <= radius
    # int32: the (B, M, N) ranks are the largest tensor here (384 × 10k per cloud for PPAT)
    order = torch.arange(n_points, device=xyz.device, dtype=torch.int32)
    # outside points sort after every inside one; the k smallest are the first k inside
    ranked = torch.where(inside, order, n_points)
    index = ranked.topk(k, dim=-1, largest=False, sorted=True).values.long()
    return torch.where(index == n_points, index[..., :1].expand_as(index), index)
