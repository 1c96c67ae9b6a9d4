"""A checkpoint's config is data from the file (issue 25 §2): its shape (depth, values counted
as a walk meets them, plain types only) is checked before anything walks it, so a forged 1 KB
config of shared lists is one line, not a hang of `cg3d.load`, classify and the demo."""

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.checkpoint import (
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_VALUES,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from cg3d.models.model import build_model
from tests.models.helpers import nested, tiny_model_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model(tiny_model_config()))
    return path


def forged(saved, tmp_path, key, value):
    payload = torch.load(saved, weights_only=True)
    payload["config"][key] = value
    path = tmp_path / "forged.pt"
    torch.save(payload, path)
    assert path.stat().st_size < saved.stat().st_size + 2_000_000  # a few bytes to a few MB
    return path


def shared(width: int, levels: int) -> list:
    """`levels` of lists, each holding the one list below it `width` times: a few bytes of
    pickle, width ** levels values for a recursive walk."""
    value: list = [0.5]
    for _ in range(levels):
        value = [value] * width
    return value


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("encoder_params", {"radii": shared(10, 6)}, "holds more than"),  # 10^6 values
        ("encoder_params", {"radii": shared(1000, 2)}, "holds more than"),
        ("encoder_params", {"radii": shared(2, 30)}, "nests deeper"),  # 2^30 values, deep
        ("encoder_params", {"radii": nested(MAX_CONFIG_DEPTH + 1)}, "nests deeper"),
        ("classes", nested(200), "nests deeper"),
        ("classes", ["x"] * (MAX_CONFIG_VALUES + 1), "holds more than"),
        ("encoder_params", {"radii": torch.zeros(3)}, "holds a Tensor"),
        ("extra", {f"k{i}": [1, 2] for i in range(MAX_CONFIG_VALUES // 4)}, "holds more than"),
    ],
)
def test_a_config_out_of_shape_is_one_line(saved, tmp_path, key, value, message):
    path = forged(saved, tmp_path, key, value)
    with pytest.raises(UsageError, match=f"forged.pt: its model config {message}") as caught:
        read_checkpoint(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="forged.pt"):
        load_model(path)


def test_a_real_config_passes_with_many_classes(saved, tmp_path):
    lvis = [f"class {i}" for i in range(1156)]
    path = forged(saved, tmp_path, "classes", lvis)
    assert read_checkpoint(path)["config"]["classes"] == lvis


# A pickled tensor is a view whose shape and strides are the file's word: a stride-0 view
# claims 10^12 values over one stored float, which the NaN check would materialise (4 TB).
@pytest.mark.parametrize("shape", [(10**6, 10**6), (16, 32)])
def test_a_weight_claiming_more_values_than_its_file_stores_is_one_line(saved, tmp_path, shape):
    payload = torch.load(saved, weights_only=True)
    payload["model"]["extra.view"] = torch.zeros(1).expand(*shape)
    path = tmp_path / "forged.pt"
    torch.save(payload, path)
    assert path.stat().st_size < saved.stat().st_size + 10_000
    with pytest.raises(
        UsageError, match=r"forged.pt: the weight extra.view claims shape"
    ) as caught:
        read_checkpoint(path)
    assert f"({shape[0] * shape[1]} values) over 1 stored values" in str(caught.value)
    assert "\n" not in str(caught.value)
