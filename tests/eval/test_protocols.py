"""The zero-shot protocols' fields, each by its effect, and the registry's errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.protocols import CG3D, CG3D_PUBLIC, Protocol, get_protocol, register_protocol
from cg3d.eval.readers import prepare_points
from cg3d.eval.zeroshot import cached_text_features, protocol_n_points, text_cache_key
from cg3d.models.text import class_text_features


class TextModel:
    """Text features chosen by hand; `encode_text` normalises them as CG3D's does."""

    def __init__(self, outputs: dict[str, list[float]]):
        self.outputs, self.seen = outputs, []
        self.config = {"clip_model": "m", "clip_weights": "w", "clip_pretrained_loaded": True}

    def encode_text_raw(self, texts):
        self.seen += texts
        return torch.tensor([self.outputs[t] for t in texts])

    def encode_text(self, texts):
        return torch.nn.functional.normalize(self.encode_text_raw(texts), dim=-1)

    def device(self):
        return torch.device("cpu")


def protocol_text_features(model, names: list[str], protocol: Protocol) -> torch.Tensor:
    """Class features as the protocol's callers ask for them (eval, text-features, the app)."""
    return class_text_features(
        model, names, list(protocol.templates), as_written=True, normalise=protocol.normalise_text
    )


def test_the_registry_names_its_protocols_and_refuses_an_unknown_one_in_one_line():
    assert get_protocol("cg3d-public") is CG3D_PUBLIC and get_protocol("cg3d") is CG3D
    with pytest.raises(UsageError) as error:
        get_protocol("paper")
    message = str(error.value)
    assert message.startswith("--protocol: unknown protocol 'paper'") and "\n" not in message
    assert "'cg3d'" in message and "'cg3d-public'" in message
    assert register_protocol(replace(CG3D_PUBLIC)) is not None  # the same record again: fine
    # the project's UsageError (one line, exit 2) from the Python API too, not a ValueError
    with pytest.raises(UsageError, match="^protocol 'cg3d-public' is registered already$"):
        register_protocol(replace(CG3D_PUBLIC, normalise_text=True))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"class_names": "camel"}, "class_names"),
        ({"point_normalisation": "pca"}, "point_normalisation"),
        ({"fps_start": "last"}, "fps_start"),
        ({"up_axis": "w"}, "up_axis"),
        ({"constant_color": 2.0}, "constant_color"),
    ],
)
def test_a_protocol_with_a_wrong_field_is_refused(fields, message):
    with pytest.raises(UsageError, match=f"^bad: {message}"):  # UsageError, as for templates
        Protocol(**({"name": "bad", "description": "", "templates": ("a {}",)} | fields))


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("a photo of a {c}.", "holds no '{}'"),  # CLIP_benchmark's JSON: KeyError 'c' if used
        ("a {} of {c}", "a brace other than"),  # passed the count, then a KeyError traceback
        ("a {} photo}", "a brace other than"),  # passed, then "Single '}' encountered"
        # str.format's escaped brace, meant literally (passed, and prompted the literal "{}":
        # no class name); named as such, where "{} {{}}" read "holds '{}' 2 times"
        ("{{}}", "holds '{{' or '}}', str.format's escaped brace"),
        ("{} {{}}", "holds '{{' or '}}', str.format's escaped brace"),
        ("a {} {{3D}}", "holds '{{' or '}}', str.format's escaped brace"),
        ("a photo of a ｛｝", "holds no '{}'"),  # full-width braces are text, no placeholder
        ("{} or {}", "2 times"),
        ("a %s", "holds no '{}'"),
        ("{0}", "holds no '{}'"),
    ],
)
def test_a_template_is_one_brace_pair_for_the_name_and_no_other_brace(template, problem):
    # the project's UsageError (one line, exit 2), not a ValueError (a traceback from the CLI)
    with pytest.raises(UsageError) as error:
        Protocol(name="copied", description="", templates=("a {}", template))
    message = str(error.value)
    assert message.startswith(f"protocol copied: the template {template!r} ") and problem in message
    assert "\n" not in message


def test_templates_given_as_one_string_are_named_as_such():
    # ("a photo of a {}.") lacks the comma of a tuple of one: before, the string was read
    # letter by letter and refused as "the template 'a' holds no '{}'"
    with pytest.raises(UsageError) as error:
        Protocol(name="one", description="", templates=("a photo of a {}."))
    assert str(error.value).startswith(
        "protocol one: the templates are one string 'a photo of a {}.', not a list of templates"
    )


