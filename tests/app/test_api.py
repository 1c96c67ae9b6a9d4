"""The Python API on a tiny checkpoint: loading, embeddings, classification (also the CLI's)."""

import contextlib
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

import cg3d
import cg3d.app.api as api
from cg3d.app.api import input_points, parse_labels, read_image, read_labels_file
from cg3d.errors import UsageError
from tests.eval.files import cube
from tests.pipeline.fakes import transparent_view

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return cg3d.load(tiny_checkpoint)


def test_import_cg3d_stays_light_and_loads_the_api_on_first_use():
    code = (
        "import sys, cg3d; assert 'torch' not in sys.modules, 'torch at import';"
        "cg3d.load; assert 'torch' in sys.modules; print(sorted(cg3d.__all__))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "open_index" in result.stdout and "load" in result.stdout
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cg3d.nothing  # noqa: B018


def test_parse_labels():
    assert parse_labels("", ["a", "b"]) == ["a", "b"]
    assert parse_labels(None, ["a"]) == ["a"]
    assert parse_labels("chair, table ,", []) == ["chair", "table"]
    assert parse_labels([" lamp", "", "sofa "], []) == ["lamp", "sofa"]
    with pytest.raises(UsageError, match="--labels"):
        parse_labels("", [])
    # a list that came out empty is a caller's bug, not a request for the checkpoint's classes
    for empty in ([], (), ["", "  "]):
        with pytest.raises(UsageError, match="list of labels is empty"):
            parse_labels(empty, ["a", "b"])


@pytest.mark.parametrize(
    "text",
    [
        "/etc/passwd",  # a file every server has
        "/etc/hostname, /etc/passwd",  # paths among labels
        "labels.txt",  # a file in the working directory
        ".",  # a folder
        "x" * 300,  # longer than a file name may be
        "a" * 5000 + "," + "b/" * 200,  # very long, with slashes
        "/dev/zero",  # would never end
    ],
)
def test_label_text_is_never_opened_as_a_file(text, tmp_path, monkeypatch):
    """What the demo's visitor or `--labels` types is text: a path is a label like any other."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.txt").write_text("secret\n")
    expected = [label.strip() for label in text.split(",")]
    assert parse_labels(text, ["cube"]) == expected


def test_demo_labels_box_reads_no_file_on_the_server(model):
    """The demo hands the labels box to `Model.classify`: /etc/passwd comes back as a label."""
    predictions = model.classify(cube(200, np.random.default_rng(0)), "/etc/passwd, lamp", top=5)
    assert sorted(p.label for p in predictions) == ["/etc/passwd", "lamp"]
    long_label = "a chair " * 40  # 320 characters: was OSError: File name too long
    assert model.classify(cube(200, np.random.default_rng(0)), long_label)[0].label == (
        long_label.strip()
    )


def test_labels_file_is_read_only_when_named_as_one(tmp_path):
    (tmp_path / "labels.txt").write_text("lamp\n\nsofa\n")
    assert read_labels_file(tmp_path / "labels.txt") == ["lamp", "sofa"]
    (tmp_path / "blank.txt").write_text("\n \n")
    for path, reason in [
        (tmp_path / "absent.txt", "no such file"),
        (tmp_path, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),  # would never end
        (tmp_path / "blank.txt", "holds no labels"),
    ]:
        with pytest.raises(UsageError, match=f"--labels-file: .*{reason}"):
            read_labels_file(path)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="binary.txt is not UTF-8 text \\(byte 0: invalid start"):
        read_labels_file(tmp_path / "binary.txt")


def test_a_transparent_image_query_is_on_white_in_every_input_form(tmp_path):
    view = transparent_view(32)
    view.save(tmp_path / "view.png")
    for image in (view, np.asarray(view), tmp_path / "view.png"):
        pixels = np.asarray(read_image(image))
        assert pixels.shape == (32, 32, 3) and (pixels[0, 0] == 255).all()
        assert pixels[16, 16].tolist() == [200, 30, 30]


def test_mesh_input_goes_through_the_sample_stage(tmp_path):
    box = trimesh.creation.box(extents=(4.0, 1.0, 1.0))
    box.apply_translation((10, 0, 0))
    box.export(tmp_path / "box.ply")
    points = input_points(tmp_path / "box.ply", 128)
    assert points.shape == (128, 3)
    assert np.linalg.norm(points, axis=1).max() <= 1.0 + 1e-5
    assert np.ptp(points[:, 0]) > 3 * np.ptp(points[:, 1])  # long along x, centred, unit sphere
    tall = input_points(tmp_path / "box.ply", 64, up_axis="z")
    assert np.ptp(tall[:, 0]) > 3 * np.ptp(tall[:, 2])


def test_mesh_files_use_the_pipeline_loader(tmp_path):
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ball.obj")
    points = input_points(tmp_path / "ball.obj", 100)
    assert points.shape == (100, 3)
    assert np.allclose(np.linalg.norm(points, axis=1), 1.0, atol=0.1)  # on the unit sphere
    (tmp_path / "broken.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    with pytest.raises(UsageError, match="broken.obj"):
        input_points(tmp_path / "broken.obj", 100)


def test_embeddings_are_unit_vectors_and_batches_match_single_calls(model, tmp_path):
    rng = np.random.default_rng(0)
    shapes = [cube(300, rng, scale=(1 + i, 1, 1)) for i in range(3)]
    batch = model.embed_points(shapes, batch_size=2)
    assert batch.shape == (3, 64) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert np.allclose(model.embed_points(shapes[1]), batch[1:2], atol=1e-5)
    np.save(tmp_path / "shape.npy", shapes[2])
    assert np.allclose(model.embed_points(tmp_path / "shape.npy"), batch[2:3], atol=1e-5)
    assert not np.allclose(batch[0], batch[2], atol=1e-3)  # different shapes, different features

    texts = model.embed_text(["a cube", "a sphere", "a cone"])
    assert texts.shape == (3, 64) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.allclose(model.embed_text("a sphere"), texts[1:2], atol=1e-5)

    pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    as_file, as_array, as_pil = (
        model.embed_images(tmp_path / "photo.png"),
        model.embed_images(pixels),
        model.embed_images([Image.fromarray(pixels)]),
    )
    assert as_file.shape == (1, 64)
    assert np.allclose(as_file, as_array, atol=1e-5) and np.allclose(as_file, as_pil, atol=1e-5)


def test_classify_point_file_end_to_end(model, tmp_path):
    np.save(tmp_path / "shape.npy", cube(300, np.random.default_rng(0)))
    result = model.classify(tmp_path / "shape.npy")
    assert {label for label, _ in result} == {"cube", "sphere", "cone"}  # the checkpoint's classes
    assert len(result) == 3 and sum(p for _, p in result) == pytest.approx(1.0, abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(result, result[1:], strict=False))
    custom = model.classify(tmp_path / "shape.npy", labels="chair,table,lamp,sofa,bed,desk", top=5)
    assert len(custom) == 5
    assert {p.label for p in custom} <= {"chair", "table", "lamp", "sofa", "bed", "desk"}
    # the array itself gives the same answer as its file
    same = model.classify(np.load(tmp_path / "shape.npy"), labels=["chair", "table", "lamp"])
    from_file = model.classify(tmp_path / "shape.npy", labels=["chair", "table", "lamp"])
    assert [p.label for p in same] == [p.label for p in from_file]
    assert [p.score for p in same] == pytest.approx([p.score for p in from_file], abs=1e-5)


def test_labels_whose_prompts_agree_in_their_first_77_tokens_are_refused(model):
    # before: one text feature for both (CLIP cuts a prompt at 77 tokens), which split one
    # probability in silence; parse_labels refuses only labels of the same words
    long = "box " * 80
    shape = cube(300, np.random.default_rng(1))
    with pytest.raises(UsageError) as error:
        model.classify(shape, ["lamp", long + "a", long + "b"])
    message = str(error.value)
    assert message.startswith("--labels: 'box box") and "have one text feature" in message
    assert "(321 characters)" in message and "the same first 77 tokens" in message


def test_classify_under_the_public_protocol_ranks_labels_by_the_raw_text_of_one_prompt(model):
    # cg3d-public: "This is a " + the label as written, text features not normalised
    shape = cube(300, np.random.default_rng(1), scale=(3, 1, 1))
    labels = ["chair", "night_stand", "lamp", "sofa"]
    predictions = model.classify(shape, labels, top=4, protocol="cg3d-public")
    with torch.no_grad():
        raw = model.network.clip.encode_text(
            model.network.tokenize([f"This is a {x}" for x in labels])
        )
    scores = model.embed_points(shape) @ raw.numpy().T
    assert [p.label for p in predictions] == [labels[i] for i in np.argsort(-scores[0])]
    with pytest.raises(UsageError, match="--protocol: unknown protocol 'paper'"):
        model.classify(shape, labels, protocol="paper")


def test_classify_errors_are_one_line_usage_errors(model, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        model.classify(tmp_path / "absent.npy")
    np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
    with pytest.raises(UsageError, match="expected an"):
        model.classify(tmp_path / "bad.npy")
    with pytest.raises(UsageError, match="--top"):
        model.classify(cube(50, np.random.default_rng(0)), top=0)
    with pytest.raises(UsageError, match=r"points: expected an \(N, 3\+\)"):
        model.embed_points(np.zeros((5, 2)))
    with pytest.raises(UsageError, match="empty"):
        model.embed_points(np.full((5, 3), np.nan))
    (tmp_path / "photo.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="photo.png: not a readable image"):
        model.embed_images(tmp_path / "photo.png")
    with pytest.raises(UsageError, match="--up-axis"):
        model.classify(cube(50, np.random.default_rng(0)), up_axis="w")


def test_a_model_records_its_identity(model, tiny_checkpoint):
    from cg3d.files import file_sha256

    assert model.identity["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert model.identity["clip_weights"] == {"kind": "random"}
    assert model.classes == ["cube", "sphere", "cone"] and model.n_points == 64
    assert isinstance(model.network, torch.nn.Module)


def test_the_readme_example_runs(tiny_checkpoint, tiny_index, tmp_path):
    """The README's Python API block, as written, in a folder holding what it names."""
    import re
    import shutil
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    (tmp_path / "runs" / "train").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "runs" / "train" / "last.pt")
    shutil.copytree(tiny_index, tmp_path / "runs" / "index")
    trimesh.creation.box(extents=(1.0, 2.0, 0.5)).export(tmp_path / "chair.obj")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert {line.split(":")[0] for line in lines[:3]} == {"chair", "table", "lamp"}
    hits = [line for line in lines if re.fullmatch(r"\w+ (box|plank) -?\d\.\d{3}", line)]
    assert len(hits) == 5


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    """A tiny model whose encoder takes xyz and rgb (point_channels 6)."""
    import warnings

    from cg3d.models import build_model, save_checkpoint
    from tests.models.helpers import tiny_model_config

    path = tmp_path_factory.mktemp("colour") / "colour.pt"
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        save_checkpoint(path, build_model(tiny_model_config(n_points=64, point_channels=6)))
    return cg3d.load(path)


