"""Class prototypes: the text features a shape's features are compared with to classify it.

One function for every caller: training's held-out accuracy (the `cg3d` training templates by
default), zero-shot evaluation, `classify` and `cg3d eval text-features` (a protocol's
templates, class names as the protocol writes them, normalised or not). Each class name is put
in every template, each caption encoded and L2-normalised, the captions of a class averaged and
the mean renormalised (CLIP's prompt ensemble). Underscores in class names become spaces, as
benchmark folder names (night_stand) are not words CLIP knows, unless the names come already
written (`as_written`: a protocol's `written_names`, which may keep them). A protocol that does
not normalise (`cg3d-public`, whose eval.py:300 comments the line out) takes CLIP's text
features as they come (`encode_text_raw`), averaged over its templates when it has several.
"""

from typing import Protocol

import torch
import torch.nn.functional as F

from cg3d.errors import UsageError
from cg3d.files import shown_name
from cg3d.protocol import check_templates, fill_template


class TextModel(Protocol):
    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    # only for normalise=False: the features before CLIP's normalisation
    def encode_text_raw(self, texts: list[str]) -> torch.Tensor: ...


def display_name(name: str) -> str:
    return name.replace("_", " ").strip()


def check_class_features(features: torch.Tensor, names: list[str], what: str) -> torch.Tensor:
    """`features` ((C, D) text features of `names`) if every row is finite and not all zeros;
    else a UsageError naming `what` and the first such class. A dead text tower (an all-zero
    checkpoint, weights that overflow) gave rows of zeros or NaN: every shape scored every
    class alike and the first class won, a chance-level number with exit 0 and no warning."""
    finite = torch.isfinite(features).all(dim=-1)
    bad = ~finite | ~features.ne(0).any(dim=-1)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        kind = "all zeros" if finite[first] else "not finite"
        raise UsageError(
            f"{what}: the text feature of the class {names[first]!r} is {kind} ({int(bad.sum())} "
            f"of {len(names)} classes): the text tower's weights are dead or damaged"
        )
    return features


def alike_features(features: torch.Tensor) -> tuple[int, int] | None:
    """The first two rows of the (C, D) `features` equal bit for bit (the later one's first),
    or None: classes whose prompts are one text to CLIP (the same words, or the same first 77
    tokens, the rest cut), which nothing tells apart."""
    column = torch.unique(features, dim=0, return_inverse=True)[1].tolist()
    first: dict[int, int] = {}
    for index, row in enumerate(column):
        if (earlier := first.setdefault(row, index)) != index:
            return earlier, index
    return None


def check_distinct_features(features: torch.Tensor, names: list[str], where: str) -> torch.Tensor:
    """`features` ((C, D) text features of `names`) if no two rows are one (`alike_features`);
    else a UsageError naming `where` and the two names, which would split one probability."""
    if alike := alike_features(features):
        first, second = (shown_name(names[index]) for index in alike)
        raise UsageError(
            f"{where}: {first} and {second} have one text feature: their prompts are one text "
            "to CLIP (the same first 77 tokens, the rest cut)"
        )
    return features


def templates_label(name: str, template_list: list[str]) -> str:
    """How a metric names the templates that made its prototypes, e.g. "cg3d (63)"."""
    return f"{name} ({len(template_list)})"


def check_templates_see_names(per_template: torch.Tensor, template_list: list[str]) -> None:
    """A UsageError naming the first template that gave every class one text feature while
    another template told the classes apart ((C, T, D) `per_template`): CLIP cut its prompts
    before the class name (its '{}' past the 77 tokens CLIP reads), and its feature, the same
    for every class, was averaged into every prototype. Every template alike is left to the
    callers' checks (a dead tower, or names alike for 77 tokens)."""
    if per_template.shape[0] < 2:
        return
    blind = (per_template == per_template[:1]).all(dim=2).all(dim=0)
    if blind.any() and not blind.all():
        template = template_list[int(blind.nonzero()[0, 0])]
        raise UsageError(
            f"templates: the template {template[:80]!r} ({len(template)} characters) gives "
            "every class one text feature: its '{}' falls past the 77 tokens CLIP reads"
        )


@torch.no_grad()
def class_text_features(
    model: TextModel,
    classes: list[str],
    template_list: list[str],
    batch_size: int = 256,
    *,
    as_written: bool = False,
    normalise: bool = True,
) -> torch.Tensor:
    """(C, D) class prototypes: per class, the mean of its captions' features over the
    templates; unit-norm (each caption's and the mean normalised) unless `normalise` is False.

    `as_written`: the class names go into the templates as given (no `display_name`).
    Captions are encoded `batch_size` at a time, whatever the number of classes.
    """
    template_list = check_templates(template_list, "templates")
    names = classes if as_written else [display_name(c) for c in classes]
    captions = [fill_template(t, name) for name in names for t in template_list]
    encode = model.encode_text if normalise else model.encode_text_raw
    features = torch.cat(
        [encode(captions[i : i + batch_size]).float() for i in range(0, len(captions), batch_size)]
    )
    check_templates_see_names(features.view(len(classes), len(template_list), -1), template_list)
    if not normalise:
        return features.view(len(classes), len(template_list), -1).mean(dim=1)
    features = F.normalize(features, dim=-1)
    per_class = features.view(len(classes), len(template_list), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)
