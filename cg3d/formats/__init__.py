"""The on-disk artifacts of the pipeline, one reader and one writer each (docs/formats.md).

    manifest.py   meshes stage   manifest.parquet (one row per object) and classes.json
    failures.py   every stage    failures.parquet (id, stage, reason)
    points.py     sample stage   part-XXXXX.parquet (id, points flattened, n_points)
    renders.py    render stage   part-XXXXX.tar of <id>.view_XX.png and <id>.cameras.json
    captions.py   caption stage  captions.parquet (id, captions)
    shards.py     pack stage     {split}/shard-XXXXXX.tar (WebDataset), index.json and the
                                 per-shard records, local or remote (URL, `pipe:`); the one
                                 sample decoder; the readers skip and count bad samples
    retrieval.py  cg3d index     the retrieval index: parts, merged arrays, retrieval.json
    npy.py        from outside a .npy array, its header bounded before allocating (no pickle)
    pointfiles.py the user       point files given to the app, classify and scene
    metrics.py    train, eval    metrics.json (numbers only) and about.json (what was measured)
    tar.py        the deterministic tar writer and the one tar reader the others use
    versions.py   which cg3d wrote a file: its format tag, the one check of another version's
    intact.py     whether a written part is whole (Parquet footer, tar end), for resume, and
                  the one-line error of a damaged file naming the stage that rebuilds it

Checkpoints belong to the model library (`cg3d.models.checkpoint`). Stages, `verify`, `show`,
the loader, eval and the app read and write these files only through this package.
"""