def test_class_names_are_written_with_spaces_or_as_the_files_write_them():
    classes, folders = ["night stand", "tv stand"], ["night_stand", "tv_stand"]
    assert CG3D.written_names(classes, folders) == ["night stand", "tv stand"]
    assert CG3D_PUBLIC.written_names(classes, folders) == ["night_stand", "tv_stand"]
    assert CG3D_PUBLIC.written_names(["box_a"]) == ["box_a"]  # no folder names: as given
    assert CG3D.written_names(["box_a"]) == ["box a"]


def test_the_public_text_features_are_this_is_a_name_not_normalised():
    model = TextModel({"This is a night_stand": [3.0, 4.0], "This is a cup": [0.0, 0.5]})
    features = protocol_text_features(model, ["night_stand", "cup"], CG3D_PUBLIC)
    assert torch.equal(features, torch.tensor([[3.0, 4.0], [0.0, 0.5]]))


def test_a_normalising_protocol_averages_unit_prompt_features_and_renormalises():
    outputs = {"a night_stand": [2.0, 0.0], "the night_stand": [0.0, 5.0]}
    two = Protocol(name="t", description="", templates=("a {}", "the {}"), class_names="raw")
    features = protocol_text_features(TextModel(outputs), ["night_stand"], two)
    assert torch.allclose(features, torch.tensor([[2**-0.5, 2**-0.5]]))  # not 2:5
    unnormalised = replace(two, normalise_text=False)
    features = protocol_text_features(TextModel(outputs), ["night_stand"], unnormalised)
    assert torch.equal(features, torch.tensor([[1.0, 2.5]]))  # the plain mean


def test_text_features_are_cached_by_the_protocols_text_settings(tmp_path):
    outputs = {"This is a night_stand": [3.0, 4.0], "This is a night stand": [1.0, 0.0]}
    names = ["night_stand"]
    model = TextModel(outputs)
    first = cached_text_features(model, names, CG3D_PUBLIC, tmp_path)
    again = cached_text_features(model, names, CG3D_PUBLIC, tmp_path)
    assert torch.equal(first, again) and model.seen == ["This is a night_stand"]  # read back
    normalised = replace(CG3D_PUBLIC, name="x", normalise_text=True)
    assert torch.allclose(
        cached_text_features(model, names, normalised, tmp_path), torch.tensor([[0.6, 0.8]])
    )
    assert len(model.seen) == 2  # another key: encoded anew
    seeded = replace(CG3D_PUBLIC, name="y", fps_start="seeded", point_normalisation="bbox")
    assert text_cache_key(model, names, seeded) == text_cache_key(model, names, CG3D_PUBLIC)
    assert text_cache_key(model, names, CG3D) != text_cache_key(model, names, CG3D_PUBLIC)


LINE = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [9, 0, 0]])


def test_centroid_or_bounding_box_centre_then_unit_radius():
    # centroid 3: [-3, -2, -1, 6] / 6; bounding-box centre 4.5: [-4.5, -3.5, -2.5, 4.5] / 4.5
    public = prepare_points(LINE, 4, protocol=CG3D_PUBLIC)
    assert sorted(public[:, 0]) == pytest.approx([-0.5, -1 / 3, -1 / 6, 1.0])
    ours = prepare_points(LINE, 4, protocol=CG3D)
    assert sorted(ours[:, 0]) == pytest.approx([-1.0, -7 / 9, -5 / 9, 1.0])
    assert np.all(public[:, 1:] == 0) and public.dtype == np.float32


def test_the_kernels_fps_starts_at_index_0():
    # normalised x: -0.5, -1/3, -1/6, 1. From index 0 the farthest is 1 (index 3); then the
    # distances to {-0.5, 1} are 1/6 for -1/3 and 1/3 for -1/6: index 2, then index 1
    picked = prepare_points(LINE, 4, protocol=CG3D_PUBLIC)[:, 0]
    assert picked.tolist() == pytest.approx([-0.5, 1.0, -1 / 6, -1 / 3])


def rows(points: np.ndarray) -> set[tuple]:
    return {tuple(round(float(v), 5) + 0.0 for v in row) for row in points}  # -0.0 → 0.0


