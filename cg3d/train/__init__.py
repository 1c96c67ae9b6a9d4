"""The trainer: the shard loader, augmentations, losses, the text cache and the training loop."""
