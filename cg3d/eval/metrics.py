"""Classification and retrieval metrics over plain numpy arrays.

Classification: top-k accuracy (the label among the k highest scores), class-mean accuracy
(the mean of per-class top-1 accuracies over the classes that occur: CLIP_benchmark's
mean_per_class_recall, sklearn's balanced accuracy, drops absent classes too), confusion matrix,
and tied_top1, the shapes whose highest score two classes share, to `TIE_STEPS` float32 steps
(the tie rule or the rounding of the scores decided them).

Retrieval, for a (queries × gallery) similarity matrix and a boolean relevance matrix:
  R@K  the fraction of queries with at least one relevant item among their top K (CLIP_benchmark's
       recall@k; a query with no relevant item is a miss), only for K below the gallery size:
       with K items or more the top K is the whole gallery (CLIP_benchmark's torch.topk fails)
  mAP  the mean over queries of average precision: the mean, over the relevant items, of the
       precision at each relevant item's rank (all relevant items count, not only the top K);
       a query with no relevant item scores 0, as it misses in R@K.
Ties in scores are broken by index (a stable sort: the lower class or gallery index ranks
first), so the same scores give the same numbers on every run (scores computed on another
device may differ in their last bits, and so break near-ties otherwise). The public codes rank with
torch.topk, whose order among equal scores is unspecified (on CPU it is not index order):
where scores tie exactly (identical text features of two classes) their numbers may differ.
"""

from collections.abc import Iterable, Iterator

import numpy as np

# Scores compared at once: a block of whole rows of at most this many cells, so that the
# temporaries (a sort's int64 indices, booleans) stay some 10 MiB, whatever the number of shapes
# or the gallery's size. Whole-matrix sorts held an int64 index per score and a negated copy:
# Objaverse-LVIS zero-shot (46k shapes x 1,156 classes, four sorts: top-1, 3, 5, the guesses)
# 15 s and 1 GiB above the scores; retrieval over 20k objects x 5 views, 8 GiB per direction.
BLOCK_CELLS = 1 << 20


def row_blocks(rows: int, columns: int) -> Iterator[slice]:
    """Consecutive blocks of `rows` rows of `columns` values each, BLOCK_CELLS at most (one
    row at least)."""
    step = max(1, BLOCK_CELLS // max(columns, 1))
    return (slice(start, start + step) for start in range(0, rows, step))


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) int: each shape's label's place among its scores, 0 = the highest. The order is a
    stable sort of -scores (higher first, equal scores by class index, NaN last, NaNs by
    index), counted per row, O(N x C) and no (N, C) sort."""
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    ranks = np.empty(len(labels), dtype=np.int64)
    columns = np.arange(scores.shape[1])
    for rows in row_blocks(*scores.shape):
        block, label = scores[rows], labels[rows, None]
        own = np.take_along_axis(block, label, axis=1)
        before = columns < label
        above = (block > own) | ((block == own) & before)
        if np.isnan(own).any():  # a NaN label ranks after every number and earlier NaNs
            missing = np.isnan(block)
            above |= np.isnan(own) & (~missing | before)
        ranks[rows] = above.sum(axis=1)
    return ranks


def top1_predictions(scores: np.ndarray) -> np.ndarray:
    """(N,) the highest-scoring class of each row, the lower index on a tie, NaN never above
    a number (the first of a stable sort of -scores), without sorting."""
    scores = np.asarray(scores)
    guesses = np.empty(len(scores), dtype=np.int64)
    for rows in row_blocks(*scores.shape):
        block = scores[rows]
        if np.issubdtype(block.dtype, np.floating):
            block = np.where(np.isnan(block), -np.inf, block)
        guesses[rows] = np.argmax(block, axis=1)
    return guesses


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def topk_accuracies(
    scores: np.ndarray, labels: np.ndarray, n_classes: int, ks: tuple[int, ...]
) -> dict[str, float]:
    """`topK` accuracy (in %) for each k of `ks` below `n_classes`: with k classes or fewer
    every label is among the top k, and a 100 % would say nothing (ULIP's topk fails there;
    clip_benchmark writes acc5 NaN below 5 classes and 100 % at 5)."""
    return ranked_accuracies(label_ranks(scores, labels), n_classes, ks)


def ranked_accuracies(ranks: np.ndarray, n_classes: int, ks: tuple[int, ...]) -> dict[str, float]:
    """`topk_accuracies` from the labels' `label_ranks`."""
    return {f"top{k}": 100.0 * float((ranks < k).mean()) for k in ks if k < n_classes}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """top1, top5 (with more than 5 classes), class_mean (in %), per-class top-1 accuracy,
    n_shapes, tied_top1 (shapes whose top score two classes share) and the confusion matrix,
    as the (C, C) array: its Python lists (`tolist`) were 100M objects for 10k classes, 3 GB
    more and 15 s per evaluation (and per epoch of a fine-tune), for callers that took it
    back into NumPy."""
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("no shapes to score")
    predicted = top1_predictions(scores)
    matrix = confusion_matrix(labels, predicted, len(classes))
    counts = matrix.sum(axis=1)
    present = counts > 0
    per_class_acc = np.diag(matrix)[present] / counts[present]
    tied = sum(
        int((near_top(scores[rows]).sum(axis=1) > 1).sum()) for rows in row_blocks(*scores.shape)
    )
    ranks = label_ranks(scores, labels)
    return {
        "top1": 100.0 * float((ranks < 1).mean()),
        **ranked_accuracies(ranks, len(classes), (5,)),
        "class_mean": 100.0 * float(per_class_acc.mean()),
        "per_class": {
            name: (100.0 * float(matrix[i, i] / counts[i]) if counts[i] else None)
            for i, name in enumerate(classes)
        },
        "n_shapes": len(labels),
        "tied_top1": tied,
        "confusion": matrix,
    }


