"""Issue 22 §1.2–9: each way the public CG3D runner trains, as a param, against a reference
written here from the public code (deeptibhegde/CLIP-goes-3D; file and line in each test),
and the preset configs/cg3d-public.yaml that sets them all."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cg3d.geometry.fps import pointnet2_fps
from cg3d.params import TrainConfig, load_section
from cg3d.train.augment import POLICIES
from cg3d.train.data import decode_view_drop_alpha, fixed_view
from cg3d.train.loop import Trainer, prepare_model
from cg3d.train.losses import contrastive_loss
from cg3d.train.optim import decays, make_optimizers, make_schedulers, prompt_init_bound
from tests.train.helpers import CLASSES, make_batches, tiny_train_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
ROOT = Path(__file__).resolve().parents[2]


# --- 2 and 3: learning rates -----------------------------------------------------------------


def lrs_per_epoch(config: TrainConfig, updates: int) -> tuple[list[float], list[float]]:
    """The encoder's and the prompts' LR at the first update of each epoch, driving the
    schedules as the loop does (`begin_epoch`, then an update's step of the per-update ones)."""
    model = torch.nn.Linear(2, 2)
    optimizers = {
        "encoder": torch.optim.AdamW(model.parameters(), lr=config.encoder_lr),
        "prompts": torch.optim.SGD(model.parameters(), lr=config.prompt_lr),
    }
    schedulers = make_schedulers(optimizers, config, updates)
    from cg3d.train.optim import begin_epoch_schedules, step_schedulers

    encoder, prompts = [], []
    for epoch in range(config.epochs):
        begin_epoch_schedules(schedulers, epoch)
        encoder.append(optimizers["encoder"].param_groups[0]["lr"])
        prompts.append(optimizers["prompts"].param_groups[0]["lr"])
        for _ in range(updates):
            step_schedulers(schedulers)
    return encoder, prompts


def test_the_public_encoder_lr_is_timms_cosine_stepped_per_epoch_one_epoch_late():
    """builder.py 145–154: CosineLRScheduler(t_initial=100, lr_min=1e-6, warmup_t=0, cycle
    limit 1); runner 247 and 490–496: 101 epochs, `scheduler.step(epoch)` after each."""
    from timm.scheduler import CosineLRScheduler

    config = load_section(TrainConfig, "train", ROOT / "configs" / "cg3d-public.yaml")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=5e-5)
    timm = CosineLRScheduler(
        optimizer,
        t_initial=100,
        cycle_mul=1,
        lr_min=1e-6,
        cycle_decay=0.1,
        warmup_lr_init=1e-6,
        warmup_t=0,
        cycle_limit=1,
        t_in_epochs=True,
    )
    reference = []
    for epoch in range(101):  # range(start_epoch, max_epoch + 1)
        reference.append(optimizer.param_groups[0]["lr"])  # what this epoch trains at
        timm.step(epoch)
    encoder, prompts = lrs_per_epoch(config, updates=3)
    assert config.epochs == 101 and len(encoder) == 101
    np.testing.assert_allclose(encoder, reference, rtol=1e-12, atol=0)
    # the lag by hand: epochs 0 and 1 at the base LR, epoch 100 at t = 99 of the cosine
    assert encoder[0] == encoder[1] == 5e-5
    assert encoder[100] == pytest.approx(
        1e-6 + 0.5 * (5e-5 - 1e-6) * (1 + math.cos(math.pi * 0.99))
    )
    # 2: the public prompts at a constant 2e-3 (the config's second `scheduler:` key wins,
    # build_VPT_scheduler returns None for its type: builder.py 277–305)
    assert prompts == [2e-3] * 101


def test_our_lrs_decay_per_update_by_cosine_after_a_warmup():
    config = TrainConfig(epochs=4, warmup_epochs=1, encoder_lr=1e-3, prompt_lr=2e-3)
    updates = 5
    encoder, prompts = lrs_per_epoch(config, updates)
    total, warmup = 4 * updates, updates

    def reference(step: int) -> float:  # linear warmup, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    for epoch in range(4):
        assert encoder[epoch] == pytest.approx(1e-3 * reference(epoch * updates))
        assert prompts[epoch] == pytest.approx(2e-3 * reference(epoch * updates))
    floor = TrainConfig(epochs=4, warmup_epochs=0, encoder_lr=1e-3, encoder_lr_min=1e-4)
    low, _ = lrs_per_epoch(floor, updates)
    assert low[0] == pytest.approx(1e-3) and min(low) > 1e-4


