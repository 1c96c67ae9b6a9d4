"""`cg3d demo`: a local web page over the Python API and the retrieval index (Gradio).

Served on 127.0.0.1 only. Two tabs:

    Classify  upload a mesh or point cloud → an interactive 3D view of the points the model
              sees (the pipeline's load, sample and normalise), the top labels over the labels
              typed (empty: the checkpoint's classes) with their probabilities, then the views
              the render stage makes of a mesh (Blender; the page shows progress meanwhile)
    Search    a text and/or an image → a gallery of the index's best objects: first rendered
              view at its size, rank, class, score (with the decimals that tell neighbours
              apart) and id (whole on hover) (needs --index)

A model trained with a randomly initialised CLIP says so at the top of the page.

A broken, empty or unsupported upload puts its reason in the page's status line and the app
keeps serving. Uploads above `demo.max_upload_mb` MiB (default 50) are refused: by Gradio as
they arrive, and again by the handlers. Nothing is fetched from the internet (no analytics,
no web fonts).
"""

import collections
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 - after the analytics switch above
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cg3d.app.api import Model, load  # noqa: E402
from cg3d.app.index import Index, open_index  # noqa: E402
from cg3d.errors import UsageError  # noqa: E402
from cg3d.files import LiveTempDir, atomic_path, os_error_line  # noqa: E402
from cg3d.formats.pointfiles import POINT_SUFFIXES  # noqa: E402
from cg3d.formats.retrieval import read_retrieval  # noqa: E402
from cg3d.formats.tables import markdown_text  # noqa: E402
from cg3d.geometry.meshio import NAMED_UNSUPPORTED, SUPPORTED_SUFFIXES  # noqa: E402
from cg3d.models.model import check_cuda  # noqa: E402
from cg3d.params import MAX_LABELS, DemoConfig, RenderConfig  # noqa: E402
from cg3d.pipeline.chunks import WORKER_TEMP  # noqa: E402

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MESH_SUFFIXES = tuple(SUPPORTED_SUFFIXES)
UPLOAD_SUFFIXES = tuple(sorted(set(MESH_SUFFIXES) | set(POINT_SUFFIXES)))
MIB = 1 << 20
# A demo serves for days: its files on disk are bounded. The page keeps the newest point GLBs of
# its own (a visitor's browser has fetched each one by then), and Gradio deletes the uploads and
# outputs it copied into its cache once they are an hour old.
KEPT_GLBS = 32
CACHE_SECONDS = 3600
PROGRESS = gr.Progress()  # Gradio gives each call its own tracker in place of this default
# A gallery caption is one line cut with an ellipsis; on hover it wraps to show the whole id.
CSS = """
#gallery .gallery-item:hover .caption-label {
    white-space: normal;
    overflow-wrap: anywhere;
    max-width: calc(100% - 2 * var(--spacing-sm));
}
"""
RANDOM_CLIP_NOTE = (
    "**This model's CLIP is randomly initialised**, not pretrained: its text and image features "
    "learnt nothing from data, so labels outside the training classes and text or image "
    "searches are close to chance, and scores sit close together. See the README, "
    '"CLIP weights and the default numbers".'
)


def points_glb(points: np.ndarray, path: Path) -> Path:
    """The points as small octahedra, in their own rgb (columns 3:6, a colour model's input)
    or coloured by height, in a .glb that Model3D can turn."""
    import trimesh

    xyz = np.asarray(points, dtype=np.float32)[:, :3]
    # half-size of a marker in unit-sphere units: visible for 64 points, apart for 8192
    size = float(np.clip(0.5 / np.sqrt(max(len(xyz), 1)), 0.005, 0.04))
    offsets = size * np.array(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32
    )
    faces = np.array(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    )
    vertices = (xyz[:, None, :] + offsets[None]).reshape(-1, 3)
    all_faces = (faces[None] + 6 * np.arange(len(xyz))[:, None, None]).reshape(-1, 3)
    if points.shape[1] >= 6:
        colours = np.clip(np.asarray(points[:, 3:6], dtype=np.float64), 0.0, 1.0)
    else:
        height = (xyz[:, 1] - xyz[:, 1].min()) / max(float(np.ptp(xyz[:, 1])), 1e-9)
        colours = np.stack([0.2 + 0.8 * height, 0.4 * np.ones_like(height), 1 - 0.8 * height], 1)
    rgba = np.concatenate([colours, np.ones((len(xyz), 1))], 1)
    vertex_colours = (np.repeat(rgba, 6, axis=0) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices, all_faces, vertex_colors=vertex_colours, process=False)
    # atomic_path: a full disk leaves no partial GLB and is an OSError naming `path`
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="glb")
    return path


