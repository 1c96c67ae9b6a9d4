"""A glTF declares both its accessors' counts and its buffers' sizes: every count must fit the
bytes that back it before an importer allocates it (issue 25 §2). The byte counts expected
here are worked out by hand from the glTF 2.0 spec's layout rules, not by the code."""

import hashlib
import json
import struct
from pathlib import Path
from urllib.parse import quote

import pytest

from cg3d.formats.manifest import read_manifest
from cg3d.geometry.meshio import MeshError, blender_input, check_geometry, validate_file
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.formats.images import png_declaring
from tests.pipeline.gltffiles import (
    TRIANGLE_BYTES,
    UINT,
    USHORT,
    VIEW,
    gltf,
    positions,
    write,
)
from tests.render.gltf_files import encoded_box_glb


def test_the_named_case_is_a_failure_row_of_cg3d_meshes(tmp_path):
    root = tmp_path / "in"
    (root / "box").mkdir(parents=True)
    bomb = gltf([positions(2**32 - 1, bufferView=0)], VIEW, TRIANGLE_BYTES)
    write(root / "box", bomb, "bomb.gltf")
    write(root / "box", gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES), "fine.gltf")
    assert (root / "box" / "bomb.gltf").stat().st_size < 1024
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    rows = {Path(r.path).name: r for r in read_manifest(tmp_path / "out")}
    assert rows["fine.gltf"].status == "ok", rows["fine.gltf"].error
    assert rows["bomb.gltf"].status == "unreadable"
    assert "4294967295 elements of 12 bytes" in rows["bomb.gltf"].error


# (accessors, views, data, declared buffer length) that break the rule, each one byte or one
# element past what fits; and the same layouts at exactly the limit.
BROKEN = {
    "one element too many": ([positions(4, bufferView=0)], VIEW, TRIANGLE_BYTES, None),
    # byteOffset 4 + 3 × 12 = 40 > 36
    "offset pushes past the view": (
        [positions(3, bufferView=0, byteOffset=4)],
        VIEW,
        TRIANGLE_BYTES,
        None,
    ),
    # stride 16: (3 - 1) × 16 + 12 = 44 > 36
    "strided past the view": (
        [positions(3, bufferView=0)],
        [{"buffer": 0, "byteLength": 36, "byteStride": 16}],
        TRIANGLE_BYTES,
        None,
    ),
    "view past the buffer": (
        [positions(3, bufferView=0)],
        [{"buffer": 0, "byteOffset": 4, "byteLength": 36}],
        TRIANGLE_BYTES,
        None,
    ),
    "buffer declares more than its data URI": (
        [positions(3, bufferView=0)],
        [{"buffer": 0, "byteLength": 36}],
        TRIANGLE_BYTES[:32],
        36,
    ),
    "no bufferView, a huge count of zeros": (
        [positions(10**9)],
        VIEW,
        TRIANGLE_BYTES,
        None,
    ),
    # sparse: 2 ushort indices (4 bytes) at view 1, 2 VEC3 values (24 bytes) at view 2
    "sparse values past their view": (
        [
            positions(
                3,
                bufferView=0,
                sparse={
                    "count": 2,
                    "indices": {"bufferView": 1, "componentType": USHORT},
                    "values": {"bufferView": 2},
                },
            )
        ],
        VIEW
        + [{"buffer": 0, "byteOffset": 0, "byteLength": 4}]
        + [{"buffer": 0, "byteOffset": 4, "byteLength": 23}],
        TRIANGLE_BYTES,
        None,
    ),
    "sparse indices past their view": (
        [
            positions(
                3,
                bufferView=0,
                sparse={
                    "count": 2,
                    "indices": {"bufferView": 1, "componentType": UINT},
                    "values": {"bufferView": 2},
                },
            )
        ],
        VIEW
        + [{"buffer": 0, "byteOffset": 0, "byteLength": 7}]
        + [{"buffer": 0, "byteOffset": 8, "byteLength": 24}],
        TRIANGLE_BYTES,
        None,
    ),
    "sparse count above the count": (
        [
            positions(
                3,
                bufferView=0,
                sparse={
                    "count": 4,
                    "indices": {"bufferView": 0, "componentType": USHORT},
                    "values": {"bufferView": 0},
                },
            )
        ],
        VIEW,
        TRIANGLE_BYTES,
        None,
    ),
    "a negative count": ([positions(-1, bufferView=0)], VIEW, TRIANGLE_BYTES, None),
    "a bufferView that is absent": ([positions(3, bufferView=5)], VIEW, TRIANGLE_BYTES, None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_an_accessor_that_does_not_fit_its_bytes_is_refused(tmp_path, case):
    accessors, views, data, declared = BROKEN[case]
    path = write(tmp_path, gltf(accessors, views, data, declared))
    with pytest.raises(MeshError) as caught:
        check_geometry(path)
    assert caught.value.kind == "unreadable" and "\n" not in str(caught.value)
    # the sample and render stages (and the demo) check the same before Blender imports it
    with pytest.raises(MeshError):
        blender_input(path, tmp_path, "", tmp_path / "copy")


FITTING = {
    "exactly full": ([positions(3, bufferView=0)], VIEW),
    "stride 12 ends at 36": (
        [positions(3, bufferView=0)],
        [{"buffer": 0, "byteLength": 36, "byteStride": 12}],
    ),
    # stride 16 over a 2-element view: 16 + 12 = 28 ≤ 28
    "strided, last element unpadded": (
        [positions(2, bufferView=0)],
        [{"buffer": 0, "byteLength": 28, "byteStride": 16}],
    ),
    "sparse at its limits": (
        [
            positions(
                3,
                bufferView=0,
                sparse={
                    "count": 2,
                    "indices": {"bufferView": 1, "componentType": USHORT},
                    "values": {"bufferView": 2},
                },
            )
        ],
        VIEW
        + [{"buffer": 0, "byteOffset": 0, "byteLength": 4}]
        + [{"buffer": 0, "byteOffset": 4, "byteLength": 24}],
    ),
}


@pytest.mark.parametrize("case", sorted(FITTING))
def test_an_accessor_that_fits_passes(tmp_path, case):
    accessors, views = FITTING[case]
    check_geometry(write(tmp_path, gltf(accessors, views, TRIANGLE_BYTES)))


def test_a_glb_whose_bin_chunk_is_shorter_than_its_buffer_is_refused(tmp_path):
    document = gltf([positions(3, bufferView=0)], VIEW, b"")
    document["buffers"] = [{"byteLength": 36}]  # the GLB's own BIN chunk
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)

    def glb(binary: bytes) -> bytes:
        chunks = struct.pack("<I4s", len(text), b"JSON") + text
        chunks += struct.pack("<I4s", len(binary), b"BIN\0") + binary
        return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks

    whole, short = tmp_path / "whole.glb", tmp_path / "short.glb"
    whole.write_bytes(glb(TRIANGLE_BYTES))
    short.write_bytes(glb(TRIANGLE_BYTES[:24]))
    check_geometry(whole)
    with pytest.raises(MeshError, match="declares 36 bytes but holds 24"):
        check_geometry(short)


def glb_file(document: dict, binary: bytes, json_type: bytes = b"JSON") -> bytes:
    """A GLB by the spec's layout: a 12-byte header, a JSON chunk space-padded to 4 bytes, then
    a BIN chunk."""
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), json_type) + text
    chunks += struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def textured(document: dict) -> dict:
    """`document` with an image file beside it and an application attribute (`_TEMPERATURE`),
    both of which the copy Blender reads rewrites."""
    document["images"] = [{"uri": "tex%20ture.png"}]
    document["meshes"][0]["primitives"][0]["attributes"]["_TEMPERATURE"] = 0
    return document