def test_an_epoch_schedule_resumes_where_its_checkpoint_left_it():
    config = load_section(TrainConfig, "train", ROOT / "configs" / "cg3d-public.yaml")
    parameter = torch.nn.Parameter(torch.zeros(1))

    def fresh():
        optimizers = {
            "encoder": torch.optim.AdamW([parameter], lr=config.encoder_lr),
            "prompts": torch.optim.SGD([parameter], lr=config.prompt_lr),
        }
        return optimizers, make_schedulers(optimizers, config, 4)

    from cg3d.train.optim import begin_epoch_schedules

    optimizers, schedulers = fresh()
    for epoch in range(7):
        begin_epoch_schedules(schedulers, epoch)
    state = {n: s.state_dict() for n, s in schedulers.items()}
    opt_state = {n: o.state_dict() for n, o in optimizers.items()}
    again, resumed = fresh()
    for name in again:
        again[name].load_state_dict(opt_state[name])
        resumed[name].load_state_dict(state[name])
    begin_epoch_schedules(resumed, 6)  # the epoch it stopped in: nothing moves
    assert again["encoder"].param_groups[0]["lr"] == optimizers["encoder"].param_groups[0]["lr"]
    begin_epoch_schedules(resumed, 7)
    begin_epoch_schedules(schedulers, 7)
    assert again["encoder"].param_groups[0]["lr"] == optimizers["encoder"].param_groups[0]["lr"]


# --- 4: points drawn with replacement, then pointnet2_ops' FPS ------------------------------


def kernel_fps(xyz: np.ndarray, n: int) -> np.ndarray:
    """pointnet2_ops' furthest_point_sampling_kernel on one cloud, as one thread runs it
    (sampling_gpu.cu): idxs[0] = 0; temp = 1e10; each step the largest min-distance over the
    points with squared norm > 1e-3, strict '>' from best = -1 (ties: the lowest index)."""
    xyz = xyz.astype(np.float32)
    temp = np.full(len(xyz), 1e10, dtype=np.float32)
    picks, old = [0], 0
    for _ in range(1, n):
        best, besti = -1.0, 0
        for k in range(len(xyz)):
            x2, y2, z2 = xyz[k]
            if x2 * x2 + y2 * y2 + z2 * z2 <= 1e-3:
                continue
            d = float(((xyz[k] - xyz[old]) ** 2).sum())
            temp[k] = min(d, temp[k])
            if temp[k] > best:
                best, besti = float(temp[k]), k
        picks.append(besti)
        old = besti
    return np.array(picks)


@pytest.mark.parametrize("seed", range(3))
def test_points_drawn_with_replacement_then_fps_pick_what_the_kernel_picks(seed):
    rng = np.random.default_rng(seed)
    stored = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    drawn = stored[rng.integers(300, size=300)]  # np.random.choice(N, 8192) at a small scale
    drawn[rng.integers(300, size=30)] = 0.0  # drop_random_points: at the origin
    assert 0.3 < 1 - len(np.unique(drawn, axis=0)) / 300 < 0.45  # ~37 % duplicates (1/e)
    for n in (40, 300):  # fewer than the distinct points, and all of them
        ours = drawn[pointnet2_fps(drawn, n, ordered=False)]  # as the loader calls it
        reference = drawn[kernel_fps(drawn, n)]
        np.testing.assert_array_equal(ours[0], reference[0])  # the first draw goes first
        if n == 40:  # the same points in the same order
            np.testing.assert_array_equal(ours, reference)
        else:  # every distinct point once, away from the origin, then copies of the first
            as_set = lambda p: sorted(map(tuple, p))  # noqa: E731
            assert as_set(ours) == as_set(reference)
            assert not np.any(np.all(ours == 0, axis=1))  # the origin is never picked


