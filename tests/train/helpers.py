"""Small in-memory batches for the training tests: two classes, cubes and spheres."""

import io
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from cg3d.params import TrainConfig
from cg3d.train.loop import BatchList
from tests.models.helpers import tiny_model_config


def shape_points(kind: int, n_points: int, generator: torch.Generator) -> torch.Tensor:
    """Points on a cube surface (kind 0) or a sphere (kind 1), unit scale."""
    points = torch.randn(n_points, 3, generator=generator)
    if kind == 1:
        return points / points.norm(dim=-1, keepdim=True)
    return points / points.abs().max(dim=-1, keepdim=True).values


def make_batches(
    count: int, batch_size: int, n_points: int = 256, image_size: int = 32, seed: int = 0
):
    """`count` batches of labelled cubes/spheres; images are plain tints, one per class."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        cls = torch.randint(0, 2, (batch_size,), generator=generator)
        points = torch.stack([shape_points(int(c), n_points, generator) for c in cls])
        image = torch.randn(batch_size, 3, image_size, image_size, generator=generator) * 0.1
        image[:, 0] += cls.view(-1, 1, 1).float() * 2 - 1
        captions = [f"a {'sphere' if c else 'cube'} number {i}" for i, c in enumerate(cls.tolist())]
        batches.append({"points": points, "image": image, "caption": captions, "cls": cls})
    return BatchList(batches, seed=seed)


CLASSES = ["cube", "sphere"]


def tiny_train_config(**overrides) -> TrainConfig:
    """Train params of the tiny model (tests/models/helpers.py) for a quick CPU run."""
    tiny = tiny_model_config()
    values = dict(
        epochs=2,
        batch_size=8,
        encoder=tiny.encoder,
        encoder_params=tiny.encoder_params,
        clip_model=tiny.clip_model,
        clip_pretrained="none",
        prompts=tiny.prompts,
        n_points=tiny.n_points,
        encoder_lr=1e-3,
        prompt_lr=1e-2,
        warmup_epochs=0.5,
        device="cpu",
    )
    return TrainConfig(**values | overrides)


def params_file(tmp_path, **overrides):
    """A params.yaml of a small `cg3d train` run (a micro PointNet++, random micro CLIP)."""
    train = dict(
        epochs=2,
        batch_size=4,
        encoder="pointnet2",
        encoder_params={"centres": [16, 8], "group_size": 8, "width": 0.125},
        clip_model="CG3D-ViT-Micro-32",
        clip_pretrained="none",
        prompts=2,
        n_points=64,
        workers=0,
        device="cpu",
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": train | overrides}))
    return path


def two_updates(
    world: int, rank: int, out: str, before_updates: Callable[[], object] | None = None
) -> dict[str, torch.Tensor]:
    """The gradients of the paper's two updates (encoder, then prompts) of a tiny model, each
    process on its share of one batch of 8, with a learned temperature; the temperature, and
    the trained weights after both updates (`weights`, flattened in name order) with the
    gradient each weight was updated with (`weight_grads`, the same order).
    `before_updates` is called once the model and its batch are made."""
    from cg3d.train.loop import Trainer, prepare_model

    config = tiny_train_config(encoder="pointbert-micro", train_logit_scale=True, grad_clip=0.0)
    model, _ = prepare_model(config, CLASSES, out)
    trainer = Trainer(model, config, 1, torch.device("cpu"))
    # Batch-norm statistics and stochastic depth are per process by design (no SyncBatchNorm,
    # as the public code by default): in eval mode the two runs compute the same function, so
    # their gradients must agree
    model.train(False)
    whole = make_batches(1, 8, seed=3).batches[0]
    share = slice(rank * 8 // world, (rank + 1) * 8 // world)
    part = {key: value[share] for key, value in whole.items()}
    grads = {}
    stepped: dict[int, torch.Tensor] = {}
    if before_updates is not None:
        before_updates()
    for step, phase in enumerate(("encoder", "prompts")):
        trainer.update([part], step)
        trained = model.point_encoder if phase == "encoder" else model.visual
        grads[phase] = torch.cat(
            [p.grad.flatten() for p in trained.parameters() if p.requires_grad]
        )
        stepped.update({id(p): p.grad.clone() for p in trained.parameters() if p.requires_grad})
        if phase == "encoder":  # the temperature steps with the encoder
            grads["temperature_grad"] = model.clip.logit_scale.grad.clone()
    grads["temperature"] = model.clip.logit_scale.detach().clone()
    trained = sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)
    grads["weights"] = torch.cat([p.detach().flatten() for _, p in trained])
    grads["weight_grads"] = torch.cat(
        [stepped.get(id(p), torch.zeros_like(p)).flatten() for _, p in trained]
    )
    return grads


PACKAGE = str(Path(__file__).resolve().parents[2] / "cg3d")
# Every way Python code reads a tensor's value to the host: on a GPU each waits for the device
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(patch: Callable = setattr) -> list[str]:
    """Record every host read of a tensor made by the project's own code (torch's optimisers
    read their step counters, CPU scalars by design that never wait for a GPU, and are not
    counted); `patch` sets the counting methods (pytest's `monkeypatch.setattr` undoes it).
    Returns the record, filled as reads happen."""
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE):
                calls.append(f"{_name} in {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        patch(torch.Tensor, name, counted)
    return calls


def outputs(out) -> dict[str, bytes]:
    """The stage's tracked outputs (dvc.yaml's train outs, metrics and plots), by name."""
    files = [out / "last.pt", out / "params.yaml", out / "about.json", out / "metrics.json"]
    files += sorted((out / "dvclive" / "plots").rglob("*.tsv"))
    return {str(path.relative_to(out)): path.read_bytes() for path in files}


def replace_member(shard, suffix: str, data: bytes) -> str:
    """Rewrite `shard` with the first member ending in `suffix` holding `data`; its key."""
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    key = next(info.name for info, _ in members if info.name.endswith(suffix)).split(".")[0]
    with tarfile.open(shard, "w") as tar:
        for info, content in members:
            if info.name == f"{key}.{suffix}":
                content, info.size = data, len(data)
            tar.addfile(info, io.BytesIO(content))
    return key
