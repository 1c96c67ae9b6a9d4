"""The model library: point encoders, the prompt-tuned CLIP, the CG3D model, checkpoints.

Like open_clip's `src/open_clip` beside its trainer: evaluation, classification and the API
import this package, never `cg3d.train` (the shard loader and the training loop).
"""
