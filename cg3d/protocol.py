"""The benchmark protocol lists (templates, class names, renames), kept as package data.

Results are only comparable with published numbers when these lists are exactly the
benchmark's, so they live in one JSON file copied from the public CG3D and ULIP code.
"""

import json
import unicodedata
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from cg3d.errors import UsageError
from cg3d.files import shown_name


@cache
def protocol() -> dict[str, Any]:
    """The parsed `cg3d/data/protocol.json`."""
    text = resources.files("cg3d.data").joinpath("protocol.json").read_text(encoding="utf-8")
    return json.loads(text)


# The one template syntax: "{}" once, where the class name goes, and no other brace. A template
# copied from CLIP_benchmark ("a photo of a {c}."), from printf ("%s"), or with a stray brace
# is refused in one line: `str.format` raised KeyError/IndexError on "{c}" or "{0} {1}", and
# made "{{}}" the literal "{}", a prompt without the class name.
PLACEHOLDER = "{}"


def template_problem(template: str) -> str:
    """What makes `template` no prompt template, or "": it must hold `{}` exactly once, where
    the class name goes, and no other `{` or `}`."""
    if not isinstance(template, str):
        return f"is {type(template).__name__}, not text"
    if "{{" in template or "}}" in template:  # str.format's escape, meant as a literal brace
        return "holds '{{' or '}}', str.format's escaped brace, which no template can hold"
    count = template.count(PLACEHOLDER)
    rest = template.replace(PLACEHOLDER, "")
    if count == 1 and "{" not in rest and "}" not in rest:
        return ""
    if count > 1:
        return f"holds '{{}}' {count} times"
    return "holds a brace other than its '{}'" if count else "holds no '{}'"


def check_templates(template_list: Iterable[str], where: str) -> list[str]:
    """`template_list` as a list, or a UsageError naming `where` and the first bad template."""
    if isinstance(template_list, str):  # ("a {}") without its comma: read letter by letter
        raise UsageError(
            f"{where}: the templates are one string {template_list[:80]!r}, not a list of "
            "templates (a tuple of one needs a trailing comma: ('a photo of a {}.',))"
        )
    found = list(template_list)
    if not found:
        raise UsageError(f"{where}: no templates")
    for template in found:
        if problem := template_problem(template):
            raise UsageError(
                f"{where}: the template {str(template)[:80]!r} {problem}; a template holds "
                "'{}' once, where the class name goes, and no other brace"
            )
    return found


def fill_template(template: str, name: str) -> str:
    """`template` (one `{}`: `template_problem`) with `name` in place of its `{}`; `name` is
    put in as it is, braces and all (never read as a format string)."""
    return template.replace(PLACEHOLDER, name, 1)


def templates(name: str) -> list[str]:
    """Caption templates by set name: `cg3d` (63, training) or `ulip64` (64, zero-shot)."""
    sets = {"cg3d": "cg3d_train_templates", "ulip64": "ulip_eval_templates_64"}
    if name not in sets:
        raise ValueError(f"unknown template set {name!r}; choose one of {sorted(sets)}")
    return check_templates(protocol()[sets[name]], f"protocol.json {sets[name]}")


def class_names(dataset: str) -> list[str]:
    """Benchmark class names in benchmark order: modelnet40, modelnet10, scanobjectnn, shapenet55."""
    keys = {
        "modelnet40": "modelnet40_classes",
        "modelnet10": "modelnet10_classes",
        "scanobjectnn": "scanobjectnn_classes",
        "shapenet55": "shapenet55_classes_cg3d_order",
    }
    if dataset not in keys:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(keys)}")
    return list(protocol()[keys[dataset]])


def shapenet_renames() -> dict[str, str]:
    """CG3D's renames of ShapeNet names (display→monitor, vessel→ship, ashcan→trashcan)."""
    return dict(protocol()["shapenet_renames_cg3d"])


def class_name_problem(name: str) -> str:
    """What makes `name` no class name, or "": not UTF-8, empty or blank (an annotations key
    `""` became the class "", captioned "a photo of a ." and a zero-shot prompt of nothing), or
    holding an unprintable character (a newline splits a caption and the class list's lines).
    One rule for a source's classes and the classes of `cg3d eval text-features`, which
    zero-shot matches with a shard set's."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a folder name that is not UTF-8, handed over with surrogates
        return "is not UTF-8 text"
    if not name.strip():
        return "is empty or blank"
    unprintable = next((c for c in name if not c.isprintable()), None)
    if unprintable is not None:
        return f"holds the unprintable character {unprintable!r} (a newline, a tab…)"
    return ""


def class_text(name: str) -> str:
    """`name` as CLIP's text tower reads it: underscores and runs of spaces as one space (as
    the captions write it), in NFC (ftfy's, in the tokenizer) and lower case (the tokenizer's)."""
    return unicodedata.normalize("NFC", " ".join(name.replace("_", " ").split())).lower()


def same_text_classes(names: Iterable[str]) -> tuple[str, str] | None:
    """Two of `names` that are one text to CLIP (`class_text`: `café` in NFC and in NFD, `Chair`
    and `chair`, `night_stand` and `night stand`), or None. Their captions and zero-shot prompts
    are the same words: nothing tells the classes apart, and zero-shot gave every object of
    the second the first's label."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(class_text(name), name)
        if first != name:
            return first, name
    return None


def check_class_list(classes: list[str], source: str) -> list[str]:
    """`classes` if they keep a source's rules (`cg3d meshes` refuses the others); else a
    UsageError naming `source`. A hand-edited list's "" or "pl\nank" made prompts of nothing or
    a line break in predictions.csv; "Chair" beside "chair" (or night_stand beside "night
    stand") are one prompt, and zero-shot gave the shapes of both the first's label. The one
    check of a shard index's classes (eval and training), OpenShape's categories and
    `cg3d eval text-features --classes`."""
    for name in classes:
        if problem := class_name_problem(name):
            raise UsageError(f"{source}: the class {shown_name(name)} {problem}")
    if alike := same_text_classes(classes):
        first, second = (shown_name(name) for name in alike)
        raise UsageError(f"{source}: the classes {first} and {second} are one text to CLIP")
    return classes


def index_classes(index: dict[str, Any], where: object) -> list[str]:
    """A shard index's class list, checked (`check_class_list`) for eval and training alike; a
    UsageError naming `where` (the shards) if it lists none. Training took such an index and
    skipped every sample as outside the classes; eval refused it."""
    classes = list(index.get("classes") or [])
    if not classes:
        raise UsageError(f"{where}: the shard index lists no classes")
    return check_class_list(classes, f"{where}: the shard index")
