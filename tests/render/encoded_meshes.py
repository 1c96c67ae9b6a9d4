"""One box (corners 0..1 × 0..2 × 0..3, integers, so every numeric type holds them exactly) in
the numeric encodings real PLY, STL and OBJ files use, written by hand byte by byte:
`ENCODED_MESHES` {file name: its bytes}."""

import struct

CORNERS = [(x, y, z) for x in (0, 1) for y in (0, 2) for z in (0, 3)]
QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
TRIANGLES = [t for a, b, c, d in QUADS for t in ((a, b, c), (a, c, d))]
PLY_CODES = {"double": "d", "float": "f", "short": "h", "uchar": "B", "int": "i", "uint": "I",
             "uint32": "I", "int32": "i", "ushort": "H", "float64": "d", "int16": "h"}  # fmt: skip


def ply(
    order: str = ">",
    vertex: str = "double",
    count: str = "uchar",
    index: str = "int",
    name: str = "vertex_indices",
    before: bool = False,
    face_extra: bool = False,
) -> bytes:
    """A binary PLY of the box (`order` ">" big-endian, "<" little), its coordinates of type
    `vertex`, its faces lists of `count` and `index` types named `name`; with `before`, an
    element of materials ahead of the vertices; with `face_extra`, a flag before each list and
    texture coordinates after it (as MeshLab writes them)."""
    form = "binary_big_endian" if order == ">" else "binary_little_endian"
    header = ["ply", f"format {form} 1.0", "comment written by hand"]
    if before:
        header += ["element material 2", "property uchar red", "property float shine"]
    header += [f"element vertex {len(CORNERS)}"] + [f"property {vertex} {a}" for a in "xyz"]
    header += [f"element face {len(QUADS)}"]
    header += ["property uchar flags"] if face_extra else []
    header += [f"property list {count} {index} {name}"]
    header += ["property list uchar float texcoord"] if face_extra else []
    data = ("\n".join([*header, "end_header"]) + "\n").encode()
    if before:
        data += struct.pack(order + "Bf", 255, 0.5) * 2
    for corner in CORNERS:
        data += struct.pack(order + PLY_CODES[vertex] * 3, *corner)
    for quad in QUADS:
        data += struct.pack(order + "B", 1) if face_extra else b""
        data += struct.pack(order + PLY_CODES[count] + PLY_CODES[index] * 4, 4, *quad)
        data += struct.pack(order + "B8f", 8, *[0.5] * 8) if face_extra else b""
    return data


def binary_stl(header: bytes) -> bytes:
    facets = b"".join(
        struct.pack("<12fH", 0, 0, 0, *(c for i in t for c in CORNERS[i]), 0) for t in TRIANGLES
    )
    return header.ljust(80, b" ") + struct.pack("<I", len(TRIANGLES)) + facets


def ascii_stl_solids() -> bytes:
    """The box as two solids in one ASCII STL, coordinates in scientific notation."""
    text = ""
    for name, part in (("top", TRIANGLES[:6]), ("bottom", TRIANGLES[6:])):
        text += f"solid {name}\n"
        for t in part:
            text += "facet normal 0 0 0\nouter loop\n"
            text += "".join("vertex {:e} {:e} {:e}\n".format(*CORNERS[i]) for i in t)
            text += "endloop\nendfacet\n"
        text += f"endsolid {name}\n"
    return text.encode()


def obj(vertex: str = "v {} {} {}", face: str = "f {} {} {}", index=lambda i: i + 1) -> bytes:
    """The box as an OBJ: `vertex` formats a corner's row, `face` a triangle's from its corners'
    indices as `index` writes them (1-based; negative: relative to the vertices so far)."""
    rows = [vertex.format(*corner) for corner in CORNERS]
    rows += [face.format(*(index(i) for i in t)) for t in TRIANGLES]
    return ("\n".join(rows) + "\n").encode()


ENCODED_MESHES = {
    "be_double.ply": ply(),
    "be_short.ply": ply(vertex="short"),
    "be_uchar.ply": ply(vertex="uchar"),
    "be_int.ply": ply(vertex="int", count="int", index="uint"),
    "le_uint32_counts.ply": ply("<", "float", "uint", "uint"),
    "vertex_index.ply": ply(name="vertex_index"),
    "sized_type_names.ply": ply("<", "float64", "uint32", "int32", "vertex_index"),
    "element_before_vertex.ply": ply(before=True),
    "face_properties.ply": ply("<", "int16", face_extra=True),
    "solid_header_binary.stl": binary_stl(b"solid exported by a CAD tool"),
    "two_solids.stl": ascii_stl_solids(),
    "relative_indices.obj": obj(index=lambda i: i - len(CORNERS)),
    "homogeneous_w.obj": obj(vertex="v {} {} {} 1.0"),
    "vertex_colours.obj": obj(vertex="v {} {} {} 1.0 0.5 0.0"),
    "continued_lines.obj": obj(vertex="v {} \\\n{} {}", face="f {} \\\n{} {}"),
    "partial_indices.obj": b"vt 0 0\nvn 0 0 1\n" + obj(face="f {}/1 {}//1 {}"),
    "byte_order_mark.obj": b"\xef\xbb\xbf" + obj(),
    "byte_order_mark.stl": b"\xef\xbb\xbf" + ascii_stl_solids(),
    "tab_separated.obj": obj(vertex="v\t{}\t{}\t{}", face="f\t{}\t{}\t{}"),
    "indented.obj": obj(vertex="\t v {} {} {}", face="  f {} {} {}"),
    "indented_continued.obj": b"vt 0 0\n"
    + obj(vertex="  v {} \\\n  {} {}", face="\tf {}/1 \\\n\t{}/1 {}/1"),
}
