"""The Blender side: one long-lived process that reads object after object, the importer of
record of both the views and the points.

Run as `python -m cg3d.render.worker SETTINGS_JSON` by the supervisor (`supervisor.py`).
Blender starts once; between objects the imported data are deleted and orphans purged, so
memory stays flat. Protocol: JSON lines, no pickle. The worker prints `{"ready": ...}` once
set up (or `{"ready": false, "error"}` when its settings cannot be honoured here, e.g. no GPU
of the asked `cycles_device`, and exits), then answers each request line

    {"op": "render", "id", "path", "root", "sha256", "up_axis", "out_dir",
     "views": [{"name", "world_to_camera"}]}
    {"op": "points", "id", "path", "root", "sha256", "up_axis", "out",
     "sample": {every `SampleConfig` field}}

with `{"id", "ok": true, "rss_mb"}` after writing `out_dir/<id>.<name>.png` (RGBA) per view,
or the sampled cloud to `out` (.npy; the reply adds `has_color`), or
`{"id", "ok": false, "reason": "kind: words", "retry"}` (`retry`: Blender itself raised, so a
fresh worker tries once more). Blender's chatter on stdout goes to stderr so
that stdout carries only the protocol. Settings `{"role": "points"}` set up no camera or engine.

One reading (`Renderer.load`): Blender's importers for OBJ (with its .mtl), PLY, STL and
glTF/GLB; OFF (no Blender importer) is built from `cg3d.geometry.meshio.load_mesh` arrays.
Everything the worker computes besides Blender's import comes from `cg3d.geometry`, below the
stages: the worker never imports `cg3d.pipeline`.
The evaluated scene (`cg3d.render.surface`: skins posed, instances placed, Draco decoded) is
taken back to the file's own coordinates, rotated to the canonical frame of its up axis and
normalised with `normalization` of its triangles' vertices; the views are rendered and the
points sampled from that one surface. Only mesh formats are imported, never a .blend, and
Blender's script auto-run is off. Never imports torch.
"""

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from cg3d.geometry.surface import Surface
from cg3d.params import ENGINES

# Canonical (+Y up) to Blender's world (+Z up): (x, y, z) → (x, -z, y).
CANONICAL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# Blender's camera looks down its -Z with +Y up; OpenCV's looks down +Z with +Y down.
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])
# Importers that take axis options are told to keep the file's axes (forward Y, up Z is the
# identity); the glTF importer always turns glTF's +Y up into Blender's +Z up.
KEEP_AXES = {"forward_axis": "Y", "up_axis": "Z"}
IMPORTED_TO_FILE = {
    ".obj": np.eye(3),
    ".ply": np.eye(3),
    ".stl": np.eye(3),
    ".glb": CANONICAL_TO_BLENDER.T,
    ".gltf": CANONICAL_TO_BLENDER.T,
    ".off": np.eye(3),
}
MESH_FORMATS = tuple(IMPORTED_TO_FILE)
FAULTS_ENV = "CG3D_RENDER_TEST_FAULTS"  # test hook: {"<object id>": "crash" | "hang"}


class StartFailure(Exception):
    """The settings cannot be honoured on this machine (a GPU device that is not there): the
    worker replies `{"ready": false, "error": "<param>: words"}` and exits, the stage stops."""


class RenderFailure(Exception):
    """A per-object failure; the message is `kind: words`."""


class ImporterFailure(RenderFailure):
    """Blender's importer raised: the supervisor has a fresh worker try once more before the
    failure is final, so that no outcome depends on what a worker imported before."""


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every whole PNG ends with
WRITE_PROBE_BYTES = 4 << 20


