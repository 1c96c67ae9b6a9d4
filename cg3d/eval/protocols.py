"""How a model is evaluated zero-shot: a registry of named protocols (as the encoders' sizes).

A protocol is everything between a benchmark's files and a model's logits that changes the
number a paper reports: the prompt templates, how class names are written, whether text
features are normalised, how points are normalised and subsampled, the constant colour of a
benchmark without colours, and the up axis the model was trained with. `cg3d eval zeroshot
--protocol NAME` picks one; every result names the protocol it was computed under.

A converted peer model (ULIP, OpenShape, Uni3D, ...) registers its own protocol here, under the
name its model card gives (`cg3d.models.cards`), with `register_protocol`.
"""

from dataclasses import dataclass

from cg3d.errors import UsageError
from cg3d.protocol import templates

CLASS_NAME_STYLES = ("spaces", "raw")  # underscores → spaces, or the folder names as they are
POINT_NORMALISATIONS = ("bbox", "centroid")  # bounding-box centre or centroid, then unit sphere
FPS_STARTS = ("seeded", "first")  # a seeded random start, or index 0 (pointnet2_ops' kernel)


@dataclass(frozen=True)
class Protocol:
    """One way of evaluating zero-shot; fields are what changes a reported number."""

    name: str
    description: str
    templates: tuple[str, ...]  # each with one "{}"; several are ensembled per class
    class_names: str = "spaces"  # one of CLASS_NAME_STYLES
    normalise_text: bool = True  # L2-normalise each prompt's and each class's text feature
    point_normalisation: str = "bbox"  # one of POINT_NORMALISATIONS
    fps_start: str = "seeded"  # one of FPS_STARTS
    n_points: int = 0  # 0: the model's own n_points
    constant_color: float = 0.5  # rgb of every point when the benchmark has no colour
    up_axis: str = "y"  # the model's up axis: shapes are turned into it from the benchmark's

    def __post_init__(self) -> None:
        if self.class_names not in CLASS_NAME_STYLES:
            raise ValueError(f"{self.name}: class_names must be one of {CLASS_NAME_STYLES}")
        if self.point_normalisation not in POINT_NORMALISATIONS:
            raise ValueError(f"{self.name}: point_normalisation one of {POINT_NORMALISATIONS}")
        if self.fps_start not in FPS_STARTS:
            raise ValueError(f"{self.name}: fps_start must be one of {FPS_STARTS}")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ValueError(f"{self.name}: every template needs exactly one '{{}}'")

    def class_name(self, name: str) -> str:
        """How this protocol writes a benchmark class name inside its templates."""
        return name.replace("_", " ") if self.class_names == "spaces" else name


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Make `protocol` available by its name; a name is registered once."""
    if protocol.name in _PROTOCOLS and _PROTOCOLS[protocol.name] != protocol:
        raise ValueError(f"protocol {protocol.name!r} is registered already")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The registered protocol `name`, or a one-line error listing the names."""
    if name not in _PROTOCOLS:
        raise UsageError(f"--protocol: unknown protocol {name!r}; choose one of {protocol_names()}")
    return _PROTOCOLS[name]


def protocol_names() -> list[str]:
    return sorted(_PROTOCOLS)


CG3D = register_protocol(
    Protocol(
        name="cg3d",
        description="ours: the 64 ULIP/CLIP templates ensembled, normalised text features, "
        "class names with spaces, bounding-box centre and unit sphere, seeded FPS",
        templates=tuple(templates("ulip64")),
    )
)