# Scores this many float32 steps below a row's top tie with it: identical text features
# (duplicate prompts) do not always score identically, a float32 matmul may round their two
# columns a step apart (probe, CPU: 17 classes, a batch of 7 shapes, 1.1e-8), so an exact
# comparison missed those ties. In float32 steps of the top, not an absolute 1e-6: cosines of
# distinct classes come that close (random 512-d features, 1,156 classes as LVIS: 3 shapes in
# 20,000 within 1e-6, counted tied and warned about as "identical class prompts?").
TIE_STEPS = 4


def near_top(scores: np.ndarray) -> np.ndarray:
    """(N, C) bool: the scores within `TIE_STEPS` float32 steps of their row's highest."""
    top = scores.max(axis=1, keepdims=True)
    return scores >= top - TIE_STEPS * np.spacing(np.abs(top).astype(np.float32))


def average_precision(ranked_relevance: np.ndarray) -> np.ndarray:
    """(Q,) AP of each row of relevance flags in ranked order (0 where a row has none)."""
    hits = np.cumsum(ranked_relevance, axis=1)
    ranks = np.arange(1, ranked_relevance.shape[1] + 1)
    precision_at_hits = np.where(ranked_relevance, hits / ranks, 0.0)
    n_relevant = ranked_relevance.sum(axis=1)
    return np.divide(
        precision_at_hits.sum(axis=1),
        n_relevant,
        out=np.zeros(len(n_relevant)),
        where=n_relevant > 0,
    )


def retrieval_metrics(
    similarity: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict:
    """R@K (in %, each K of `ks` below G) and mAP (in %) of (Q, G) `similarity` against
    (Q, G) bool `relevant`."""
    similarity, relevant = np.asarray(similarity), np.asarray(relevant)
    blocks = ((similarity[rows], relevant[rows]) for rows in row_blocks(*similarity.shape))
    return blocked_retrieval_metrics(blocks, similarity.shape[1], ks)


def blocked_retrieval_metrics(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], gallery: int, ks: tuple[int, ...] = (1, 5, 10)
) -> dict:
    """`retrieval_metrics` of (similarity, relevance) blocks of consecutive query rows over a
    gallery of `gallery` items, made by the caller one at a time (`row_blocks`): the (Q, G)
    matrices are never whole."""
    ks = tuple(k for k in ks if k < gallery)
    hits = dict.fromkeys(ks, 0)
    precisions = [np.zeros(0)]
    for similarity, relevant in blocks:
        order = np.argsort(-np.asarray(similarity), axis=1, kind="stable")
        ranked = np.take_along_axis(np.asarray(relevant, dtype=bool), order, axis=1)
        for k in ks:
            hits[k] += int(ranked[:, :k].any(axis=1).sum())
        precisions.append(average_precision(ranked))
    ap = np.concatenate(precisions)
    metrics = {f"R@{k}": 100.0 * (hits[k] / len(ap)) for k in ks}
    metrics["mAP"] = 100.0 * float(ap.mean())
    metrics["queries"] = int(len(ap))
    metrics["gallery"] = int(gallery)
    return metrics
