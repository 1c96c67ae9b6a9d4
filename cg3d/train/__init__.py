"""Point encoders, the prompt-tuned CLIP wrapper, losses, the shard loader, the training loop, checkpoints."""
