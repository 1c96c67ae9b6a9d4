import pyarrow.parquet as pq

from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import MeshRecord, write_classes, write_manifest
from cg3d.pipeline.captions import CaptionConfig, caption_objects, display_names
from cg3d.protocol import templates
from tests.pipeline.fakes import fake_meshes, ok_ids


def captions_of(folder):
    table = pq.read_table(folder / "captions.parquet")
    return dict(zip(table["id"].to_pylist(), table["captions"].to_pylist(), strict=True))


def test_captions_fill_templates_with_names_and_free_text(tmp_path):
    records = fake_meshes(tmp_path / "meshes", per_class=2)
    summary = caption_objects(tmp_path / "meshes", tmp_path / "out", CaptionConfig())
    captions = captions_of(tmp_path / "out")
    assert sorted(captions) == ok_ids(records)
    assert summary.captioned == len(captions) and summary.failures == 1
    n = len(templates("cg3d"))
    assert n == 63
    chair = captions["synthetic-chair-000"]
    assert len(chair) == n  # "chair" only: its synonym "seat" needs caption.synonyms
    assert "a photo of a chair." in chair
    table = captions["synthetic-table-000"]
    assert len(table) == n + 1 and "a wooden thing" in table
    failures = read_failures(tmp_path / "out" / "failures.parquet")
    assert [(f["id"], f["stage"]) for f in failures] == [("synthetic-broken-000", "meshes")]


def test_captions_are_deterministic_by_seed_and_template_set(tmp_path):
    fake_meshes(tmp_path / "meshes", per_class=2)
    for name, config in [
        ("a", CaptionConfig(seed=1)),
        ("b", CaptionConfig(seed=1)),
        ("c", CaptionConfig(seed=2)),
        ("u", CaptionConfig(templates="ulip64")),
    ]:
        caption_objects(tmp_path / "meshes", tmp_path / name, config)
    a, b, c = (captions_of(tmp_path / name) for name in "abc")
    assert a == b
    assert a != c and all(sorted(a[k]) == sorted(c[k]) for k in a)
    assert len(captions_of(tmp_path / "u")["synthetic-lamp-000"]) == 64


def test_display_names_apply_shapenet_renames_and_underscores():
    assert display_names("display", ["screen", "display"], "shapenet") == [
        "monitor",
        "screen",
        "display",
    ]
    assert display_names("flower_pot", [], "modelnet") == ["flower pot"]


def shapenet_monitor(root):
    """One ShapeNet-like object whose class is renamed (display -> monitor) and has synonyms."""
    record = MeshRecord(
        id="shapenet-display-000",
        source="shapenet",
        path="03211117/m1/models/model_normalized.obj",
        class_name="display",
        split="train",
        synonyms=["video display", "screen"],
        sha256="00",
    )
    root.mkdir(parents=True, exist_ok=True)
    write_manifest([record], root)
    write_classes(["monitor"], root)
    return record.id


def test_shapenet_captions_name_only_the_renamed_class_by_default(tmp_path):
    object_id = shapenet_monitor(tmp_path / "meshes")
    caption_objects(tmp_path / "meshes", tmp_path / "out", CaptionConfig())
    captions = captions_of(tmp_path / "out")[object_id]
    assert sorted(captions) == sorted(t.format("monitor") for t in templates("cg3d"))
    assert not any("screen" in c or "display" in c for c in captions)


def test_caption_synonyms_param_adds_every_synonym(tmp_path):
    object_id = shapenet_monitor(tmp_path / "meshes")
    caption_objects(tmp_path / "meshes", tmp_path / "out", CaptionConfig(synonyms=True))
    captions = captions_of(tmp_path / "out")[object_id]
    n = len(templates("cg3d"))
    assert len(captions) == 3 * n
    for name in ("monitor", "video display", "screen"):
        assert f"a photo of a {name}." in captions


def test_caption_text_from_annotations_is_bounded(tmp_path):
    """A 100 MB Objaverse name made a 100 MB caption (1.2 GB of memory in the stage, and in
    every loader that tokenises it); 2 million synonyms would be 10^8 captions of one object.
    A caption is cut where CLIP's 77 tokens have long run out; a synonym list over the bound
    is a failure row of this stage, naming the count."""
    from cg3d.pipeline.captions import MAX_CAPTION_CHARS, MAX_NAMES

    long_name = "a chair " * 2_000_000  # 16 MB of words
    rows = [
        MeshRecord("o-long", "objaverse", "a.glb", "chair", "train", name=long_name),
        MeshRecord("o-many", "shapenet", "b.obj", "chair", "train", synonyms=["s"] * MAX_NAMES),
        MeshRecord("o-fine", "shapenet", "c.obj", "chair", "train", synonyms=["seat"]),
    ]
    (tmp_path / "meshes").mkdir()
    write_manifest(rows, tmp_path / "meshes")
    write_classes(["chair"], tmp_path / "meshes")
    summary = caption_objects(tmp_path / "meshes", tmp_path / "out", CaptionConfig(synonyms=True))
    captions = captions_of(tmp_path / "out")
    assert sorted(captions) == ["o-fine", "o-long"]
    assert max(len(c) for c in captions["o-long"]) == MAX_CAPTION_CHARS
    assert long_name.strip()[:MAX_CAPTION_CHARS] in captions["o-long"]
    assert len(captions["o-fine"]) == 2 * len(templates("cg3d"))
    (failure,) = read_failures(tmp_path / "out" / "failures.parquet")
    assert failure == {
        "id": "o-many",
        "stage": "caption",
        "reason": f"{MAX_NAMES} synonyms, more than the {MAX_NAMES - 1} captioned",
    }
    assert (summary.captioned, summary.failures, summary.refused) == (2, 1, 1)


def test_the_most_captions_the_stage_writes_stay_within_what_the_readers_take(tmp_path):
    """An object of MAX_NAMES - 1 synonyms and a free-text name, under the larger template set:
    pack and the loaders must take all its captions (the readers refuse more than the bound)."""
    from cg3d.formats.captions import MAX_CAPTIONS_PER_OBJECT
    from cg3d.pipeline.captions import MAX_NAMES, TEMPLATE_SETS

    largest = max(TEMPLATE_SETS, key=lambda name: len(templates(name)))
    synonyms = [f"seat{k}" for k in range(MAX_NAMES - 1)]
    row = MeshRecord("o-most", "shapenet", "a.obj", "chair", "train", synonyms=synonyms, name="x")
    (tmp_path / "meshes").mkdir()
    write_manifest([row], tmp_path / "meshes")
    write_classes(["chair"], tmp_path / "meshes")
    config = CaptionConfig(synonyms=True, templates=largest)
    caption_objects(tmp_path / "meshes", tmp_path / "out", config)
    (captions,) = captions_of(tmp_path / "out").values()
    assert len(captions) == MAX_NAMES * len(templates(largest)) + 1
    assert len(captions) <= MAX_CAPTIONS_PER_OBJECT
