"""Figures of the eval area, drawn with matplotlib's `Figure` (no pyplot) and saved by its
Agg canvas.

Nothing here changes matplotlib for the process: a notebook or a script that runs `cg3d eval`
in-process keeps its own backend and settings. Importing this module switched the process to
Agg (a notebook's `plt.show()` showed nothing after it) and turned mathtext off for good
(`$x^2$` in the user's own labels drawn as written); pyplot's figure registry is left alone too.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from cg3d.files import atomic_path

# Every label here is a name from a user's data (class folders, a scene query, captions): with
# mathtext on, a class named "$\foo$" was a ValueError that ended the evaluation, and "$x_1$" was
# drawn as maths. Text is drawn as written, in our figures only.
PLAIN_TEXT = {"text.parse_math": False}


def plain_text(draw: Callable[..., None]) -> Callable[..., None]:
    """`draw` (which makes and saves a figure) with mathtext off, the caller's rcParams kept."""

    @functools.wraps(draw)
    def drawn(*args: Any, **kwargs: Any) -> None:
        with matplotlib.rc_context(PLAIN_TEXT):
            draw(*args, **kwargs)

    return drawn


@plain_text
def confusion_plot(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (true class per row) as a PNG."""
    counts = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, counts, out=np.zeros(matrix.shape), where=counts > 0)
    size = max(4.0, 0.22 * len(classes) + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90, fontsize=7)
    ax.set_yticks(ticks, classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def save_figure(fig: Figure, path: Path, dpi: int) -> None:
    """Write `fig` to `path` (its format from the suffix). Atomically: a full disk leaves no
    partial image, and its error is one line naming `path` (`atomic_path`). No pyplot figure:
    nothing to close, it goes with its last reference."""
    path = Path(path)
    with atomic_path(path) as tmp:  # the temp name's suffix is not the image format's
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")


def draw_points(ax, points: np.ndarray, colors=None) -> None:
    """A point cloud seen from the front-left and above (+Y up), axes hidden."""
    ax.scatter(
        points[:, 0],
        points[:, 2],
        points[:, 1],
        s=1.5,
        c=colors if colors is not None else points[:, 1],
        cmap="viridis",
    )
    ax.view_init(elev=20, azim=-60)
    ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
    ax.set_axis_off()


@plain_text
def retrieval_grid(rows: list[dict], path: Path) -> None:
    """One row per query: the query (points or text) then its top results, relevant ones green.

    Each row is {"query": ndarray points | str, "title": str, "results": [(item, ok, label)]},
    an item being a PIL image, an (N, 3) array of points or a string.
    """
    columns = 1 + max(len(row["results"]) for row in rows)
    fig = Figure(figsize=(2.0 * columns, 2.1 * len(rows)))
    for r, row in enumerate(rows):
        cells = [(row["query"], None, row["title"])] + list(row["results"])
        for c, (item, ok, label) in enumerate(cells):
            index = r * columns + c + 1
            if isinstance(item, np.ndarray):
                ax = fig.add_subplot(len(rows), columns, index, projection="3d")
                draw_points(ax, item)
            else:
                ax = fig.add_subplot(len(rows), columns, index)
                ax.set_xticks([]), ax.set_yticks([])
                if isinstance(item, str):
                    ax.text(0.5, 0.5, item, ha="center", va="center", wrap=True, fontsize=7)
                else:
                    ax.imshow(item)
                if ok is not None:
                    for spine in ax.spines.values():
                        spine.set_edgecolor("tab:green" if ok else "tab:red")
                        spine.set_linewidth(3)
            colour = "black" if ok is None else ("tab:green" if ok else "tab:red")
            ax.set_title(label, fontsize=7, color=colour)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


@plain_text
def heatmap_plot(points: np.ndarray, scores: np.ndarray, path: Path, title: str) -> None:
    """A scene's points coloured by score, seen from above and from the front."""
    fig = Figure(figsize=(10, 5))
    for index, (elev, azim) in enumerate(((90, -90), (15, -60)), start=1):
        ax = fig.add_subplot(1, 2, index, projection="3d")
        ax.scatter(points[:, 0], points[:, 2], points[:, 1], s=1, c=scores, cmap="inferno")
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