@pytest.mark.parametrize("suffix", [".gltf", ".glb"])
def test_blender_input_parses_the_document_once_and_copies_it(tmp_path, monkeypatch, suffix):
    (tmp_path / "tex ture.png").write_bytes(png_declaring(4, 4))
    if suffix == ".glb":
        document = textured(gltf([positions(3, bufferView=0)], VIEW, b""))
        document["buffers"] = [{"byteLength": 36}]  # the GLB's own BIN chunk
        data = glb_file(document, TRIANGLE_BYTES)
    else:
        data = json.dumps(textured(gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)))
        data = data.encode()
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    parsed = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda text, **kw: parsed.append(1) or real(text, **kw))
    copy = blender_input(path, tmp_path, hashlib.sha256(data).hexdigest(), tmp_path / "copy")
    monkeypatch.undo()
    assert len(parsed) == 1
    written = copy.read_bytes()
    if suffix == ".glb":
        magic, version, length = struct.unpack_from("<4sII", written)
        assert (magic, version, length) == (b"glTF", 2, len(written))
        json_length, json_type = struct.unpack_from("<I4s", written, 12)
        assert json_type == b"JSON" and json_length % 4 == 0
        text, rest = written[20 : 20 + json_length], written[20 + json_length :]
        assert rest == struct.pack("<I4s", 36, b"BIN\0") + TRIANGLE_BYTES  # as it was
    else:
        text = written
    copied = json.loads(text)
    assert copied["images"] == [{"uri": quote(str((tmp_path / "tex ture.png").resolve()))}]
    assert copied["meshes"][0]["primitives"][0]["attributes"] == {"POSITION": 0}
    assert copied["accessors"] == [positions(3, bufferView=0)]
    with pytest.raises(MeshError) as caught:
        blender_input(path, tmp_path, "0" * 64, tmp_path / "copy")
    assert caught.value.kind == "changed_since_listed"


