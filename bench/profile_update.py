"""What one training update launches, by part, on the CPU: torch.profiler's operator count
and host time of an encoder update and a prompt update, for any tree of this repository.

    PYTHONPATH=TREE python bench/profile_update.py --tree TREE --config paper --batch 2

TREE is a checkout (e.g. `git worktree add /tmp/a5873ca a5873ca`): its own params.yaml or
configs/paper.yaml, model and Trainer, through the API every tree since issue 19 has
(`build_model`, `model_config`, `Trainer(model, config, updates, device).update`). Each leaf
operator (an aten op that calls no other; a foreach or fused op counts once, as a GPU
launches it; views, allocations and host scalars not at all) is about what a GPU would
launch as a kernel, so the
counts say where launches come from; the times are the CPU's (compute included), not a
GPU's. The parts are found by wrapping the point encoder's and the prompted tower's forward,
`Tensor.backward`, `clip_grad_norm_` and the optimisers' steps in profiler ranges.
"""

import argparse
import json
import random
import sys
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function


def labelled(function, label: str):
    def wrapper(*args, **kwargs):
        with record_function(label):
            return function(*args, **kwargs)

    return wrapper


MULTI_TENSOR = ("aten::_foreach_", "aten::_fused_")
# Leaf ops that launch no kernel: views, allocations, host scalars, same-device `to`
NO_KERNEL = {
    f"aten::{name}"
    for name in [
        "to",
        "as_strided",
        "view",
        "reshape",
        "_reshape_alias",
        "expand",
        "t",
        "transpose",
        "permute",
        "select",
        "slice",
        "unsqueeze",
        "squeeze",
        "detach",
        "alias",
        "empty",
        "empty_strided",
        "empty_like",
        "item",
        "_local_scalar_dense",
        "resolve_conj",
        "resolve_neg",
        "lift_fresh",
        "split",
        "unbind",
        "chunk",
        "contiguous",
        "numpy_T",
        "flatten",
        "unflatten",
        "narrow",
        "_unsafe_view",
        "unfold",
        "set_",
        "result_type",
        "broadcast_tensors",
    ]
}


def multi_tensor(event) -> bool:
    """Whether `event` runs inside a foreach or fused op."""
    while event is not None:
        if event.name.startswith(MULTI_TENSOR):
            return True
        event = event.cpu_parent
    return False


def leaf_counts(events) -> tuple[Counter, Counter]:
    """Leaf aten ops per labelled part ("other" outside every label), and per op name."""
    by_part, by_name = Counter(), Counter()
    launching: dict[int, bool] = {}

    def launches(event) -> bool:
        """Whether `event` or an op it calls launches a kernel."""
        key = id(event)
        if key not in launching:
            launching[key] = event.name not in NO_KERNEL or any(
                launches(child) for child in event.cpu_children if child.name.startswith("aten::")
            )
        return launching[key]

    for event in events:
        if not event.name.startswith("aten::") or multi_tensor(event.cpu_parent):
            continue
        if not launches(event):
            continue
        # the innermost op that launches: none of the ops it calls does (a multi-tensor op is
        # one launch on a GPU; on a CPU it loops over its tensors)
        if not event.name.startswith(MULTI_TENSOR) and any(
            launches(child) for child in event.cpu_children if child.name.startswith("aten::")
        ):
            continue
        part, parent = "other", event.cpu_parent
        while parent is not None:
            if parent.name.startswith("part:"):
                part = parent.name[5:]
                break
            parent = parent.cpu_parent
        by_part[part] += 1
        by_name[event.name] += 1
    return by_part, by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--config", choices=["default", "paper"], default="default")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cuda-defaults",
        action="store_true",
        help="optimisers default to foreach kernels, as torch picks on CUDA (on a CPU it "
        "loops over the parameters): counts closer to what a GPU launches",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.cuda_defaults:
        import importlib

        for name in ("torch.optim.adam", "torch.optim.sgd"):
            importlib.import_module(name)._default_to_fused_or_foreach = lambda *a, **k: (
                False,
                True,
            )
    sys.path.insert(0, str(args.tree / "bench"))
    from bench_train import CLASSES, synthetic_batch

    from cg3d.models.model import build_model, model_config
    from cg3d.params import load_section
    from cg3d.train.loop import TrainConfig, Trainer, seed_everything

    path = args.tree / ("params.yaml" if args.config == "default" else "configs/paper.yaml")
    options = dict(device="cpu", batch_size=args.batch)
    if args.config == "paper":
        options["clip_pretrained"] = "none"
    config = load_section(TrainConfig, "train", path, options=options)
    config = replace(config, batch_size=args.batch)
    torch.set_num_threads(1)
    seed_everything(0)
    model = build_model(model_config(config, CLASSES)).train()
    trainer = Trainer(model, config, updates_per_epoch=100, device=torch.device("cpu"))
    model.point_encoder.forward = labelled(model.point_encoder.forward, "part:encoder forward")
    model.visual.forward = labelled(model.visual.forward, "part:image tower forward")
    torch.Tensor.backward = labelled(torch.Tensor.backward, "part:backward")
    torch.nn.utils.clip_grad_norm_ = labelled(torch.nn.utils.clip_grad_norm_, "part:clip")
    for optimizer in trainer.optimizers.values():
        optimizer.step = labelled(optimizer.step, "part:optimiser step")
    rng = random.Random(0)
    size = getattr(model.visual, "image_size", None) or model.clip.visual.image_size[0]
    batches = [synthetic_batch(config, size, rng) for _ in range(4)]
    for step in range(2):  # warm-up: optimiser states, text cache
        trainer.update([batches[step]], step)
    rows = {}
    for step, phase in ((2, "encoder update"), (3, "prompt update")):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            trainer.update([batches[step]], step)
            seconds = time.perf_counter() - started
        by_part, by_name = leaf_counts(prof.events())
        part_ms = Counter()
        for event in prof.events():
            if event.name.startswith("part:"):
                part_ms[event.name[5:]] += event.cpu_time_total / 1000
        part_ms["other"] = seconds * 1000 - sum(part_ms.values())
        rows[phase] = {
            "seconds": round(seconds, 3),
            "ms_by_part": {k: round(v, 1) for k, v in part_ms.most_common()},
            "leaf_ops": sum(by_part.values()),
            "by_part": dict(by_part.most_common()),
            "top_ops": dict(by_name.most_common(8)),
        }
    import cg3d

    result = {
        "tree": str(args.tree),
        "cg3d": cg3d.__file__,
        "cuda_defaults": args.cuda_defaults,
        "config": args.config,
        "clip": config.clip_model,
        "encoder": config.encoder,
        "batch": args.batch,
        "param_groups": {n: len(o.param_groups) for n, o in trainer.optimizers.items()},
        "encoder_tensors": sum(1 for _ in model.point_encoder.parameters()),
        "updates": rows,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
