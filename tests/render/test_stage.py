import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.failures import read_failures
from cg3d.params import RenderConfig
from cg3d.render.cameras import project
from cg3d.render.show import contact_sheet, locate, read_object
from cg3d.render.stage import render_meshes
from tests.render.helpers import sampled_points, write_meshes

pytestmark = pytest.mark.blender

RESOLUTION = 64
MALFORMED_OBJ = "v 1 2\nf 1 2 9\nthis is not an obj file\n"


def read_tar(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    extra = [("malformed", "malformed.obj", MALFORMED_OBJ), ("scene", "scene.blend", "BLENDER")]
    records = write_meshes(root / "meshes", extra)
    config = RenderConfig(
        views=3, resolution=RESOLUTION, chunk_size=2, workers=2, background="transparent"
    )
    summary = render_meshes(root / "meshes", root / "out", config)
    members = {}
    for part in sorted((root / "out").glob("part-*.tar")):
        members.update(read_tar(part))
    return root, records, config, summary, members


def alpha(members, name):
    return np.asarray(Image.open(io.BytesIO(members[name])).convert("RGBA"))[:, :, 3]


def test_every_good_object_has_its_views_and_cameras(rendered):
    _, _, _, summary, members = rendered
    assert summary.rendered == 4 and summary.chunks_total == 3
    for object_id in ("lshape", "cylinder", "box", "cone"):
        cameras = json.loads(members[f"{object_id}.cameras.json"])
        assert [v["name"] for v in cameras["views"]] == ["view_00", "view_01", "view_02"]
        for view in cameras["views"]:
            image = Image.open(io.BytesIO(members[f"{object_id}.{view['name']}.png"]))
            assert image.size == (RESOLUTION, RESOLUTION) and image.mode == "RGBA"


def test_bad_files_are_failure_rows_with_reasons(rendered):
    root, _, _, summary, members = rendered
    reasons = {row["id"]: row["reason"] for row in read_failures(root / "out" / "failures.parquet")}
    assert set(reasons) == {"malformed", "scene"}
    assert reasons["scene"].startswith("unsupported_format")  # a .blend is never opened
    assert not any(name.startswith(("malformed.", "scene.")) for name in members)


def test_objects_are_visible_centred_and_fill_the_frame(rendered):
    _, _, _, _, members = rendered
    for object_id in ("lshape", "cylinder", "box", "cone"):
        for k in range(3):
            mask = alpha(members, f"{object_id}.view_{k:02d}.png") > 0
            rows, cols = np.nonzero(mask)
            assert mask.mean() > 0.05  # visible, not a speck
            assert rows.min() > 0 and cols.min() > 0  # inside the frame, not clipped
            assert rows.max() < RESOLUTION - 1 and cols.max() < RESOLUTION - 1
            # The unit sphere's centre is the image centre: the bbox of the object straddles it.
            assert rows.min() < RESOLUTION / 2 < rows.max()
            assert cols.min() < RESOLUTION / 2 < cols.max()


def test_views_differ(rendered):
    _, _, _, _, members = rendered
    masks = [alpha(members, f"lshape.view_{k:02d}.png") > 0 for k in range(3)]
    assert (masks[0] != masks[1]).mean() > 0.02 and (masks[1] != masks[2]).mean() > 0.02


def test_sampled_points_project_onto_the_object(rendered):
    root, records, _, _, members = rendered
    for record in records[:4]:  # OBJ Y up, GLB Z up, PLY, OFF (built from load_mesh arrays)
        points = sampled_points(root / "meshes" / record.path, record.up_axis)
        cameras = json.loads(members[f"{record.id}.cameras.json"])
        for view in cameras["views"]:
            mask = alpha(members, f"{record.id}.{view['name']}.png") > 0
            # A one-pixel margin for edge pixels that antialiasing leaves half covered.
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            pixels, depth = project(points, view)
            u, v = np.round(pixels).astype(int).T
            assert (depth > 0).all()
            assert grown[v, u].mean() > 0.99, (record.id, view["name"])


def test_contact_sheet_shows_views_and_points(rendered):
    root, records, _, _, _ = rendered
    views, cameras = read_object(root / "out", *locate(root / "out", "lshape"))
    points = sampled_points(root / "meshes" / records[0].path, "y")
    plain = np.asarray(contact_sheet(views, cameras))
    dotted = np.asarray(contact_sheet(views, cameras, points))
    assert plain.shape[1] == 3 * RESOLUTION
    assert (plain != dotted).any(axis=2).sum() > 100


def test_rerun_with_a_lost_part_redoes_only_that_chunk_identically(rendered):
    root, _, config, _, _ = rendered
    part = root / "out" / "part-00001.tar"
    before = part.read_bytes()
    part.unlink()
    summary = render_meshes(root / "meshes", root / "out", config)
    assert summary.chunks_run == 1
    assert part.read_bytes() == before  # deterministic tar, same cameras, same pixels


def test_white_background_is_rgb_and_cycles_renders(tmp_path):
    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32, engine="cycles", samples=2, workers=1)
    summary = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    assert summary.rendered == 4
    members = read_tar(tmp_path / "out" / "part-00000.tar")
    image = np.asarray(Image.open(io.BytesIO(members["box.view_00.png"])))
    assert image.shape == (32, 32, 3)
    assert (image[0, 0] == 255).all()  # white corner
    assert (image.sum(axis=2) < 3 * 250).mean() > 0.05  # a shaded object in the middle


def test_wrong_parameters_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="render.engine"):
        render_meshes(tmp_path, tmp_path / "out", RenderConfig(engine="eevee"))
    with pytest.raises(UsageError, match="render.elevation_min"):
        render_meshes(tmp_path, tmp_path / "out", RenderConfig(elevation_min=40, elevation_max=10))
