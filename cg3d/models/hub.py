"""The hub format: a model as a folder with no pickle in it (`cg3d export --format hub OUT/`).

    OUT/config.json        what the model is (see `hub_config`): the checkpoint's model config
                           under "model", and for a reader the encoder and its params, points,
                           channels, up axis, normalisation, protocol, the teacher (open_clip
                           model and pretrained tag) and the embedding size; the weights
                           file's sha256 (`weights_sha256`), checked on load
    OUT/model.safetensors  the checkpoint's state dict (safetensors: tensors only, no code)
    OUT/README.md          the model card: training data, published and measured numbers, licence

The tensors are exactly those of our checkpoint (`cg3d.models.checkpoint`): the trained part,
with CLIP named by its weights, or CLIP's whole state for a random or self-contained one. So
`read_hub` gives back the checkpoint dict and `cg3d.load(OUT)` loads it like a `.pt`.
"""

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from cg3d.errors import UsageError, printable
from cg3d.files import (
    atomic_files,
    file_sha256,
    file_stand_in,
    json_text,
    loads_json,
    locks_folder,
    os_error_in,
    require_regular_file,
    write_json,
    zero_ends,
)
from cg3d.formats.owner import check_owner
from cg3d.formats.tables import markdown_text
from cg3d.formats.versions import version_problem

HUB_FORMAT = "cg3d-hub-1"
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FILES = (WEIGHTS, CONFIG, CARD)  # a hub folder's files: written together, as one set
# Read whole before its shape is checked (`read_checkpoint`): a real one is tens of KB (LVIS's
# 1,156 class names), far under what the config's value bound lets through.
MAX_CONFIG_BYTES = 32 * 2**20
# config.json's sha256 of model.safetensors, the whole file as written (not of the tensors: a
# file's hash is one streamed read that `sha256sum` repeats, and covers the header too).
WEIGHTS_SHA256 = "weights_sha256"
SHA256 = re.compile(r"[0-9a-f]{64}")


def is_hub_folder(path: Path) -> bool:
    """Whether `path` is a folder in the hub format (it holds config.json: a FIFO or device
    there too, which `read_hub` then names as not a regular file)."""
    return Path(path).is_dir() and (Path(path) / CONFIG).exists()


def hub_config(payload: dict[str, Any], card: Any | None = None) -> dict[str, Any]:
    """config.json of checkpoint dict `payload`; `card` (a ModelCard) fills what a checkpoint
    does not record: the up axis and normalisation of its training data, protocol, licence."""
    from cg3d.models.clip import clip_embed_dim, loaded_weights_name

    config = payload["config"]
    weights = config.get("clip_weights") or {}
    pretrained = loaded_weights_name(config)
    return {
        "format": HUB_FORMAT,
        "card": config.get("card") or (card.name if card else ""),
        "encoder": config["encoder"],
        "encoder_params": config["encoder_params"],
        "n_points": config["n_points"],
        "point_channels": config["point_channels"],
        "up_axis": card.up_axis if card else "y",
        "normalisation": card.normalisation if card else "bbox",
        "protocol": config.get("protocol") or (card.protocol if card else "cg3d"),
        "teacher": {"model": config["clip_model"], "pretrained": pretrained, "weights": weights},
        "embed_dim": clip_embed_dim(config["clip_model"]),
        "license": card.license if card else "",
        "full_clip": payload["full_clip"],
        "model": config,  # the checkpoint's model config, as `model_from_checkpoint` reads it
    }


