"""The one params schema: every stage command's options, params files and --set fill the same
config; wrong values are one line naming the key; a new param is a field and a default."""

import dataclasses
import typing
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.options import with_params
from cg3d.params import (
    FinetuneConfig,
    MeshesConfig,
    PackConfig,
    Params,
    RenderConfig,
    RetrievalConfig,
    SampleConfig,
    SceneConfig,
    TrainConfig,
    ZeroShotConfig,
    load_params,
    load_section,
    option_fields,
    param,
)
from tests.param_values import flag_words, other_value

ROOT = Path(__file__).resolve().parents[1]


class Captured(Exception):
    """Stops a command right after it built its config."""


# (command words, stage function to stop at, config class, the command's own arguments)
COMMANDS = [
    (["meshes"], "cg3d.pipeline.sources.build_manifest", MeshesConfig, []),
    (["sample"], "cg3d.pipeline.sample.sample_points", SampleConfig, ["--meshes", "m"]),
    (["render"], "cg3d.render.stage.render_meshes", RenderConfig, ["--meshes", "m"]),
    (
        ["pack"],
        "cg3d.pipeline.pack.pack_shards",
        PackConfig,
        ["--meshes", "m", "--points", "p", "--renders", "r", "--captions", "c"],
    ),
    (["train"], "cg3d.train.loop.train_stage", TrainConfig, ["--shards", "s"]),
    (["eval", "zeroshot"], "cg3d.eval.zeroshot.zeroshot", ZeroShotConfig, ["--checkpoint", "c"]),
    (
        ["eval", "retrieval"],
        "cg3d.eval.retrieval.retrieval",
        RetrievalConfig,
        ["--checkpoint", "c", "--shards", "s"],
    ),
    (["finetune"], "cg3d.eval.finetune.finetune", FinetuneConfig, ["--checkpoint", "c"]),
    (
        ["scene-query", "scene.ply"],
        "cg3d.eval.scene.scene_query",
        SceneConfig,
        ["--checkpoint", "c", "--text", "a chair"],
    ),
]


