"""Device-machine shim: torch 2.11 there has no matching TorchCodec build."""