def test_the_kernel_never_picks_the_centre_and_then_repeats_its_first_threads_point():
    # A symmetric cloud whose index 4 is at the centroid. Asked for all 7 points, the kernel
    # picks the 6 others, then repeats the eligible point of its lowest thread: 7 points →
    # 4 threads (k mod 4), eligible 0, 1, 2, 3, 5, 6 → index 0
    cloud = np.array(
        [[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 0], [0, 0, 3], [0, 0, -3]]
    )
    points = prepare_points(cloud, 7, protocol=CG3D_PUBLIC)
    others = np.delete(cloud, 4, axis=0) / 3
    assert rows(points[:6]) == rows(others) and (0.0, 0.0, 0.0) not in rows(points)
    assert np.allclose(points[6], cloud[0] / 3)
    # our protocol's FPS has no such skip: all 7 points
    assert (0.0, 0.0, 0.0) in rows(prepare_points(cloud, 7, protocol=CG3D))


def test_index_0_is_picked_first_even_at_the_centre():
    # index 0 is the centroid: picked first all the same; the 5 others follow; then the
    # kernel repeats index 4 (6 points → 4 threads; eligible 1..5 sit in threads 1, 2, 3, 0, 1)
    others = np.array([[1.0, 0, 0], [-1.2, 0, 0], [0, 2, 0], [0, -2.5, 0], [0.2, 0.5, 1.0]])
    cloud = np.concatenate([others.mean(axis=0, keepdims=True), others])
    centred = cloud - cloud[0]
    normalised = centred / np.linalg.norm(centred, axis=1).max()
    points = prepare_points(cloud, 8, protocol=CG3D_PUBLIC)
    assert np.allclose(points[0], 0.0, atol=1e-6)
    assert rows(points[1:6]) == rows(normalised[1:])
    assert np.allclose(points[6:], normalised[4], atol=1e-6)


def test_the_model_up_axis_and_the_constant_colour_come_from_the_protocol():
    cloud = np.array([[0.0, 1, 0], [0, -1, 0], [0.5, 0, 0]])  # Y up, as ModelNet's files
    z_up = replace(CG3D_PUBLIC, name="z", up_axis="z", constant_color=0.25)
    points = prepare_points(cloud, 3, point_channels=6, protocol=z_up)
    # the benchmark's up (y) becomes the model's up (z); rgb is the constant
    assert np.ptp(points[:, 2]) > 1.5 and np.ptp(points[:, 1]) == 0
    assert np.all(points[:, 3:] == 0.25)
    assert np.all(prepare_points(cloud, 3, point_channels=6, protocol=CG3D)[:, 3:] == 0.5)


def test_the_number_of_points_is_the_protocols_or_the_models():
    class Model:
        config = {"n_points": 8192}

    assert protocol_n_points(Model(), CG3D_PUBLIC) == 8192
    assert protocol_n_points(Model(), replace(CG3D_PUBLIC, name="n", n_points=1024)) == 1024


