"""Class text embeddings for zero-shot classification.

Default: the 64 ULIP/CLIP templates per class, ensembled by the model library's
`class_text_features` (the one function training's held-out accuracy uses too).
`single_prompt` uses one template instead ("This is a {}" for parity with the CG3D paper).
"""

from cg3d.errors import UsageError
from cg3d.models.text import templates_label
from cg3d.protocol import templates


def prompt_templates(single_prompt: str = "") -> list[str]:
    """The zero-shot templates: the 64-template ensemble, or the one `single_prompt`."""
    if not single_prompt:
        return templates("ulip64")
    if single_prompt.count("{}") != 1:
        raise UsageError(f"--single-prompt must contain '{{}}' exactly once, got {single_prompt!r}")
    return [single_prompt]


def prompts_label(single_prompt: str = "") -> str:
    """What the metrics call the templates: "ulip64 (64)", or the single prompt quoted."""
    return templates_label(
        repr(single_prompt) if single_prompt else "ulip64", prompt_templates(single_prompt)
    )
