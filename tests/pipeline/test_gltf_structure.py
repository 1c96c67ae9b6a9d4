"""A glTF whose indices name items it does not have (a primitive's attribute or indices, a
node's mesh, a scene's node), or whose nodes are not trees (a loop through `children`, a
node with two parents, a scene root that is a child or listed twice), is one failure row of
`cg3d meshes` naming the cause. Before, such a file passed the meshes stage and failed in
Blender's import, as failure rows of sample and render. The broken files are Blender-exported
ones with one index edited; the exported files themselves pass unchanged."""

import json
import struct
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

from cg3d.formats.manifest import read_manifest
from cg3d.geometry.meshio import MeshError, check_geometry
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.gltffiles import TRIANGLE_BYTES, VIEW, gltf, positions, write
from tests.render.gltf_files import _glb, blender_file

EXPORTED = ("skinned", "instanced", "draco")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exported")
    return {kind: blender_file(kind, folder / f"{kind}.glb") for kind in EXPORTED}


def read_glb(path: Path) -> tuple[dict, bytes]:
    """(JSON document, BIN chunk) of a GLB with one binary chunk, by the spec's layout."""
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    (binary_length,) = struct.unpack_from("<I", data, 20 + length)
    binary = data[20 + length + 8 : 20 + length + 8 + binary_length]
    return json.loads(data[20 : 20 + length]), binary


def absent_attribute(document: dict) -> str:
    absent = len(document["accessors"])
    document["meshes"][0]["primitives"][0]["attributes"]["NORMAL"] = absent
    return f"glTF mesh 0 primitive 0 attribute NORMAL names accessor {absent}, which is absent"


def absent_indices(document: dict) -> str:
    absent = len(document["accessors"]) + 5
    document["meshes"][0]["primitives"][0]["indices"] = absent
    return f"glTF mesh 0 primitive 0 indices names accessor {absent}, which is absent"


def absent_mesh(document: dict) -> str:
    number = next(n for n, node in enumerate(document["nodes"]) if "mesh" in node)
    document["nodes"][number]["mesh"] = len(document["meshes"])
    return f"glTF node {number} names mesh {len(document['meshes'])}, which is absent"


def cycle(document: dict) -> str:
    # a child names its parent, a root, among its own children: parent → child → parent
    nodes = document["nodes"]
    parent = next(n for n in document["scenes"][0]["nodes"] if nodes[n].get("children"))
    child = nodes[parent]["children"][0]
    nodes[child].setdefault("children", []).append(parent)
    return "(a cycle in children)"


def absent_scene_node(document: dict) -> str:
    absent = len(document["nodes"])
    document["scenes"][0]["nodes"].append(absent)
    return f"glTF scene 0 names node {absent}, which is absent"


def two_parents(document: dict) -> str:
    # a second root names the first root's child among its children
    nodes = document["nodes"]
    parent = next(n for n in document["scenes"][0]["nodes"] if nodes[n].get("children"))
    child = nodes[parent]["children"][0]
    nodes.append({"children": [child]})
    document["scenes"][0]["nodes"].append(len(nodes) - 1)
    return f"glTF node {child} has two parents (nodes {parent} and {len(nodes) - 1})"


# name: (the exported file edited, the edit, which returns the reason it must give)
BROKEN = {
    "two_parents": ("skinned", two_parents),
    "attribute": ("skinned", absent_attribute),
    "indices": ("instanced", absent_indices),
    "node_mesh": ("instanced", absent_mesh),
    "cycle": ("skinned", cycle),
    "scene_node": ("draco", absent_scene_node),
}


@pytest.mark.blender
def test_structure_errors_are_failure_rows_of_cg3d_meshes_and_exported_files_pass(
    exported, tmp_path
):
    root = tmp_path / "in"
    (root / "thing").mkdir(parents=True)
    reasons = {}
    for name, (kind, edit) in BROKEN.items():
        document, binary = read_glb(exported[kind])
        reasons[f"{name}.glb"] = edit(document)
        (root / "thing" / f"{name}.glb").write_bytes(_glb(document, binary))
    for kind, path in exported.items():
        (root / "thing" / f"{kind}.glb").write_bytes(path.read_bytes())
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    rows = {Path(row.path).name: row for row in read_manifest(tmp_path / "out")}
    assert sorted(rows) == sorted([*reasons, *(f"{kind}.glb" for kind in EXPORTED)])
    for kind in EXPORTED:  # skinned, instanced (one mesh, four nodes) and Draco stay good
        assert rows[f"{kind}.glb"].status == "ok", rows[f"{kind}.glb"].error
    for name, reason in reasons.items():
        assert rows[name].status == "unreadable", (name, rows[name].error)
        assert reason in rows[name].error and "\n" not in rows[name].error


