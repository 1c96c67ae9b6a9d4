"""Every resource a user's params control has a bound (issue 25 §2, §4): the params YAML
(aliases, depth, duplicate keys), every seed, and every worker count, in the schema and at use.
Each rule is tested over every param it covers, found by walking the schema, not only over the
cases the issue names."""

import dataclasses
import typing

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.params import (
    MAX_WORKERS,
    SEED_MAX,
    Params,
    TrainConfig,
    bound_workers,
    load_params,
    load_section,
)


def every_field(cls=Params, where=""):
    """(dotted key, section class, field) of every param of the schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        key = f"{where}.{f.name}" if where else f.name
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from every_field(kind, key)
        else:
            yield key, cls, f


SEEDS = [key for key, _, f in every_field() if "seed" in f.name]
WORKERS = [key for key, _, f in every_field() if f.name == "workers"]


def nested(key: str, value) -> dict:
    *parents, leaf = key.split(".")
    tree = {leaf: value}
    for part in reversed(parents):
        tree = {part: tree}
    return tree


def check_file(tmp_path, text: str) -> str:
    """The one-line error of `cg3d params check`-style loading of `text`."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


# --- YAML --------------------------------------------------------------------------------


def test_the_billion_laughs_is_refused_at_its_first_alias(tmp_path):
    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [
        f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]"
        for p, x in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    assert "line 2" in check_file(tmp_path, "\n".join(rows) + "\n")


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {epochs: 3}\ntrain: *b\n",  # a whole section
        "train:\n  epochs: &e 3\n  grad_accum: *e\n",  # a scalar
        "base: &b {epochs: 3}\ntrain:\n  <<: *b\n",  # a merge key
        "train:\n  encoder_params: {radii: &r [0.1, 0.2]}\neval: {x: *r}\n",
    ],
)
def test_every_alias_is_refused(tmp_path, text):
    assert "aliases" in check_file(tmp_path, text)


@pytest.mark.parametrize("depth", [33, 100, 10_000])
@pytest.mark.parametrize("open_close", [("[", "]"), ("{a: ", "}")])
def test_nesting_past_the_bound_is_one_line(tmp_path, depth, open_close):
    opening, closing = open_close
    text = "train:\n  encoder_params: {x: " + opening * depth + "1" * (opening == "{a: ")
    assert "nested deeper than" in check_file(tmp_path, text + closing * depth + "}\n")


@pytest.mark.parametrize(
    "text,key,lines",
    [
        ("train:\n  epochs: 3\nsample:\n  points: 64\ntrain:\n  batch_size: 2\n", "train", (1, 5)),
        ("train:\n  epochs: 3\n  batch_size: 2\n  epochs: 4\n", "epochs", (2, 4)),
        ("train:\n  augment:\n    jitter: true\n    jitter: false\n", "jitter", (3, 4)),
        ("train: {epochs: 3, epochs: 4}\n", "epochs", (1, 1)),
        ("train:\n  encoder_params: {depth: 2, depth: 3}\n", "depth", (2, 2)),
    ],
)
def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path, text, key, lines):
    message = check_file(tmp_path, text)
    assert f"key {key!r} appears twice (lines {lines[0]} and {lines[1]})" in message


def test_a_params_file_with_duplicate_keys_stops_a_command(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    result = CliRunner().invoke(
        app, ["train", "--shards", "s", "--out", str(tmp_path / "o"), "--params", str(params)]
    )
    assert isinstance(result.exception, UsageError)
    assert "'epochs' appears twice (lines 2 and 3)" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_an_oversized_params_file_is_refused_unparsed(tmp_path):
    assert "larger than" in check_file(tmp_path, "# x\n" * 400_000)


def test_the_repository_params_and_configs_still_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [root / "params.yaml", *sorted((root / "configs").glob("*.yaml"))]:
        load_params(path)


def test_set_values_are_read_by_the_same_loader():
    # an alias in a --set value is no alias: the text stays a string, refused by type
    with pytest.raises(UsageError, match="train.epochs must be an integer"):
        load_section(TrainConfig, "train", None, ["train.epochs=*a"])
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(UsageError, match="train.encoder_params must be a mapping"):
        load_section(TrainConfig, "train", None, [f"train.encoder_params={deep}"])


# --- seeds ---------------------------------------------------------------------------------


def test_numpy_takes_exactly_the_seeds_the_schema_allows():
    np.random.seed(SEED_MAX)  # the reference: numpy's legacy generator, which stages use
    for bad in (-1, SEED_MAX + 1):
        with pytest.raises(ValueError):
            np.random.seed(bad)


@pytest.mark.parametrize("key", SEEDS)
def test_every_seed_is_bounded_in_the_schema(key):
    section = key.rsplit(".", 1)[0]
    cls = {k: c for k, c, _ in every_field()}[key]
    for bad in (-1, SEED_MAX + 1, 2**64):
        with pytest.raises(UsageError, match=rf"{key} must be ≥ 0 and ≤ {SEED_MAX}"):
            load_section(cls, section, None, [f"{key}={bad}"])
    assert load_section(cls, section, None, [f"{key}={SEED_MAX}"]).seed == SEED_MAX


def test_the_issue_seed_case_is_one_line(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "--shards", "s", "--out", str(tmp_path / "o"), "--set", "train.seed=-1"]
    )
    assert isinstance(result.exception, UsageError), result.output
    assert "train.seed must be ≥ 0" in str(result.exception)


# --- workers -------------------------------------------------------------------------------