@locks_folder("out")  # two exports into one folder would mix their files
def write_hub(out: Path, payload: dict[str, Any], config: dict[str, Any], readme: str) -> None:
    """Write checkpoint dict `payload` to folder `out` in the hub format, with its config.json
    `config` (`hub_config` of it) and README.md `readme`. The three files are replaced together
    (`atomic_files`): an export into an earlier one's folder that is killed or fails part way
    leaves the earlier model whole, never its config.json (classes, encoder, teacher) over the
    new weights."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    # safetensors refuses views sharing memory; a contiguous copy of each is what is stored
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in payload["model"].items()}
    with atomic_files(Path(out), FILES) as paths:
        try:
            save_file(tensors, str(paths[WEIGHTS]), metadata={"format": HUB_FORMAT})
        except SafetensorError as error:  # a full disk: its errno in the message's words only
            refused = os_error_in(error, paths[WEIGHTS])
            if refused is None:
                raise
            raise refused from error
        # of the file as written: a copy cut short, zero-filled or changed is refused on load
        config = {**config, WEIGHTS_SHA256: file_sha256(paths[WEIGHTS])}
        write_json(paths[CONFIG], config, sort_keys=True, ensure_ascii=True)
        paths[CARD].write_text(readme, encoding="utf-8")


def read_hub_config(folder: Path) -> dict[str, Any]:
    """The config.json of hub folder `folder`, its shape checked (a format, a 'model' config,
    a 'full_clip' flag, a well-formed weights_sha256): what the checkpoint is, read without its
    weights (`read_hub`; `checkpoint.recorded_config`). A missing or broken file is a
    UsageError naming it."""
    folder = Path(folder)
    _require_regular(folder, CONFIG)
    try:
        if (folder / CONFIG).stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"{folder / CONFIG}: larger than {MAX_CONFIG_BYTES} bytes")
        config = loads_json((folder / CONFIG).read_bytes())
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON, or nested too deep
        raise UsageError(f"{folder / CONFIG}: not readable JSON ({error})") from None
    if isinstance(config, dict) and (
        problem := version_problem(
            config.get("format"), HUB_FORMAT, "export it again with this cg3d"
        )
    ):
        raise UsageError(f"{folder / CONFIG}: {problem}")
    if not isinstance(config, dict) or config.get("format") != HUB_FORMAT:
        raise UsageError(f"{folder / CONFIG}: not a CG3D hub config (no {HUB_FORMAT!r} format)")
    if not isinstance(config.get("model"), dict) or not isinstance(config.get("full_clip"), bool):
        raise UsageError(f"{folder / CONFIG}: no 'model' config or 'full_clip' flag")
    expected = config.get(WEIGHTS_SHA256)
    if expected is not None and not (isinstance(expected, str) and SHA256.fullmatch(expected)):
        raise UsageError(f"{folder / CONFIG}: {WEIGHTS_SHA256} is not a sha256 (64 hex digits)")
    return config


def read_hub(folder: Path) -> dict[str, Any]:
    """The checkpoint dict a hub folder holds; a missing or broken file is a UsageError naming it.
    Its config's shape and its weights are checked by `read_checkpoint`, the readers' reader."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_hub_config(folder)
    expected = config.get(WEIGHTS_SHA256)  # none in an export older than the key: not checked
    _require_regular(folder, WEIGHTS)
    try:
        actual = file_sha256(folder / WEIGHTS) if expected is not None else None
    except OSError as error:
        raise UsageError(f"{folder / WEIGHTS}: not readable ({error.strerror})") from None
    try:
        # memory-mapped: the pages the hash just read come from the page cache, not the disk
        state = load_file(str(folder / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        reason = safetensors_damage(folder / WEIGHTS) or str(error)
        raise UsageError(
            f"{folder / WEIGHTS}: not a readable safetensors file ({reason})"
        ) from None
    # after the load, so that a damage safetensors sees is said in its words (`safetensors_damage`):
    # the hash alone sees a file cut and zero-filled back to its size (its header whole)
    if actual != expected:
        raise UsageError(
            f"{folder / WEIGHTS}: damaged (its sha256 is not the {WEIGHTS_SHA256} its "
            "config.json records: cut and zero-filled, or changed since export)"
        )
    return {
        "format": "cg3d-checkpoint-1",
        "config": config["model"],
        "full_clip": config["full_clip"],
        "model": state,
    }


MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors' own bound on its JSON header


def safetensors_damage(path: Path) -> str:
    """ "" unless the safetensors file at `path` is zeros or cut short; then why, for a reason
    (safetensors says "incomplete metadata, file not fully covered" or "invalid JSON in
    header"). Its layout: an 8-byte little-endian header length, the JSON header giving each
    tensor's byte range after it, the tensors. Reads the header only. A tail of zeros is not
    looked for: zero weights are real data."""
    zeros = zero_ends(path, tail=False) or file_stand_in(path)  # an LFS pointer: ""
    if zeros:
        return zeros
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            length = int.from_bytes(handle.read(8).ljust(8, b"\0"), "little")
            if size < 8:
                return f"truncated: {size} bytes, short of its 8-byte header length"
            if length > MAX_SAFETENSORS_HEADER:
                return ""  # safetensors refuses it in its own words
            if 8 + length > size:
                return (
                    f"truncated: its header declares {length} bytes, the file holds "
                    f"{size - 8} after its length"
                )
            header = loads_json(handle.read(length))  # nesting past the limit: ValueError
    except (OSError, ValueError):
        return ""  # safetensors' own words
    pairs = [
        entry.get("data_offsets") if isinstance(entry, dict) else None
        for name, entry in (header.items() if isinstance(header, dict) else ())
        if name != "__metadata__"
    ]
    ends = [pair[1] for pair in pairs if isinstance(pair, list) and len(pair) == 2]
    ends = [end for end in ends if isinstance(end, int)]
    end = 8 + length + max(ends, default=0)
    if end > size:
        return f"truncated: its tensors run to byte {end}, the file holds {size}"
    return ""


def _require_regular(folder: Path, name: str) -> None:
    """UsageError unless `folder/name` is a regular file (symlinks followed): a FIFO would
    block the read, a device be read as weights; either is named as what it is, not missing."""
    require_regular_file(folder / name, f"{folder}: no {name}")


def model_sha256(path: Path) -> str:
    """What identifies a model's bytes: a checkpoint file's sha256; for a hub folder, the
    sha256 of its config's and weights' sha256s (an index refuses another model by it)."""
    path = Path(path)
    if not path.is_dir():
        require_regular_file(path, f"no such file {path}")  # hashing a FIFO would wait forever
        return file_sha256(path)
    for name in (CONFIG, WEIGHTS):
        _require_regular(path, name)
    parts = [file_sha256(path / name) for name in (CONFIG, WEIGHTS)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _number(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "–"


def _code(value: Any) -> str:
    """`value` as inline code where Markdown shows it literally there: one printable line with
    no backtick (which would end the span) and no `|` (which ends a table's cell even inside
    code); else as escaped text (`markdown_text`). Names in the card come from the checkpoint
    and result files a user gives (a model, a path, a dataset), not from us."""
    text = str(value)
    if text and printable(text) == text and not {"`", "|"} & set(text):
        return f"`{text}`"
    return markdown_text(text)


def _text(value: Any) -> str:
    """`value` shown literally in the card's Markdown (`markdown_text`)."""
    return markdown_text(str(value))


def model_card(
    payload: dict[str, Any],
    hub: dict[str, Any],
    card: Any | None = None,
    measured: dict[str, float] | None = None,
    audits: dict[str, dict[str, Any]] | None = None,
    run: dict[str, Any] | None = None,
) -> str:
    """README.md for a hub folder: what the model is (`hub`: its config.json, `hub_config`),
    what it was trained on (`run`: the run identity a training checkpoint records, its data
    fingerprint; `audits`: by dataset, the leakage audit its result records), published beside
    `measured` top-1 by dataset, licence."""
    config = payload["config"]
    name = hub["card"] or config["encoder"]
    lines = [f"# {_text(name)}", ""]
    if card is not None:
        lines += [card.description, ""]
    teacher = hub["teacher"]
    lines += [
        "| | |",
        "|---|---|",
        f"| encoder | {_code(config['encoder'])} {_code(json_text(config['encoder_params']))} |",
        f"| input | {_text(config['n_points'])} points × {_text(config['point_channels'])} "
        f"channels, {_text(hub['up_axis'])} up, {_text(hub['normalisation'])} normalisation |",
        f"| teacher | {_code(teacher['model'])} / {_code(teacher['pretrained'])} "
        f"(embedding {_text(hub['embed_dim'])}) |",
        f"| protocol | {_code(hub['protocol'])} |",
        f"| licence | {_text(hub['license']) or 'see the source'} |",
    ]
    if card is not None and card.repository:
        lines.append(f"| source | {card.repository} |")
    lines += ["", "## Training data", ""]
    if run:
        shards = (run.get("config") or {}).get("shards", "")
        lines.append(
            f"Our run on {_code(shards)}; data fingerprint (sha256 of the shard index) "
            f"{_code(run.get('data'))}."
        )
    elif card is not None:
        lines.append(f"As published by its authors ({card.repository or card.published_source}).")
    else:
        lines.append("Not recorded in the checkpoint (exported without its training state).")
    for dataset, audit in sorted((audits or {}).items()):
        leaked = audit.get("leaked_test_shapes")
        verdict = "none" if leaked == 0 else _text(leaked)
        lines.append(
            f"- {_text(dataset)}: leakage audit (`cg3d audit`, {_text(audit.get('folder'))}): "
            f"{verdict} of its test objects had a twin in the training data "
            f"{_text(audit.get('train'))}."
        )
    if not audits:
        lines.append(
            "No leakage audit given: whether benchmark objects (e.g. Objaverse-LVIS) "
            "were in training is not known."
        )
    lines += [
        "",
        "## Zero-shot top-1 (%)",
        "",
        "| dataset | published | measured |",
        "|---|---|---|",
    ]
    published = card.published if card is not None else {}
    measured = measured or {}
    for dataset in sorted(set(published) | set(measured)):
        lines.append(
            f"| {_text(dataset)} | {_number(published.get(dataset, {}).get('acc1'))} | "
            f"{_number(measured.get(dataset))} |"
        )
    if card is not None and card.published_source:
        lines += ["", f"Published: {card.published_source}."]
    return "\n".join(lines) + "\n"


def _read_result(path: Path) -> Any:
    # a FIFO hung the export
    require_regular_file(path, f"--measured: no such file {path}", "--measured")
    try:
        return loads_json(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"--measured: cannot read {path} ({error})") from None


def read_measured(paths: list[Path]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Top-1 (%) by dataset, and the leakage audits the results record, from result files:
    `cg3d benchmark`'s JSON (dataset, metrics.acc1 as a fraction) or `cg3d eval zeroshot`'s
    metrics.json (top1 in %; the dataset and audit in the about.json beside it, or in the
    file itself when written before that split). Anything else names the file."""
    found, audits = {}, {}
    for path in paths:
        result = _read_result(Path(path))
        # cg3d.formats.metrics.ABOUT_NAME (the model library reads no cg3d.formats)
        about = Path(path).with_name("about.json")
        if isinstance(result, dict) and "top1" in result and about.is_file():
            described = _read_result(about)
            result = (described if isinstance(described, dict) else {}) | result
        if not isinstance(result, dict) or not isinstance(result.get("dataset"), str):
            raise UsageError(f"--measured: {path} is neither a benchmark result nor metrics.json")
        metrics = result.get("metrics")
        if isinstance(metrics, dict) and isinstance(metrics.get("acc1"), int | float):
            top1 = 100.0 * metrics["acc1"]  # clip_benchmark's fraction
        else:
            top1 = result.get("top1")  # in % already
        if top1 is None or (isinstance(metrics, dict) and metrics.get("acc1", 0) is None):
            # our results files write a NaN as null (strict JSON): a diverged model's score
            raise UsageError(f"--measured: {path}: its top-1 is null (not a number when measured)")
        if not isinstance(top1, int | float):
            raise UsageError(f"--measured: {path} is neither a benchmark result nor metrics.json")
        found[result["dataset"]] = float(top1)
        if isinstance(result.get("audit"), dict):
            audits[result["dataset"]] = result["audit"]
    return found, audits


@locks_folder("out")  # taken first: a refused export leaves no folder behind
def export_hub(
    src: Path,
    out: Path,
    clip_pretrained: str | None = None,
    embed_clip: bool = False,
    measured: list[Path] | None = None,
) -> dict[str, Any]:
    """Write checkpoint `src` (a file or a hub folder) to folder `out` in the hub format; returns
    its config.json. The teacher is never built unless `embed_clip` asks for CLIP's weights.
    `measured`: result files of this model (see `read_measured`) for the card."""
    from cg3d.models.cards import card_names, get_card
    from cg3d.models.checkpoint import (
        check_before_reading,
        checkpoint_payload,
        model_from_checkpoint,
        read_checkpoint,
    )

    # another command's folder (data/points, a training run, an evaluation) would get a model
    # card and weights among its files; a hub folder (its model.safetensors) is replaced whole
    check_owner(
        Path(out), "export", "would write its config.json, model.safetensors and README.md there"
    )
    numbers, audits = read_measured(measured or [])  # before the weights: a bad file fails now
    checked = clip_pretrained is not None and check_before_reading(src, clip_pretrained)
    payload = read_checkpoint(src)
    model = model_from_checkpoint(payload, Path(src), clip_pretrained, checked)
    exported = checkpoint_payload(model, embed_clip)
    weights = exported["config"].get("clip_weights")
    if isinstance(weights, dict) and "relative" in weights:
        # spelled from the source checkpoint's folder, and a hub folder reads no file beside it
        # (`recorded_file_beside`): it would only mislead in the published config.json
        clip_weights = {key: value for key, value in weights.items() if key != "relative"}
        exported["config"] = {**exported["config"], "clip_weights": clip_weights}
    name = payload["config"].get("card", "")
    card = get_card(name) if name in card_names() else None
    run = (payload.get("training") or {}).get("run")
    config = hub_config(exported, card)
    write_hub(out, exported, config, model_card(exported, config, card, numbers, audits, run))
    return config
