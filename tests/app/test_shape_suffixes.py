"""classify/embed of a file whose suffix is read nowhere here: one line listing every suffix
they read, point files included (it listed the mesh suffixes alone, as if a point cloud could
not be given), and an .npz is refused unopened (np.load inflates a member whole)."""

import zipfile

import pytest

from cg3d.app.api import check_shape_file
from cg3d.errors import UsageError


def test_an_npz_is_refused_unopened_saying_what_to_save_instead(tmp_path):
    path = tmp_path / "cloud.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("points.npy", bytes(1 << 20))  # zeros: 1 MiB in a 1 KB archive
    with pytest.raises(UsageError) as raised:
        check_shape_file(path)
    assert str(raised.value) == (
        f"{path}: an .npz archive is not read here; save its points with np.save"
    )


def test_an_unread_suffix_lists_the_point_files_too(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"x")
    with pytest.raises(UsageError) as raised:
        check_shape_file(path)
    assert str(raised.value) == (
        f"{path}: unsupported_format: .png is not one of .obj .off .ply .stl .glb .gltf "
        ".npy .txt .xyz .csv .pts"
    )