def run_captured(monkeypatch, tmp_path, words, stage, arguments):
    def capture(*args, **kwargs):
        raise Captured(next(a for a in args if dataclasses.is_dataclass(a)))

    module, function = stage.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{function}", capture)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir(exist_ok=True)  # `cg3d train` checks --shards before its stage
    result = CliRunner().invoke(app, [*words, *arguments, "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, Captured), result.output
    return result.exception.args[0]


@pytest.mark.parametrize("words,stage,cls,own", COMMANDS, ids=lambda v: str(v))
def test_every_option_of_every_command_reaches_its_config(
    monkeypatch, tmp_path, words, stage, cls, own
):
    hints = typing.get_type_hints(cls)
    expected = {f.name: other_value(f, hints[f.name]) for f in option_fields(cls)}
    arguments = own + [w for name, v in expected.items() for w in flag_words(name, v)]
    config = run_captured(monkeypatch, tmp_path, words, stage, arguments)
    assert dataclasses.asdict(config) == dataclasses.asdict(cls()) | expected


def test_layers_defaults_then_file_then_set_then_flags(monkeypatch, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("sample: {points: 100, seed: 7, chunk_size: 3}\n")
    arguments = ["--meshes", "m", "--params", str(params)]
    arguments += ["--set", "sample.seed=8", "--set", "sample.chunk_size=4", "--chunk-size", "5"]
    config = run_captured(
        monkeypatch, tmp_path, ["sample"], "cg3d.pipeline.sample.sample_points", arguments
    )
    assert (config.points, config.seed, config.chunk_size) == (100, 8, 5)
    assert config.workers == SampleConfig().workers


def test_nested_sections_are_set_by_dotted_keys(monkeypatch, tmp_path):
    arguments = ["--shards", "s", "--set", "train.augment.jitter=false"]
    arguments += ["--set", "train.encoder_params={width: 8}"]
    config = run_captured(
        monkeypatch, tmp_path, ["train"], "cg3d.train.loop.train_stage", arguments
    )
    assert config.augment.jitter is False and config.augment.rotate_up is True
    assert config.encoder_params == {"width": 8}


def test_train_reads_no_params_file_it_was_not_given_and_writes_the_one_it_used(
    monkeypatch, tmp_path
):
    (tmp_path / "params.yaml").write_text("train: {epochs: 3}\n")
    config = run_captured(
        monkeypatch, tmp_path, ["train"], "cg3d.train.loop.train_stage", ["--shards", "s"]
    )
    assert config.epochs == TrainConfig().epochs
    written = yaml.safe_load((tmp_path / "out" / "params.yaml").read_text())
    assert written["train"]["epochs"] == TrainConfig().epochs
    config = run_captured(
        monkeypatch,
        tmp_path,
        ["train"],
        "cg3d.train.loop.train_stage",
        ["--shards", "s", "--params", "params.yaml"],
    )
    assert config.epochs == 3
    assert yaml.safe_load((tmp_path / "out" / "params.yaml").read_text())["train"]["epochs"] == 3


@pytest.mark.parametrize(
    "text,message",
    [
        ('train: {epochs: "two"}', "train.epochs must be an integer, got 'two'"),
        ("train: {batch_size: 2.5}", "train.batch_size must be an integer, got 2.5"),
        ("train: {shuffle_buffer: -1}", "train.shuffle_buffer must be ≥ 1 and ≤ 100000, got -1"),
        # a huge buffer held the whole split in each loader worker's memory
        (
            "train: {shuffle_buffer: 1000000000000}",
            "train.shuffle_buffer must be ≥ 1 and ≤ 100000, got 1000000000000",
        ),
        ("train: {device: tpu}", "train.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("train: [1, 2]", "train must be a mapping of its parameters"),
        ("train: {epochs: [", "not valid YAML (line 2)"),
        ("train: {augment: {jitter: maybe}}", "train.augment.jitter must be true or false"),
        ("train: {epoch: 3}", "train.epoch: unknown parameter"),
        # a key at the wrong level, or misspelt in a section the command does not read, was
        # never read and never said so
        ("epochs: 3", "epochs: unknown parameter (known: caption, demo, eval, finetune,"),
        ("render: {viewz: 5}", "render.viewz: unknown parameter (known: azimuth_jitter,"),
        ("eval: {zeroshoot: {batch_size: 5}}", "eval.zeroshoot: unknown parameter (known: re"),
        ("sample: {train: {epochs: 3}}", "sample.train: unknown parameter"),
        ("train: {epochs: 99999999999999999999999}", "train.epochs must be ≥ 1 and ≤ 92233"),
        # int() refuses more than 4300 digits: a ValueError traceback from inside PyYAML
        ("train: {epochs: " + "9" * 5000 + "}", "not valid YAML: Exceeds the limit (4300 digits)"),
        ("train: {require_pretrained: 1}", "train.require_pretrained must be true or false"),
        ("[1, 2]", "a params file is a mapping of sections"),
        # NaN and infinity pass every bound: refused for every float (issue 18 §4)
        ("train: {encoder_lr: .nan}", "train.encoder_lr must be finite, got nan"),
        ("train: {warmup_epochs: .inf}", "train.warmup_epochs must be finite, got inf"),
        ("train: {augment: {scale_low: .nan}}", "train.augment.scale_low must be finite"),
        ("train: {prompt_momentum: -.inf}", "train.prompt_momentum must be finite, got -inf"),
        ("train: {encoder_params: {dropout: .nan}}", "train.encoder_params must be finite"),
        ("train: {encoder_params: {radii: [0.2, .inf]}}", "train.encoder_params must be finite"),
        ("train: {batch_size: .nan}", "train.batch_size must be an integer, got nan"),
        # finite but past float32: the optimiser's step overflowed (a RuntimeError traceback)
        ("train: {prompt_lr: 1.0e+300}", "train.prompt_lr must be ≥ 0.0 and ≤ 1000.0, got 1e+300"),
        ("train: {encoder_lr: 1.0e+300}", "train.encoder_lr must be ≥ 0.0 and ≤ 1000.0"),
        ("train: {encoder_lr_min: 1.0e+300}", "train.encoder_lr_min must be ≥ 0.0 and ≤"),
        ("train: {prompt_weight_decay: 1.0e+300}", "train.prompt_weight_decay must be ≥ 0.0 and"),
        ("train: {encoder_weight_decay: 1.0e+40}", "train.encoder_weight_decay must be ≥ 0.0"),
        ("train: {point_text_weight: 1.0e+300}", "train.point_text_weight must be ≥ 0.0 and ≤"),
    ],
)
def test_a_wrong_params_file_is_one_line_naming_the_key(tmp_path, text, message):
    params = tmp_path / "params.yaml"
    params.write_text(text + "\n")
    result = CliRunner().invoke(
        app, ["train", "--shards", "s", "--out", str(tmp_path / "o"), "--params", str(params)]
    )
    assert isinstance(result.exception, UsageError)
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "o").exists()  # checked before any work


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["render", "--meshes", "m", "--resolution", "100000"], "render.resolution must be"),
        (["render", "--meshes", "m", "--elevation-min", "40"], "render.elevation_min (40.0)"),
        (["sample", "--meshes", "m", "--set", "sample.points=1e9"], "sample.points"),
        (["sample", "--meshes", "m", "--set", "sampl.points=1"], "unknown section 'sampl'"),
        (["sample", "--meshes", "m", "--set", "render.viewz=5"], "--set render.viewz: unknown"),
        # past int64: itertools.islice raised a ValueError traceback after the model loaded
        (
            ["eval", "zeroshot", "--checkpoint", "c", "--limit", str(10**23)],
            f"eval.zeroshot.limit must be ≥ 0 and ≤ {2**63 - 1}, got {10**23}",
        ),
        (["eval", "retrieval", "--checkpoint", "c", "--shards", "s", "--limit", str(2**63)], "≤ 9"),
        (["sample", "--meshes", "m", "--set", "eval.zeroshoot.limit=5"], "--set eval.zeroshoot:"),
        (["sample", "--meshes", "m", "--executor", "tpu"], "sample.executor must be one of"),
        (["meshes", "--set", "meshes.source=http"], "meshes.source must be one of"),
        (["train", "--shards", "s", "--set", "train.encoder_lr=.nan"], "must be finite"),
        (["render", "--meshes", "m", "--fov-deg", "nan"], "render.fov_deg must be finite"),
        (["render", "--meshes", "m", "--set", "render.azimuth_jitter=.NaN"], "must be finite"),
        (
            ["index", "--checkpoint", "c", "--shards", "s", "--set", "index.batch_size=.inf"],
            "index.batch_size must be an integer",
        ),
        (["sample", "--meshes", "m", "--set", "sample.timeout=.inf"], "sample.timeout must be"),
        (["finetune", "--checkpoint", "c", "--lr", "1e300"], "finetune.lr must be ≥ 1e-12 and ≤"),
        (["finetune", "--checkpoint", "c", "--set", "finetune.weight_decay=1.0e+300"], "≤ 1000"),
        (["finetune", "--checkpoint", "c", "--probe-l2", "1e300"], "finetune.probe_l2 must be"),
    ],
)
def test_wrong_options_are_one_line_naming_the_key(tmp_path, arguments, message):
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UsageError), result.output
    assert message in str(result.exception)