def test_a_colour_model_gets_rgb_with_every_point(colour_model, tmp_path):
    from cg3d.formats.points import NO_COLOR

    rng = np.random.default_rng(0)
    xyz = cube(300, rng)
    rgb = np.where(xyz[:, :1] > 0, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])  # red right, blue left
    prepared = colour_model.prepare(xyz, colors=rgb)
    assert prepared.shape == (64, 6)
    right = prepared[:, 0] > 0
    assert np.allclose(prepared[right, 3:], [1, 0, 0]) and np.allclose(
        prepared[~right, 3:], [0, 0, 1]
    )
    np.save(tmp_path / "shape.npy", xyz)  # a point file has no colour: the constant
    assert np.allclose(colour_model.prepare(tmp_path / "shape.npy")[:, 3:], NO_COLOR)
    red = colour_model.classify(prepared, labels=["a", "b"], prepared=True)
    grey = colour_model.classify(tmp_path / "shape.npy", labels=["a", "b"])
    assert {p.label for p in red} == {"a", "b"}
    assert red[0].score != pytest.approx(grey[0].score, abs=1e-6)  # the colour reaches the model
    with pytest.raises(UsageError, match=r"colors: expected a \(300, 3\) array"):
        colour_model.prepare(xyz, colors=rgb[:10])
    with pytest.raises(UsageError, match=r"expected \(B, 64, 6\) prepared points"):
        colour_model.embed_prepared(prepared[None, :, :3])


