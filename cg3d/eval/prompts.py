"""Class text embeddings for zero-shot classification.

Default: the 64 ULIP/CLIP templates per class, each caption encoded and L2-normalised, the
64 averaged and the mean renormalised (the CLIP prompt ensemble). `single_prompt` uses one
template instead ("This is a {}" for parity with the CG3D paper). Underscores in class names
become spaces, as benchmark folder names (night_stand) are not words CLIP knows.
"""

import torch
import torch.nn.functional as F

from cg3d.errors import UsageError
from cg3d.protocol import templates


def display_name(name: str) -> str:
    return name.replace("_", " ").strip()


def prompt_templates(single_prompt: str = "") -> list[str]:
    """The zero-shot templates: the 64-template ensemble, or the one `single_prompt`."""
    if not single_prompt:
        return templates("ulip64")
    if single_prompt.count("{}") != 1:
        raise UsageError(f"--single-prompt must contain '{{}}' exactly once, got {single_prompt!r}")
    return [single_prompt]


@torch.no_grad()
def class_text_features(
    model, classes: list[str], template_list: list[str], batch_size: int = 256
) -> torch.Tensor:
    """(C, D) unit-norm class embeddings: per class, the renormalised mean of its prompts."""
    prompts = [t.format(display_name(c)) for c in classes for t in template_list]
    features = torch.cat(
        [model.encode_text(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    )
    features = F.normalize(features.float(), dim=-1)
    per_class = features.view(len(classes), len(template_list), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)