def test_the_repositorys_params_files_are_valid():
    default = load_params(ROOT / "params.yaml")
    assert (
        default.sample.points
        == yaml.safe_load((ROOT / "params.yaml").read_text())["sample"]["points"]
    )
    paper = load_section(TrainConfig, "train", ROOT / "configs" / "paper.yaml")
    assert (paper.clip_model, paper.epochs, paper.batch_size) == ("SLIP-ViT-B-16", 100, 64)
    openai = load_section(TrainConfig, "train", ROOT / "configs" / "paper-openai.yaml")
    assert (openai.clip_model, openai.clip_pretrained) == ("ViT-B-16", "openai")
    # the same recipe but for the backbone: the two files must not drift apart
    same = dict(clip_model=paper.clip_model, clip_pretrained=paper.clip_pretrained)
    assert dataclasses.replace(openai, **same) == paper


def test_every_section_of_params_yaml_is_in_the_schema():
    sections = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert sections <= {f.name for f in dataclasses.fields(Params)}


def test_a_new_param_is_a_field_and_a_default():
    @dataclasses.dataclass
    class Example:
        section = "example"
        size: int = param(2, "How big.", low=1)
        name: str = param("a", "What.")

        def validate(self) -> None:
            from cg3d.params import check

            check(self, self.section)

    seen = []
    demo = typer.Typer()

    @demo.command()
    @with_params(Example, "example")
    def run(config: Example) -> None:
        seen.append(config)

    assert CliRunner().invoke(demo, ["--size", "5"]).exit_code == 0
    assert seen[-1] == Example(size=5, name="a")
    result = CliRunner().invoke(demo, ["--size", "0"])
    assert isinstance(result.exception, UsageError) and "example.size must be ≥ 1" in str(
        result.exception
    )


