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


# Converted peer models (issue 23; `cg3d convert NAME`, cg3d.models.peers). Published numbers:
# zero-shot top-1 (top-5) as the table and each repository's README give them.
register_card(
    ModelCard(
        name="ulip-pointbert",
        description="ULIP (v1) Point-BERT, 8k xyz points, aligned with SLIP ViT-B/16 on "
        "ShapeNet-55 (triplets of point cloud, rendered image and text)",
        encoder="ulip-pointbert",
        n_points=8192,
        point_channels=3,
        up_axis="y",
        normalisation="centroid",
        protocol="ulip",
        teacher_model="SLIP-ViT-B-16",
        teacher_pretrained="slip_base_100ep.pt",
        embed_dim=512,
        published={"modelnet40": {"acc1": 60.4, "acc5": 84.0}},
        published_source="ULIP paper, Table 1 (the repository README lists 60.3 / 84.0 for "
        "its released PointBERT checkpoint)",
        license="BSD-3-Clause",
        repository="salesforce/ULIP",
    )
)
register_card(
    ModelCard(
        name="ulip2-pointbert",
        description="ULIP-2 Point-BERT (18 blocks, 512 groups of 32, xyz + rgb), 10k points, "
        "aligned with OpenCLIP ViT-bigG-14 on ULIP-Objaverse + ULIP-ShapeNet",
        encoder="ulip2-pointbert",
        n_points=10000,
        point_channels=6,
        up_axis="y",
        normalisation="centroid",
        protocol="ulip2",
        teacher_model="ViT-bigG-14",
        teacher_pretrained="laion2b_s39b_b160k",
        embed_dim=1280,
        published={
            "objaverse-lvis": {"acc1": 50.6, "acc5": 79.1},
            "modelnet40": {"acc1": 84.7, "acc5": 97.1},
        },
        published_source="salesforce/ULIP README (ULIP2-PointBERT-10kxyzrgb-ensembled-"
        "objaverse-shapenet, CVPR 2024 version)",
        license="BSD-3-Clause",
        repository="salesforce/ULIP",
        extra={"training_data": "ULIP-Objaverse + ULIP-ShapeNet (Objaverse-LVIS objects in it)"},
    )
)
register_card(
    ModelCard(
        name="openshape-pointbert",
        description="OpenShape PointBERT (PPAT, scaling 4), 10k xyz + rgb points, z up, "
        "aligned with OpenCLIP ViT-bigG-14 on Objaverse, ShapeNet, ABO and 3D-FUTURE",
        encoder="openshape-ppat",
        n_points=10000,
        point_channels=6,
        up_axis="z",
        normalisation="centroid",
        protocol="openshape",
        teacher_model="ViT-bigG-14",
        teacher_pretrained="laion2b_s39b_b160k",
        embed_dim=1280,
        published={
            "objaverse-lvis": {"acc1": 46.8, "acc5": 77.0},
            "modelnet40": {"acc1": 84.4, "acc5": 98.0},
        },
        published_source="Colin97/OpenShape_code README (pointbert-vitg14-rgb)",
        license="Apache-2.0",
        repository="Colin97/OpenShape_code",
        extra={"training_data": "Objaverse (LVIS included), ShapeNet, ABO, 3D-FUTURE"},
    )
)
# Uni3D: scripts/inference.sh's sizes; published numbers of the README's model zoo (ensembled
# training data, LVIS included; uni3d-g the 🔥 release). Tiny and small have no row there.
_UNI3D_PUBLISHED = {
    "ti": {},
    "s": {},
    "b": {
        "objaverse-lvis": {"acc1": 51.7, "acc5": 80.8},
        "modelnet40": {"acc1": 86.3, "acc5": 97.9},
        "scanobjectnn": {"acc1": 63.8, "acc5": 90.2},
    },
    "l": {
        "objaverse-lvis": {"acc1": 53.1, "acc5": 81.5},
        "modelnet40": {"acc1": 86.3, "acc5": 98.3},
        "scanobjectnn": {"acc1": 58.2, "acc5": 89.4},
    },
    "g": {
        "objaverse-lvis": {"acc1": 55.3, "acc5": 82.9},
        "modelnet40": {"acc1": 88.2, "acc5": 99.3},
        "scanobjectnn": {"acc1": 65.3, "acc5": 92.7},
    },
}
_UNI3D_EVA = {
    "ti": "eva02_tiny_patch14_224",
    "s": "eva02_small_patch14_224",
    "b": "eva02_base_patch14_448",
    "l": "eva02_large_patch14_448",
    "g": "eva_giant_patch14_560",
}
for _size, _published in _UNI3D_PUBLISHED.items():
    register_card(
        ModelCard(
            name=f"uni3d-{_size}",
            description=f"Uni3D-{_size}: Point-BERT patches (512 groups of 64, xyz + rgb) "
            f"through timm's {_UNI3D_EVA[_size]} blocks, aligned with EVA02-E-14-plus",
            encoder=f"uni3d-{_size}",
            n_points=10000,
            point_channels=6,
            up_axis="y",
            normalisation="centroid",
            protocol="uni3d",
            teacher_model="EVA02-E-14-plus",
            teacher_pretrained="laion2b_s9b_b144k",
            embed_dim=1024,
            published=_published,
            published_source="baaivision/Uni3D README, model zoo (Ensembled)" if _published else "",
            license="MIT",
            repository="baaivision/Uni3D",
            extra={"pc_model": _UNI3D_EVA[_size]},
        )
    )
