import subprocess
import sys

import pytest
import torch

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


def test_metrics_name_the_templates():
    assert templates_label("cg3d", ["a {}"] * 63) == "cg3d (63)"


@pytest.mark.parametrize("module", ["cg3d.models.text", "cg3d.eval.prompts", "cg3d.eval.zeroshot"])
def test_class_prototypes_do_not_need_the_trainer(module):
    code = f"import sys, {module}; print(any(m.startswith('cg3d.train') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