def test_the_error_line_keeps_colons_and_brackets_as_written(tmp_path):
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text("train: {epochs: ':train: [bold]x[/]'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "train", "--shards", "s", "--out", str(tmp_path)]
        + ["--params", str(params)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert ":train: [bold]x[/]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_hands_its_resume_mode_to_the_stage(monkeypatch, tmp_path):
    seen = {}

    def capture(shards, out, config, resume):
        seen["resume"] = resume

    monkeypatch.setattr("cg3d.train.loop.train_stage", capture)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()  # `cg3d train` checks --shards before its stage
    for mode in ("auto", "always", "never"):
        result = CliRunner().invoke(
            app, ["train", "--shards", "s", "--out", str(tmp_path), "--resume", mode]
        )
        assert result.exit_code == 0, result.output
        assert seen["resume"] == mode
    assert CliRunner().invoke(app, ["train", "--shards", "s", "--out", "o", "--resume"]).exit_code


@pytest.mark.parametrize(
    "value,shown",
    [
        ("x" * 900_000, "'" + "x" * 66 + "…" + "x" * 134 + "' (900000 characters)"),
        ("[" + ", ".join(["1"] * 300_000) + "]", "[1, 1, 1"),
        ("9" * 4000, "9" * 66 + "…" + "9" * 134 + " (4000 characters)"),
    ],
)
def test_an_error_quotes_a_huge_value_cut_short(tmp_path, value, shown):
    """Before: a params file of a 900 KB string gave a 900 KB error "line"."""
    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  epochs: {value}\n")
    words = ["train", "--shards", "s", "--out", str(tmp_path / "o"), "--params", str(params)]
    result = CliRunner().invoke(app, words)
    assert isinstance(result.exception, UsageError)
    message = str(result.exception)
    assert message.startswith("train.epochs must be ") and shown in message
    assert len(message) < 400


def test_scalars_read_as_yaml_1_2_as_dvc_reads_them(tmp_path):
    # PyYAML reads YAML 1.1: `1e-4` (no dot) was the string "1e-4", refused as "must be a
    # number"; `no` was False (a model or class named "no"), `017` octal 15, a date a date
    params = tmp_path / "params.yaml"
    params.write_text(
        "train: {encoder_lr: 1e-4, prompt_lr: 2E-3, clip_model: no, clip_pretrained: off,"
        " epochs: 017, seed: 0x10}\nmeshes: {root: 2026-01-01, exclude: '1e3'}\n"
    )
    train = load_section(TrainConfig, "train", params)
    assert (train.encoder_lr, train.prompt_lr) == (0.0001, 0.002)
    assert (train.clip_model, train.clip_pretrained) == ("no", "off")
    assert (train.epochs, train.seed) == (17, 16)
    meshes = load_section(MeshesConfig, "meshes", params)
    assert (meshes.root, meshes.exclude) == ("2026-01-01", "1e3")
    # and on the command line
    train = load_section(TrainConfig, "train", assignments=["train.encoder_lr=5e-5"])
    assert train.encoder_lr == 0.00005


@pytest.mark.parametrize(
    "text,message",
    [
        ("train: {<<: {epochs: 3}}", "(line 1): YAML merge keys (<<) are not allowed in params"),
        ("train: {require_pretrained: yes}", "train.require_pretrained must be true or false"),
    ],
)
def test_yaml_1_1_forms_are_one_line_naming_the_file(tmp_path, text, message):
    params = tmp_path / "params.yaml"
    params.write_text(text + "\n")
    with pytest.raises(UsageError) as caught:
        load_section(TrainConfig, "train", params)
    assert message in str(caught.value) and str(params) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_params_a_run_wrote_read_back_the_same_in_yaml_1_2_and_1_1(tmp_path):
    # strings each reading takes for something else: "1e3" a number in 1.2, "no" a boolean
    # and "017" octal in 1.1; OUT/params.yaml is given back as --params to rerun a run
    from cg3d.params import write_resolved

    meshes = MeshesConfig(root="1e3", split_file="no", annotations="0x10", exclude="017")
    path = write_resolved(tmp_path / "params.yaml", "meshes", meshes)
    assert load_section(MeshesConfig, "meshes", path) == meshes
    read_by_1_1 = yaml.safe_load(path.read_text())["meshes"]
    assert [read_by_1_1[k] for k in ("root", "split_file", "exclude")] == ["1e3", "no", "017"]
