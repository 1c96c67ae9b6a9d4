"""The meshes stage: synthetic generation and mesh validation (objects/s), cg3d against naive.

    python bench/bench_meshes.py [--per-class 100] [--workers 2]

Generation rows (the same objects, --per-class × 10 classes):
  naive: serial                   make_object then write_ply, one object after the other
  cg3d stage generation, pool     the synthetic source's parallel chunks (run_chunks), timed
                                  from the stage's own progress (generation phase only)
Validation rows (reading the generated files back; every row checks the same things):
  naive: trimesh.load + hash      trimesh.load(force="mesh") with its default processing
                                  (vertex merging), then sha256 of the whole file read at once
  cg3d load_mesh, serial          load_mesh (no processing, single-geometry fast path) + hash
  cg3d stage validation, pool     build_manifest's chunked validation (folder source over the
                                  same files, chunks of 250, --workers processes), manifest written
The last row is the whole `cg3d meshes` stage for the synthetic source, end to end.
"""

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import trimesh

from cg3d.files import file_sha256
from cg3d.geometry.meshio import load_mesh
from cg3d.pipeline.sources import MeshesConfig, build_manifest, synthetic
from cg3d.pipeline.sources.synthetic import GENERATORS, make_object, relpath, write_ply


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    objects = [(c, i) for c in GENERATORS for i in range(args.per_class)]
    n = len(objects)
    config = MeshesConfig(per_class=args.per_class, workers=args.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        serial = tmp / "serial"
        for class_name in GENERATORS:
            (serial / relpath(class_name, 0)).parent.mkdir(parents=True)

        def serial_generate() -> None:
            for class_name, index in objects:
                write_ply(serial / relpath(class_name, index), *make_object(class_name, index, 0))

        rows.append(("generate", "naive: serial", timed(serial_generate)))
        pool = f"{args.workers} processes"
        rows.append(
            (
                "generate",
                f"cg3d stage generation, {pool}",
                timed(lambda: synthetic.listing(config, tmp / "pool")),
            )
        )

        files = sorted(serial.rglob("*.ply"))

        def naive_validate() -> None:
            for path in files:
                trimesh.load(path, force="mesh")
                hashlib.sha256(path.read_bytes()).hexdigest()

        def cg3d_validate() -> None:
            for path in files:
                load_mesh(path)
                file_sha256(path)

        rows.append(("validate", "naive: trimesh.load + hash", timed(naive_validate)))
        rows.append(("validate", "cg3d load_mesh, serial", timed(cg3d_validate)))
        folder = MeshesConfig(
            source="folder", root=str(serial / "synthetic"), workers=args.workers, chunk_size=250
        )
        stage_validation = timed(lambda: build_manifest(folder, tmp / "folder"))
        rows.append(("validate", f"cg3d stage validation, {pool}", stage_validation))
        rows.append(
            (
                "stage",
                f"cg3d meshes --source synthetic, {pool}",
                timed(lambda: build_manifest(config, tmp / "stage")),
            )
        )

    baseline = {kind: seconds for kind, label, seconds in rows if label.startswith("naive")}
    print(f"{n} objects ({args.per_class} per class × {len(GENERATORS)} classes)")
    print("| step | way | seconds | objects/s | vs naive |\n|---|---|---:|---:|---:|")
    for kind, label, seconds in rows:
        ratio = f"{baseline[kind] / seconds:.1f}×" if kind in baseline else ""
        print(f"| {kind} | {label} | {seconds:.2f} | {n / seconds:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