def test_the_loader_draws_with_replacement_before_fps(shards):
    from cg3d.train.data import LoaderConfig, make_loader

    public = TrainConfig(
        n_points=64, batch_size=4, workers=0, replacement_draws=64, augment=POLICIES["cg3d"]
    )
    ours = TrainConfig(n_points=64, batch_size=4, workers=0)
    config_public = LoaderConfig.of_params(public, 32)
    config_ours = LoaderConfig.of_params(ours, 32)
    config_public.augment = config_ours.augment = _off()
    for config, duplicates in ((config_ours, False), (config_public, True)):
        batch = next(iter(make_loader(shards, "train", config)))
        counts = [len(np.unique(p.numpy(), axis=0)) for p in batch["points"]]
        if duplicates:  # 64 draws of 64: ~40 distinct; the rest copies of the first
            assert all(30 < c < 52 for c in counts), counts
        else:
            assert counts == [64] * 4


def test_the_public_preset_centres_on_the_centroid_as_pc_norm_does(shards):
    """The public dataset's pc_norm (datasets/dataset.py:209-215) re-centres every file on its
    centroid and scales it to the unit sphere; the shards hold the bounding-box frame."""
    from cg3d.train.data import LoaderConfig, make_loader

    preset = load_section(TrainConfig, "train", ROOT / "configs" / "cg3d-public.yaml")
    assert preset.point_normalisation == "centroid"
    for normalisation in ("stored", "centroid"):
        params = TrainConfig(
            n_points=64, batch_size=4, workers=0, point_normalisation=normalisation
        )
        config = LoaderConfig.of_params(params, 32)
        config.augment = _off()
        batch = next(iter(make_loader(shards, "train", config)))
        for points in batch["points"].double().numpy():  # all 64 stored points, reordered
            centre = points.sum(axis=0) / len(points)
            radius = max(math.sqrt(sum(v * v for v in p - centre)) for p in points)
            if normalisation == "centroid":
                assert np.allclose(centre, 0.0, atol=1e-5), centre
                assert radius == pytest.approx(1.0, abs=1e-5)
            else:  # the bounding-box frame: its centroid is elsewhere
                assert np.abs(centre).max() > 1e-3, centre


def test_an_object_whose_points_coincide_is_skipped_with_the_reason_when_centring(
    shards, tmp_path, caplog
):
    """pc_norm divides by the largest distance from the centroid: 0 for an object whose
    points all coincide. The loader skips that object, naming the reason; the epoch goes on."""
    import shutil

    from cg3d.train.data import LoaderConfig, make_loader
    from tests.train.helpers import replace_member

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    buffer = io.BytesIO()
    np.save(buffer, np.full((64, 3), 0.25, dtype=np.float32))
    key = replace_member(copy / "train/shard-000000.tar", "points.npy", buffer.getvalue())
    for normalisation in ("stored", "centroid"):
        params = TrainConfig(
            n_points=64, batch_size=4, workers=0, point_normalisation=normalisation
        )
        config = LoaderConfig.of_params(params, 32)
        config.augment = _off()
        caplog.clear()
        keys = [k for batch in make_loader(copy, "train", config) for k in batch["key"]]
        assert len(keys) == len(set(keys))
        if normalisation == "stored":  # kept as it is: the bounding-box frame divides nothing
            assert key in keys
        else:
            assert key not in keys and len(keys) > 0
            assert f"skipping sample {key}: degenerate geometry" in caplog.text


def _off():
    from cg3d.params import AugmentConfig

    return AugmentConfig(rotate_up=False, perturb=False, jitter=False, scale=False, translate=False)


# --- 5: one view per object -------------------------------------------------------------------


def test_a_fixed_view_is_the_same_every_epoch_and_spread_over_the_views():
    views = [f"view_{i:02d}.png" for i in range(5)]
    keys = [f"object-{i}" for i in range(2000)]
    first = [fixed_view(views, key, 0) for key in keys]
    assert first == [fixed_view(views, key, 0) for key in keys]  # every epoch
    counts = np.array([first.count(v) for v in views])
    assert np.all(np.abs(counts - 400) < 80)  # randint(0, 5): uniform over the views
    other_seed = [fixed_view(views, key, 1) for key in keys]
    assert np.mean([a != b for a, b in zip(first, other_seed, strict=True)]) > 0.7