@pytest.mark.blender
def test_a_colour_model_reads_a_mesh_through_the_sample_stage(colour_model, tmp_path):
    box = trimesh.creation.box(extents=(2.0, 1.0, 1.0))
    box.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(box.vertices), 1))
    box.export(tmp_path / "red.ply")
    prepared = colour_model.prepare(tmp_path / "red.ply")
    assert prepared.shape == (64, 6)
    assert np.linalg.norm(prepared[:, :3], axis=1).max() <= 1 + 1e-5
    assert np.allclose(prepared[:, 3:], [1, 0, 0], atol=0.05)  # the vertex colour, per point


# A checkpoint is data: its stored config is held to the params file's bounds before anything
# is built from it (issue 18 §1).


def forged_checkpoint(source, target, **config):
    payload = torch.load(source, weights_only=True)
    payload["config"] = payload["config"] | config
    torch.save(payload, target)
    return target


@pytest.mark.parametrize(
    "config, message",
    [
        ({"encoder_params": {"width": 10_000_000}}, "train.encoder_params.width must be between"),
        ({"encoder_params": {"depth": 10**9}}, "train.encoder_params.depth must be between"),
        ({"encoder_params": {"groups": -1}}, "train.encoder_params.groups must be between"),
        ({"encoder_params": {"dropout": float("nan")}}, "train.encoder_params must be finite"),
        ({"n_points": 10**9}, "train.n_points must be ≥ 1 and ≤ 1048576"),
        ({"prompts": 10**7}, "train.prompts must be ≥ 0 and ≤ 1024"),
        ({"n_points": 4}, "n_points: encoder 'pointtransformer-micro' needs at least 8"),
        ({"point_channels": 9}, "point_channels must be"),
        ({"deep_prompts": "yes"}, "deep_prompts must be"),
        ({"encoder_params": {"groups": "many"}}, "bad encoder_params"),
    ],
)
def test_a_checkpoints_config_is_held_to_the_params_bounds(
    tiny_checkpoint, tmp_path, config, message
):
    path = forged_checkpoint(tiny_checkpoint, tmp_path / "forged.pt", **config)
    with pytest.raises(UsageError, match=f"^{path}: .*{message}".replace("(", r"\(")) as error:
        cg3d.load(path)
    assert "\n" not in str(error.value)