def chain(length: int, loop: bool) -> dict:
    """A triangle under a chain of `length` nodes, each the only child of the one before;
    with `loop`, the last names the first among its children."""
    document = gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)
    nodes = [{"children": [n + 1]} for n in range(length - 1)] + [{"mesh": 0}]
    if loop:
        nodes[-1]["children"] = [0]
    document["nodes"] = nodes
    return document


def test_a_deep_chain_passes_and_a_deep_cycle_is_named_without_recursing(tmp_path):
    # 200,000 levels: far past Python's recursion limit, so a recursive walk would fail
    check_geometry(write(tmp_path, chain(200_000, loop=False), "chain.gltf"))
    with pytest.raises(MeshError) as caught:
        check_geometry(write(tmp_path, chain(200_000, loop=True), "loop.gltf"))
    assert caught.value.kind == "unreadable"
    assert caught.value.reason == "glTF node 0 is its own descendant (a cycle in children)"


def test_a_node_that_is_its_own_child_is_a_cycle(tmp_path):
    document = gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)
    document["nodes"] = [{"mesh": 0, "children": [0]}]
    with pytest.raises(MeshError, match=r"node 0 is its own descendant"):
        check_geometry(write(tmp_path, document))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.update(scene=1), "glTF document's scene names scene 1, which is absent"),
        (
            lambda d: d["meshes"][0]["primitives"][0]["attributes"].update(POSITION=True),
            "glTF mesh 0 primitive 0 attribute POSITION names accessor True, which is absent",
        ),
        (
            lambda d: d["nodes"][0].update(children=[-1]),
            "glTF node 0 children names node -1, which is absent",
        ),
        (lambda d: d["nodes"][0].update(children=3), "glTF node 0 children: children is not"),
        (lambda d: d["meshes"][0].update(primitives=[7]), "glTF mesh 0 primitives is not"),
        (
            lambda d: d.update(nodes=[{"children": [1, 1]}, {"mesh": 0}]),
            "glTF node 1 has two parents (nodes 0 and 0)",
        ),
        (
            lambda d: d.update(nodes=[{"children": [1]}, {"mesh": 0}], scenes=[{"nodes": [0, 1]}]),
            "glTF scene 0 names node 1 as a root, but it is node 0's child",
        ),
        (lambda d: d["scenes"][0].update(nodes=[0, 0]), "glTF scene 0 names node 0 twice"),
    ],
)
def test_malformed_indices_are_named(tmp_path, edit, reason):
    document = gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)
    edit(document)
    with pytest.raises(MeshError) as caught:
        check_geometry(write(tmp_path, document))
    assert caught.value.kind == "unreadable" and caught.value.reason.startswith(reason)


# The documents the tree checks refuse, and one they pass: two scenes may share a root.
NOT_TREES = {
    "shared_child": {
        "nodes": [{"children": [1]}, {"mesh": 0}, {"children": [1]}],
        "scenes": [{"nodes": [0, 2]}],
    },
    "child_as_root": {"nodes": [{"children": [1]}, {"mesh": 0}], "scenes": [{"nodes": [0, 1]}]},
    "root_twice": {"nodes": [{"mesh": 0}], "scenes": [{"nodes": [0, 0]}]},
}
SHARED_ROOT = {"nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}, {"nodes": [0]}]}

IMPORT = """
import sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
try:
    bpy.ops.import_scene.gltf(filepath=sys.argv[1])
except Exception:
    print("outcome: import failed")
else:
    print("outcome: imported", len(bpy.data.objects))
"""


@pytest.mark.blender
def test_blender_fails_on_exactly_the_node_graphs_that_are_refused(tmp_path):
    """The tree checks are Blender's: its importer fails on each refused document (an
    assertion or a second link into the scene) and imports the one that passes."""
    outcomes = {}
    for name, edit in [*NOT_TREES.items(), ("shared_root", SHARED_ROOT)]:
        document = gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)
        document.update(edit)
        path = write(tmp_path, document, f"{name}.gltf")
        refused = pytest.raises(MeshError) if name != "shared_root" else nullcontext()
        with refused:
            check_geometry(path)
        run = subprocess.run(
            [sys.executable, "-c", IMPORT, str(path)], capture_output=True, text=True, check=True
        )
        outcomes[name] = run.stdout.rpartition("outcome: ")[2].strip()
    assert outcomes == {**dict.fromkeys(NOT_TREES, "import failed"), "shared_root": "imported 1"}