def test_the_loader_feeds_one_view_per_object_across_epochs(shards):
    from cg3d.train.data import LoaderConfig, make_loader

    def views_seen(choice: str) -> dict[str, set[bytes]]:
        config = LoaderConfig.of_params(
            TrainConfig(n_points=16, batch_size=3, workers=0, view_choice=choice), 32
        )
        loader, seen = make_loader(shards, "train", config), {}
        for epoch in range(6):
            loader.set_epoch(epoch)
            for batch in loader:
                for key, image in zip(batch["key"], batch["image"], strict=True):
                    seen.setdefault(key, set()).add(image.numpy().tobytes())
        return seen

    assert all(len(images) == 1 for images in views_seen("fixed").values())
    assert any(len(images) > 1 for images in views_seen("random").values())


# --- 6: background -------------------------------------------------------------------------------


def test_dropping_alpha_keeps_the_colour_under_it_as_convert_rgb():
    from cg3d.train.data import ClipPreprocess
    from tests.pipeline.fakes import transparent_view

    image = transparent_view(32)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    # the public pil_loader: Image.open(f).convert('RGB'); at 224 → 224 the resize is a no-op
    rgba = np.array(image)
    reference = torch.from_numpy(rgba[:, :, :3].copy()).permute(2, 0, 1)
    preprocess = ClipPreprocess(32)
    dropped = decode_view_drop_alpha(preprocess, data)
    assert torch.equal(dropped, reference)
    assert int(dropped[:, 0, 0].sum()) == 0  # a transparent pixel is black
    white = preprocess.decode(data)
    assert white[:, 0, 0].tolist() == [255, 255, 255]  # ours: on white
    # an RGB view has no alpha to drop: the same pixels either way
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    assert torch.equal(decode_view_drop_alpha(preprocess, buffer.getvalue()), reference)


# --- 7: BatchNorm on prompt steps, phase parity --------------------------------------------------


def batchnorm_stats(model) -> torch.Tensor:
    return torch.cat(
        [
            m.running_mean.flatten()
            for m in model.point_encoder.modules()
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)
        ]
    )


@pytest.mark.parametrize("run_encoder", [False, True])
def test_prompt_steps_update_batchnorm_statistics_only_when_asked(tmp_path, run_encoder):
    config = tiny_train_config(encoder="pointbert-micro", prompt_steps_run_encoder=run_encoder)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    model.train()
    trainer = Trainer(model, config, 2, torch.device("cpu"))
    batches = make_batches(2, 8, seed=1).batches
    trainer.update([batches[0]], 0)  # an encoder update
    stats = batchnorm_stats(model)
    weights = [p.detach().clone() for p in model.point_encoder.parameters()]
    trainer.update([batches[1]], 1)  # a prompt update
    assert trainer.phase(1)[0] == "prompts"
    # the public runner: base_model(points) on every step in train mode (runner 316)
    assert (not torch.equal(stats, batchnorm_stats(model))) == run_encoder
    for before, after in zip(weights, model.point_encoder.parameters(), strict=True):
        assert torch.equal(before, after)  # no grad: the encoder never moves on prompt steps


def phases_of(config: TrainConfig, updates_per_epoch: list[int]) -> list[list[str]]:
    model = torch.nn.Module()
    trainer = Trainer.__new__(Trainer)  # phase() needs the config and the epoch start only
    trainer.config, trainer.model, trainer.epoch_start = config, model, 0
    trainer.schedulers = {}
    step, phases = 0, []
    for epoch, updates in enumerate(updates_per_epoch):
        trainer.begin_epoch(epoch, step)
        phases.append([trainer.phase(step + i)[0][0] for i in range(updates)])
        step += updates
    return phases