def test_classify_cli_on_a_huge_checkpoint_is_one_line(tiny_checkpoint, tmp_path):
    """The issue's case: width 10^7 made classify allocate 11 GB and die."""
    path = forged_checkpoint(
        tiny_checkpoint, tmp_path / "huge.pt", encoder_params={"width": 10_000_000}
    )
    np.save(tmp_path / "shape.npy", cube(100, np.random.default_rng(0)))
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "classify", tmp_path / "shape.npy", "--checkpoint", path],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "train.encoder_params.width must be between 0 and 4096" in result.stderr


# Bad point files and bad shapes: one UsageError naming the file or the argument, in the API,
# in `cg3d classify` and in search (issue 18 §4).

PLY_HEADER = "ply\nformat ascii 1.0\nelement vertex {}\n{}end_header\n"
XYZ = "property float x\nproperty float y\nproperty float z\n"
BAD_POINT_FILES = {
    "empty.npy": (b"", "unreadable point file"),  # was "Aborted." (an EOFError)
    "strings.npy": (lambda p: np.save(p, np.array([["a", "b", "c"]] * 5)), "real numbers"),
    "complex.npy": (lambda p: np.save(p, np.ones((5, 3), complex)), "real numbers"),
    "bools.npy": (lambda p: np.save(p, np.ones((5, 3), bool)), "real numbers"),
    "fields.npy": (lambda p: np.save(p, np.zeros(5, [("x", "f4"), ("y", "f4")])), "real numbers"),
    "rows0.npy": (lambda p: np.save(p, np.zeros((0, 3))), "got shape (0, 3)"),
    "noy.ply": (
        PLY_HEADER.format(2, "property float x\nproperty float z\n") + "0 0\n1 1\n",
        "no vertex property 'y'",
    ),
    "zero.ply": (PLY_HEADER.format(0, XYZ), "no vertices"),
    "empty.ply": (b"", "unreadable point file"),
    "cut.ply": (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 9\n"
        + XYZ.encode()
        + b"end_header\n\x00\x01",
        "unreadable point file",
    ),  # fmt: skip
    "empty.txt": (b"", "no points"),
    "blank.xyz": (b"\n  \n", "no points"),
    "words.xyz": (b"a b c\n", "unreadable point file"),
    "binary.csv": (b"\xff\xfe\x00", "unreadable point file"),
    "nan.csv": (b"nan,nan,nan\n", "no finite points"),
}


@pytest.fixture(scope="module")
def bad_point_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_points")
    for name, (content, _) in BAD_POINT_FILES.items():
        if callable(content):
            content(root / name)
        elif isinstance(content, str):
            (root / name).write_text(content)
        else:
            (root / name).write_bytes(content)
    return root


