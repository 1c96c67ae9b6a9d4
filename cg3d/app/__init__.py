"""CG3D in people's hands: the Python API, the retrieval index and the local web demo.

    api.py       `load(checkpoint)` → `Model`: embed points, text and images; classify a shape
                 through the pipeline's own load, sample and normalise
    index.py     `build_index` (`cg3d index`) embeds a shard set once; `open_index` → `Index`
                 answers text, image and point queries from it
    views.py     an upload's views, rendered by the pipeline's own Blender worker
    demo.py      `cg3d demo`: a local Gradio page over the two above
    commands.py  the `index` and `demo` commands

`import cg3d` exposes `cg3d.load` and `cg3d.open_index` without importing torch; these modules
import it when first used.
"""