class PromptRecorder:
    """A model for `score_benchmark` that records the captions its text tower is given."""

    def __init__(self):
        self.seen: list[str] = []
        self.config = {"clip_pretrained_loaded": False, "point_channels": 6, "n_points": 8}

    def encode_text(self, texts):
        self.seen += texts
        rows = [torch.tensor([1.0, float(len(t)), float(sum(map(ord, t)) % 97)]) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def encode_points(self, points):
        return torch.nn.functional.normalize(torch.ones(len(points), 3), dim=-1)

    def device(self):
        return torch.device("cpu")


@pytest.mark.parametrize(
    "benchmark_name, classes, written",
    [
        # Uni3D's data/labels.json: objaverse_lvis_openshape as LVIS writes its categories,
        # modelnet40_openshape with spaces ("flower pot")
        (
            "objaverse-lvis",
            ["Band_Aid", "arctic_(type_of_shoe)"],
            ["Band_Aid", "arctic_(type_of_shoe)"],
        ),
        ("modelnet40", ["flower_pot", "tv_stand"], ["flower pot", "tv stand"]),
    ],
)
def test_uni3d_writes_lvis_names_as_lvis_does_and_modelnet_names_with_spaces(
    benchmark_name, classes, written
):
    # before: every benchmark's names had spaces under uni3d, so its LVIS prompts read
    # "a point cloud model of Band Aid." where Uni3D's own eval reads "... of Band_Aid."
    from cg3d.eval.readers import Benchmark, Shape
    from cg3d.eval.zeroshot import ZeroShotConfig, score_benchmark

    small = register_protocol(replace(get_protocol("uni3d"), name="test-uni3d-8", n_points=8))
    rng = np.random.default_rng(0)
    shapes = [Shape(f"s{i}", rng.normal(size=(8, 3)), i) for i in range(len(classes))]
    bench = Benchmark(benchmark_name, "test", classes, len(shapes), lambda: iter(shapes))
    model = PromptRecorder()
    score_benchmark(model, bench, ZeroShotConfig(protocol=small.name, batch_size=2))
    first_template = small.templates[0]  # "a point cloud model of {}."
    assert [t for t in model.seen if t.startswith("a point cloud model of")] == [
        first_template.format(name) for name in written
    ]


def uni3d_pc_norm(pc: np.ndarray) -> np.ndarray:
    """Uni3D's ScanObjNN_openshape.pc_norm (data/datasets.py), written out."""
    pc = pc - np.mean(pc, axis=0)
    return pc / np.max(np.sqrt(np.sum(pc**2, axis=1)))


def test_uni3d_feeds_a_short_cloud_as_it_is_as_its_scanobjectnn_loader():
    # before: a 2048-point ScanObjectNN cloud was topped up to 10,000 with one point repeated
    # 7,952 times (the kernel FPS) and its centre point dropped: Uni3D's kNN patches then
    # held copies of one point; Uni3D's loader feeds the file's points as they are
    uni3d = get_protocol("uni3d")
    rng = np.random.default_rng(3)
    cloud = rng.normal(size=(2048, 3)).astype(np.float32)
    cloud[7] = cloud.mean(axis=0)  # a point at the centroid: pointnet2_ops' FPS never picks it
    ours = prepare_points(cloud, 10000, point_channels=6, protocol=uni3d)
    assert ours.shape == (2048, 6)
    np.testing.assert_allclose(ours[:, :3], uni3d_pc_norm(cloud.astype(np.float64)), atol=1e-5)
    # fewer points than its Group's 512 FPS centres: topped up to 512, no further
    assert prepare_points(cloud[:300], 10000, point_channels=6, protocol=uni3d).shape == (512, 6)
    # exactly n_points (LVIS's and ModelNet40's 10,000): as they are too, the centre point kept
    full = np.concatenate([cloud, rng.normal(size=(7952, 3)).astype(np.float32)])
    full[7] = full.mean(axis=0)
    ours = prepare_points(full, 10000, point_channels=6, protocol=uni3d)
    np.testing.assert_allclose(ours[:, :3], uni3d_pc_norm(full.astype(np.float64)), atol=1e-5)


def test_clouds_fed_as_they_are_are_batched_by_their_number_of_points():
    from cg3d.eval.readers import Benchmark, Shape
    from cg3d.eval.zeroshot import iter_point_batches

    rng = np.random.default_rng(4)
    sizes = [600, 600, 700, 600]
    shapes = [Shape(f"s{i}", rng.normal(size=(n, 3)), 0) for i, n in enumerate(sizes)]
    bench = Benchmark("scanobjectnn", "test", ["a", "b"], len(shapes), lambda: iter(shapes))
    batches = list(
        iter_point_batches(bench, 10000, 8, point_channels=6, protocol=get_protocol("uni3d"))
    )
    assert [tuple(points.shape) for points, _, _ in batches] == [
        (2, 600, 6),
        (1, 700, 6),
        (1, 600, 6),
    ]
    assert [key for _, _, keys in batches for key in keys] == ["s0", "s1", "s2", "s3"]


@pytest.mark.parametrize("name", ["uni3d", "openshape"])
def test_scanobjectnn_gets_the_peers_constant_colour_0_4(name):
    # Uni3D's ScanObjNN_openshape and OpenShape's ScanObjectNNTest give a cloud without rgb
    # `np.ones_like(xyz) * 0.4`; their ModelNet40 files hold 100, read as 100/255. Before:
    # 100/255 for ScanObjectNN too
    from cg3d.eval.readers import Benchmark, Shape
    from cg3d.eval.zeroshot import prepared_shapes

    rng = np.random.default_rng(5)
    shape = Shape("s0", rng.normal(size=(600, 3)), 0)
    for benchmark_name, colour in (("scanobjectnn", 0.4), ("modelnet40", 100 / 255)):
        bench = Benchmark(benchmark_name, "test", ["a", "b"], 1, lambda: iter([shape]))
        (points, _, _), *_ = prepared_shapes(
            bench, 10000, point_channels=6, protocol=get_protocol(name)
        )
        np.testing.assert_allclose(points[:, 3:], colour, rtol=0, atol=1e-7)


def test_openshape_writes_lvis_names_as_its_feature_extraction_does():
    # src/extract_lvis_feat.py: `extract_clip_feat([name], ...)` for each sorted LVIS key, as
    # it is; before: "Band Aid"
    openshape = get_protocol("openshape")
    assert openshape.written_names(["Band_Aid"], benchmark="objaverse-lvis") == ["Band_Aid"]
    assert openshape.written_names(["flower_pot"], benchmark="modelnet40") == ["flower pot"]
