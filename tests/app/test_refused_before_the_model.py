"""A bad cheap input (a file option, a --set value, a name) is refused before the model loads:
one line naming it, nothing written, no model built (t61a)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError


class Loaded(Exception):
    """Raised by the patched loaders: a command reached its model load."""


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every model loader a command may call, recording the call and stopping there."""
    import torch

    import cg3d.app.api as api
    import cg3d.app.demo as demo
    import cg3d.app.index as index
    import cg3d.models.checkpoint as checkpoint

    calls = []

    def loader(*args, **kwargs):
        calls.append(args)
        raise Loaded(args)

    for module, name in (
        (api, "load"),
        (index, "load"),
        (demo, "load"),
        (checkpoint, "load_model"),
    ):
        monkeypatch.setattr(module, name, loader)
    monkeypatch.setattr(torch, "load", loader)  # any checkpoint read (convert, export)
    return calls


# (words after `cg3d`, the line expected); {ck}: the checkpoint, {sh}: labelled shards, {out}: the
# output, {dir}: a folder, {shape}: a point cloud .npy
CASES = {
    "zeroshot --text-features a folder": (
        "eval zeroshot --checkpoint {ck} --shards {sh} --out {out} --text-features {dir}",
        "--text-features: {dir}: not a regular file",
    ),
    "zeroshot --text-features missing": (
        "eval zeroshot --checkpoint {ck} --shards {sh} --out {out} --text-features {dir}/no.npy",
        "--text-features: no file {dir}/no.npy",
    ),
    "zeroshot --set eval.zeroshot.audit (no audit there)": (
        "eval zeroshot --checkpoint {ck} --shards {sh} --out {out} --set eval.zeroshot.audit={dir}",
        "--audit: no audit.json in {dir}: run `cg3d audit --out {dir}`",
    ),
    "text-features --protocol unknown": (
        "eval text-features --checkpoint {ck} --out {out}.npy --classes a,b --protocol nope",
        "--protocol: unknown protocol 'nope'",
    ),
    "classify --labels twice": (
        "classify {shape} --checkpoint {ck} --labels a,b,a",
        "--labels: 'a' is given twice",
    ),
    "index --shards not a pack output": (
        "index --checkpoint {ck} --shards {dir} --out {out}",
        "no index.json in {dir}: not a `cg3d pack` output",
    ),
    "retrieval --set eval.retrieval.split unknown": (
        "eval retrieval --checkpoint {ck} --shards {sh} --out {out} --set eval.retrieval.split=val",
        "no split 'val' in the shard index (has ['test', 'train'])",
    ),
    "benchmark --audits a folder of no audit": (
        "benchmark --models ours={ck} --datasets shards --roots shards={sh} --out {out} "
        "--audits shards={dir}",
        "--audits: no audit.json in {dir}: run `cg3d audit --out {dir}`",
    ),
    "convert (a peer) --out a folder": (
        "convert openshape-pointbert --checkpoint {ck} --out {dir}",
        "--out: {dir} is a folder; name the file to write in it",
    ),
    "convert cg3d-release --out a folder": (
        "convert cg3d-release --checkpoint {ck} --clip-pretrained {shape} --out {dir}",
        "--out: {dir} is a folder; name the file to write in it",
    ),
    "export --format pt --measured": (
        "export --checkpoint {ck} --out {out}.pt --measured {shape}",
        "--measured goes in a model card: give --format hub",
    ),
    "zeroshot --set eval.zeroshot.text_cache a file": (
        "eval zeroshot --checkpoint {ck} --shards {sh} --out {out} "
        "--set eval.zeroshot.text_cache={shape}",
        "eval.zeroshot.text_cache: {shape} is a file, not a folder",
    ),
    "benchmark --text-cache a file": (
        "benchmark --models ours={ck} --datasets shards --roots shards={sh} --out {out} "
        "--text-cache {shape}",
        "--text-cache: {shape} is a file, not a folder",
    ),
    "index --set index.device unknown": (
        "index --checkpoint {ck} --shards {sh} --out {out} --set index.device=gpu0",
        "index.device must be cpu, cuda or cuda:N, got 'gpu0'",
    ),
    "search an index that is not one": (
        "search {dir} --checkpoint {ck} --text chair",
        "{dir}: not a CG3D index (no retrieval.json",
    ),
    "demo --index that is not one": (
        "demo --checkpoint {ck} --index {dir}",
        "{dir}: not a CG3D index (no retrieval.json",
    ),
    "demo --set demo.device unknown": (
        "demo --checkpoint {ck} --set demo.device=gpu0",
        "demo.device must be cpu, cuda or cuda:N, got 'gpu0'",
    ),
    # already refused first: kept so, beside the cases above
    "retrieval --out a file": (
        "eval retrieval --checkpoint {ck} --shards {sh} --out {shape}",
        "--out: {shape} is a file, not a folder",
    ),
    "finetune --set out of bounds": (
        "finetune --checkpoint {ck} --shards {sh} --out {out} --set finetune.epochs=0",
        "finetune.epochs must be ≥ 1",
    ),
    "scene-query a folder as the scene": (
        "scene-query {dir} --text chair --checkpoint {ck} --out {out}",
        "{dir}: not a regular file",
    ),
    "embed --out a folder": (
        "embed {shape} --checkpoint {ck} --out {dir}",
        "--out: {dir} must end in .npy or .parquet",
    ),
    "export --measured a folder": (
        "export --checkpoint {ck} --out {out} --format hub --measured {dir}",
        "--measured: {dir}: not a regular file",
    ),
    "classify --labels-file a folder": (
        "classify {shape} --checkpoint {ck} --labels-file {dir}",
        "--labels-file: {dir}: not a regular file",
    ),
    "benchmark --text-features a file": (
        "benchmark --models ours={ck} --datasets shards --roots shards={sh} --out {out} "
        "--text-features {shape}",
        "--text-features: {shape} is a file, not a folder",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_cheap_input_is_refused_before_the_model_loads(
    case, loads, tiny_checkpoint, tiny_shards, tmp_path
):
    words, expected = CASES[case]
    folder = tmp_path / "folder"
    folder.mkdir()
    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(100, 3)))
    out = tmp_path / "out"
    names = {"ck": tiny_checkpoint, "sh": tiny_shards, "out": out, "dir": folder, "shape": shape}

    def spelled(text: str) -> str:
        return text.format(**names)

    result = CliRunner().invoke(app, [spelled(word) for word in words.split()])
    assert loads == [], f"{case}: the model loaded before the refusal"
    assert isinstance(result.exception, UsageError), (case, result.output, result.exception)
    assert spelled(expected) in str(result.exception)
    assert "\n" not in str(result.exception)
    # nothing written: no output file, no folder content (a lock taken and released leaves none)
    written = [p for p in tmp_path.rglob("*") if p not in (folder, shape)]
    assert written == [] or written == [out] and not any(out.iterdir()), written