def test_the_public_phase_parity_restarts_every_epoch():
    """runner 264 and 429: `for idx, ... in enumerate(train_dataloader)`, `if idx % 2 == 0`
    trains the encoder: with an odd count two encoder steps meet at each epoch boundary."""
    public = phases_of(TrainConfig(phase_parity="epoch"), [3, 3, 3])
    reference = [["e" if idx % 2 == 0 else "p" for idx in range(3)] for _ in range(3)]
    assert public == reference
    ours = phases_of(TrainConfig(), [3, 3, 3])
    assert ours == [["e", "p", "e"], ["p", "e", "p"], ["e", "p", "e"]]


# --- 8: cls_pos decay, prompt init, negatives -------------------------------------------------


def public_decays(name: str, parameter: torch.nn.Parameter) -> bool:
    """builder.py 115–128, add_weight_decay: no decay for 1-D, '.bias' or 'token' names."""
    return not (len(parameter.shape) == 1 or name.endswith(".bias") or "token" in name)


@pytest.mark.parametrize("encoder", ["pointbert-micro", "pointtransformer-micro"])
def test_decay_cls_pos_decays_what_the_public_add_weight_decay_decays(tmp_path, encoder):
    config = tiny_train_config(encoder=encoder, decay_cls_pos=True)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    named = list(model.point_encoder.named_parameters())
    assert {n for n, p in named if decays(n, p, True)} == {
        n for n, p in named if public_decays(n, p)
    }
    assert "cls_pos" not in {n for n, p in named if decays(n, p)}  # ours: exempt
    groups = make_optimizers(model, config)["encoder"].param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(model.point_encoder.cls_pos) in decayed and groups[0]["weight_decay"] == 0.05


def test_the_public_prompt_init_bound_is_3_16_plus_width(tmp_path):
    """its timm vision_transformer.py 533: val = sqrt(6 / (3 * 16 + prompt_dim))."""
    ours, _ = prepare_model(tiny_train_config(), CLASSES, tmp_path / "ours")
    public, _ = prepare_model(tiny_train_config(prompt_init="cg3d-public"), CLASSES, tmp_path / "p")
    tower = ours.visual.tower
    public_bound = math.sqrt(6.0 / (3 * 16 + tower.width))
    vpt_bound = math.sqrt(6.0 / (3 * tower.patch_area + tower.width))
    assert prompt_init_bound(tower.width, tower.patch_area, "cg3d-public") == public_bound
    for model, bound in ((ours, vpt_bound), (public, public_bound)):
        values = model.visual.prompts.detach().abs()
        assert values.max() <= bound * (1 + 1e-6) and values.max() > 0.9 * bound
        assert values.mean() == pytest.approx(bound / 2, rel=0.1)  # |U(-b, b)| averages b / 2


def test_without_gathering_a_process_contrasts_its_own_rows(monkeypatch):
    import cg3d.train.losses as losses

    def gather(features):  # a second process's rows
        return torch.cat([features, torch.flip(features, [0])]), 0

    monkeypatch.setattr(losses, "gather_features", gather)
    generator = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    b = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    local, _ = contrastive_loss(a, b, torch.tensor(10.0), gather=False)
    labels = torch.arange(6)
    reference = (F.cross_entropy(10 * a @ b.T, labels) + F.cross_entropy(10 * b @ a.T, labels)) / 2
    assert torch.allclose(local, reference, atol=1e-6)
    gathered, _ = contrastive_loss(a, b, torch.tensor(10.0), gather=True)
    assert not torch.allclose(gathered, reference, atol=1e-3)  # 12 negatives, not 6


# --- 9: the logits and the loss in float32 -----------------------------------------------------


def test_the_loss_under_bf16_autocast_equals_the_float32_loss():
    generator = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(64, 512, generator=generator), dim=-1)
    b = F.normalize(a + 0.3 * torch.randn(64, 512, generator=generator), dim=-1)
    scale = torch.tensor(100.0)
    exact, _ = contrastive_loss(a, b, scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = contrastive_loss(a, b, scale)
        # what the loss was before: the matmul in bf16
        logits = scale * a @ b.T
    assert autocast.dtype == torch.float32
    assert abs(float(autocast) - float(exact)) <= 1e-6
    labels = torch.arange(64)
    bf16 = (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.T.float(), labels)) / 2
    assert abs(float(bf16) - float(exact)) > 1e-4  # the error the fix removes


