"""The demo's own folder on a full disk (issue t70b): each answer writes a GLB of the points
there, outside the handler's error reporting, so a full disk was Gradio's bare "Error" on the
page and a traceback on the server. Now the page keeps the labels and says which file could not
be written and why, the server's log says where, and the demo serves on. A small tmpfs (root
only; skipped elsewhere) and the same refusal simulated."""

import errno
import logging
import os
import re

import pytest
import trimesh

from tests.pipeline.disks import mounted

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    from cg3d.app.api import load

    return load(tiny_checkpoint)


@pytest.fixture
def box(tmp_path):
    path = tmp_path / "box.obj"
    trimesh.creation.box(extents=(2.0, 1.0, 1.0)).export(path)
    return path


def page(model, work):
    from cg3d.app.demo import Demo
    from cg3d.params import DemoConfig

    return Demo(model, None, DemoConfig(views=0), work)


def check_answer(answers, caplog) -> None:
    ((glb, scores, views, status),) = answers
    assert glb is None and views == []
    assert set(scores) == {"chair", "lamp"}  # the labels are still shown
    assert status.startswith("**Could not use its 3D view:** ")
    assert re.search(r"[0-9a-f]{32}\.glb: No space left on device$", status), status
    assert any("No space left on device (ENOSPC)" in record.message for record in caplog.records)


def test_a_full_demo_folder_is_said_on_the_page_and_the_demo_serves_on(
    model, box, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="cg3d")
    with mounted(tmp_path / "disk", "size=4k") as disk:  # less than one answer's GLB
        demo = page(model, disk)
        check_answer(list(demo.classify(str(box), "chair, lamp")), caplog)
    demo.work_dir = tmp_path  # room again: the next visitor gets the 3D view
    (glb, scores, _, _), *_ = list(demo.classify(str(box), "chair, lamp"))
    assert glb is not None and set(scores) == {"chair", "lamp"}


def test_a_refused_write_of_the_points_view_is_the_pages_status(
    model, box, tmp_path, caplog, monkeypatch
):
    from cg3d.app import demo as demo_module

    def full(points, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    caplog.set_level(logging.WARNING, logger="cg3d")
    monkeypatch.setattr(demo_module, "points_glb", full)
    check_answer(list(page(model, tmp_path).classify(str(box), "chair, lamp")), caplog)
