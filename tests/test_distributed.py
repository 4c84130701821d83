"""Data parallelism through torchrun on CPU (gloo): N processes follow one process's trajectory,
checkpoints move between world sizes, and leaving the process group ends its threads.

The processes are started by ``python -m torch.distributed.run`` with this interpreter (what the
``torchrun`` script runs), so these tests run wherever torch is installed."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import RECIPES, driver_command, launch, result, write_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "flow-matching-moons.yaml")
GAN = str(ROOT / "configs" / "gan-8gaussians.yaml")  # two players: critic and generator
SMALL = [
    "model.hidden=32",
    "model.depth=2",
    "data.n=2000",
    "trainer.batch_size=64",
    "trainer.warmup=5",
    "trainer.log_every=5",
    "trainer.checkpoint_every=10",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]
#: the threads of a gloo process group (its workers and its I/O loop), by the names they give
#: themselves: none may be left once the group is left
GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")


def train(
    out: Path,
    steps: int,
    procs: int,
    *extra: str,
    resume: bool = False,
    config: str = CONFIG,
    small: list[str] = SMALL,
) -> None:
    args = ["-m", "genlab", "train", config, *small, f"trainer.steps={steps}", *extra,
            "--out", str(out), "--no-eval"] + (["--resume"] if resume else [])  # fmt: skip
    cmd = [sys.executable, *args] if procs == 1 else launch(procs, *args)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def final(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = ckpt.load_latest(out / "checkpoints")
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0), k


@pytest.fixture(scope="session")  # once per worker, whatever order xdist sends the tests in
def every_family_on_one_and_two(tmp_path_factory):
    """Every family's tiny recipe and the variants (tests/families.py) for 12 steps, all in one
    process, then all in one process group of two (tests/train_many.py: one start-up each, not one
    per recipe)."""
    root = tmp_path_factory.mktemp("one-and-two")
    runs = {name: (tiny, ["trainer.steps=12", "trainer.log_every=4",
                          "trainer.checkpoint_every=12", *tiny.ddp_overrides])
            for name, tiny in RECIPES.items()}  # fmt: skip
    for procs, part in ((1, "one"), (2, "two")):
        plan = write_plan(root / part, runs)
        # a run that fails on one rank may leave the other waiting in a collective: the runs it
        # did not finish then fail with "the driver never finished this run"
        log_file = root / part / "driver.log"
        with open(log_file, "w") as log, contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(driver_command(plan, procs), stdout=log, stderr=log, timeout=900,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    return root


@pytest.mark.slow  # every recipe on 1 and 2 processes
@pytest.mark.xdist_group("every-family-one-and-two")  # one worker trains them all
@pytest.mark.parametrize("family", list(RECIPES))
def test_every_family_trains_alike_on_two_processes_and_one(every_family_on_one_and_two, family):
    # every registered family and variant: weights, EMA and optimizer state after 12 steps
    root = every_family_on_one_and_two
    for part, ranks in (("one", 1), ("two", 2)):
        for rank in range(ranks):
            res = result(root / part, family, rank)
            assert res["rc"] == 0, res["stderr"]
    one, two = final(root / "one" / family), final(root / "two" / family)
    if RECIPES[family].init_from is not None:  # a warm restart keeps an EMA of its own
        assert any(k.startswith("ema.") for k in one)
    assert_close(one, two, atol=RECIPES[family].ddp_atol)


@pytest.mark.slow  # every recipe on 1 and 2 processes
@pytest.mark.xdist_group("every-family-one-and-two")
def test_leaving_the_group_ends_its_threads_after_every_family(every_family_on_one_and_two):
    # the driver left the group after two dozen runs that built optimizers, EMAs, second stages
    results = every_family_on_one_and_two / "two" / "results"
    if not Path("/proc/self/task").is_dir():
        pytest.skip("the threads of a process are listed from /proc (Linux)")
    for rank in (0, 1):
        threads = json.loads((results / f"threads.rank{rank}.json").read_text())
        assert not [t for t in threads if t.startswith(GLOO_THREADS)], threads


def test_leaving_the_group_with_a_collective_in_flight_exits_cleanly(tmp_path):
    """The abort once seen at the end of a two-process run ("terminate called without an active
    exception", SIGABRT, after the run's work was done): torch modules imported after the group
    exists kept it alive past destroy_process_group, so its gloo threads ran on into interpreter
    shutdown, where one that needs the GIL is ended inside C++. tests/leave_group.py makes that
    certain to happen if the group outlives teardown: rank 1 leaves while its all-reduce, whose
    callback runs Python, waits a second for rank 0."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("the threads of a process are listed from /proc (Linux)")
    script = str(Path(__file__).with_name("leave_group.py"))
    res = subprocess.run(launch(2, script, str(tmp_path)), capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "terminate called" not in res.stderr, res.stderr[-3000:]
    for rank in (0, 1):
        threads = json.loads((tmp_path / f"threads.rank{rank}.json").read_text())
        assert not [t for t in threads if t.startswith(GLOO_THREADS)], threads


@pytest.mark.slow  # process groups of two, started several times
@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_two_processes_match_one_process(tmp_path, coupling):
    # after one step exp_avg = (1 - beta1) * gradient: the gradients themselves agree
    train(tmp_path / "one-1", 1, 1, f"model.coupling={coupling}")
    train(tmp_path / "two-1", 1, 2, f"model.coupling={coupling}")
    a, b = final(tmp_path / "one-1"), final(tmp_path / "two-1")
    grads = [k for k in a if k.endswith("exp_avg")]
    assert grads
    assert_close({k: a[k] for k in grads}, {k: b[k] for k in grads}, atol=1e-7)
    # and after 20 steps the weights, EMA and optimizer state agree
    train(tmp_path / "one", 20, 1, f"model.coupling={coupling}")
    train(tmp_path / "two", 20, 2, f"model.coupling={coupling}")
    assert_close(final(tmp_path / "one"), final(tmp_path / "two"), atol=1e-5)


@pytest.mark.slow  # process groups of two, started several times
def test_a_gan_on_two_processes_matches_one_process(tmp_path):
    # both players' updates: each on its own batch, split across the processes
    critic = ["model.n_critic=2", "model.loss=wgan-gp", "model.r1=1.0", "model.r1_every=3"]
    train(tmp_path / "one", 12, 1, *critic, config=GAN)
    train(tmp_path / "two", 12, 2, *critic, config=GAN)
    assert_close(final(tmp_path / "one"), final(tmp_path / "two"), atol=1e-5)


@pytest.mark.slow  # process groups of two, started several times
def test_checkpoints_move_between_world_sizes(tmp_path):
    const = "trainer.schedule=constant"  # so a 20-step run extended to 30 has the same schedule
    train(tmp_path / "ref", 30, 1, const)
    train(tmp_path / "a", 20, 2, const)  # 2 processes, then resumed in 1
    train(tmp_path / "a", 30, 1, const, resume=True)
    train(tmp_path / "b", 20, 1, const)  # 1 process, then resumed in 2
    train(tmp_path / "b", 30, 2, const, resume=True)
    ref = final(tmp_path / "ref")
    assert_close(final(tmp_path / "a"), ref, atol=1e-5)
    assert_close(final(tmp_path / "b"), ref, atol=1e-5)
    # rank 0 alone wrote the logs: one row per log step
    rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 6


@pytest.mark.slow  # process groups of two, started several times
def test_global_batch_must_divide_across_processes(tmp_path):
    out = tmp_path / "odd"
    cmd = launch(2, "-m", "genlab", "train", CONFIG, *SMALL, "trainer.batch_size=63",
                 "trainer.steps=2", "--out", str(out), "--no-eval")  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert res.returncode != 0
    assert "must be divisible by the number of processes (2)" in res.stderr
    shutil.rmtree(out, ignore_errors=True)