UNPARSED = {
    "a GLB whose first chunk is not JSON": (
        "m.glb",
        glb_file({"asset": {"version": "2.0"}}, b"", json_type=b"BIN\0"),
        "the first GLB chunk is not JSON",
    ),
    "a GLB cut inside its header": ("m.glb", b"glTF\x02\x00\x00\x00", "not a glTF document"),
    "a JSON list": ("m.gltf", b"[1, 2]", "the JSON is not an object"),
    "not JSON": ("m.gltf", b"{nope", "not a glTF document"),
    # json recurses per level: before, a RecursionError traceback that ended the meshes stage
    "a JSON nested 100,000 deep": ("m.gltf", b"[" * 100_000 + b"]" * 100_000, "nests too deep"),
    "a GLB JSON chunk nested 100,000 deep": (
        "m.glb",
        b"glTF" + struct.pack("<IIII", 2, 20 + 100_000, 100_000, 0x4E4F534A) + b"[" * 100_000,
        "nests too deep",
    ),
}


@pytest.mark.parametrize("case", sorted(UNPARSED))
def test_blender_input_says_why_a_document_does_not_parse(tmp_path, case):
    name, data, reason = UNPARSED[case]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(MeshError) as caught:
        blender_input(tmp_path / name, tmp_path, "", tmp_path / "copy")
    assert caught.value.kind == "unreadable" and reason in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not any((tmp_path / "copy").iterdir())  # nothing written for Blender to read


def test_a_gltf_nested_too_deep_is_a_failure_row_of_cg3d_meshes(tmp_path):
    root = tmp_path / "in"
    (root / "box").mkdir(parents=True)
    (root / "box" / "deep.gltf").write_bytes(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    write(root / "box", gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES), "fine.gltf")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    rows = {Path(r.path).name: r for r in read_manifest(tmp_path / "out")}
    assert rows["fine.gltf"].status == "ok", rows["fine.gltf"].error
    assert (rows["deep.gltf"].status, rows["deep.gltf"].error) == (
        "unreadable",
        "not a glTF document: the JSON nests too deep",
    )


@pytest.mark.parametrize("reader", ["meshes stage", "blender input"])
def test_a_meshopt_file_whose_fallback_holds_no_bytes_is_named(tmp_path, reader):
    """`gltfpack -cf`'s GLB: EXT_meshopt_compression in use (not required), its bufferViews'
    fallback a buffer that no bytes back. Before: it passed the meshes stage, and Blender's
    importer, which has no meshopt decoder, failed on "KeyError: 1"."""
    path = encoded_box_glb(tmp_path / "m.glb", "meshopt_fallback")
    read = {
        "meshes stage": lambda: validate_file(path, tmp_path),
        "blender input": lambda: blender_input(path, tmp_path, "", tmp_path / "copies"),
    }[reader]
    with pytest.raises(MeshError) as raised:
        read()
    assert raised.value.kind == "unsupported_format"
    assert "compressed with EXT_meshopt_compression" in raised.value.reason


def test_a_buffer_with_no_uri_beyond_the_glb_chunk_holds_no_bytes(tmp_path):
    """Only a GLB's buffer 0 may omit its uri (its BIN chunk); another one so is backed by
    nothing. Before: it passed, and Blender's importer failed on "KeyError: 1"."""
    document = gltf([positions(3, bufferView=0)], [{"buffer": 1, "byteLength": 36}], b"")
    document["buffers"].append({"byteLength": 36})
    with pytest.raises(MeshError) as raised:
        check_geometry(write(tmp_path, document))
    assert raised.value.reason == "glTF buffer 1 declares 36 bytes but holds 0"


@pytest.mark.parametrize("reader", ["meshes stage", "blender input"])
def test_a_required_extension_not_read_here_is_named_alike_by_every_reader(tmp_path, reader):
    """The meshes stage said `unsupported_format`; Blender's input (classify, embed, the demo)
    was copied and handed to Blender, whose importer said `unreadable: ... Extension
    EXT_meshopt_compression is not available`. Both now say the meshes stage's words."""
    document = gltf([positions(3, bufferView=0)], VIEW, TRIANGLE_BYTES)
    document["extensionsUsed"] = document["extensionsRequired"] = ["EXT_meshopt_compression"]
    path = write(tmp_path, document)
    read = {
        "meshes stage": lambda: validate_file(path, tmp_path),
        "blender input": lambda: blender_input(path, tmp_path, "", tmp_path / "copies"),
    }[reader]
    with pytest.raises(MeshError) as raised:
        read()
    assert (raised.value.kind, raised.value.reason) == (
        "unsupported_format",
        "the file requires the glTF extension EXT_meshopt_compression, not read here",
    )
