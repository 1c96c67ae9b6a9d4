"""Loading a model builds no CLIP tower until text or images are asked for (issue 23 §2).

A converted peer checkpoint names a ViT-bigG-14 teacher (gigabytes); embedding its points must
never construct it. The file is written in the converted layout: our checkpoint format holding
only the point side, with the teacher named by its open_clip model and pretrained tag.
"""

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import cg3d
from cg3d.models import checkpoint as checkpoint_module
from cg3d.models import clip as clip_module
from cg3d.models import model as model_module
from cg3d.models.checkpoint import load_model, save_checkpoint
from cg3d.models.encoders import build_encoder
from cg3d.models.model import build_model
from tests.models.helpers import BIGG, BIGG_DIM, BIGG_TAG, tiny_model_config
from tests.models.helpers import write_converted_bigg as converted_bigg


class TowerBuilt(AssertionError):
    pass


@pytest.fixture
def no_towers(monkeypatch):
    """Every way a CLIP tower gets constructed raises."""

    def refuse(*args, **kwargs):
        raise TowerBuilt("a CLIP tower was constructed")

    for module, name in (
        (open_clip, "create_model_and_transforms"),
        (open_clip, "create_model"),
        (clip_module, "load_clip"),
        (model_module, "load_clip"),
        (checkpoint_module, "load_clip"),
        (clip_module, "create_slip"),
    ):
        monkeypatch.setattr(module, name, refuse)


def reference_features(state: dict[str, torch.Tensor], points: np.ndarray) -> np.ndarray:
    """The stored encoder run by hand on the prepared points, L2-normalised."""
    encoder = build_encoder("pointtransformer-micro", BIGG_DIM, {"in_channels": 6})
    encoder.load_state_dict({k.removeprefix("point_encoder."): v for k, v in state.items()})
    with torch.no_grad():
        return F.normalize(encoder.eval()(torch.from_numpy(points)).float(), dim=-1).numpy()


def test_a_bigg_teacher_model_embeds_points_without_building_a_tower(tmp_path, no_towers):
    path = tmp_path / "ulip2-like.pt"
    state = converted_bigg(path)
    model = cg3d.load(path)
    assert not model.network.towers_built
    cloud = np.random.default_rng(0).uniform(-1, 1, (500, 3))
    prepared = model.prepare(cloud)[None]
    features = model.embed_prepared(prepared)
    assert features.shape == (1, BIGG_DIM)
    assert np.allclose(features, reference_features(state, prepared.astype(np.float32)), atol=1e-5)
    assert not model.network.towers_built
    # text is what asks for the tower: only now is it constructed (and refused here)
    with pytest.raises(TowerBuilt):
        model.embed_text(["a chair"])


def test_a_hub_export_of_a_bigg_teacher_model_builds_no_tower_either(tmp_path, no_towers):
    from cg3d.models.hub import export_hub

    path = tmp_path / "ulip2-like.pt"
    state = converted_bigg(path, seed=1)
    config = export_hub(path, tmp_path / "hub")
    assert config["teacher"]["model"] == BIGG and config["teacher"]["pretrained"] == BIGG_TAG
    assert config["embed_dim"] == BIGG_DIM and config["point_channels"] == 6
    model = cg3d.load(tmp_path / "hub")
    prepared = model.prepare(np.random.default_rng(1).uniform(-1, 1, (400, 3)))[None]
    assert np.allclose(
        model.embed_prepared(prepared),
        reference_features(state, prepared.astype(np.float32)),
        atol=1e-5,
    )


def test_a_loaded_model_builds_its_towers_on_first_use_with_the_stored_weights(
    tmp_path, monkeypatch
):
    """The towers a lazy model builds carry the checkpoint's prompts and CLIP, as an eager one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = build_model(tiny_model_config())
    with torch.no_grad():
        eager.visual.prompts.add_(0.5)  # as if trained: not the fresh random init
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, eager)
    calls = []
    real = checkpoint_module.load_clip
    monkeypatch.setattr(
        checkpoint_module, "load_clip", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(path)
    points, images = torch.randn(2, 256, 3), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_points(points), eager.encode_points(points))
        assert calls == [] and not loaded.towers_built
        assert torch.equal(loaded.encode_image(images), eager.encode_image(images))
        assert torch.equal(loaded.encode_text(["a cube"]), eager.encode_text(["a cube"]))
    assert len(calls) == 1 and loaded.towers_built
    # frozen and in eval mode, as an eager model's CLIP
    assert not loaded.clip.training and not loaded.visual.training
    assert not any(p.requires_grad for p in loaded.clip.transformer.parameters())


def test_the_trainable_state_is_the_same_before_and_after_the_towers_are_built(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = build_model(tiny_model_config())
        with torch.no_grad():
            eager.visual.prompts.add_(0.5)
            eager.clip.logit_scale.fill_(3.0)
        path = tmp_path / "tiny.pt"
        save_checkpoint(path, eager)
        loaded = load_model(path)
    wanted = eager.trainable_state()
    assert {"visual.prompts", "clip.logit_scale"} <= set(wanted)
    assert all(n.startswith(("point_encoder.", "visual.prompts", "clip.logit")) for n in wanted)
    for built in (False, True):
        if built:
            loaded.open_towers()
        assert loaded.towers_built == built
        state = loaded.trainable_state()
        assert set(state) == set(wanted)  # (in another order: the towers come after)
        assert all(torch.equal(state[name], wanted[name]) for name in wanted)


def test_threads_that_ask_for_the_towers_at_once_each_get_them(tmp_path, monkeypatch):
    """A web service's first requests arrive together: each thread's text features, as one
    thread alone gets them. The second thread found the first one's build under way and no
    tower yet: AttributeError "'CG3D' object has no attribute 'clip'"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = tmp_path / "tiny.pt"
        save_checkpoint(path, build_model(tiny_model_config()))
        alone = [cg3d.load(path).embed_text(["a cube", f"shape {i}"]) for i in range(4)]
        real = checkpoint_module.load_clip

        def slow_load_clip(*args, **kwargs):
            time.sleep(0.5)  # the others ask meanwhile (a real CLIP takes seconds)
            return real(*args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "load_clip", slow_load_clip)
        model = cg3d.load(path)
    together = threading.Barrier(4)

    def text(i: int) -> np.ndarray:
        together.wait()
        return model.embed_text(["a cube", f"shape {i}"])

    with ThreadPoolExecutor(4) as pool:
        features = list(pool.map(text, range(4)))
    for mine, reference in zip(features, alone, strict=True):
        assert np.allclose(mine, reference, atol=1e-6)
