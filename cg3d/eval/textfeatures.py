"""`cg3d eval text-features`: class text features of any model, written once, used anywhere.

The text tower of a bigG or EVA-E teacher is gigabytes; zero-shot on a machine without it reads
the class features from a file instead (`cg3d eval zeroshot --text-features FILE`), as OpenShape
ships its own. The file format is cg3d.formats.textfeatures.
"""

from pathlib import Path
from typing import Any

from cg3d.errors import UsageError
from cg3d.formats.textfeatures import write_text_features
from cg3d.protocol import check_class_list


def model_protocol(config: dict[str, Any], name: str = ""):
    """The protocol `name`, else the one the model's checkpoint names, else ours ("cg3d")."""
    from cg3d.eval.protocols import get_protocol

    return get_protocol(name or config.get("protocol") or "cg3d")


def write_class_features(
    checkpoint: Path,
    out: Path,
    classes: list[str],
    protocol: str = "",
    clip_pretrained: str | None = None,
) -> dict[str, Any]:
    """Encode `classes` under the protocol's templates with the model's text tower (built now)
    and write them to `out` (.npy and its .json sidecar); returns the sidecar's record."""
    from cg3d.models.checkpoint import load_model
    from cg3d.models.text import check_class_features, check_distinct_features

    if not classes:
        raise UsageError("--classes: no classes given")
    if len(set(classes)) != len(classes):
        raise UsageError("--classes: a class is named twice")
    check_class_list(classes, "--classes")  # a source's rules: zero-shot matches the two
    if Path(out).suffix != ".npy":  # before the model loads and every class is encoded
        raise UsageError(f"--out: {out} must end in .npy")
    if protocol:  # a name given: an unknown one fails before the model loads, too
        model_protocol({}, protocol)
    model = load_model(Path(checkpoint), clip_pretrained=clip_pretrained)
    chosen = model_protocol(model.config, protocol)
    # the protocol's own way: its class names and templates, normalised or not
    features = chosen.class_features(model, chosen.written_names(classes))
    # a file zero-shot would refuse on reading (dead rows) or split by the tie rule (two rows
    # alike: names whose prompts agree in the 77 tokens CLIP reads) is not written
    check_class_features(features, classes, "--checkpoint")
    check_distinct_features(features, classes, "--classes")
    about = {
        "clip_model": model.config["clip_model"],
        "clip_weights": model.config.get("clip_weights"),
        "protocol": chosen.name,
        "templates": len(chosen.templates),
        "normalised": chosen.normalise_text,
        "checkpoint": str(checkpoint),
    }
    write_text_features(Path(out), features.cpu().numpy(), classes, about)
    return {"classes": len(classes), "dim": int(features.shape[1]), **about}


def benchmark_classes(
    dataset: str, root: Path, variant: str = "", allow_pickle: bool = False
) -> list[str]:
    """The class names of a benchmark, in its order (as `cg3d eval zeroshot` reads it)."""
    from cg3d.eval.readers import open_benchmark

    return list(open_benchmark(dataset, Path(root), variant, "test", allow_pickle).classes)