def check_written(path: str) -> None:
    """Raise when the PNG Blender just wrote is not whole. Its image writer ignores a failed
    write: on a full disk it logs "Saved" and leaves an empty or cut file, which the stage read
    back as a bad image (a traceback). A probe written beside it then gives the cause as the
    file system states it (ENOSPC, EDQUOT, EROFS: an OSError naming the PNG, which stops the
    stage); a probe that fits leaves it a failure of this object."""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as image:
        if image.seek(0, os.SEEK_END) >= len(PNG_END):
            image.seek(-len(PNG_END), os.SEEK_END)
            if image.read() == PNG_END:
                return
    probe = f"{path}.probe"
    try:
        with open(probe, "wb") as handle:
            handle.write(bytes(WRITE_PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OSError(error.errno, error.strerror, path) from error
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    raise RenderFailure(f"render: Blender did not write {os.path.basename(path)} whole")


def one_line(text: str, limit: int = 200) -> str:
    """The last line of a report (a traceback's exception line), at most `limit` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Location:", "^", "~"))]
    return (lines[-1] if lines else "no report")[:limit]


def importer_reason(report: str, path: Path) -> str:
    """One line naming why Blender's importer raised: `undecodable` only when it raised inside
    its Draco decoder, else `unreadable` with the exception it raised (a failed Draco decode
    that does not raise leaves no triangles: `_no_triangles_reason`)."""
    frames = [line for line in report.splitlines() if line.strip().startswith("File ")]
    compression = _compression_used(path)
    if compression and frames and "draco" in frames[-1].lower():
        return f"undecodable: the {compression} payload: {one_line(report)}"
    return f"unreadable: Blender's importer failed: {one_line(report)}"


def bpy_import_line(error: ImportError) -> str:
    """Why Blender cannot start in this Python, with the pip command that mends it: bpy absent
    (a `pip install cg3d` that skipped it, a conda env), or present but failing to import (a
    broken wheel, a system library it links missing). bpy 5.0.1 is built against numpy 1:
    beside numpy 2 the line says so too (with numpy 2.2, bpy 5.0.1 still imports, printing
    numpy's warning into the worker's log, and renders)."""
    from cg3d.errors import install_command

    if isinstance(error, ModuleNotFoundError) and error.name == "bpy":
        return f"Blender: this Python ({sys.executable}) has no bpy: {install_command('bpy')}"
    words = f"Blender: bpy failed to import ({one_line(str(error))})"
    numpy_version = np.__version__
    if int(numpy_version.split(".")[0]) >= 2:
        words += (
            f"; bpy is built against numpy 1, this Python has numpy {numpy_version}:"
            f" {install_command('numpy')}"
        )
    return words


def homogeneous(matrix3: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = matrix3
    return out


class Renderer:
    """One Blender scene set up once (camera, lights, engine) and reused for every object."""

    def __init__(self, settings: dict) -> None:
        try:
            import bpy
        except ImportError as error:  # not installed, or a broken install
            raise StartFailure(bpy_import_line(error)) from None

        self.bpy = bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.preferences.filepaths.use_scripts_auto_execute = False
        self.settings = settings
        self.scene = bpy.context.scene
        if settings.get("role") != "points":
            self._setup_camera()
            self._setup_engine()
        self.keep = {obj.name for obj in bpy.data.objects}
        self.faults = json.loads(os.environ.get(FAULTS_ENV, "{}"))

    def _setup_camera(self) -> None:
        bpy, scene = self.bpy, self.scene
        data = bpy.data.cameras.new("camera")
        data.sensor_fit = "HORIZONTAL"
        data.angle = math.radians(self.settings["fov_deg"])
        data.clip_start, data.clip_end = 0.01, 100.0
        self.camera = bpy.data.objects.new("camera", data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        render = scene.render
        render.resolution_x = render.resolution_y = self.settings["resolution"]
        render.resolution_percentage = 100
        render.film_transparent = True  # the supervisor puts the background in
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode = "RGBA"
        render.image_settings.compression = 15
        # No metadata in the PNGs (date, render time, host name...): same input, same bytes.
        for prop in render.bl_rna.properties:
            if prop.identifier.startswith("use_stamp"):
                setattr(render, prop.identifier, False)
        scene.view_settings.view_transform = "Standard"

    def _setup_engine(self) -> None:
        bpy, scene = self.bpy, self.scene
        scene.render.engine = ENGINES[self.settings["engine"]]
        if self.settings["engine"] == "workbench":
            # Studio lighting follows the camera, and cavity shading darkens creases: shape,
            # not a flat silhouette. The colour source is chosen per object (`colour_source`).
            shading = scene.display.shading
            shading.light = "FLAT" if self.settings.get("flat") else "STUDIO"
            shading.show_cavity = not self.settings.get("flat")
            shading.cavity_type = "WORLD"
            scene.display.render_aa = "5"  # 5 samples: half the time of 8, edges still smooth
            return
        if self.settings.get("threads"):  # its share of the CPUs: AUTO takes one per CPU each
            scene.render.threads_mode = "FIXED"
            scene.render.threads = self.settings["threads"]
        scene.cycles.device = self._cycles_device()
        scene.cycles.samples = self.settings["samples"]
        scene.cycles.use_denoising = False
        scene.cycles.max_bounces = 4
        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.35
        scene.world = world
        # A key light from above the camera's left shoulder, parented to the camera so every
        # view is lit alike; the dim white world fills the shadows.
        sun = bpy.data.objects.new("key", bpy.data.lights.new("key", "SUN"))
        sun.data.energy = 3.0
        sun.data.angle = math.radians(10)
        sun.parent = self.camera
        sun.rotation_euler = (math.radians(-35), math.radians(-35), 0.0)
        scene.collection.objects.link(sun)

    def _cycles_device(self) -> str:
        """Cycles' `scene.cycles.device` for `cycles_device`: CPU, or GPU with every device of
        the asked type (CUDA, OPTIX) enabled and the CPU left out (it would share tiles with
        the GPU and compete with the other workers). No such device: a `StartFailure`."""
        asked = self.settings["cycles_device"].upper()
        if asked == "CPU":
            return "CPU"
        preferences = self.bpy.context.preferences.addons["cycles"].preferences
        preferences.compute_device_type = asked
        found = [d for d in preferences.get_devices_for_type(asked) if d.type == asked]
        if not found:
            raise StartFailure(
                f"render.cycles_device: no {asked} device on this machine (Blender's Cycles "
                f"sees {', '.join(sorted({d.type for d in preferences.devices})) or 'none'})"
            )
        for device in preferences.devices:
            device.use = device.type == asked
        return "GPU"

    def warm_up(self) -> None:
        """One render of the empty scene, so shader compilation is not charged to an object."""
        if self.settings.get("role") == "points":
            return
        self.scene.render.filepath = os.path.join(self.settings["tmp_dir"], "warm_up.png")
        self.bpy.ops.render.render(write_still=True)

    def clear(self) -> None:
        """Delete everything an import added and purge the orphaned data (memory stays flat)."""
        bpy = self.bpy
        for obj in list(bpy.data.objects):
            if obj.name not in self.keep:
                bpy.data.objects.remove(obj, do_unlink=True)
        for collection in list(bpy.data.collections):
            bpy.data.collections.remove(collection)
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def import_mesh(self, path: Path) -> list:
        """Import one mesh file; return the new objects."""
        bpy = self.bpy
        suffix = path.suffix.lower()
        if suffix not in MESH_FORMATS:
            raise RenderFailure(f"unsupported_format: {suffix or 'no suffix'} is not a mesh format")
        before = set(bpy.data.objects)
        try:
            if suffix == ".obj":
                bpy.ops.wm.obj_import(filepath=str(path), **KEEP_AXES)
            elif suffix == ".ply":
                bpy.ops.wm.ply_import(filepath=str(path), **KEEP_AXES)
            elif suffix == ".stl":
                bpy.ops.wm.stl_import(filepath=str(path), **KEEP_AXES)
            elif suffix in (".glb", ".gltf"):
                bpy.ops.import_scene.gltf(filepath=str(path))
            else:
                self._build_from_arrays(path)
        except RenderFailure:
            raise
        except Exception as error:  # importers raise RuntimeError with Blender's report
            raise ImporterFailure(importer_reason(str(error), path)) from error
        new = [obj for obj in bpy.data.objects if obj not in before]
        # A glTF file may bring its own cameras and lights: the views use ours alone.
        for obj in [obj for obj in new if obj.type in ("CAMERA", "LIGHT")]:
            keep_world_places(bpy, obj.children)
            new.remove(obj)
            bpy.data.objects.remove(obj, do_unlink=True)
        return new

    def _build_from_arrays(self, path: Path) -> None:
        from cg3d.geometry.meshio import MeshError, load_mesh

        try:
            mesh = load_mesh(path)
        except MeshError as error:
            raise RenderFailure(str(error)) from error
        from cg3d.geometry.frame import origin_offset

        data = self.bpy.data.meshes.new(path.stem)
        # Blender's float32 holds them near the origin: moved by a vertex a face uses (a stray
        # one no face names, written first, is not the object's place)
        vertices = mesh.vertices - origin_offset(mesh.vertices[mesh.faces[0, 0]])
        data.from_pydata(vertices.tolist(), [], np.asarray(mesh.faces).tolist())
        data.validate()
        obj = self.bpy.data.objects.new(path.stem, data)
        self.scene.collection.objects.link(obj)

    def load(self, request: dict, colors: bool = False) -> Surface:
        """Import the request's file and put it in the canonical, normalised frame; return its
        surface in that frame (the triangles the views show; their colours too with `colors`).
        The file is checked now, as it is opened (`blender_input`: inside `root`, the listed
        bytes, its references confined), and Blender imports what was checked."""
        from cg3d.files import zero_tail
        from cg3d.geometry.frame import canonical_rotation, float32_quantization, normalization
        from cg3d.geometry.meshio import (
            Mesh,
            MeshError,
            blender_input,
            check_mesh,
            defined_materials,
        )
        from cg3d.render.surface import evaluated_surface

        self.clear()
        folder = Path(self.settings["tmp_dir"]) / "source"
        try:
            path = blender_input(request["path"], request["root"], request["sha256"], folder)
        except MeshError as error:
            raise RenderFailure(str(error)) from error
        up_axis = request["up_axis"]
        suffix = path.suffix.lower()
        objects = self.import_mesh(path)
        self.bpy.context.view_layer.update()
        self._move_near_origin(objects)
        defined = defined_materials(path) if suffix == ".obj" and colors else None
        surface, counts = evaluated_surface(self.bpy, colors, defined)
        if not len(surface.triangles):
            raise RenderFailure(_no_triangles_reason(path, counts))
        # Blender's world back to the file's axes, then to the canonical +Y up.
        to_canonical = homogeneous(canonical_rotation(up_axis) @ IMPORTED_TO_FILE[suffix])
        canonical = surface.transformed(to_canonical)
        vertices = canonical.triangles.reshape(-1, 3)
        try:
            check_mesh(Mesh(vertices, np.arange(len(vertices)).reshape(-1, 3)))
            centre, scale = normalization(vertices)
        except MeshError as error:
            # a GLB cut short and zero-filled reads as zeros (no check refuses zeros in a GLB);
            # the user's file, not Blender's copy of it (its JSON rewritten: another size)
            zeros = zero_tail(Path(request["path"])) if error.kind == "degenerate" else ""
            raise RenderFailure(f"{error}; {zeros}" if zeros else str(error)) from error
        except ValueError as error:
            raise RenderFailure(f"degenerate: {error}") from error
        # Blender holds vertices and transforms in float32: an OBJ in UTM metres (4e6 m) was
        # imported on a 0.25 m grid, and its views and points were of a blocky object
        quantized = float32_quantization(vertices)
        if quantized:
            raise RenderFailure(f"quantized: Blender holds {quantized}; move it nearer the origin")
        normalise = np.eye(4) * scale
        normalise[3, 3] = 1.0
        normalise[:3, 3] = -scale * centre
        from mathutils import Matrix

        root = self.bpy.data.objects.new("object_root", None)
        self.scene.collection.objects.link(root)
        for obj in objects:
            if obj.parent is None:
                obj.parent = root
        root.matrix_world = Matrix(
            (homogeneous(CANONICAL_TO_BLENDER) @ normalise @ to_canonical).tolist()
        )
        return canonical.transformed(normalise)

    def _move_near_origin(self, objects: list) -> None:
        """Move imported objects placed far out (a glTF node at a UTM offset) near the origin,
        all by one whole-unit offset (`origin_offset` of the first mesh's place): Blender
        composes their matrices in float32, which would draw them off their frame there."""
        from cg3d.geometry.frame import origin_offset

        first = next((obj for obj in objects if obj.type == "MESH"), None)
        if first is None:
            return
        offset = origin_offset(np.array(first.matrix_world.translation))
        if not offset.any():
            return
        for obj in objects:
            if obj.parent is None:
                obj.location = (np.array(obj.location) - offset).tolist()
        self.bpy.context.view_layer.update()

    def sample(self, request: dict) -> dict:
        """Sample the points of one object from its surface (`cg3d.geometry.sampling`), with
        the sample stage's whole config as sent (no field falls back to a default here)."""
        from cg3d.formats.npy import write_npy
        from cg3d.geometry.sampling import object_rng, points_from_surface
        from cg3d.params import SampleConfig

        self._fault(request["id"])
        config = SampleConfig(**request["sample"])
        surface = self.load(request, colors=config.colors)
        cloud, has_color = points_from_surface(
            surface, config, object_rng(config.seed, request["id"])
        )
        write_npy(request["out"], cloud)  # a full disk: an OSError with its errno (`serve`)
        self.clear()
        return {"has_color": has_color}

    def _fault(self, object_id: str) -> None:
        fault = self.faults.get(object_id)
        if fault == "crash":
            os._exit(3)
        if fault == "hang":
            time.sleep(3600)

    def render(self, request: dict) -> None:
        object_id = request["id"]
        self._fault(object_id)
        self.load(request)
        if self.settings["engine"] == "workbench":
            self.scene.display.shading.color_type = colour_source(self.bpy.data.objects)
        else:
            unlink_missing_textures(self.bpy.data.objects)
        from mathutils import Matrix

        for view in request["views"]:
            camera_to_world = np.linalg.inv(np.array(view["world_to_camera"]))
            blender_pose = (
                homogeneous(CANONICAL_TO_BLENDER) @ camera_to_world @ OPENCV_TO_BLENDER_CAMERA
            )
            self.camera.matrix_world = Matrix(blender_pose.tolist())
            self.scene.render.filepath = os.path.join(
                request["out_dir"], f"{object_id}.{view['name']}.png"
            )
            self.bpy.ops.render.render(write_still=True)
            check_written(self.scene.render.filepath)
        self.clear()


def keep_world_places(bpy, children) -> None:
    """Give the children of an object about to be removed its parent, where they stay: a
    mesh under a glTF camera or light node lost the node's transform with it (the importer's
    Y-up correction of cameras and lights too: the object came out turned 90 degrees)."""
    for child in children:
        world = child.matrix_world.copy()
        child.parent = child.parent.parent
        child.matrix_world = world
        bpy.context.view_layer.update()


def colour_source(objects) -> str:
    """Workbench's colour for this object, in the order the coloured points take theirs
    (`cg3d.geometry.surface`): image textures, vertex colours, or material colours.

    Workbench draws a material's viewport colour, which importers leave grey, so the base
    colour of its Principled BSDF is copied over (Cycles reads the node tree itself); and it
    draws a material's active image texture node, so the base colour's one is made active
    (not a roughness or emission map), as the points take theirs (`base_color_texture`).
    A texture whose image is missing is not drawn (Blender's magenta): the material shows the
    colour the file states under it, as the points take it (`untextured_color`).
    """
    from cg3d.render.surface import base_color_socket, base_color_texture, untextured_color

    meshes = [obj.data for obj in objects if obj.type == "MESH"]
    materials = _node_materials(meshes)
    has_texture = False
    for material in materials:
        socket = base_color_socket(material)
        if socket is not None:
            material.diffuse_color = socket.default_value
        texture = base_color_texture(material)
        if texture is not None and texture.image.size[0]:
            material.node_tree.nodes.active = texture
            has_texture = True
        elif texture is not None:
            # An MTL's Kd is the socket's value already; a glTF's factor is on a Multiply mix.
            # Where the file states neither, the importer's grey stays: a view draws something.
            colour = untextured_color(material, stated=True)
            if colour is not None:
                material.diffuse_color = (*colour, 1.0)
    if has_texture:
        return "TEXTURE"
    return "VERTEX" if any(len(mesh.color_attributes) for mesh in meshes) else "MATERIAL"


def unlink_missing_textures(objects) -> None:
    """Cycles draws an image texture whose file is missing magenta: such a texture on a base
    colour's chain is unlinked, so the chain gives what the file states under it, as the
    points and workbench views take it (`untextured_color`): an MTL's Kd, the BSDF socket's
    value; a glTF's factor, on the Multiply mix whose texture input is made white (the
    multiply's identity); the importer's grey where the file states neither."""
    from cg3d.render.surface import base_color_texture

    materials = _node_materials([obj.data for obj in objects if obj.type == "MESH"])
    for material in materials:
        texture = base_color_texture(material)
        if texture is None or texture.image.size[0]:
            continue
        for link in list(texture.outputs["Color"].links):
            target = link.to_socket
            material.node_tree.links.remove(link)
            if target.node.type == "MIX":
                target.default_value = (1.0, 1.0, 1.0, 1.0)


def _node_materials(meshes) -> set:
    """The node-based materials of `meshes`, each once (meshes share them)."""
    return {m for mesh in meshes for m in mesh.materials if m is not None and m.node_tree}


def _no_triangles_reason(path: Path, counts: dict) -> str:
    """Why an imported file has no triangles: lines, a point cloud, an undecodable payload."""
    compression = _compression_used(path)  # a failed decode leaves a stray vertex or none
    if compression:
        return f"undecodable: the {compression} payload did not decode into triangles"
    if counts["edges"]:
        return f"no_faces: the file holds only lines ({counts['edges']} edges, no faces)"
    if counts["loose_vertices"]:
        return f"no_faces: a point cloud ({counts['loose_vertices']} vertices, no faces)"
    return "empty: the file holds no faces"


def _compression_used(path: Path) -> str:
    """The mesh compression extension a glTF file uses, or ""."""
    from cg3d.geometry.meshio import COMPRESSION_EXTENSIONS, GLTF_SUFFIXES, MeshError, gltf_document

    if path.suffix.lower() not in GLTF_SUFFIXES:
        return ""
    try:
        used = set(gltf_document(path).get("extensionsUsed", []))
    except MeshError:
        return ""
    return next((e for e in COMPRESSION_EXTENSIONS if e in used), "")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def serve(settings: dict) -> None:
    """Answer render requests from stdin until it closes."""
    from cg3d.files import stopping_error

    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # Blender's prints go to stderr

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        renderer = Renderer(settings)
    except StartFailure as failure:
        reply({"ready": False, "error": str(failure)})
        return
    renderer.warm_up()
    reply({"ready": True, "rss_mb": rss_mb()})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            extra = {}
            if request.get("op") == "points":
                extra = renderer.sample(request)
            else:
                renderer.render(request)
        except MemoryError:
            # Past the data-segment limit the supervisor set (`render.worker_memory`): this
            # process may be in any state, so it answers and exits; the next object gets a
            # fresh one.
            reason = "memory: the object needs more than this worker's memory limit"
            reply(
                {"id": request["id"], "ok": False, "reason": reason, "retry": True, "exiting": True}
            )
            return
        except Exception as error:  # a bad file, or Blender raised something unexpected
            renderer.clear()
            # a full disk or a network disk's error (a RenderFailure's cause too) is not the
            # object's fault: the stage stops
            if stop := stopping_error(error):
                no_room = {"errno": stop.errno, "file": stop.filename}
                reply({"id": request["id"], "ok": False, "reason": str(stop), "no_room": no_room})
            elif isinstance(error, RenderFailure):
                retry = isinstance(error, ImporterFailure)
                reply({"id": request["id"], "ok": False, "reason": str(error), "retry": retry})
            else:
                reason = f"render: {type(error).__name__}: {one_line(str(error))}"
                reply({"id": request["id"], "ok": False, "reason": reason, "retry": True})
            continue
        reply({"id": request["id"], "ok": True, "rss_mb": rss_mb(), **extra})


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
