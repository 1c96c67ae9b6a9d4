"""Mesh sources, point sampling, captions, shard packing, manifests and executors (no Blender, no training)."""