@pytest.mark.parametrize(
    "words",
    [
        "convert openshape-pointbert --checkpoint {missing} --out {out}",
        "convert cg3d-release --checkpoint {missing} --clip-pretrained {missing} --out {out}",
    ],
)
def test_a_convert_refused_after_its_out_check_leaves_no_folder(words, tmp_path):
    """`check_out_file` made --out's folders to probe them (`check_out_dir`), so a convert then
    refused for its input (a missing checkpoint) left new empty folders behind; before that
    check, a refused convert left nothing."""
    out = tmp_path / "new" / "deeper" / "model.pt"
    names = {"missing": tmp_path / "absent.pt", "out": out}
    result = CliRunner().invoke(app, [word.format(**names) for word in words.split()])
    assert isinstance(result.exception, UsageError), (result.output, result.exception)
    assert "absent.pt" in str(result.exception)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("words", "parameter"),
    [
        ("index --checkpoint {ck} --shards {sh} --out {out} --device cuda", "index.device"),
        ("demo --checkpoint {ck} --device cuda:1 --views 0", "demo.device"),
    ],
)
def test_a_cuda_device_this_torch_cannot_reach_is_refused_before_the_model(
    words, parameter, loads, tiny_checkpoint, tiny_shards, tmp_path, monkeypatch
):
    """A torch without CUDA (a CPU wheel) or a machine without a GPU: torch's "Found no
    NVIDIA driver" came as a traceback from inside the model's load."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    names = {"ck": tiny_checkpoint, "sh": tiny_shards, "out": tmp_path / "out"}
    result = CliRunner().invoke(app, [word.format(**names) for word in words.split()])
    assert isinstance(result.exception, UsageError), (result.output, result.exception)
    assert str(result.exception).startswith(f"{parameter}: cuda")
    assert "sees no GPU" in str(result.exception)
    assert loads == []
