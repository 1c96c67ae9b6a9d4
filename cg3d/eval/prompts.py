"""Class text features for zero-shot classification, as a protocol makes them.

Under a normalising protocol (our `cg3d`: the 64 ULIP/CLIP templates) each caption's feature
is L2-normalised, a class's captions averaged and the mean renormalised: CLIP's prompt
ensemble, the model library's `class_text_features` (which training's held-out accuracy uses
too). A protocol that does not normalise (`cg3d-public`, whose eval.py:300 comments the line
out) takes CLIP's text features as they come, averaged over its templates when it has several.
"""

import torch
import torch.nn.functional as F

from cg3d.eval.protocols import Protocol
from cg3d.models.text import class_text_features


@torch.no_grad()
def protocol_text_features(
    model, names: list[str], protocol: Protocol, batch_size: int = 256
) -> torch.Tensor:
    """(C, D) class features of `names` (already written as the protocol writes class names,
    `Protocol.written_names`) over the protocol's templates."""
    templates = list(protocol.templates)
    if protocol.normalise_text and protocol.class_names == "spaces":
        return class_text_features(model, names, templates, batch_size)
    # Names as written (class_text_features would turn night_stand into "night stand").
    encode = model.encode_text if protocol.normalise_text else model.encode_text_raw
    captions = [template.format(name) for name in names for template in templates]
    features = torch.cat(
        [encode(captions[i : i + batch_size]).float() for i in range(0, len(captions), batch_size)]
    )
    if protocol.normalise_text:
        features = F.normalize(features, dim=-1)
    per_class = features.view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1) if protocol.normalise_text else per_class
