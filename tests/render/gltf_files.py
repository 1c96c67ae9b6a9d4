"""Real-format glTF test files: written by Blender's own glTF exporter (skinned, instanced,
Draco, textured) or by hand with numpy (a sparse accessor, a point primitive beside triangles).

The Blender ones run in a subprocess (`python -m tests.render.gltf_files KIND PATH`) so that the
test process never imports bpy.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

BLENDER_KINDS = (
    "skinned",
    "instanced",
    "draco",
    "draco_features",
    "textured",
    "zup_obj",
    "vertex_colours_mr",
    "four_maps",
)
RED = (0.9, 0.05, 0.05)  # vertex_colours_mr's vertex colour (sRGB)
MR_RGB = (0.6, 0.5, 0.9)  # its metallic-roughness map: lavender, if read as a colour


def blender_file(kind: str, path: Path) -> Path:
    """Write a file of `kind` (one of BLENDER_KINDS) with Blender's exporter."""
    subprocess.run(
        [sys.executable, "-m", "tests.render.gltf_files", kind, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return path


def _bent_bar(bpy) -> object:
    """A tall bar of 8 segments skinned to two bones; the pose bends the top half by 90°."""
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    bar = bpy.context.object
    bar.scale = (0.2, 0.2, 2.0)
    bpy.ops.object.transform_apply(scale=True)
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide(number_cuts=7)
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.ops.object.armature_add(location=(0.0, 0.0, -1.0))
    armature = bpy.context.object
    bpy.ops.object.mode_set(mode="EDIT")
    lower = armature.data.edit_bones[0]
    lower.head, lower.tail = (0, 0, 0), (0, 0, 1)
    upper = armature.data.edit_bones.new("upper")
    upper.head, upper.tail, upper.parent = (0, 0, 1), (0, 0, 2), lower
    bpy.ops.object.mode_set(mode="OBJECT")
    bar.select_set(True)
    armature.select_set(True)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.parent_set(type="ARMATURE_AUTO")
    pose = armature.pose.bones["upper"]
    pose.rotation_mode = "XYZ"
    pose.rotation_euler = (1.5708, 0.0, 0.0)
    pose.keyframe_insert("rotation_euler", frame=1)
    return bar


def _make(kind: str, path: str) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    options = {}
    if kind == "skinned":
        _bent_bar(bpy)
        options = {"export_skins": True, "export_animations": True}
    elif kind == "instanced":
        bpy.ops.mesh.primitive_cone_add(vertices=16, radius1=0.5, depth=1.0)
        cone = bpy.context.object
        for k in range(1, 4):
            copy = cone.copy()  # shares cone's mesh: one glTF mesh used by several nodes
            copy.location = (1.5 * k, 0.0, 0.3 * k)
            bpy.context.scene.collection.objects.link(copy)
        options = {"export_gpu_instances": True}
    elif kind == "draco":
        bpy.ops.mesh.primitive_monkey_add()
        bpy.ops.object.modifier_add(type="SUBSURF")
        options = {"export_draco_mesh_compression_enable": True}
    elif kind == "draco_features":
        # Draco with two application-specific vertex attributes of different shapes, and the
        # EXT_mesh_features extension naming one (added to the JSON below, as Cesium writes).
        bpy.ops.mesh.primitive_cube_add(size=1.0)
        bpy.context.object.scale = (0.5, 1.0, 2.0)
        mesh = bpy.context.object.data
        count = len(mesh.vertices)
        feature = mesh.attributes.new("_FEATURE_ID_0", "FLOAT", "POINT")
        feature.data.foreach_set("value", [float(i % 3) for i in range(count)])
        extra = mesh.attributes.new("_TEMPERATURE", "FLOAT_VECTOR", "POINT")
        extra.data.foreach_set("vector", [0.5] * (3 * count))
        options = {"export_draco_mesh_compression_enable": True, "export_attributes": True}
        bpy.ops.export_scene.gltf(filepath=path, export_format="GLB", **options)
        _add_mesh_features(Path(path))
        return
    elif kind == "textured":
        _textured_cube(bpy)
    elif kind == "vertex_colours_mr":
        _vertex_coloured_cube(bpy)
    elif kind == "four_maps":
        _four_maps_cube(bpy)
    elif kind == "zup_obj":
        # A tall thin bar along +Z (Blender's up), written with Z up: lying down if read Y-up.
        bpy.ops.mesh.primitive_cube_add(size=1.0)
        bpy.context.object.scale = (0.2, 0.4, 2.0)
        bpy.ops.wm.obj_export(filepath=path, forward_axis="Y", up_axis="Z", export_materials=False)
        return
    bpy.ops.export_scene.gltf(filepath=path, export_format="GLB", **options)


def _textured_cube(bpy) -> None:
    """A cube with a 4-colour checker texture (a PNG packed into the GLB)."""
    import numpy as np

    size = 64
    image = bpy.data.images.new("checker", size, size, alpha=False)
    pixels = np.zeros((size, size, 4), dtype=np.float32)
    pixels[..., 3] = 1.0
    half = size // 2
    pixels[:half, :half, :3] = (0.9, 0.1, 0.1)
    pixels[:half, half:, :3] = (0.1, 0.8, 0.1)
    pixels[half:, :half, :3] = (0.1, 0.2, 0.9)
    pixels[half:, half:, :3] = (0.95, 0.85, 0.1)
    image.pixels.foreach_set(pixels.ravel())
    image.file_format = "PNG"
    image.pack()
    bpy.ops.mesh.primitive_cube_add(size=1.5)
    cube = bpy.context.object
    material = bpy.data.materials.new("checker")
    material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Closest"
    bsdf = nodes["Principled BSDF"]
    material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    cube.data.materials.append(material)


def _flat_image(bpy, name: str, rgb: tuple, data: bool = False):
    """A packed 32 px PNG of one colour (`data`: a Non-Color map, roughness or normals)."""
    import numpy as np

    image = bpy.data.images.new(name, 32, 32, alpha=False)
    pixels = np.ones((32, 32, 4), dtype=np.float32)
    pixels[..., :3] = rgb
    image.pixels.foreach_set(pixels.ravel())
    image.file_format = "PNG"
    if data:
        image.colorspace_settings.name = "Non-Color"
    image.pack()
    return image


def _texture(bpy, material, image):
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    return node


def _metallic_roughness(bpy, material) -> None:
    """Roughness and metallic from one map (G and B), as glTF packs them."""
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    texture = _texture(bpy, material, _flat_image(bpy, "metallic_roughness", MR_RGB, data=True))
    separate = tree.nodes.new("ShaderNodeSeparateColor")
    tree.links.new(texture.outputs["Color"], separate.inputs["Color"])
    tree.links.new(separate.outputs["Green"], bsdf.inputs["Roughness"])
    tree.links.new(separate.outputs["Blue"], bsdf.inputs["Metallic"])


def _vertex_coloured_cube(bpy) -> None:
    """A cube with red vertex colours as its base colour and a metallic-roughness map."""
    bpy.ops.mesh.primitive_cube_add(size=1.5)
    cube = bpy.context.object
    colours = cube.data.color_attributes.new("Col", "BYTE_COLOR", "CORNER")
    for corner in colours.data:
        corner.color_srgb = (*RED, 1.0)
    material = bpy.data.materials.new("vertex_coloured")
    material.use_nodes = True
    tree = material.node_tree
    attribute = tree.nodes.new("ShaderNodeVertexColor")
    attribute.layer_name = "Col"
    tree.links.new(attribute.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    _metallic_roughness(bpy, material)
    cube.data.materials.append(material)


def _four_maps_cube(bpy) -> None:
    """The checker cube of `_textured_cube` with roughness, normal and emission maps too (each
    of one colour far from the checker's four)."""
    _textured_cube(bpy)
    material = bpy.context.object.data.materials[0]
    tree = material.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    _metallic_roughness(bpy, material)
    normal_map = tree.nodes.new("ShaderNodeNormalMap")
    normals = _texture(bpy, material, _flat_image(bpy, "normal", (0.5, 0.5, 1.0), data=True))
    tree.links.new(normals.outputs["Color"], normal_map.inputs["Color"])
    tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    emission = _texture(bpy, material, _flat_image(bpy, "emission", (0.1, 0.9, 0.9)))
    tree.links.new(emission.outputs["Color"], bsdf.inputs["Emission Color"])
    bsdf.inputs["Emission Strength"].default_value = 1.0


def _add_mesh_features(path: Path) -> None:
    """Declare EXT_mesh_features (feature ids from `_FEATURE_ID_0`) in a GLB's JSON."""
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    document = json.loads(data[20 : 20 + length])
    binary = data[20 + length + 8 :]
    document.setdefault("extensionsUsed", []).append("EXT_mesh_features")
    for mesh in document["meshes"]:
        for primitive in mesh["primitives"]:
            features = {"featureIds": [{"featureCount": 3, "attribute": 0}]}
            primitive.setdefault("extensions", {})["EXT_mesh_features"] = features
    path.write_bytes(_glb(document, binary))


def _glb(document: dict, binary: bytes) -> bytes:
    """A GLB container of a JSON document and one binary buffer."""
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def _box() -> tuple[np.ndarray, np.ndarray]:
    """A 1×2×0.5 box (corners and 12 triangles, outward facing)."""
    corners = np.array(
        [[x, y, z] for x in (0.0, 1.0) for y in (0.0, 2.0) for z in (0.0, 0.5)], dtype=np.float32
    )
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return corners, np.array(faces, dtype=np.uint16)


def _accessor(view: int, count: int, kind: str, ctype: int, values: np.ndarray | None = None):
    accessor = {"bufferView": view, "componentType": ctype, "count": count, "type": kind}
    if values is not None:
        accessor["min"] = values.min(axis=0).tolist()
        accessor["max"] = values.max(axis=0).tolist()
    return accessor


def sparse_glb(path: Path) -> Path:
    """A box whose POSITION accessor moves four corners far out with a sparse substitution:
    a reader that ignores `sparse` sees a 1×2×0.5 box, the file holds a 1×2×4 one."""
    corners, faces = _box()
    moved = np.array([1, 3, 5, 7], dtype=np.uint16)  # the z = 0.5 corners
    moved_to = corners[moved] + np.array([0.0, 0.0, 3.5], dtype=np.float32)
    final = corners.copy()
    final[moved] = moved_to
    blobs = [corners.tobytes(), faces.tobytes(), moved.tobytes(), moved_to.tobytes()]
    offsets = np.cumsum([0] + [len(b) + (-len(b) % 4) for b in blobs])
    binary = b"".join(b + b"\0" * (-len(b) % 4) for b in blobs)
    views = [
        {"buffer": 0, "byteOffset": int(o), "byteLength": len(b)}
        for o, b in zip(offsets[:-1], blobs, strict=True)
    ]
    position = _accessor(0, len(corners), "VEC3", 5126, final)
    position["sparse"] = {
        "count": len(moved),
        "indices": {"bufferView": 2, "componentType": 5123},
        "values": {"bufferView": 3},
    }
    document = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views[:2] + views[2:],
        "accessors": [position, _accessor(1, faces.size, "SCALAR", 5123)],
    }
    path.write_bytes(_glb(document, binary))
    return path


def mixed_glb(path: Path, modes: tuple[int, ...] = (4, 0)) -> Path:
    """One mesh with a primitive per mode (4 triangles: the box; 0 points, 1 lines: a spray of
    vertices far off to one side). modes=(0,) is a point cloud, (1,) lines only."""
    corners, faces = _box()
    spray = np.random.default_rng(0).uniform(3.0, 6.0, size=(50, 3)).astype(np.float32)
    blobs = [corners.tobytes(), faces.tobytes(), spray.tobytes()]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    views = [
        {"buffer": 0, "byteOffset": int(o), "byteLength": len(b)}
        for o, b in zip(offsets[:-1], blobs, strict=True)
    ]
    accessors = [
        _accessor(0, len(corners), "VEC3", 5126, corners),
        _accessor(1, faces.size, "SCALAR", 5123),
        _accessor(2, len(spray), "VEC3", 5126, spray),
    ]
    primitives = [
        {"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}
        if mode == 4
        else {"attributes": {"POSITION": 2}, "mode": mode}
        for mode in modes
    ]
    document = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": primitives}],
        "buffers": [{"byteLength": sum(len(b) for b in blobs)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    path.write_bytes(_glb(document, b"".join(blobs)))
    return path


# What `encoded_box_glb` writes: the 1×2×0.5 box (`_box`) as gltfpack and other tools encode it,
# and the extents of the object it stands for in the file's axes, worked out by hand.
ENCODED_BOXES = {
    # KHR_mesh_quantization: int16 normalised positions (v / 2 · 32767) under a node scale of 2
    "int16_normalised": [1.0, 2.0, 0.5],
    # uint8 normalised (v / 2 · 255, rounded: 0.5 is 64/255 · 2)
    "uint8_normalised": [1.0, 2.0, 128 / 255],
    # int16 integers (v · 1000) under a node scale of 0.001, as gltfpack writes positions
    "int16_integers": [1.0, 2.0, 0.5],
    # a node scaling x by 3, then turning 90° about +Y: x, y, z → z, y, -x
    "node_transform": [0.5, 2.0, 3.0],
    # two scenes, the default one (1) holding the box scaled by 5 along x and moved up by 10:
    # read with the other scene too, the object would be 12 tall
    "two_scenes": [5.0, 2.0, 0.5],
}


def encoded_box_glb(path: Path, encoding: str) -> Path:
    """A GLB of the box encoded as `encoding` (one of ENCODED_BOXES, or "meshopt_fallback":
    EXT_meshopt_compression in use with the placeholder fallback buffer `gltfpack -cf` writes,
    which holds no bytes)."""
    corners, faces = _box()
    node = {"mesh": 0}
    position = {"bufferView": 0, "componentType": 5126, "type": "VEC3", "count": 8}
    view, data = {"buffer": 0, "byteOffset": 0}, corners.astype("<f4")
    document = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}]}
    if encoding in ("int16_normalised", "uint8_normalised", "int16_integers"):
        kind, scale, factor, normalised = {
            "int16_normalised": ("<i2", 2.0, 32767 / 2, True),
            "uint8_normalised": ("u1", 2.0, 255 / 2, True),
            "int16_integers": ("<i2", 0.001, 1000.0, False),
        }[encoding]
        quantised = np.round(corners * factor).astype(kind)
        # each element padded to 4 bytes (the spec's alignment), as gltfpack writes them
        data = np.concatenate([quantised, np.zeros((8, 1), kind)], axis=1)
        view["byteStride"] = data.itemsize * 4
        position.update(componentType={"<i2": 5122, "u1": 5121}[kind], normalized=normalised)
        position.update(min=quantised.min(axis=0).tolist(), max=quantised.max(axis=0).tolist())
        node["scale"] = [scale] * 3
        document["extensionsUsed"] = document["extensionsRequired"] = ["KHR_mesh_quantization"]
    elif encoding == "node_transform":
        node.update(
            rotation=[0.0, 0.5**0.5, 0.0, 0.5**0.5], scale=[3, 1, 1], translation=[10, 0, 0]
        )
    elif encoding == "two_scenes":
        document.update(scene=1, scenes=[{"nodes": [0]}, {"nodes": [1]}])
    binary = data.tobytes()
    view["byteLength"] = len(binary)
    binary += b"\0" * (-len(binary) % 4)
    views = [view, {"buffer": 0, "byteOffset": len(binary), "byteLength": faces.nbytes}]
    buffers = [{"byteLength": len(binary) + faces.nbytes}]
    if encoding == "meshopt_fallback":
        document["extensionsUsed"] = ["EXT_meshopt_compression"]
        fallback = {"EXT_meshopt_compression": {"fallback": True}}
        buffers.append({"byteLength": len(binary), "extensions": fallback})
        compressed = {"buffer": 0, "byteOffset": 0, "byteLength": len(binary), "byteStride": 12}
        compressed.update(count=8, mode="ATTRIBUTES")
        view.update(buffer=1, extensions={"EXT_meshopt_compression": compressed})
    if "min" not in position:
        position.update(min=corners.min(axis=0).tolist(), max=corners.max(axis=0).tolist())
    nodes = [node]
    if encoding == "two_scenes":
        nodes.append({"mesh": 0, "scale": [5, 1, 1], "translation": [0, 10, 0]})
    document.update(
        nodes=nodes,
        meshes=[{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        buffers=buffers,
        bufferViews=views,
        accessors=[position, _accessor(1, faces.size, "SCALAR", 5123)],
    )
    path.write_bytes(_glb(document, binary + faces.tobytes()))
    return path


if __name__ == "__main__":
    _make(sys.argv[1], sys.argv[2])
