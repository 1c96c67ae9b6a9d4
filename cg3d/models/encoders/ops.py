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


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of `count` farthest-point samples of (B, N, 3) `xyz`.

    Starts from point 0 (deterministic); `count` sequential steps over the whole batch at once,
    each O(B·N) on the device and six kernels (gather, difference, square, sum, minimum,
    argmax): on a GPU the loop is bound by launches, so the picks are stacked once at the end
    rather than written one by one, and the last step's distances are not computed.
    """
    batch, n_points, _ = xyz.shape
    if count > n_points:
        raise ValueError(f"cannot sample {count} centres from {n_points} points")
    distance = torch.full((batch, n_points), float("inf"), device=xyz.device, dtype=xyz.dtype)
    farthest = torch.zeros(batch, dtype=torch.long, device=xyz.device)
    chosen = [farthest]
    for _ in range(count - 1):
        centre = torch.gather(xyz, 1, farthest.view(batch, 1, 1).expand(batch, 1, 3))
        distance = torch.minimum(distance, ((xyz - centre) ** 2).sum(-1))
        farthest = distance.argmax(-1)
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
    points: torch.Tensor, groups: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-BERT's Group: (B, G, K, C) patches and their (B, G, 3) centres.

    `groups` FPS centres of the xyz columns, each with its `group_size` nearest points; xyz
    relative to the centre, further columns (colours) as they are.
    """
    xyz = points[..., :3]
    centres = gather_points(xyz, farthest_point_sample(xyz, groups))
    patches = gather_points(points, knn(centres, xyz, group_size))
    relative = torch.cat([patches[..., :3] - centres.unsqueeze(2), patches[..., 3:]], dim=-1)
    return relative, centres