# --- the preset -------------------------------------------------------------------------------

# Every public value of §1, with where the public code sets it.
PUBLIC_VALUES = {
    "epochs": 101,  # runner 247: range(start_epoch, max_epoch + 1), max_epoch 100
    "batch_size": 64,  # config total_bs 64
    "n_points": 8192,  # parser --npoints 8192
    "encoder_lr": 5e-5,  # config optimizer.kwargs.lr
    "encoder_weight_decay": 0.05,
    "encoder_lr_schedule": "epoch-cosine",  # builder 145–154, runner 490–496
    "encoder_lr_min": 1e-6,
    "cosine_epochs": 100,  # t_initial = scheduler.kwargs.epochs
    "warmup_epochs": 0,  # initial_epochs 0
    "prompt_lr": 2e-3,  # optimizer_clip base_lr
    "prompt_momentum": 0.9,
    "prompt_weight_decay": 1e-4,
    "prompt_lr_schedule": "constant",  # the duplicated scheduler: key
    "grad_clip": 10.0,  # grad_norm_clip
    "schedule": "alternating",
    "phase_parity": "epoch",  # runner 429: idx % 2
    "prompt_steps_run_encoder": True,  # runner 316
    "decay_cls_pos": True,  # builder 115–128
    "prompt_init": "cg3d-public",  # vision_transformer.py 533
    "gather_negatives": False,  # runner 362–408: logits over the process's own batch
    "replacement_draws": 8192,  # dataset.py 261–263
    "view_choice": "fixed",  # dataset.py 188
    "view_background": "drop_alpha",  # dataset.py 116–120
    "text_targets": "captions",  # dataset.py 306: generate_caption
    "clip_model": "SLIP-ViT-B-16",  # --VL SLIP
    "encoder": "pointtransformer-base",
    "encoder_params": {"kernel_fps": True},  # models/dvae.py 165: misc.fps, pointnet2_ops
    "point_normalisation": "centroid",  # dataset.py 209–215, 257: pc_norm
    "prompts": 5,
    "deep_prompts": True,
    "train_logit_scale": False,
}


def test_the_public_preset_sets_every_public_value():
    config = load_section(TrainConfig, "train", ROOT / "configs" / "cg3d-public.yaml")
    for key, value in PUBLIC_VALUES.items():
        assert getattr(config, key) == value, key
    assert config.augment == POLICIES["cg3d-public"]
    augment = config.augment  # the policy, spelled out (dataset.py 264–277, runner 32–36)
    for op in ("rotate_90", "rotate_up", "perturb", "jitter", "drop_to_origin"):
        assert getattr(augment, op) and getattr(augment, f"{op}_prob") == 0.3, op
    assert (augment.scale, augment.scale_prob, augment.translate, augment.translate_prob) == (
        True,
        1.0,
        True,
        1.0,
    )
    assert not augment.dropout and augment.drop_to_origin_share == 0.1
    # every train param the preset leaves out would silently take our default: none is left out
    text = (ROOT / "configs" / "cg3d-public.yaml").read_text()
    for key in PUBLIC_VALUES:
        assert f"\n  {key}:" in text, key


def test_the_paper_recipe_keeps_our_choices():
    paper = load_section(TrainConfig, "train", ROOT / "configs" / "paper.yaml")
    defaults = TrainConfig()
    for key in (
        "encoder_lr_schedule",
        "prompt_lr_schedule",
        "phase_parity",
        "prompt_steps_run_encoder",
        "decay_cls_pos",
        "prompt_init",
        "gather_negatives",
        "replacement_draws",
        "view_choice",
        "view_background",
        "encoder_params",
        "point_normalisation",
    ):
        assert getattr(paper, key) == getattr(defaults, key) != PUBLIC_VALUES[key], key
    assert paper.augment == POLICIES["cg3d"] and not paper.augment.dropout


