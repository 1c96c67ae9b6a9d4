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
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
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
    assert m["R@3"] == 100.0
    assert m["mAP"] == pytest.approx(100 * (1 / 2 + 1 / 3) / 2)
    assert (m["queries"], m["gallery"]) == (2, 3)
