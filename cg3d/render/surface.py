"""Inside Blender: the evaluated scene as a `cg3d.geometry.surface.Surface`.

The evaluated depsgraph is what Blender renders: skins and armatures in their pose at the
scene's current frame (the frame the importer leaves, the first frame of the file's first
animation, else the file's node pose), shape keys at their stored weights, modifiers, every
instance (shared meshes, EXT_mesh_gpu_instancing, collection instances) with its own
transform. Reading the triangles from there gives the points exactly what the views show.
Runs in the Blender workers only (imports bpy through the caller).
"""

import numpy as np

from cg3d.geometry.surface import Material, Surface, srgb_from_linear

MESHLIKE = ("MESH", "CURVE", "SURFACE", "META", "FONT")


def _array(collection, attribute: str, width: int, dtype=np.float64) -> np.ndarray:
    out = np.empty(len(collection) * width, dtype=dtype)
    collection.foreach_get(attribute, out)
    return out.reshape(-1, width) if width > 1 else out


def evaluated_surface(
    bpy, colors: bool, defined: dict[str, bool] | None = None
) -> tuple[Surface, dict]:
    """The triangles of every mesh-like instance of the scene in Blender's world frame, and
    counts of what held no faces (for failure reasons). With `colors`, also their UVs, colour
    attributes and materials, each image's pixels read once; without, none of that is read
    (decoding textures is most of an import's cost on textured files). `defined`: the only
    material names the file defines (an OBJ's MTLs, `meshio.defined_materials`), each with
    whether it states its base colour (Kd); any other material is the importer's invention
    and colours nothing, and so does a defined one that states neither Kd nor a texture the
    points can read."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    parts, materials, material_index, images = [], [], {}, {}
    counts = {"loose_vertices": 0, "edges": 0}
    for instance in depsgraph.object_instances:
        obj = instance.object
        if obj.type not in MESHLIKE:
            continue
        mesh = obj.to_mesh()
        try:
            if mesh is None:
                continue
            mesh.calc_loop_triangles()
            if not len(mesh.loop_triangles):
                counts["loose_vertices"] += len(mesh.vertices)
                counts["edges"] += len(mesh.edges)
                continue
            slots = []
            for slot in obj.material_slots if colors else ():
                material = slot.material
                if material is not None and material.name not in material_index:
                    material_index[material.name] = len(materials)
                    if defined is not None and material.name not in defined:
                        spec = Material(base_color=np.full(3, np.nan))  # the importer's own
                    else:
                        stated = bool(defined and defined.get(material.name))
                        spec = material_colors(material, images, stated)
                        if defined is not None and not stated and spec.texture is None:
                            # An MTL material with neither Kd nor a map: its colour is the
                            # importer's default (Blender 0.8, trimesh 0.4; the MTL spec has
                            # none), nobody's, as under a missing map: no colour.
                            spec.base_color = np.full(3, np.nan)
                    materials.append(spec)
                slots.append(material_index[material.name] if material is not None else -1)
            matrix = np.array(instance.matrix_world)
            parts.append(_mesh_arrays(mesh, matrix, slots, colors))
        finally:
            obj.to_mesh_clear()
    if not parts:
        return Surface(np.empty((0, 3, 3))), counts
    return _concatenate(parts, materials), counts


def _mesh_arrays(mesh, matrix: np.ndarray, slots: list[int], colors: bool) -> dict:
    corners = _array(mesh.loop_triangles, "vertices", 3, np.int64)
    co = _array(mesh.vertices, "co", 3) @ matrix[:3, :3].T + matrix[:3, 3]
    material = np.full(len(corners), -1, dtype=np.int64)
    arrays = {"triangles": co[corners], "material": material, "uv": None, "color": None}
    if not colors:
        return arrays
    loops = _array(mesh.loop_triangles, "loops", 3, np.int64)
    if slots:
        slot = _array(mesh.loop_triangles, "material_index", 1, np.int64)
        arrays["material"] = np.array(slots + [-1], dtype=np.int64)[np.minimum(slot, len(slots))]
    layer = next((uv for uv in mesh.uv_layers if uv.active_render), mesh.uv_layers.active)
    if layer is not None:
        arrays["uv"] = _array(layer.uv, "vector", 2)[loops]
    attribute = mesh.color_attributes.get(mesh.color_attributes.default_color_name or "")
    attribute = attribute or (mesh.color_attributes[0] if len(mesh.color_attributes) else None)
    if attribute is not None and attribute.domain in ("POINT", "CORNER"):
        rgb = _array(attribute.data, "color_srgb", 4)[:, :3]
        arrays["color"] = rgb[corners if attribute.domain == "POINT" else loops]
    return arrays


def _concatenate(parts: list[dict], materials: list[Material]) -> Surface:
    n = [len(p["triangles"]) for p in parts]

    def stacked(key: str, shape: tuple) -> np.ndarray | None:
        if all(p[key] is None for p in parts):
            return None
        return np.concatenate(
            [
                p[key] if p[key] is not None else np.full((k, *shape), np.nan)
                for p, k in zip(parts, n, strict=True)
            ]
        )

    return Surface(
        triangles=np.concatenate([p["triangles"] for p in parts]),
        material=np.concatenate([p["material"] for p in parts]),
        corner_uv=stacked("uv", (3, 2)),
        corner_color=stacked("color", (3, 3)),
        materials=materials,
    )


def _upstream(socket, seen: set | None = None):
    """Every node feeding `socket` (through any of their inputs), depth first, each once."""
    seen = set() if seen is None else seen
    for link in socket.links:
        node = link.from_node
        if link.is_muted or node.name in seen:
            continue
        seen.add(node.name)
        yield node
        for upstream in node.inputs:
            yield from _upstream(upstream, seen)


def base_color_socket(material):
    """The colour input of the material's Principled (or Diffuse) BSDF, or None."""
    if not material.use_nodes or material.node_tree is None:
        return None
    bsdf = next(
        (n for n in material.node_tree.nodes if n.type in ("BSDF_PRINCIPLED", "BSDF_DIFFUSE")), None
    )
    if bsdf is None:
        return None
    return bsdf.inputs["Base Color" if bsdf.type == "BSDF_PRINCIPLED" else "Color"]