def test_the_public_preset_encoder_takes_its_patch_centres_as_misc_fps():
    """The public Group takes its 64 centres with misc.fps, pointnet2_ops' kernel, which never
    picks a point within √1e-3 of the origin after point 0 (as the scale and shift after the
    loader's FPS can put one there); our recipe's encoder takes plain FPS centres."""
    from cg3d.models.encoders import build_encoder
    from cg3d.models.encoders.ops import farthest_point_sample
    from tests.models.public_networks import kernel_fps

    # points on the unit sphere and, from index 1, a cluster within 0.01 of the origin
    xyz = F.normalize(torch.randn(1, 512, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    xyz[0, 1:33] *= 0.01
    near_origin = set(range(1, 33))
    for recipe, kernel in (("cg3d-public.yaml", True), ("paper.yaml", False)):
        params = load_section(TrainConfig, "train", ROOT / "configs" / recipe)
        with torch.device("meta"):
            encoder = build_encoder(params.encoder, 8, params.encoder_params)
        centres = farthest_point_sample(xyz, encoder.groups, encoder.fps_skip_norm2)[0]
        if kernel:
            assert torch.equal(centres, kernel_fps(xyz[0], 64))
            assert not near_origin & set(centres.tolist())
        else:  # plain FPS reaches the cluster once the sphere is covered more finely than 1
            assert near_origin & set(centres.tolist())


def own_batch_worker(rank: int, tmp: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    generator = torch.Generator().manual_seed(0)
    a, b = (F.normalize(x, dim=-1) for x in torch.randn(2, 8, 16, generator=generator))
    half = slice(4 * rank, 4 * rank + 4)
    losses = {
        gather: contrastive_loss(a[half], b[half], torch.tensor(10.0), gather)[0]
        for gather in (True, False)
    }
    torch.save(losses, f"{tmp}/own{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_under_ddp_without_gathering_each_process_has_its_own_negatives_only(tmp_path):
    """The public runner's logits are `latent_point @ text_features.t()` over the process's
    own batch (runner 379–387): 4 negatives each here, not 8."""
    import torch.multiprocessing as mp

    mp.spawn(own_batch_worker, args=(str(tmp_path),), nprocs=2, join=True)
    generator = torch.Generator().manual_seed(0)
    a, b = (F.normalize(x, dim=-1) for x in torch.randn(2, 8, 16, generator=generator))
    labels = torch.arange(4)
    for rank in range(2):
        losses = torch.load(tmp_path / f"own{rank}.pt", weights_only=True)
        x, y = a[4 * rank : 4 * rank + 4], b[4 * rank : 4 * rank + 4]
        own = (F.cross_entropy(10 * x @ y.T, labels) + F.cross_entropy(10 * y @ x.T, labels)) / 2
        assert torch.allclose(losses[False], own, atol=1e-6)
        assert not torch.allclose(losses[True], own, atol=1e-3)


@pytest.mark.slow
def test_cg3d_train_runs_with_every_public_value_and_logs_its_learning_rates(shards, tmp_path):
    """The preset's values on a tiny model: encoder LR per epoch as timm's lagged cosine (here
    t_initial 2, lr_min 1e-6), prompts at a constant LR."""
    import csv

    import yaml
    from typer.testing import CliRunner

    from cg3d.cli import app
    from tests.train.helpers import params_file

    preset = yaml.safe_load((ROOT / "configs" / "cg3d-public.yaml").read_text())["train"]
    tiny = ("clip_model", "clip_pretrained", "encoder", "encoder_params", "n_points", "prompts")
    sizes = ("batch_size", "epochs", "workers", "shuffle_buffer", "device")
    public = {k: v for k, v in preset.items() if k not in tiny + sizes}
    public |= {"replacement_draws": 64, "cosine_epochs": 2, "epochs": 3, "encoder_lr": 1e-3}
    out = tmp_path / "run"
    params = params_file(tmp_path, **public)
    args = ["train", "--shards", str(shards), "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    def curve(name: str) -> list[float]:
        path = out / f"dvclive/plots/metrics/train/{name}.tsv"
        return [float(row[name]) for row in csv.DictReader(path.open(), delimiter="\t")]

    cosine = [1e-3, 1e-3, 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi / 2))]
    np.testing.assert_allclose(curve("lr_encoder"), cosine, rtol=1e-9)
    assert curve("lr_prompts") == [2e-3] * 3
