import json

import numpy as np
import pytest

from cg3d.eval.metrics import (
    average_precision,
    classification_metrics,
    confusion_matrix,
    retrieval_metrics,
)


def test_classification_metrics_by_hand():
    # 4 shapes, 3 classes; predictions: 0→0 ok, 0→1 wrong (true is 2nd best), 1→1 ok, 2→0 wrong (3rd)
    scores = np.array([[0.9, 0.1, 0.0], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 0, 1, 2])
    m = classification_metrics(scores, labels, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(50.0)
    assert "top5" not in m  # issue 26: with 3 classes every label is in the top 5
    # per class: a 1/2, b 1/1, c 0/1 → mean 50 %
    assert m["per_class"] == {"a": 50.0, "b": 100.0, "c": 0.0}
    assert m["class_mean"] == pytest.approx(50.0)
    assert m["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert m["n_shapes"] == 4


def test_class_mean_skips_absent_classes_and_top5():
    scores = np.tile(np.arange(10.0)[::-1], (2, 1))  # ranking 0, 1, ..., 9
    m = classification_metrics(scores, np.array([4, 5]), [str(i) for i in range(10)])
    assert m["top1"] == 0.0 and m["top5"] == 50.0
    assert m["per_class"]["0"] is None and m["class_mean"] == 0.0


def test_topk_is_reported_only_below_the_class_count():
    """Issue 26: top-5 read 100 % on a 4-class set."""
    scores = np.tile(np.arange(6.0)[::-1], (2, 1))  # ranking 0, 1, ..., 5
    labels = np.array([4, 5])
    assert "top5" not in classification_metrics(scores[:, :4], np.array([3, 2]), list("abcd"))
    # label 4 is 5th, label 5 is 6th: one of two in the top 5 of 6 classes
    assert classification_metrics(scores, labels, list("abcdef"))["top5"] == 50.0


def test_confusion_matrix_counts():
    assert confusion_matrix(np.array([0, 0, 1]), np.array([1, 1, 1]), 2).tolist() == [
        [0, 2],
        [0, 1],
    ]


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(np.array([[True, False, True, False]]))[0] == pytest.approx(
        (1 + 2 / 3) / 2
    )
    assert average_precision(np.array([[False, False]]))[0] == 0.0


def test_retrieval_metrics_by_hand():
    similarity = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    relevant = np.array([[False, True, False], [True, False, False]])
    m = retrieval_metrics(similarity, relevant, ks=(1, 2, 3))
    assert m["R@1"] == 0.0
    assert m["R@2"] == 50.0  # query 0 finds its item at rank 2; query 1 only at rank 3
    assert "R@3" not in m  # the top 3 of 3 items is the whole gallery
    assert m["mAP"] == pytest.approx(100 * (1 / 2 + 1 / 3) / 2)
    assert (m["queries"], m["gallery"]) == (2, 3)


def test_recall_at_k_is_reported_only_below_the_gallery_size():
    """R@10 on a gallery of 4 read 100 %: every query's top 10 was its whole gallery
    (CLIP_benchmark's torch.topk refuses such a k)."""
    similarity = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    relevant = np.array([[True, False, False, False], [False, False, False, True]])
    m = retrieval_metrics(similarity, relevant, ks=(1, 3, 4, 10))
    # both relevant items are ranked last (4th): a miss in the top 1 and the top 3
    assert (m["R@1"], m["R@3"]) == (0.0, 0.0)
    assert "R@4" not in m and "R@10" not in m
    assert m["mAP"] == pytest.approx(25.0)  # AP 1/4 each


def test_recall_counts_a_query_once_whatever_its_matches():
    """CLIP_benchmark's recall@k: a hit if ANY true match is in the top k; a query with none
    is a miss. Query 0 has two matches (ranks 2 and 3), query 1 one (rank 1), query 2 none."""
    similarity = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]] * 3)
    relevant = np.array(
        [
            [False, True, True, False, False],
            [True, False, False, False, False],
            [False, False, False, False, False],
        ]
    )
    m = retrieval_metrics(similarity, relevant, ks=(1, 2, 3))
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["R@2"] == m["R@3"] == pytest.approx(200 / 3)
    # AP: query 0 (1/2 + 2/3) / 2, query 1 1, query 2 (no match) 0
    assert m["mAP"] == pytest.approx(100 * ((1 / 2 + 2 / 3) / 2 + 1) / 3)


def test_scores_one_rounding_apart_count_as_tied():
    """Identical prompts' columns of a float32 matmul can differ in their last bit (CPU, 17
    classes, a batch of 7 shapes: 1.1e-8 apart): tied_top1 compared exactly and missed them. A
    real gap is no tie."""
    top = np.float32(0.05)
    above = np.nextafter(top, np.float32(1))  # one float32 step above
    scores = np.array([[top, 0.01, above], [0.3, 0.2, 0.1], [0.3, 0.2999, 0.1]], dtype=np.float32)
    m = classification_metrics(scores, np.array([0, 0, 0]), ["a", "b", "c"])
    assert m["tied_top1"] == 1