def test_the_schema_lists_the_worker_params_the_issue_names():
    assert {"meshes.workers", "sample.workers", "render.workers", "train.workers"} <= set(WORKERS)
    assert "eval.zeroshot.workers" in WORKERS


@pytest.mark.parametrize("key", WORKERS)
def test_every_worker_param_is_bounded_in_the_schema(key):
    section = key.rsplit(".", 1)[0]
    cls = {k: c for k, c, _ in every_field()}[key]
    with pytest.raises(UsageError, match=rf"{key} must be .*≤ {MAX_WORKERS}, got 1000000"):
        load_section(cls, section, None, [f"{key}=1000000"])


@pytest.fixture
def two_cpus(monkeypatch):
    # Two CPUs whatever the machine: the affinity, and no cgroup quota (a CI container run with
    # --cpus=1 would lower the count below the two these tests expect).
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("cg3d.params.cgroup_cpu_quota", lambda root=None: None)


@pytest.mark.parametrize(
    "requested,executor,jobs,expected",
    [
        (0, "local", None, 2),  # 0: one per CPU
        (500, "local", None, 2),  # never more than the CPUs
        (500, "local", 1, 1),  # nor than the jobs
        (1, "local", 6, 1),
        (500, "ray", 6, 2),  # a private Ray runs on this machine's CPUs
        (0, "local", 0, 1),  # at least one
    ],
)
def test_bound_workers(two_cpus, monkeypatch, requested, executor, jobs, expected):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert bound_workers(requested, executor, jobs) == expected


def test_a_joined_ray_cluster_keeps_its_own_size(two_cpus, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert bound_workers(500, "ray", None) == 500
    assert bound_workers(500, "ray", 6) == 6


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    from cg3d.params import MeshesConfig
    from cg3d.pipeline.sources import build_manifest

    out = tmp_path_factory.mktemp("bounds") / "meshes"
    build_manifest(MeshesConfig(source="synthetic", per_class=1, workers=1), out)  # 10 objects
    return out


def test_the_data_stages_start_no_more_processes_than_cpus(two_cpus, monkeypatch, tmp_path, meshes):
    """sample, pack, meshes, synthetic: `run_chunks` is where their pools start."""
    from cg3d.params import SampleConfig
    from cg3d.pipeline.sample import sample_points

    started = []

    def pool(work, sized, workers, advance):
        started.append(workers)
        raise Stop

    monkeypatch.setattr("cg3d.pipeline.chunks._run_pool", pool)
    with pytest.raises(Stop):
        sample_points(meshes, tmp_path / "p", SampleConfig(points=32, workers=MAX_WORKERS))
    assert started == [2]


def test_render_starts_no_more_blenders_than_cpus_or_chunks(
    two_cpus, monkeypatch, tmp_path, meshes
):
    from cg3d.params import RenderConfig
    from cg3d.render.stage import render_meshes

    started = []

    def threads(jobs, workers, config, advance, scratch):
        started.append(workers)
        raise Stop

    monkeypatch.setattr("cg3d.render.stage._run_threads", threads)
    with pytest.raises(Stop):
        render_meshes(meshes, tmp_path / "r", RenderConfig(workers=30, chunk_size=5))
    assert started == [2]
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    with pytest.raises(Stop):  # 10 objects, chunks of 5: two chunks, two Blenders
        render_meshes(meshes, tmp_path / "r2", RenderConfig(workers=30, chunk_size=5))
    assert started[-1] <= 10 and started[-1] < 30


def test_the_training_loader_starts_no_more_workers_than_cpus_or_shards(two_cpus, monkeypatch):
    """The stage bounds the count by the CPUs (`loop.loader_workers`: a resume may keep its
    checkpoint's), the loader by the shards, each worker reading whole shards."""
    from cg3d.train import data
    from cg3d.train.loop import loader_workers

    assert loader_workers(TrainConfig(workers=500)) == 2
    made = {}

    def loader(dataset, **kwargs):
        made.update(kwargs)
        raise Stop

    monkeypatch.setattr(data.torch.utils.data, "DataLoader", loader)
    params = TrainConfig(batch_size=2, n_points=4)  # tiny worker buffers
    config = dataclasses.replace(data.LoaderConfig.of_params(params, image_size=8), workers=1000)
    for shards, expected in ((["a.tar"], 1), (["a.tar", "b.tar", "c.tar"], 3)):
        dataset = type("D", (), {"names": shards, "preprocess": data.ClipPreprocess(8)})()
        with pytest.raises(Stop):
            iter(data.Loader(dataset, config, train=True, samples=4)).__next__()
        assert made["num_workers"] == expected


@pytest.mark.parametrize("shapes,expected", [(1, None), (3, 2), (50, 2)])
def test_zeroshot_prepares_shapes_with_no_more_processes_than_cpus(
    two_cpus, monkeypatch, shapes, expected
):
    """eval.zeroshot.workers: a pool of at most the CPUs and the shapes (one shape: none)."""
    from cg3d.eval import zeroshot
    from cg3d.eval.readers import Benchmark

    pools = []

    class Pool:
        def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
            pools.append(workers)
            raise Stop

    monkeypatch.setattr(zeroshot, "ProcessPoolExecutor", Pool)
    benchmark = Benchmark("b", "", ["a"], shapes, lambda: iter([]))
    if expected is None:  # one shape: prepared in this process
        assert list(zeroshot.prepared_shapes(benchmark, 64, workers=MAX_WORKERS)) == []
        assert pools == []
        return
    with pytest.raises(Stop):
        list(zeroshot.prepared_shapes(benchmark, 64, workers=MAX_WORKERS))
    assert pools == [expected]
