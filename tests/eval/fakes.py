"""A stand-in for a loaded CG3D model whose outputs are set by hand, so that an evaluation's
expected numbers can be worked out on paper instead of re-computed with the code's formulas."""

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cg3d.eval.protocols import Protocol, register_protocol

# Protocols of one template, registered as a peer model's would be, for tests whose expected
# numbers are worked out by hand from one prompt per class (normalised, as under `cg3d`).
THIS_IS_A = register_protocol(
    Protocol(name="test-this-is-a", description="one template", templates=("This is a {}",))
)
A_PHOTO_OF = register_protocol(
    Protocol(name="test-a-photo-of", description="one template", templates=("a photo of a {}",))
)


class FakeModel:
    """encode_points / encode_text / encode_image give the vectors the test chose.

    `point_features` maps one shape's prepared (n_points, 3) points to its feature; `texts`
    maps each prompt or caption to its feature (any other text is a KeyError, so the test
    also checks which texts were encoded); `image_features` maps a view's top-left RGB pixel
    (what `preprocess` keeps of it) to its feature.
    """

    def __init__(
        self,
        point_features: Callable[[np.ndarray], Sequence[float]],
        texts: dict[str, Sequence[float]],
        image_features: Callable[[np.ndarray], Sequence[float]] | None = None,
        n_points: int = 64,
    ):
        self.point_features, self.texts, self.image_features = point_features, texts, image_features
        self.config = {
            "n_points": n_points,
            "point_channels": 3,
            "encoder": "fake",
            "clip_model": "fake-clip",
            "clip_pretrained": "none",
            "clip_pretrained_loaded": False,
        }

    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """The chosen vectors normalised, as the model's are (the evals check they are unit)."""
        rows = [self.point_features(cloud.numpy()) for cloud in points]
        return F.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor(np.array([self.texts[text] for text in texts]), dtype=torch.float32)

    def encode_text_raw(self, texts: list[str]) -> torch.Tensor:  # the chosen vectors as they are
        return self.encode_text(texts)

    def preprocess(self, image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image)[0, 0].astype(np.float32))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        rows = [self.image_features(pixel.numpy()) for pixel in pixels]
        return F.normalize(torch.tensor(np.array(rows), dtype=torch.float32), dim=-1)


def use_model(monkeypatch: pytest.MonkeyPatch, model: FakeModel) -> None:
    """Make every `load_model(checkpoint)` of the eval commands return `model`."""
    monkeypatch.setattr("cg3d.models.checkpoint.load_model", lambda *args, **kwargs: model)


def one_hot(index: int, size: int, value: float = 1.0) -> np.ndarray:
    vector = np.zeros(size)
    vector[index] = value
    return vector


def elongation(points: np.ndarray, long_axis: int, short_axis: int) -> float:
    """How many times longer the shape is along `long_axis` than along `short_axis`."""
    return float(np.ptp(points[:, long_axis]) / np.ptp(points[:, short_axis]))