def test_ties_go_to_the_lower_index():
    """Classes 1 and 2 have identical scores (duplicate prompts): the lower index ranks first,
    every time; class 2 is never the top-1 guess."""
    scores = np.array([[0.1, 0.5, 0.5], [0.1, 0.5, 0.5], [0.5, 0.5, 0.5]])
    m = classification_metrics(scores, np.array([1, 2, 2]), ["a", "b", "c"])
    assert m["confusion"].tolist() == [[0, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert m["per_class"] == {"a": None, "b": 100.0, "c": 0.0}
    assert m["top1"] == pytest.approx(100 / 3) and m["class_mean"] == pytest.approx(50.0)
    assert m["tied_top1"] == 3  # every shape's top score is shared: the rule decided them
    assert classification_metrics(scores[:, :2], np.array([1, 1, 1]), ["a", "b"])["tied_top1"] == 1
    # a shape equally close to gallery items 0 and 2: item 0 first, item 2 second
    m = retrieval_metrics(
        np.array([[0.7, 0.1, 0.7, 0.0]]), np.array([[False, False, True, False]]), ks=(1, 2)
    )
    assert (m["R@1"], m["R@2"], m["mAP"]) == (0.0, 100.0, 50.0)


def test_one_class_split_one_shape_classes():
    """A test split holding one of three classes, one shape of it: class_mean is over the
    classes present (CLIP_benchmark's balanced accuracy drops absent classes too), absent
    ones are None (null in JSON, never NaN), the confusion matrix keeps all classes."""
    m = classification_metrics(np.array([[0.2, 0.9, 0.1]]), np.array([1]), ["a", "b", "c"])
    assert (m["top1"], m["class_mean"]) == (100.0, 100.0)
    assert m["per_class"] == {"a": None, "b": 100.0, "c": None}
    assert m["confusion"].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    # no NaN literal in what is written as JSON (the matrix, an array, goes to per_class.csv)
    json.dumps({k: v for k, v in m.items() if k != "confusion"}, allow_nan=False)


def test_distinct_cosines_a_millionth_apart_are_no_tie():
    """The tolerance was an absolute 1e-6 on cosines: distinct classes come that close (random
    512-d features, 1,156 classes: 3 shapes in 20,000) and were counted tied, warned about as
    identical prompts. 5e-7 at 0.2 is over 30 float32 steps: a real, if small, gap."""
    scores = np.array([[0.2, 0.2 - 5e-7, 0.1]], dtype=np.float32)
    assert scores[0, 0] != scores[0, 1]
    m = classification_metrics(scores, np.array([0]), ["a", "b", "c"])
    assert m["tied_top1"] == 0


def test_ranks_match_a_stable_sort_with_ties_and_nans(monkeypatch):
    """`label_ranks` and `top1_predictions` count instead of sorting: the same order as a
    stable argsort of -scores (ties to the lower index, NaN after every number), over more
    rows than one block."""
    import cg3d.eval.metrics as metrics
    from cg3d.eval.metrics import label_ranks, top1_predictions

    monkeypatch.setattr(metrics, "BLOCK_CELLS", 9 * 64)  # blocks of 64 rows
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (1000, 9)).astype(np.float32)  # many exact ties
    scores[rng.random(scores.shape) < 0.1] = np.nan
    scores[5] = np.nan  # a row of NaNs only
    labels = rng.integers(0, 9, len(scores))
    order = np.argsort(-scores, axis=1, kind="stable")
    expected = np.argmax(order == labels[:, None], axis=1)
    assert np.isnan(scores[np.arange(len(labels)), labels]).any()
    assert label_ranks(scores, labels).tolist() == expected.tolist()
    assert top1_predictions(scores).tolist() == order[:, 0].tolist()


def test_classification_metrics_hold_no_score_sized_arrays():
    """Objaverse-LVIS: 46k shapes x 1,156 classes. Each top-k and the guesses sorted the whole
    (N, C) matrix (an int64 index per score and a negated copy: 1 GiB above the scores, 15 s);
    the metrics now count per block of rows, so what they allocate stays well under the
    scores' own size, however many shapes."""
    import tracemalloc

    from cg3d.eval.metrics import topk_accuracies

    rng = np.random.default_rng(0)
    n, classes = 40_000, 300
    scores = rng.standard_normal((n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    names = [f"c{i}" for i in range(classes)]
    tracemalloc.start()
    try:
        metrics = classification_metrics(scores, labels, names)
        metrics |= topk_accuracies(scores, labels, classes, (3,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == n and {"top1", "top3", "top5"} <= set(metrics)
    assert peak < scores.nbytes / 4, (peak, scores.nbytes)
