import subprocess
import sys

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.text import class_text_features, templates_label


class OneHotText:
    """encode_text: each caption a fixed unit vector given by a table; records batch sizes."""

    def __init__(self, table: dict[str, list[float]]):
        self.table, self.batches = table, []

    def encode_text(self, captions):
        self.batches.append(len(captions))
        return torch.tensor([self.table[c] for c in captions])


def test_prototypes_average_each_class_over_its_templates_in_batches():
    model = OneHotText(
        {
            "a night stand": [1.0, 0.0, 0.0],
            "the night stand": [0.0, 1.0, 0.0],
            "a cup": [0.0, 0.0, 1.0],
            "the cup": [0.0, 0.0, 1.0],
        }
    )
    prototypes = class_text_features(model, ["night_stand", "cup"], ["a {}", "the {}"], 3)
    half = 2**-0.5
    assert torch.allclose(prototypes, torch.tensor([[half, half, 0.0], [0.0, 0.0, 1.0]]))
    assert model.batches == [3, 1]


def test_unnormalised_caption_features_count_alike():
    # a caption encoded 10× longer must not outweigh the class's other template
    model = OneHotText({"a cup": [10.0, 0.0], "the cup": [0.0, 1.0]})
    prototype = class_text_features(model, ["cup"], ["a {}", "the {}"])
    assert torch.allclose(prototype, torch.tensor([[2**-0.5, 2**-0.5]]))


class CharTower:
    """A tiny text tower: a caption's raw feature is the sum of a fixed random vector per
    character (so "night_stand" and "night stand" differ); `encode_text` normalises it."""

    def __init__(self, dim: int = 5):
        self.table = np.random.default_rng(7).normal(size=(128, dim))
        self.seen: list[str] = []

    def vector(self, caption: str) -> np.ndarray:
        return sum(self.table[ord(ch)] for ch in caption)

    def encode_text_raw(self, captions):
        self.seen += captions
        return torch.tensor(np.array([self.vector(c) for c in captions]), dtype=torch.float64)

    def encode_text(self, captions):
        return torch.nn.functional.normalize(self.encode_text_raw(captions), dim=-1)


def test_one_function_gives_the_training_and_the_public_protocol_features():
    tower, templates = CharTower(), ["a {}.", "a photo of the {}", "{}"]
    classes = ["night_stand", "cup", "tv_stand"]
    # ours: underscores become spaces, every caption and every class mean unit-norm
    ours = class_text_features(tower, classes, templates, 4).numpy()
    for row, name in zip(ours, ["night stand", "cup", "tv stand"], strict=True):
        units = [tower.vector(t.format(name)) for t in templates]
        mean = np.mean([u / np.linalg.norm(u) for u in units], axis=0)
        assert np.allclose(row, mean / np.linalg.norm(mean), atol=1e-6)
    assert "a night stand." in tower.seen and not any("_" in c for c in tower.seen)
    # the public eval.py's: the names as written, the raw features' plain mean
    tower.seen.clear()
    public = class_text_features(
        tower, classes, templates, 4, as_written=True, normalise=False
    ).numpy()
    for row, name in zip(public, classes, strict=True):
        mean = np.mean([tower.vector(t.format(name)) for t in templates], axis=0)
        assert np.allclose(row, mean, atol=1e-5)
    assert "a night_stand." in tower.seen and len(tower.seen) == 9
    assert not np.allclose(np.linalg.norm(public, axis=1), 1.0)  # truly not normalised


def test_metrics_name_the_templates():
    assert templates_label("cg3d", ["a {}"] * 63) == "cg3d (63)"


@pytest.mark.parametrize("module", ["cg3d.models.text", "cg3d.eval.zeroshot"])
def test_class_prototypes_do_not_need_the_trainer(module):
    code = f"import sys, {module}; print(any(m.startswith('cg3d.train') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


class Recorder:
    """encode_text: a unit vector per caption, the captions kept."""

    def __init__(self):
        self.seen: list[str] = []

    def encode_text(self, captions):
        self.seen += captions
        return torch.ones(len(captions), 2)


def test_a_class_name_with_braces_goes_into_the_template_as_it_is():
    model = Recorder()
    class_text_features(model, ["{0}", "a {b} c", "{}"], ["a photo of a {}."], as_written=True)
    assert model.seen == ["a photo of a {0}.", "a photo of a a {b} c.", "a photo of a {}."]


@pytest.mark.parametrize("template", ["{{}}", "a {} of {c}", "a {} photo}", "a {c}"])
def test_a_template_other_than_one_brace_pair_is_refused_before_encoding(template):
    # "{{}}" was formatted to the prompt "{}" for every class: no class name in any prompt
    model = Recorder()
    # the project's UsageError (one line, exit 2), as class_text_features' other refusals
    with pytest.raises(UsageError, match=r"^templates: the template .* holds"):
        class_text_features(model, ["chair"], [template])
    assert model.seen == []