@pytest.mark.parametrize("name", sorted(BAD_POINT_FILES))
def test_a_bad_point_file_is_one_line_naming_it(model, bad_point_files, tiny_index, name):
    from cg3d.app.index import open_index

    path = bad_point_files / name
    reason = BAD_POINT_FILES[name][1]
    for call in (
        lambda: model.classify(path),
        lambda: model.embed_points(path),
        lambda: open_index(tiny_index, model).search(points=path),
    ):
        with pytest.raises(UsageError, match=f"{name}: .*{re.escape(reason)}") as error:
            call()
        assert "\n" not in str(error.value)


def test_classify_cli_on_bad_point_files_is_one_line(tiny_checkpoint, bad_point_files):
    for name in ("empty.npy", "strings.npy", "noy.ply", "zero.ply"):
        result = subprocess.run(
            [sys.executable, "-m", "cg3d", "classify", bad_point_files / name,
             "--checkpoint", tiny_checkpoint],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 2, (name, result.stderr)
        # the last line is the error (lines above: the tiny checkpoint's random-CLIP warnings)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {bad_point_files / name}: ")
        assert BAD_POINT_FILES[name][1] in last and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.classify([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), None),  # a list of xyz: fine
        (lambda m: m.classify([[0.0, 0.0], [1.0, 0.0]]), r"points: expected an \(N, 3\+\)"),
        (lambda m: m.classify([[0.0, 0.0, 0.0], [1.0]]), "points: not an array of numbers"),
        (lambda m: m.classify([["a", "b", "c"]]), "points: points must be real numbers"),
        (lambda m: m.classify(None), "points: points must be real numbers"),
        (lambda m: m.classify(np.zeros((0, 3))), r"got shape \(0, 3\)"),
        (lambda m: m.classify(np.ones((5, 3), complex)), "real numbers"),
        (lambda m: m.classify(cube(50, np.random.default_rng(0)), top="3"), "--top must be"),
        (lambda m: m.classify(cube(50, np.random.default_rng(0)), labels=5), "--labels: expected"),
        (lambda m: m.embed_prepared(np.zeros((2, 63, 3))), r"expected \(B, 64, 3\) prepared"),
        (lambda m: m.embed_prepared(np.zeros((2, 64, 6))), r"expected \(B, 64, 3\) prepared"),
        (lambda m: m.embed_prepared(np.zeros((64, 3))), r"expected \(B, 64, 3\) prepared"),
        (lambda m: m.embed_prepared([[[0.0] * 3] * 64, [[0.0] * 3]]), "not an array of numbers"),
        (lambda m: m.embed_prepared(np.full((1, 64, 3), "x")), r"got <U1 of shape"),
        (lambda m: m.classify(np.zeros((64, 2)), prepared=True), r"expected \(B, 64, 3\)"),
        (lambda m: m.embed_points(5), "points: expected a file, an array or a list, got int"),
        (lambda m: m.embed_points([np.zeros((5, 2))]), r"points: expected an \(N, 3\+\)"),
    ],
)
def test_bad_shapes_in_the_api_are_one_line_usage_errors(model, call, message):
    if message is None:
        assert len(call(model)) == 3
        return
    with pytest.raises(UsageError, match=message) as error:
        call(model)
    assert "\n" not in str(error.value)


class MeetingCache(dict):
    """A label cache whose oldest key two evicting threads read at once (where the GIL may
    switch between `next(iter(...))` and `pop`): each waits at `meeting` for the other, or,
    where the cache is locked, for `meeting`'s timeout."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.meeting = threading.Barrier(2, timeout=1)

    def __iter__(self):
        for key in list(super().__iter__()):
            with contextlib.suppress(threading.BrokenBarrierError):
                self.meeting.wait()
            yield key


def test_threads_that_evict_labels_at_once_each_get_their_features(tiny_checkpoint, monkeypatch):
    """A service's threads classifying past CLASS_CACHE_SIZE labels: two that evicted at once
    popped one key twice (KeyError: a failed request)."""
    model = cg3d.load(tiny_checkpoint)
    alone = {name: model.label_features([name])[0] for name in ("lamp", "vase")}
    monkeypatch.setattr(api, "CLASS_CACHE_SIZE", 1)
    model._class_cache = MeetingCache({("chair", "cg3d"): torch.zeros(1)})
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(lambda name: model.label_features([name])[0], alone)
        found = dict(zip(alone, found, strict=True))
    for name, features in alone.items():
        torch.testing.assert_close(found[name], features)