def base_color_texture(material):
    """The image texture node on the base colour's chain, or None. Only that chain: a
    roughness, normal or emission map says nothing of the surface's colour."""
    socket = base_color_socket(material)
    if socket is None:
        return None
    return next((n for n in _upstream(socket) if n.type == "TEX_IMAGE" and n.image), None)


def base_color_factor(material) -> np.ndarray:
    """The linear colour multiplying the base colour's chain: the product of the unlinked
    colours of its Multiply mixes (a glTF's baseColorFactor: Blender's importer makes that
    mix only for a factor other than white); white when there is none."""
    factor = np.ones(3)
    socket = base_color_socket(material)
    for node in _upstream(socket) if socket is not None else ():
        if node.type == "MIX" and getattr(node, "blend_type", "") == "MULTIPLY":
            for mix_input in node.inputs:
                if mix_input.type == "RGBA" and not mix_input.is_linked:
                    factor = factor * np.array(mix_input.default_value[:3])
    return factor


def untextured_color(material, stated: bool) -> np.ndarray | None:
    """The linear colour the file states under a base colour texture that has no pixels (its
    file missing), as the spec multiplies them: a glTF's baseColorFactor, an MTL's Kd (the
    socket's value, `stated`: only the MTL text tells it from Blender's 0.8 default). None
    where the file states neither: the colour was the texture's alone (a glTF without a
    factor: the spec's white is the multiply's identity, not a colour the author chose)."""
    factor = base_color_factor(material)
    if not np.allclose(factor, 1.0):
        return factor
    socket = base_color_socket(material)
    return np.array(socket.default_value[:3]) if stated and socket is not None else None


def material_colors(
    material, images: dict[str, np.ndarray | None], stated: bool = False
) -> Material:
    """The colour sources of one Blender material: the Principled BSDF's base colour, and the
    image texture (with its UV transform and multiplying factor) that feeds it, if any.
    `images` holds the pixels of the images read so far, by name: each is read once.
    `stated`: the file states the base colour under a texture (an MTL's Kd)."""
    base = np.array(material.diffuse_color[:3])
    spec = Material(base_color=srgb_from_linear(base))
    socket = base_color_socket(material)
    if socket is None:
        return spec
    spec.base_color = srgb_from_linear(np.array(socket.default_value[:3]))
    spec.uses_vertex_colors = any(n.type == "VERTEX_COLOR" for n in _upstream(socket))
    spec.factor = base_color_factor(material)
    texture = base_color_texture(material)
    if texture is not None:
        _set_texture(spec, texture, images)
        if spec.texture is None:
            # The image's file is missing (or holds no pixels): what the file states under
            # it is the colour; else the socket holds the importer's default (0.8 grey for an
            # MTL without Kd), not the author's, and the material gives the points no colour.
            colour = untextured_color(material, stated)
            spec.base_color = np.full(3, np.nan) if colour is None else srgb_from_linear(colour)
    return spec


def _set_texture(spec: Material, node, images: dict[str, np.ndarray | None]) -> None:
    image = node.image
    if image.name not in images:
        images[image.name] = _pixels(image)
    spec.texture = images[image.name]
    if spec.texture is None:
        return
    spec.nearest = node.interpolation == "Closest"
    spec.clamp = node.extension in ("EXTEND", "CLIP")
    vector = node.inputs["Vector"]
    if vector.is_linked and vector.links[0].from_node.type == "MAPPING":
        spec.uv_transform = _mapping_matrix(vector.links[0].from_node)


def _pixels(image) -> np.ndarray | None:
    """(H, W, 3) float32 sRGB pixels of an image, or None when it has none."""
    width, height = image.size  # loads the image (packed or from its file) when needed
    if not width or not height:
        return None
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    rgb = pixels.reshape(height, width, 4)[..., :3]
    # Byte images hold their encoded (sRGB) values; float images hold linear ones.
    return srgb_from_linear(rgb).astype(np.float32) if image.is_float else rgb


def _mapping_matrix(node) -> np.ndarray:
    """The 2D affine of a Mapping node (POINT: translate · rotate · scale), as glTF's
    KHR_texture_transform is imported."""
    location = np.array(node.inputs["Location"].default_value[:2])
    angle = node.inputs["Rotation"].default_value[2]
    scale = np.array(node.inputs["Scale"].default_value[:2])
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(3)
    matrix[:2, :2] = np.array([[c, -s], [s, c]]) @ np.diag(scale)
    matrix[:2, 2] = location
    if node.vector_type == "TEXTURE":
        return np.linalg.inv(matrix)
    return matrix
