"""Model cards: what each named model is, what it needs and what its authors published.

A card is data, never code: the encoder it builds (a registered size of
`cg3d.models.encoders`), the points and channels it takes, the teacher whose text (and image)
tower it was aligned with, the zero-shot protocol it is evaluated under (a name of
`cg3d.eval.protocols`), the published numbers with their source, and the licence. Converters
(`cg3d convert NAME`), `cg3d benchmark`, `cg3d export --format hub` and model cards read it.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    name: str  # `cg3d convert NAME`, `cg3d benchmark --models NAME`
    description: str
    encoder: str  # a registered encoder size
    n_points: int
    point_channels: int  # 3 (xyz) or 6 (xyz, rgb)
    up_axis: str  # the up axis of the model's training data
    normalisation: str  # "bbox" or "centroid", as the protocol
    protocol: str  # the zero-shot protocol's name
    teacher_model: str  # open_clip model name (or SLIP-ViT-B-16)
    teacher_pretrained: str  # open_clip pretrained tag, or the weights file's name
    embed_dim: int
    # published zero-shot numbers: {dataset: {"acc1": .., "acc3": .., "acc5": ..}}
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    published_source: str = ""  # paper / table the numbers come from
    license: str = ""
    repository: str = ""  # the public code it was converted from
    extra: dict[str, Any] = field(default_factory=dict)


_CARDS: dict[str, ModelCard] = {}


def register_card(card: ModelCard) -> ModelCard:
    _CARDS[card.name] = card
    return card


def get_card(name: str) -> ModelCard:
    from cg3d.errors import UsageError

    if name not in _CARDS:
        raise UsageError(f"unknown model {name!r}; choose one of {sorted(_CARDS)}")
    return _CARDS[name]


def card_names() -> list[str]:
    return sorted(_CARDS)


register_card(
    ModelCard(
        name="cg3d-release",
        description="CG3D authors' released PointTransformer (Point-BERT) with SLIP prompts",
        encoder="pointtransformer-base",
        n_points=8192,
        point_channels=3,
        up_axis="y",
        normalisation="centroid",
        protocol="cg3d-public",
        teacher_model="SLIP-ViT-B-16",
        teacher_pretrained="slip_base_100ep.pt",
        embed_dim=512,
        published={
            "modelnet40": {"acc1": 48.7, "acc5": 66.5},
            "scanobjectnn-obj_only": {"acc1": 42.5, "acc5": 60.8},
        },
        published_source="OpenShape's re-evaluation of the released weights",
        repository="deeptibhegde/CLIP-goes-3D",
    )
)
