"""Data parallelism through torchrun on CPU (gloo): N processes follow one process's trajectory, and
checkpoints move between world sizes."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlab.train import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import TINY, driver_command, result, write_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "flow-matching-moons.yaml")
GAN = str(ROOT / "configs" / "gan-8gaussians.yaml")  # two players: critic and generator
TORCHRUN = Path(sys.executable).with_name("torchrun")
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

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")


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
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={procs}", *args]
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
    """Every family's tiny recipe (tests/families.py) for 12 steps, all in one process, then all in
    one torchrun group of two (tests/train_many.py: one start-up each, not one per family)."""
    root = tmp_path_factory.mktemp("one-and-two")
    runs = {family: (tiny, ["trainer.steps=12", "trainer.log_every=4",
                            "trainer.checkpoint_every=12", *tiny.ddp_overrides])
            for family, tiny in TINY.items()}  # fmt: skip
    for procs, part in ((1, "one"), (2, "two")):
        plan = write_plan(root / part, runs)
        # a run that fails on one rank may leave the other waiting in a collective: the runs it
        # did not finish then fail with "the driver never finished this run"
        log_file = root / part / "driver.log"
        with open(log_file, "w") as log, contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(driver_command(plan, procs), stdout=log, stderr=log, timeout=900,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    return root


@pytest.mark.xdist_group("every-family-one-and-two")  # one worker trains them all
@pytest.mark.parametrize("family", list(TINY))
def test_every_family_trains_alike_on_two_processes_and_one(every_family_on_one_and_two, family):
    # every registered family: weights, EMA and optimizer state after 12 steps
    root = every_family_on_one_and_two
    for part, ranks in (("one", 1), ("two", 2)):
        for rank in range(ranks):
            res = result(root / part, family, rank)
            assert res["rc"] == 0, res["stderr"]
    assert_close(final(root / "one" / family), final(root / "two" / family),
                 atol=TINY[family].ddp_atol)  # fmt: skip


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


def test_a_gan_on_two_processes_matches_one_process(tmp_path):
    # both players' updates: each on its own batch, split across the processes
    critic = ["model.n_critic=2", "model.loss=wgan-gp", "model.r1=1.0", "model.r1_every=3"]
    train(tmp_path / "one", 12, 1, *critic, config=GAN)
    train(tmp_path / "two", 12, 2, *critic, config=GAN)
    assert_close(final(tmp_path / "one"), final(tmp_path / "two"), atol=1e-5)


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


def test_global_batch_must_divide_across_processes(tmp_path):
    out = tmp_path / "odd"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "genlab", "train", CONFIG,
           *SMALL, "trainer.batch_size=63", "trainer.steps=2", "--out", str(out), "--no-eval"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert res.returncode != 0
    assert "must be divisible by the number of processes (2)" in res.stderr
    shutil.rmtree(out, ignore_errors=True)
