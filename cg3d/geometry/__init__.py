"""Meshes, surfaces and points, below every stage: reading and checking mesh files (`meshio`),
the shared object frame (`frame`), an object's surface and its colours (`surface`), surface
sampling (`sampling`) and farthest point sampling (`fps`).

The sample stage (`cg3d.pipeline.sample`), the Blender workers (`cg3d.render.worker`) and the
point-file readers all import from here; nothing here imports a stage (`cg3d.pipeline`,
`cg3d.render`, ...), torch or Blender, so data flow one way (tests/test_layers.py).
"""
