"""How a model is evaluated zero-shot: a registry of named protocols (as the encoders' sizes).

A protocol is everything between a benchmark's files and a model's logits that changes the
number a paper reports: the prompt templates, how class names are written, whether text
features are normalised, how points are normalised and subsampled, the constant colour of a
benchmark without colours, and the up axis the model was trained with. `cg3d eval zeroshot
--protocol NAME` picks one; every result names the protocol it was computed under.

A converted peer model (ULIP, OpenShape, Uni3D, ...) registers its own protocol here, under the
name its model card gives (`cg3d.models.cards`), with `register_protocol`.
"""

from dataclasses import dataclass, replace

from cg3d.errors import UsageError
from cg3d.formats.points import NO_COLOR
from cg3d.geometry.frame import UP_AXES
from cg3d.protocol import check_templates, protocol, templates

CLASS_NAME_STYLES = ("spaces", "raw")  # underscores → spaces, or the folder names as they are
# bbox: bounding-box centre, 1/max radius (our pipeline's frame, float64); centroid: the
# public `pc_normalize` (mean of the points, 1/max radius, in float32 as it runs on float32).
POINT_NORMALISATIONS = ("bbox", "centroid")
# seeded: our FPS from a seeded random point; first: pointnet2_ops' CUDA kernel, from index 0,
# never picking a point whose squared norm is at most 1e-3 (`cg3d.geometry.fps.pointnet2_fps`).
FPS_STARTS = ("seeded", "first")


