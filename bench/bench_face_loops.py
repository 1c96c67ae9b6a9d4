"""What splitting a hostile OBJ face costs (`meshio.face_loops`, both readers' rewrite).

    python bench/bench_face_loops.py [--corners 10000 100000] [--repeat 3]

A mirrored face "f 1 2 .. n n .. 2 1" (each vertex twice, every loop two corners): the rule
as its comment states it walks the whole face again after each of its n/2 splits (quadratic);
`face_loops` does it in n log n. Rows, best of --repeat: `face_loops` alone, then `load_mesh`
(the fast path) and `blender_input` (Blender's copy) on an OBJ holding that face beside one
triangle.
"""

import argparse
import os
import tempfile
from pathlib import Path

from timing import best_seconds

from cg3d.geometry.meshio import blender_input, face_loops, load_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corners", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for corners in args.corners:
            half = corners // 2
            order = [*range(4, half + 4), *range(half + 3, 3, -1)]
            words = [str(v).encode() for v in order]
            path = root / f"mirrored{corners}.obj"
            vertices = "".join(f"v {i % 7} {i % 11} {i % 13}\n" for i in range(half))
            face = "f " + " ".join(map(str, order)) + "\n"
            path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n" + vertices + "f 1 2 3\n" + face)
            rows = {
                "face_loops": lambda words=words: face_loops(words),
                "load_mesh": lambda path=path: load_mesh(path),
                "blender_input": lambda path=path: blender_input(path, root, "", root / "copies"),
            }
            for name, work in rows.items():
                print(f"{corners} corners  {name:14s} {best_seconds(work, args.repeat):.3f} s")


if __name__ == "__main__":
    main()
