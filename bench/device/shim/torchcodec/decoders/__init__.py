"""decode_png through torchvision's libpng decoder (the same bytes, the same pixels)."""

import torch
from torchvision.io import ImageReadMode
from torchvision.io import decode_png as _decode_png


def decode_png(data, mode="RGB"):
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return _decode_png(tensor, mode=getattr(ImageReadMode, mode))