@dataclass(frozen=True)
class Protocol:
    """One way of evaluating zero-shot; fields are what changes a reported number."""

    name: str
    description: str
    templates: tuple[str, ...]  # each with one "{}" and no other brace; several are ensembled
    class_names: str = "spaces"  # one of CLASS_NAME_STYLES
    normalise_text: bool = True  # L2-normalise each prompt's and each class's text feature
    point_normalisation: str = "bbox"  # one of POINT_NORMALISATIONS
    fps_start: str = "seeded"  # one of FPS_STARTS
    n_points: int = 0  # 0: the model's own n_points
    constant_color: float = NO_COLOR[0]  # rgb of every point when the benchmark has no colour
    up_axis: str = "y"  # the model's up axis: shapes are turned into it from the benchmark's
    # How the metrics name the templates, e.g. "ulip64"; "": the templates themselves, quoted.
    templates_name: str = ""
    # Benchmarks (by name, e.g. "objaverse-lvis") whose class names go into the templates as
    # the benchmark writes them ("Band_Aid"), whatever `class_names` says for the others.
    raw_names_for: tuple[str, ...] = ()
    # 0: a cloud of fewer than n_points points is topped up to n_points. k > 0: a cloud of at
    # most n_points is fed as it is, in its order (as a public loader that never resamples),
    # topped up only to k when under k.
    min_points_fed: int = 0
    # (benchmark name, colour) where a benchmark's constant colour is not `constant_color`
    colors_for: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.class_names not in CLASS_NAME_STYLES:
            raise UsageError(f"{self.name}: class_names must be one of {CLASS_NAME_STYLES}")
        if self.point_normalisation not in POINT_NORMALISATIONS:
            raise UsageError(f"{self.name}: point_normalisation one of {POINT_NORMALISATIONS}")
        if self.fps_start not in FPS_STARTS:
            raise UsageError(f"{self.name}: fps_start must be one of {FPS_STARTS}")
        check_templates(self.templates, f"protocol {self.name}")
        if self.up_axis not in UP_AXES:
            raise UsageError(f"{self.name}: up_axis must be one of {UP_AXES}")
        if not 0.0 <= self.constant_color <= 1.0 or self.n_points < 0:
            raise UsageError(f"{self.name}: constant_color in [0, 1] and n_points ≥ 0")
        if self.min_points_fed < 0:
            raise UsageError(f"{self.name}: min_points_fed must be ≥ 0")
        if not all(0.0 <= color <= 1.0 for _, color in self.colors_for):
            raise UsageError(f"{self.name}: every colour of colors_for in [0, 1]")

    def for_benchmark(self, benchmark: str) -> "Protocol":
        """This protocol as it prepares `benchmark`'s points: its constant colour there."""
        colors = dict(self.colors_for)
        return replace(self, constant_color=colors[benchmark]) if benchmark in colors else self

    def class_name(self, name: str) -> str:
        """How this protocol writes a benchmark class name inside its templates."""
        return name.replace("_", " ") if self.class_names == "spaces" else name

    def written_names(
        self, classes: list[str], folder_names: list[str] | None = None, benchmark: str = ""
    ) -> list[str]:
        """The class names as they go into the templates: `classes` (our protocol names) with
        spaces, or, for "raw" (or a `benchmark` in `raw_names_for`), the names as the
        benchmark's files write them (`folder_names`, ModelNet's `night_stand`), else `classes`
        as they are."""
        if self.class_names == "raw" or benchmark in self.raw_names_for:
            return list(folder_names) if folder_names else list(classes)
        return [self.class_name(name) for name in classes]

    def class_features(self, model, names: list[str]):
        """(C, D) class prototypes of `names` (as `written_names` writes them) over this
        protocol's templates, normalised or not as it says (`class_text_features`)."""
        from cg3d.models.text import class_text_features  # torch: only when a model is at hand

        return class_text_features(
            model, names, list(self.templates), as_written=True, normalise=self.normalise_text
        )

    def templates_label(self) -> str:
        """What the metrics call the templates: "ulip64 (64)", or "'This is a {}' (1)"."""
        name = self.templates_name or ", ".join(repr(t) for t in self.templates)
        return f"{name} ({len(self.templates)})"


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Make `protocol` available by its name; a name is registered once."""
    if protocol.name in _PROTOCOLS and _PROTOCOLS[protocol.name] != protocol:
        raise UsageError(f"protocol {protocol.name!r} is registered already")
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
        templates_name="ulip64",
    )
)

# The public eval.py (deeptibhegde/CLIP-goes-3D, `validate_ZS` and its ModelNet dataset), line
# by line: `args.text_prompt + c` ("This is a " by default, utils/parser.py:38) with c the
# shape_names.txt line as it is (eval.py:186-187, underscores kept); the text normalisation is
# commented out (eval.py:300) while the point feature is normalised (eval.py:299); the txt's
# xyz (USE_NORMALS false, cfgs/dataset_configs/ModelNet40.yaml) through `pc_normalize`
# (datasets/ModelNetDataset.py:27-32, 202-204); `misc.fps(points, args.npoints)` (eval.py:275),
# pointnet2_ops' furthest_point_sample; logits `point_n @ text.T` (eval.py:309), argmax (321).
# Its ScanObjectNN zero-shot set is PB_T50_RS (`ScanObjectNN_hardest`, pc_normalize too, class
# names as ours): 2,048 points FPS'd "to" 8,192, so the kernel picks all 2,048 and then repeats
# one point 6,144 times, which `pointnet2_fps` reproduces. OBJ_ONLY/OBJ_BG are not in its
# zero-shot run (their dataset class does not normalise); this protocol normalises every set.
CG3D_PUBLIC = register_protocol(
    Protocol(
        name="cg3d-public",
        description="the public CG3D eval.py: 'This is a ' + the raw folder name, text "
        "features not normalised, centroid normalisation, pointnet2_ops FPS from index 0",
        templates=(protocol()["cg3d_single_prompt"],),  # "This is a {}"
        class_names="raw",
        normalise_text=False,
        point_normalisation="centroid",
        fps_start="first",
    )
)


# Converted peer models (issue 23): each as its public code evaluates zero-shot, read from it.
# ULIP (salesforce/ULIP main.py, data/dataset_3d.py): data/templates.json `modelnet40_64` (our
# `ulip64`, the same 64 strings) ensembled over normalised prompt features, data/labels.json
# names with spaces ("flower pot"), 8192 points centred on their centroid and scaled to the unit
# sphere (pc_normalize), the point clouds' own y-up frame, centres by pointnet2_ops FPS from
# point 0; xyz only.
ULIP = register_protocol(
    Protocol(
        name="ulip",
        description="ULIP's main.py: its 64 templates ensembled, names with spaces, 8192 "
        "points, centroid + unit sphere, y up, FPS from point 0",
        templates=tuple(templates("ulip64")),
        templates_name="ulip64",
        point_normalisation="centroid",
        fps_start="first",
        n_points=8192,
        constant_color=0.4,  # ULIP's colour where it adds one (xyz-only models ignore it)
        up_axis="y",
    )
)
# ULIP-2 (ULIP2_PointBERT_Colored, the `use_colored_pc` ModelNet40 branch of dataset_3d.py):
# as ULIP, on 10k points with the constant colour 0.4 (np.ones_like(xyz) * 0.4)
ULIP2 = register_protocol(
    Protocol(
        name="ulip2",
        description="ULIP-2: ULIP's 64 templates and names, 10k xyz + rgb points, constant "
        "colour 0.4 where a benchmark has none, centroid + unit sphere, y up, FPS from point 0",
        templates=tuple(templates("ulip64")),
        templates_name="ulip64",
        point_normalisation="centroid",
        fps_start="first",
        n_points=10000,
        constant_color=0.4,
        up_axis="y",
    )
)
# OpenShape (Colin97/OpenShape_code src/data.py, src/example.py): it evaluates with the class
# features it ships (`cat_name_pt_feat.npy`; the README says "prompt engineering used" for
# LVIS, the prompts are not in the code): those files are the faithful text side. Where they
# are not to hand, the bare class name, as its example extracts text features. Shapes are swapped y↔z into its z-up frame
# (`y_up: True`), centred on the centroid and scaled to the unit sphere (normalize_pc), 10k
# points; its ModelNet40 colour is the file's 100/255 ("scale to 0.4"); dgl's FPS starts at a
# random point.
OPENSHAPE = register_protocol(
    Protocol(
        name="openshape",
        description="OpenShape: the bare class name as the text (its shipped class features; "
        "LVIS's as LVIS writes them), "
        "10k xyz + rgb points, z up, centroid + unit sphere, colour 100/255 (ScanObjectNN 0.4), "
        "random FPS start",
        templates=("{}",),
        point_normalisation="centroid",
        fps_start="seeded",
        n_points=10000,
        constant_color=100 / 255,
        up_axis="z",
        # ScanObjectNNTest: `np.ones_like(xyz) * 0.4` where the file has no rgb (src/data.py)
        colors_for=(("scanobjectnn", 0.4),),
        # src/extract_lvis_feat.py encodes each sorted lvis-annotations.json key as it is
        # ("Band_Aid"), one text, no template
        raw_names_for=("objaverse-lvis",),
    )
)
# Uni3D (baaivision/Uni3D main.py test_zeroshot_3d_core, data/datasets.py): data/templates.json
# `modelnet40_64` (ULIP's 64) ensembled over all three sets, data/labels.json names: ModelNet40
# with spaces ("flower pot"), Objaverse-LVIS as LVIS writes them ("Band_Aid",
# "arctic_(type_of_shoe)": `objaverse_lvis_openshape`, 388 of 1156 with underscores), 10k
# points centred on their centroid and scaled to the unit sphere (pc_norm), the OpenShape test
# files' colour 100/255 ≈ 0.4; without --openshape_setting (neither scripts/inference.sh nor
# pretrain.sh sets it) no y↔z swap: Uni3D trains and evaluates in the files' own y-up frame.
# Centres by pointnet2_ops FPS from point 0.
UNI3D = register_protocol(
    Protocol(
        name="uni3d",
        description="Uni3D: ULIP's 64 templates ensembled, names with spaces (LVIS's as LVIS "
        "writes them), 10k xyz + rgb points (fewer fed as they are), centroid + unit sphere, "
        "colour 100/255 (ScanObjectNN 0.4), y up (no swap), FPS from point 0",
        templates=tuple(templates("ulip64")),
        templates_name="ulip64",
        point_normalisation="centroid",
        fps_start="first",
        n_points=10000,
        constant_color=100 / 255,
        up_axis="y",
        raw_names_for=("objaverse-lvis",),
        # ModelNet40_openshape and ScanObjNN_openshape (data/datasets.py) never resample: a
        # set of fewer points (ScanObjectNN's) reaches the encoder as it is, not padded with
        # repeats that would fill kNN patches; 512 is what its Group needs (512 FPS centres)
        min_points_fed=512,
        # ScanObjNN_openshape: `np.ones_like(xyz) * 0.4` where the file has no rgb
        # (data/datasets.py:244-245); ModelNet40's files hold rgb 100, read as 100/255
        colors_for=(("scanobjectnn", 0.4),),
    )
)
