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