def score_texts(scores: list[float], fewest: int = 3, most: int = 6) -> list[str]:
    """The scores (best first) with the fewest decimals, from `fewest` to `most`, at which
    every two neighbours that differ show differently (random CLIP features score ~1.000)."""
    for digits in range(fewest, most + 1):
        texts = [f"{score:.{digits}f}" for score in scores]
        hidden = [  # neighbours that differ but would show alike
            scores[k] != scores[k + 1] and texts[k] == texts[k + 1] for k in range(len(texts) - 1)
        ]
        if not any(hidden):
            break
    return texts


def clip_is_random(model: Model) -> bool:
    """Whether the model runs with a randomly initialised CLIP (as the default pipeline's)."""
    from cg3d.models.clip import RANDOM_WEIGHTS

    return model.identity["clip_weights"] == RANDOM_WEIGHTS


class Demo:
    """The page's handlers around one model, an optional index and a Blender view renderer."""

    def __init__(self, model: Model, index: Index | None, config: DemoConfig, work_dir: Path):
        from cg3d.app.views import ViewRenderer

        self.model = model
        self.index = index
        self.config = config
        self.work_dir = Path(work_dir)
        self.glbs: collections.deque[Path] = collections.deque()  # `new_glb_path`'s, oldest first
        self.glbs_lock = threading.Lock()  # the page's handlers run in threads
        render = RenderConfig(views=max(config.views, 1), resolution=config.resolution)
        # Blender's temp folder in the demo's own, as the stages keep theirs in their --out:
        # one folder to remove at the end (or after a kill), never served (`blocked_paths`)
        workers = self.work_dir / WORKER_TEMP
        self.renderer = ViewRenderer(render, workers) if config.views else None

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()

    def new_glb_path(self) -> Path:
        """A fresh path for a point GLB; the oldest of the earlier ones beyond the newest
        `KEPT_GLBS - 1` are removed, so a long-running demo's folder stays bounded."""
        # In the order they were made, not by mtime: the wall clock stepped back (NTP, a
        # laptop's clock set) stamped the newest files older, and those went first
        with self.glbs_lock:
            while len(self.glbs) > KEPT_GLBS - 1:
                self.glbs.popleft().unlink(missing_ok=True)
            path = self.work_dir / f"{uuid.uuid4().hex}.glb"
            self.glbs.append(path)
        return path

    def check_upload(self, upload: str | None) -> Path:
        """The uploaded file, if it is one the page can use; else a UsageError saying why."""
        if not upload:
            raise UsageError("no file uploaded")
        path = Path(upload)
        if not path.is_file():
            raise UsageError(f"{path.name}: the upload did not arrive")
        size = path.stat().st_size
        if size == 0:
            raise UsageError(f"{path.name}: the file is empty")
        if size > self.config.max_upload_mb * MIB:
            raise UsageError(
                f"{path.name}: {size / MIB:.1f} MiB is over the {self.config.max_upload_mb:g} MiB "
                "upload limit"
            )
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            named = NAMED_UNSUPPORTED.get(path.suffix.lower())  # FBX, COLLADA, 3MF…
            conversion = f" ({named}: convert it to glTF/GLB)" if named else ""
            raise UsageError(
                f"{path.name}: unsupported file type {path.suffix or '(none)'}{conversion}; use "
                f"one of {' '.join(UPLOAD_SUFFIXES)}"
            )
        return path

    def classify(
        self, upload: str | None, labels: str, progress: gr.Progress = PROGRESS
    ) -> Iterator[tuple]:
        """Outputs (3D view, labels, views, status): the labels first, then the views."""
        try:
            path = self.check_upload(upload)
            progress(0.1, desc="sampling points")
            points = self.model.prepare(path, self.config.up_axis)
            progress(0.3, desc="classifying")
            # A visitor's list is bounded (demo.max_labels); the checkpoint's classes are not
            # theirs, and their features are cached after the first request.
            typed = bool((labels or "").strip())
            limit = self.config.max_labels if typed else MAX_LABELS
            predictions = self.model.classify(
                points, labels, self.config.top, prepared=True, max_labels=limit
            )
        except Exception as error:  # noqa: BLE001 - the page reports any failure and serves on
            yield None, None, [], self.failure(upload, error)
            return
        scores = {label: score for label, score in predictions}
        try:
            glb = points_glb(points, self.new_glb_path())
        except OSError as error:  # the demo's folder full or read-only: said, and it serves on
            yield None, scores, [], self.failure(upload, error, "its 3D view")
            return
        is_mesh = path.suffix.lower() in MESH_SUFFIXES and not self.is_point_ply(path)
        if self.renderer is None or not is_mesh:
            why = (
                "view rendering is off (--views 0)"
                if self.renderer is None
                else "a point cloud has no surface to render"
            )
            yield glb, scores, [], f"{markdown_text(path.name)}: {len(points)} points; {why}."
            return
        status = f"{markdown_text(path.name)}: {len(points)} points; rendering {self.config.views} views…"
        yield glb, scores, [], status
        progress(0.5, desc=f"rendering {self.config.views} views in Blender")
        try:
            views = self.renderer.render(path, self.config.up_axis)
        except Exception as error:  # noqa: BLE001 - as above
            yield glb, scores, [], self.failure(upload, error, "its views")
            return
        captions = [(view, f"view {i:02d}") for i, view in enumerate(views)]
        yield (
            glb,
            scores,
            captions,
            f"{markdown_text(path.name)}: {len(points)} points, {len(views)} views.",
        )

    @staticmethod
    def is_point_ply(path: Path) -> bool:
        """A PLY without faces is a point cloud (Blender has nothing to render)."""
        if path.suffix.lower() != ".ply":
            return False
        from cg3d.formats.pointfiles import read_point_file

        return read_point_file(path)[1] is None

    def search(self, text: str, image: str | Image.Image | None) -> tuple[list, str]:
        """Outputs (gallery of (view, caption), status)."""
        if self.index is None:
            return [], "No index loaded: start the demo with `--index DIR` (built by `cg3d index`)."
        text = (text or "").strip() or None
        if text is None and image is None:
            return [], "Type a text or upload an image to search."
        try:
            hits = self.index.search(text=text, image=image, top=self.config.gallery)
        except Exception as error:  # noqa: BLE001 - the page reports any failure and serves on
            query = image if isinstance(image, str) else None  # the server's path of an upload
            return [], f"**Search failed:** {markdown_text(self.reason(query, error))}"
        blank = Image.new("RGB", (64, 64), "white")
        scores = score_texts([hit.score for hit in hits])
        gallery = [
            (self.index.thumbnail(hit) or blank, f"#{rank} · {hit.class_name} · {score} · {hit.id}")
            for rank, (hit, score) in enumerate(zip(hits, scores, strict=True), start=1)
        ]
        return gallery, f"{len(hits)} of {len(self.index)} objects."

    @staticmethod
    def failure(upload: str | None, error: Exception, what: str = "this upload") -> str:
        """The status line of a failed request: the reason, in words."""
        return f"**Could not use {what}:** {markdown_text(Demo.reason(upload, error))}"

    @staticmethod
    def reason(upload: str | None, error: Exception) -> str:
        """Why a request failed, in words: the uploaded file by its name, not by the server's
        temp path."""
        reason = str(error) if isinstance(error, UsageError) else f"{type(error).__name__}: {error}"
        if isinstance(error, OSError) and error.filename and error.strerror:
            # A write of the demo's own (its folder's disk full, read-only): the page names the
            # file and the cause, not the server's path; the one serving it is told in full.
            log.warning(os_error_line(error))
            reason = f"{Path(error.filename).name}: {error.strerror}"
        if upload:
            reason = reason.replace(str(upload), Path(upload).name)
        return reason

    def blocks(self) -> gr.Blocks:
        """The page."""
        classes = ", ".join(self.model.classes) or "none recorded"
        with gr.Blocks(
            title="CG3D demo",
            analytics_enabled=False,
            delete_cache=(CACHE_SECONDS, CACHE_SECONDS),
        ) as page:
            gr.Markdown(
                f"# CG3D\nCheckpoint {markdown_text(self.model.checkpoint.name)} · "
                f"{self.model.n_points} points per shape · index: "
                f"{f'{len(self.index)} objects' if self.index else 'none'}"
            )
            if clip_is_random(self.model):
                gr.Markdown(RANDOM_CLIP_NOTE, elem_id="random-clip")
            with gr.Tab("Classify"):
                with gr.Row():
                    upload = gr.File(
                        label=f"Mesh or point cloud ({' '.join(UPLOAD_SUFFIXES)}; at most "
                        f"{self.config.max_upload_mb:g} MiB)",
                        type="filepath",
                        elem_id="upload",
                    )
                    labels = gr.Textbox(
                        label="Labels (comma-separated)",
                        placeholder=f"empty: the checkpoint's classes ({classes})",
                        elem_id="labels",
                    )
                run = gr.Button("Classify", variant="primary", elem_id="classify")
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    cloud = gr.Model3D(label="Sampled points", elem_id="points")
                    top = gr.Label(
                        num_top_classes=self.config.top, label="Top labels", elem_id="top"
                    )
                views = gr.Gallery(
                    label="Rendered views",
                    columns=4,
                    height=300,
                    object_fit="scale-down",  # at their size, never upscaled
                    elem_id="views",
                )
                outputs = [cloud, top, views, status]
                # one progress bar, on the status line, not a copy over every result panel
                for event in (upload.upload, run.click, labels.submit):
                    event(self.classify, [upload, labels], outputs, show_progress_on=status)
            with gr.Tab("Search"):
                with gr.Row():
                    query = gr.Textbox(label="Text", placeholder="a chair", elem_id="query")
                    # The file's path, not gradio's PIL decoding: the query goes through our
                    # one image rule (`formats.images.open_image`), whose line the page shows.
                    image = gr.Image(
                        label="Image",
                        type="filepath",
                        image_mode=None,
                        height=240,
                        elem_id="query-image",
                    )
                find = gr.Button("Search", variant="primary", elem_id="search")
                search_status = gr.Markdown(elem_id="search-status")
                gallery = gr.Gallery(
                    label="Best matches",
                    columns=4,
                    height=420,
                    object_fit="scale-down",  # thumbnails at their size, never upscaled
                    elem_id="gallery",
                )
                for event in (find.click, query.submit, image.upload):
                    event(
                        self.search,
                        [query, image],
                        [gallery, search_status],
                        show_progress_on=search_status,
                    )
        return page


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def serve(checkpoint: Path, index_path: Path | None, config: DemoConfig) -> None:
    """Load the model (and index), then serve the page on 127.0.0.1 until interrupted."""
    config.validate()
    if index_path:  # a folder that is no index: one line before the model loads
        read_retrieval(index_path)
    check_cuda(config.device, "demo.device")  # before the model loads
    model = load(checkpoint, config.device, config.clip_pretrained or None)
    index = open_index(index_path, model) if index_path else None
    port = config.port or free_port()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    with LiveTempDir("cg3d-demo-") as work:  # a SIGKILLed demo's: removed by the next
        demo = Demo(model, index, config, Path(work))
        try:
            print(f"cg3d demo: http://{HOST}:{port}", flush=True)
            demo.blocks().queue(default_concurrency_limit=1).launch(
                server_name=HOST,
                server_port=port,
                max_file_size=int(config.max_upload_mb * MIB),
                allowed_paths=[work],
                blocked_paths=[str((Path(work) / WORKER_TEMP).resolve())],
                ssr_mode=False,
                show_error=True,
                quiet=True,
                theme=theme,
                css=CSS,
            )
        finally:
            demo.close()
