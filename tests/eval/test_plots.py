"""The eval figures on a machine that fails: a full disk leaves no partial image and is one
line naming the image."""

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from cg3d.eval.plots import confusion_plot, heatmap_plot, retrieval_grid
from cg3d.files import os_error_line

PLOTS = {
    "confusion": lambda path: confusion_plot(np.eye(2), ["chair", "lamp"], path, "zero-shot"),
    "retrieval": lambda path: retrieval_grid(
        [{"query": "a chair", "title": "text", "results": [("a lamp", False, "lamp")]}], path
    ),
    "heatmap": lambda path: heatmap_plot(np.zeros((8, 3)), np.arange(8.0), path, "a chair"),
}


def full_disk_savefig(self, fname, **kwargs):
    """A savefig that writes part of the image, then finds the disk full."""
    with open(fname, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("plot", PLOTS)
def test_a_full_disk_leaves_no_partial_image_and_names_it(tmp_path, monkeypatch, plot):
    monkeypatch.setattr(Figure, "savefig", full_disk_savefig)
    path = tmp_path / f"{plot}.png"
    with pytest.raises(OSError) as raised:
        PLOTS[plot](path)
    assert list(tmp_path.iterdir()) == []
    assert os_error_line(raised.value) == f"{path}: No space left on device (ENOSPC)"


@pytest.mark.parametrize("plot", PLOTS)
def test_a_plot_is_a_whole_png_at_its_path(tmp_path, plot):
    path = tmp_path / f"{plot}.png"
    PLOTS[plot](path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


MATHTEXT = ["$\\foo$", "a$x^$", "$\\frac{1}{$"]  # each a ValueError from matplotlib's mathtext


@pytest.mark.parametrize(
    "plot",
    [
        lambda path: confusion_plot(np.eye(3), MATHTEXT, path, f"{MATHTEXT[0]} top-1 50%"),
        lambda path: retrieval_grid(
            [{"query": MATHTEXT[1], "title": MATHTEXT[0], "results": [("x", False, MATHTEXT[2])]}],
            path,
        ),
        lambda path: heatmap_plot(np.zeros((8, 3)), np.arange(8.0), path, f"“{MATHTEXT[0]}”"),
    ],
    ids=["confusion", "retrieval", "heatmap"],
)
def test_names_with_dollars_are_drawn_as_text(tmp_path, plot):
    # a class folder or a scene query holding `$...$` ended the evaluation with a ValueError
    path = tmp_path / "plot.png"
    plot(path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


CALLER_SETTINGS = """
import sys
import matplotlib
matplotlib.use("svg")  # the caller's: a notebook's inline backend, a script's own
import matplotlib.pyplot as plt
from pathlib import Path
import numpy as np
from tests.eval.test_plots import PLOTS
for name, plot in PLOTS.items():
    plot(Path(sys.argv[1]) / f"{name}.png")
print(matplotlib.get_backend(), matplotlib.rcParams["text.parse_math"], len(plt.get_fignums()))
"""


def test_the_figures_leave_the_callers_matplotlib_as_it_was(tmp_path):
    """Run in-process (a notebook, a script that plots too), importing the figures switched
    the process to Agg, and turned mathtext off, for good. A process of its own: the import
    is what changed them, once per process."""
    result = subprocess.run(
        [sys.executable, "-c", CALLER_SETTINGS, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "True", "0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.png" for name in sorted(PLOTS)]
