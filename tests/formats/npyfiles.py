"""Hand-written .npy files (no numpy writer): headers that claim what the test asks."""

import struct


def npy_claiming(shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"\0" * 1200) -> bytes:
    """A version 1.0 .npy written by hand (not by numpy): header dict, padding, then `data`."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (117 - len(header)) + "\n"  # magic (6) + version (2) + length (2) + 118
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


ABSURD = (10**12, 3)
