"""Training's held-out accuracy is in %, as eval's top1 beside it in `dvc metrics show`."""

import contextlib

import numpy as np
import torch

from cg3d.eval.metrics import classification_metrics
from cg3d.train.evaluate import evaluate


class ThreeClassModel:
    """Point features that are one-hot of a fixed guess; images that match their own points."""

    def __init__(self, guesses: list[int]):
        self.guesses = torch.as_tensor(guesses)

    def eval(self):
        return self

    def train(self):
        return self

    def device(self):
        return torch.device("cpu")

    def encode_points(self, points):
        return torch.nn.functional.one_hot(self.guesses, 3).float()

    def encode_image(self, images):
        return torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()


def test_held_out_accuracy_is_in_percent_like_eval_top1():
    labels, guesses = [0, 1, 2, 2], [0, 1, 2, 0]  # 3 of 4 right
    batch = {"points": torch.zeros(4, 8, 3), "cls": labels}
    numbers = evaluate(
        ThreeClassModel(guesses),
        [batch],
        torch.eye(3),
        contextlib.nullcontext,
        lambda batch: torch.zeros(4, 3),
    )
    scores = np.eye(3)[guesses]
    assert numbers["point_text_acc"] == classification_metrics(scores, labels, list("abc"))["top1"]
    assert numbers["point_text_acc"] == 75.0
    assert numbers["point_image_acc"] == 75.0  # the 4th shape's view ties with the 1st's
