"""The web demo: its handlers directly, then the page in a real headless browser (Debian's
chromium driven by Playwright): upload a mesh and read the labels and views, type a query and
count the gallery, upload broken, unsupported and oversized files and read why."""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cg3d.errors import UsageError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
UPLOAD_LIMIT_MB = 0.05  # the test server's limit: 52 KB


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    trimesh.creation.box(extents=(2.0, 1.0, 1.0)).export(root / "box.obj")
    (root / "broken.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    (root / "notes.docx").write_text("not a shape")
    (root / "chair.fbx").write_bytes(b"Kaydara FBX Binary  \x00")
    (root / "empty.obj").write_bytes(b"")
    (root / "huge.obj").write_bytes(b"#" * int(UPLOAD_LIMIT_MB * 2 * (1 << 20)))
    return root


# --- the handlers, without a browser -------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tiny_checkpoint, tiny_index, tmp_path_factory):
    from cg3d.app.api import load
    from cg3d.app.demo import Demo
    from cg3d.app.index import open_index
    from cg3d.params import DemoConfig

    model = load(tiny_checkpoint)
    config = DemoConfig(views=0, max_upload_mb=UPLOAD_LIMIT_MB, gallery=4)
    return Demo(model, open_index(tiny_index, model), config, tmp_path_factory.mktemp("work"))


def test_uploads_are_checked_before_any_work(demo, files):
    assert demo.check_upload(str(files / "box.obj")) == files / "box.obj"
    for name, reason in [
        ("notes.docx", "unsupported file type .docx; use one of"),
        ("chair.fbx", r"unsupported file type .fbx \(FBX: convert it to glTF/GLB\)"),
        ("empty.obj", "the file is empty"),
        ("huge.obj", "over the 0.05 MiB upload limit"),
    ]:
        with pytest.raises(UsageError, match=reason):
            demo.check_upload(str(files / name))
    with pytest.raises(UsageError, match="no file uploaded"):
        demo.check_upload(None)


def test_classify_handler_reports_and_answers(demo, files):
    (glb, scores, views, status), *_ = list(demo.classify(str(files / "box.obj"), "chair, lamp"))
    assert set(scores) == {"chair", "lamp"} and sum(scores.values()) == pytest.approx(1.0)
    cloud = trimesh.load(glb, force="mesh")
    assert len(cloud.vertices) == 6 * 64  # one marker of 6 vertices per model point
    assert views == [] and "rendering is off" in status
    ((glb, scores, views, status),) = list(demo.classify(str(files / "broken.obj"), ""))
    assert glb is None and scores is None
    assert "broken.obj: degenerate" in status and str(files) not in status  # name, not temp path


def test_a_long_running_demo_keeps_a_bounded_number_of_files(demo, files, tmp_path):
    """Each answer writes a GLB of the points: a demo serving for days kept every one. The
    newest stay (the page shows the last), the oldest go; Gradio's copies expire after an hour."""
    from cg3d.app.demo import Demo

    page = Demo(demo.model, None, demo.config, tmp_path)
    answers = [next(page.classify(str(files / "box.obj"), "chair, lamp"))[0] for _ in range(40)]
    kept = sorted(tmp_path.glob("*.glb"))
    assert 1 < len(kept) <= 32
    assert Path(answers[-1]).is_file() and not Path(answers[0]).exists()
    assert page.blocks().delete_cache == (3600, 3600)


def test_the_newest_files_stay_when_the_clock_steps_back(demo, files, tmp_path):
    """NTP steps the wall clock back an hour after 20 answers: the files written since are
    stamped older than those before. The oldest by when they were made go, as ever (by mtime,
    the newest went first)."""
    import os
    import time

    from cg3d.app.demo import Demo

    page = Demo(demo.model, None, demo.config, tmp_path)
    answers = []
    for n in range(40):
        answers.append(next(page.classify(str(files / "box.obj"), "chair, lamp"))[0])
        stamp = time.time() + (3600 if n < 20 else 0)  # the first 20: before the step back
        os.utime(answers[-1], (stamp, stamp))
    assert sorted(tmp_path.glob("*.glb")) == sorted(Path(a) for a in answers[-32:])


def test_blenders_temp_folder_is_in_the_demos_own_folder_and_goes_with_it(demo, tmp_path):
    """Before: the view renderer's temp folder (Blender's PNGs and log) went to /tmp beside the
    demo's own folder: two folders to remove, one of them left in /tmp after a kill."""
    from dataclasses import replace

    from cg3d.app.demo import Demo

    page = Demo(demo.model, None, replace(demo.config, views=1), tmp_path)  # Blender starts later
    try:
        folder = page.renderer.worker.out_dir
        assert folder.parent == (tmp_path / ".workers").resolve() and folder.is_dir()
    finally:
        page.close()
    assert not folder.exists()


def test_labels_come_first_then_the_rendered_views(demo, files):
    """With views on, the first answer holds the labels and says views are coming."""
    from PIL import Image

    class Renderer:  # stands in for Blender (the browser test below runs the real one)
        def render(self, path, up_axis):
            return [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")]

    demo.renderer, demo.config.views = Renderer(), 2
    try:
        first, last = list(demo.classify(str(files / "box.obj"), ""))
    finally:
        demo.renderer, demo.config.views = None, 0
    assert set(first[1]) == {"cube", "sphere", "cone"} and first[2] == []
    assert "rendering 2 views" in first[3]
    assert last[1] == first[1] and [caption for _, caption in last[2]] == ["view 00", "view 01"]
    assert last[3] == "box.obj: 64 points, 2 views."


def test_search_handler_fills_the_gallery(demo):
    gallery, status = demo.search("a box", None)
    assert len(gallery) == 4 and status == "4 of 12 objects."
    captions = [caption for _, caption in gallery]
    assert all(re.fullmatch(r"#\d · (box|plank) · -?\d\.\d{3,6} · \w+", c) for c in captions)
    assert [c.split(" · ")[0] for c in captions] == ["#1", "#2", "#3", "#4"]
    assert demo.search("", None) == ([], "Type a text or upload an image to search.")


def test_a_failed_image_search_names_the_upload_not_the_servers_path(demo, tmp_path):
    """Before: "Search failed: /tmp/gradio/<hash>/photo.png: not a readable image" (the
    classify tab already named the file only)."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    gallery, status = demo.search("", str(photo))
    assert gallery == [] and status.startswith("**Search failed:** photo.png: not a readable")
    assert str(tmp_path) not in status


def test_a_failed_request_keeps_no_upload_open(demo, tmp_path):
    """The handlers turn every error into a status line and drop it: no frame of its traceback
    (a reader's open file or mapping) outlives the request, even before the garbage collector
    runs (gradio serves on; t97e found an index error that kept its arrays mapped)."""
    import gc

    from tests.descriptors import mapped_under, open_under

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 3), }"
    uploads = {
        "cut.npy": b"\x93NUMPY\x01\x00" + bytes([len(header) + 1, 0]) + header + b"\n" + bytes(64),
        "cut.ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 100000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n" + bytes(64),
        "cut.glb": b"glTF\x02\x00\x00\x00\x00\x10\x00\x00" + bytes(64),
    }
    gc.disable()
    try:
        for name, data in uploads.items():
            (tmp_path / name).write_bytes(data)
            ((_, _, _, status),) = list(demo.classify(str(tmp_path / name), ""))
            assert status.startswith(f"**Could not use this upload:** {name}")
        (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
        assert demo.search("", str(tmp_path / "cut.png"))[0] == []
        assert open_under(tmp_path) == [] and mapped_under(tmp_path) == []
    finally:
        gc.enable()


def test_scores_show_the_decimals_that_tell_neighbours_apart():
    from cg3d.app.demo import score_texts

    # a random CLIP's image search: every hit was "1.000"
    assert score_texts([0.99991, 0.99962, 0.99958, 0.99958]) == [
        "0.99991",
        "0.99962",
        "0.99958",
        "0.99958",  # equal scores stay equal
    ]
    assert score_texts([0.91, 0.5, -0.25]) == ["0.910", "0.500", "-0.250"]
    assert score_texts([1.0, 1.0 - 1e-9]) == ["1.000000", "1.000000"]  # past 6: the rank tells
    assert score_texts([]) == []


def test_the_page_says_when_the_clip_is_random(demo):
    from cg3d.app.demo import RANDOM_CLIP_NOTE

    page = demo.blocks()
    texts = [getattr(block, "value", None) for block in page.blocks.values()]
    assert RANDOM_CLIP_NOTE in texts  # the tiny checkpoint was trained with a random CLIP


def test_points_glb_draws_every_point(tmp_path):
    from cg3d.app.demo import points_glb

    points = np.random.default_rng(0).uniform(-1, 1, (500, 3)).astype(np.float32)
    mesh = trimesh.load(points_glb(points, tmp_path / "p.glb"), force="mesh")
    centres = mesh.vertices.reshape(500, 6, 3).mean(axis=1)
    assert np.allclose(np.sort(centres, axis=0), np.sort(points, axis=0), atol=1e-5)


# --- the page, in a real browser -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tiny_index, tmp_path_factory):
    """`cg3d demo` on 127.0.0.1, a free port, 2 views of 64 px; stopped at the end."""
    log_path = tmp_path_factory.mktemp("server") / "demo.log"
    command = [sys.executable, "-m", "cg3d", "demo", "--checkpoint", str(tiny_checkpoint)]
    command += ["--index", str(tiny_index), "--port", "0", "--views", "2", "--resolution", "64"]
    command += ["--gallery", "5", "--max-upload-mb", str(UPLOAD_LIMIT_MB)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield wait_for_page(process, log_path, timeout_s=180)
    finally:
        stop(process)


def wait_for_page(process: subprocess.Popen, log_path: Path, timeout_s: float) -> str:
    """The demo's URL once its page answers; fails with the server's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(r"cg3d demo: (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if process.poll() is not None:
            pytest.fail(f"the demo exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        if match:
            try:
                with urllib.request.urlopen(match[1], timeout=5) as response:
                    if response.status == 200:
                        return match[1]
            except OSError:
                pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not answer in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Ctrl+C (the demo closes its Blender), then kill what is left of its process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    yield page
    page.close()


def shown_labels(page) -> dict[str, float]:
    """The Top labels component's rows: label → percent."""
    text = page.locator("#top").inner_text()
    return {label: float(percent) for label, percent in re.findall(r"(\w+)\n(\d+)%", text)}


def upload(page, path: Path) -> None:
    """Put `path` into the page's file box (clearing the file shown there first)."""
    inputs = page.locator("#upload input[type=file]")
    page.locator("#upload input[type=file], #upload button[aria-label='Clear']").first.wait_for(
        state="attached"
    )
    if not inputs.count():  # a file is shown: its Clear button brings the input back
        page.locator("#upload button[aria-label='Clear']").click()
    inputs.set_input_files(path)


def wait_for_status(page, text: str, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(
        "text => document.querySelector('#status').innerText.includes(text)",
        arg=text,
        timeout=timeout_ms,
    )


@pytest.mark.browser
@pytest.mark.blender
@pytest.mark.timeout(600)
def test_upload_a_mesh_read_the_labels_and_see_its_views(page, files):
    upload(page, files / "box.obj")
    wait_for_status(page, "box.obj: 64 points")  # shown with the labels
    labels = shown_labels(page)
    assert set(labels) == {"cube", "sphere", "cone"}  # the checkpoint's classes by default
    assert sum(labels.values()) == pytest.approx(100, abs=2)
    # the views follow (Blender), two as the server was told
    page.locator("#views .gallery-item").nth(1).wait_for(timeout=300_000)
    assert page.locator("#views .gallery-item").count() == 2
    assert "2 views" in page.locator("#status").inner_text()
    # labels the user types replace the classes
    page.locator("#labels textarea").fill("chair, table")
    page.locator("#labels textarea").press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#top').innerText.includes('chair')", timeout=120_000
    )
    assert set(shown_labels(page)) == {"chair", "table"}


def count_progress_bars(page) -> None:
    """From now on `window.mostProgressBars` is the most progress overlays shown at once."""
    page.evaluate(
        """() => {
            window.mostProgressBars = 0;
            const count = () => {
                const shown = [...document.querySelectorAll('[data-testid=status-tracker]')]
                    .filter(tracker => !tracker.classList.contains('hide')).length;
                window.mostProgressBars = Math.max(window.mostProgressBars, shown);
            };
            new MutationObserver(count).observe(document.body, {
                subtree: true, childList: true, attributes: true, attributeFilter: ['class'],
            });
        }"""
    )


def thumbnail_width(page, item: int) -> int:
    """Width in screen pixels of the bluish thumbnail drawn in gallery item `item`."""
    from PIL import Image

    image = page.locator("#gallery .gallery-item img").nth(item)
    pixels = np.asarray(Image.open(io.BytesIO(image.screenshot())).convert("RGB"), dtype=int)
    bluish = pixels[..., 2] - pixels[..., 0] > 60  # the tiny views; not the caption's grey
    columns = np.flatnonzero(bluish.any(axis=0))
    return int(columns[-1] - columns[0] + 1)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_type_a_query_and_count_the_gallery(page):
    assert "randomly initialised" in page.locator("#random-clip").inner_text()
    page.get_by_role("tab", name="Search").click()
    page.set_viewport_size({"width": 700, "height": 1000})  # narrow: captions are cut
    count_progress_bars(page)
    page.locator("#query textarea").fill("a photo of a box")
    page.locator("#search").click()
    page.locator("#gallery .gallery-item").nth(4).wait_for()
    assert page.locator("#gallery .gallery-item").count() == 5  # --gallery 5 of 12 objects
    captions = page.locator("#gallery .caption-label").all_inner_texts()
    assert len(captions) == 5 and all(re.match(r"#\d · (box|plank) · ", c) for c in captions)
    assert page.locator("#search-status").inner_text() == "5 of 12 objects."
    assert page.evaluate("window.mostProgressBars") == 1  # on the status line only
    # the index's 16 px thumbnails at their size, not blown up to the cell
    assert thumbnail_width(page, 0) <= 20
    # a caption cut with an ellipsis shows its whole id when the pointer is on it
    caption = page.locator("#gallery .caption-label").first
    cut = "e => e.scrollWidth > e.clientWidth"
    assert caption.evaluate(cut)
    page.locator("#gallery .gallery-item").first.hover()
    page.wait_for_function(f"() => !({cut})(document.querySelector('#gallery .caption-label'))")
    assert re.fullmatch(r"#1 · \w+ · -?[\d.]+ · \w+_\d", caption.inner_text())


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_bad_uploads_show_their_reason_and_the_app_keeps_serving(page, files):
    status = page.locator("#status")
    for name, reason in [
        ("broken.obj", "broken.obj: degenerate"),
        ("notes.docx", "unsupported file type .docx"),
        ("empty.obj", "empty.obj: the file is empty"),
    ]:
        upload(page, files / name)
        wait_for_status(page, reason)
        assert "Could not use this upload" in status.inner_text()
    # over the limit: Gradio refuses the file as it arrives, in a notice on the page
    upload(page, files / "huge.obj")
    notice = page.locator(".toast-body").filter(has_text="exceed the maximum allowed size")
    notice.wait_for()
    assert "huge.obj" in notice.inner_text()
    # and the app still answers, with one progress bar (not one over every result panel)
    count_progress_bars(page)
    upload(page, files / "box.obj")
    wait_for_status(page, "box.obj: 64 points")
    assert set(shown_labels(page)) == {"cube", "sphere", "cone"}
    assert page.evaluate("window.mostProgressBars") == 1


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_an_oversized_search_image_shows_the_limit_and_the_app_keeps_serving(page, tmp_path):
    from tests.formats.images import png_declaring

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(40_000, 40_000))  # 1.6 G pixels declared in a few bytes
    page.get_by_role("tab", name="Search").click()
    page.locator("#query-image input[type=file]").set_input_files(bomb)
    page.wait_for_function(
        "() => document.querySelector('#search-status').innerText.includes('larger than')",
        timeout=120_000,
    )
    assert "40000 × 40000 pixels" in page.locator("#search-status").inner_text()
    page.locator("#query textarea").fill("a photo of a box")
    page.locator("#search").click()  # the text query still answers (the image stays refused)
    page.locator("#search-status").filter(has_text="Search failed").wait_for()
