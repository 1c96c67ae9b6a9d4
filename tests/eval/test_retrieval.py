import numpy as np
import pytest

from cg3d.eval.retrieval import Features, all_metrics, relevance


def features() -> Features:
    """3 objects (classes 0, 0, 1), two views each, three distinct captions."""
    eye = np.eye(4)
    return Features(
        points=np.array([eye[0], eye[1], eye[2]]),
        # views 0, 1 of object 0 match it; object 1's views look mostly (2) or wholly (3) like object 0
        images=np.array([eye[0], eye[0], 0.9 * eye[0] + 0.1 * eye[1], eye[0], eye[2], eye[2]]),
        image_object=np.array([0, 0, 1, 1, 2, 2]),
        texts=np.array([eye[0], eye[2], eye[3]]),
        captions=["a chair", "a lamp", "a seat"],
        caption_classes=np.array([[True, False], [False, True], [True, False]]),
        labels=np.array([0, 0, 1]),
        keys=["a", "b", "c"],
    )


def test_relevance_definitions():
    rel = relevance(features())
    assert rel["point_to_image"].tolist() == [
        [True, True, False, False, False, False],
        [False, False, True, True, False, False],
        [False, False, False, False, True, True],
    ]
    # class level: objects 0 and 1 (class 0) match "a chair" and "a seat"; object 2 "a lamp"
    assert rel["point_to_text"].tolist() == [
        [True, False, True],
        [True, False, True],
        [False, True, False],
    ]
    assert (rel["text_to_point"] == rel["point_to_text"].T).all()
    assert (rel["image_to_point"] == rel["point_to_image"].T).all()


def test_retrieval_metrics_of_all_directions_by_hand():
    metrics = all_metrics(features())
    # point→image. p0: i0, i1 first (AP 1). p1 (sims 0, 0, .1, 0, 0, 0): i2 first, then the ties
    # in gallery order i0, i1, i3: relevant at ranks 1 and 4, AP (1 + 2/4) / 2. p2: AP 1.
    p2i = metrics["point_to_image"]
    assert p2i["R@1"] == 100.0
    assert p2i["mAP"] == pytest.approx(100 * (1 + 0.75 + 1) / 3)
    # image→point: i2 and i3 rank p0 before their own p1 (AP 1/2); the other four hit at once
    i2p = metrics["image_to_point"]
    assert i2p["R@1"] == pytest.approx(100 * 4 / 6)
    assert "R@5" not in i2p  # a gallery of 3 points: the top 5 is all of it
    assert i2p["mAP"] == pytest.approx(100 * (4 + 0.5 + 0.5) / 6)
    # point→text: p0 and p1 (class 0) find "a chair" first and "a seat" third: AP (1 + 2/3) / 2
    p2t = metrics["point_to_text"]
    assert p2t["R@1"] == 100.0
    assert p2t["mAP"] == pytest.approx(100 * (2 * (1 + 2 / 3) / 2 + 1) / 3)
    assert (p2t["queries"], p2t["gallery"]) == (3, 3)
    assert metrics["text_to_point"]["queries"] == 3


def many_features(objects: int, views: int) -> Features:
    """Random unit features: `objects` of 20 classes, `views` each, a caption per class."""
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, 8)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    labels = np.arange(objects) % 20
    return Features(
        points=unit(objects),
        images=unit(objects * views),
        image_object=np.repeat(np.arange(objects), views),
        texts=unit(20),
        captions=[f"class {i}" for i in range(20)],
        caption_classes=np.eye(20, dtype=bool),
        labels=labels,
        keys=[str(i) for i in range(objects)],
    )


def test_all_metrics_never_hold_a_whole_similarity_matrix(monkeypatch):
    """Objaverse scale: 20k objects x 5 views made a 20k x 100k similarity matrix per
    direction (8 GiB), its sort twice that: the eval died for memory. The directions are
    scored a block of query rows at a time; the numbers are those of one whole block."""
    import tracemalloc

    import cg3d.eval.metrics as metrics

    features = many_features(1000, 4)
    monkeypatch.setattr(metrics, "BLOCK_CELLS", 1 << 30, raising=False)
    whole = all_metrics(features)  # each direction in one block
    monkeypatch.setattr(metrics, "BLOCK_CELLS", 1 << 14, raising=False)
    tracemalloc.start()
    try:
        blocked = all_metrics(features)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert blocked == whole
    similarity_bytes = len(features.points) * len(features.images) * 4  # float32
    assert peak < similarity_bytes / 4, (peak, similarity_bytes)
