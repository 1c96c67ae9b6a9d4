"""`dvc plots show` works offline: the page it writes carries vega, vega-lite and vega-embed
(`.dvc/plots_page/page.html`, named by `.dvc/config`) instead of loading them from a CDN, so
with the network off the training curves and the per-class plots still render."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
METRICS = "runs/train/dvclive/plots/metrics"
ZEROSHOT = "runs/eval/zeroshot"
CLASSES = ["bed", "chair", "lamp"]


def write_plot_inputs(repo: Path) -> int:
    """Small files where dvc.yaml's plots are, as the train and eval stages write them; the
    number of vega plots among them."""
    rng = np.random.default_rng(0)
    curves = {"train/loss.tsv": "loss", "test/point_text_acc.tsv": "point_text_acc"}
    for name, column in curves.items():
        path = repo / METRICS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{step}\t{value:.4f}" for step, value in enumerate(rng.uniform(0, 5, 12))]
        path.write_text("\n".join([f"step\t{column}", *rows]) + "\n")
    zeroshot = repo / ZEROSHOT
    zeroshot.mkdir(parents=True)
    pairs = [(CLASSES[i % 3], CLASSES[(i * 7) % 3]) for i in range(30)]
    rows = [f"obj_{i},{actual},{predicted}" for i, (actual, predicted) in enumerate(pairs)]
    (zeroshot / "predictions.csv").write_text("\n".join(["key,actual,predicted", *rows]) + "\n")
    rows = [f"{name},10,{top1}" for name, top1 in zip(CLASSES, (90.0, 40.0, 70.0), strict=True)]
    (zeroshot / "per_class.csv").write_text("\n".join(["class,shapes,top1", *rows]) + "\n")
    Image.new("RGB", (40, 30), "navy").save(zeroshot / "confusion.png")
    retrieval = repo / "runs/eval/retrieval"
    retrieval.mkdir(parents=True)
    Image.new("RGB", (50, 20), "teal").save(retrieval / "retrieval_grid.png")
    return len(curves) + 2


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory) -> tuple[Path, int]:
    """The project's dvc.yaml and DVC config in a scratch repo, `dvc plots show` run there."""
    repo = tmp_path_factory.mktemp("repo")
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots_page", repo / ".dvc" / "plots_page")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    vega_plots = write_plot_inputs(repo)
    dvc = [sys.executable, "-m", "dvc"]
    for command in (["config", "--local", "core.no_scm", "true"], ["plots", "show", "-o", "out"]):
        run = subprocess.run([*dvc, *command], cwd=repo, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    return repo / "out" / "index.html", vega_plots


def test_the_page_loads_no_script_from_the_network(plots_page):
    page, _ = plots_page
    html = page.read_text()
    assert "<script src=" not in html  # DVC's own page: three CDN <script src="https://...">
    assert "vegaEmbed(" in html and 'var e="5.20.2"' in html  # the plots, and vega inlined


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_curves_render_with_the_network_off(browser, plots_page):
    path, vega_plots = plots_page
    context = browser.new_context(offline=True)
    asked: list[str] = []

    def local_only(route) -> None:
        asked.append(route.request.url)
        route.continue_() if route.request.url.startswith("file:") else route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_function(
        "n => document.querySelectorAll('.vega-embed canvas').length === n",
        arg=vega_plots,
        timeout=60_000,
    )
    # every plot drew something: its canvas holds many non-white pixels (axes, marks, text)
    inked = page.evaluate(
        """() => [...document.querySelectorAll('.vega-embed canvas')].map(canvas => {
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let inked = 0;
            for (let i = 0; i < data.length; i += 4)
                if (data[i + 3] > 0 && (data[i] < 200 || data[i + 1] < 200 || data[i + 2] < 200)) inked++;
            return inked;
        })"""
    )
    images = page.evaluate("[...document.images].map(image => image.naturalWidth)")
    context.close()
    assert errors == []
    assert [url for url in asked if not url.startswith("file:")] == []
    assert len(inked) == vega_plots and min(inked) > 500, inked
    assert sorted(images) == [40, 50]  # confusion.png and retrieval_grid.png beside them
