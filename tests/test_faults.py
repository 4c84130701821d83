"""Faults: a run killed with SIGKILL at a random moment, or stopped with SIGTERM, resumes to
bit-identical weights."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import EXEMPT, RECIPES, TINY, VARIANTS, driver_command, result, write_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "flow-matching-moons.yaml")
ARGS = [
    "model.hidden=32",
    "model.depth=2",
    "data.n=2000",
    "trainer.batch_size=64",
    "trainer.steps=3000",
    "trainer.checkpoint_every=50",
    "trainer.log_every=50",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def command(
    out: Path, *extra: str, config: str = CONFIG, args: list[str] | None = None
) -> list[str]:
    return [sys.executable, "-m", "genlab", "train", config, *(ARGS if args is None else args),
            "--out", str(out), "--no-eval", *extra]  # fmt: skip


def final(out: Path, steps: int = 3000) -> dict[str, torch.Tensor]:
    tensors, meta = ckpt.load_latest(out / "checkpoints")
    assert meta["step"] == steps
    return {k: v for k, v in tensors.items() if k != "rng.global"}


def start_and_wait_for_a_checkpoint(out: Path, cmd: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt.list_checkpoints(out / "checkpoints"):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.01)
    return proc


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_family_has_a_tiny_recipe():
    from genlab.registry import MODELS

    assert set(MODELS.names()) - set(EXEMPT) == set(TINY), "add the family to tests/families.py"
    assert not set(VARIANTS) & set(MODELS.names())  # a variant is named apart from the families
    for tiny in RECIPES.values():
        assert Path(tiny.path).is_file(), tiny.config
        assert (tiny.ddp_atol == 1e-5 and not tiny.ddp_overrides) or tiny.why


def kill_each_run_once(plan: Path, seed: int, timeout: float = 1500) -> dict[str, int]:
    """Run the plan in tests/train_many.py, killing the driver with SIGKILL at a random moment of
    each run (after its first checkpoint) and starting it again, until every run has finished.
    Returns the last checkpoint each run had when it was killed."""
    folder = plan.parent
    results, rng, killed = folder / "results", random.Random(seed), {}
    deadline = time.time() + timeout
    while True:
        with open(folder / "driver.log", "a") as log:
            proc = subprocess.Popen(driver_command(plan), env=ENV, stdout=log, stderr=log)
        victim = None
        while victim is None and proc.poll() is None:
            current = results / "current"
            name = current.read_text() if current.is_file() else None
            if (name and name not in killed and not (results / f"{name}.rank0.json").exists()
                    and ckpt.list_checkpoints(folder / name / "checkpoints")):  # fmt: skip
                victim = name
            time.sleep(0.01)
            assert time.time() < deadline, "the killed runs did not finish in time"
        if victim is None:  # the driver finished the plan (a failed run is that run's failure)
            return killed
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (results / f"{victim}.rank0.json").exists():  # it finished first: train it again
            (results / f"{victim}.rank0.json").unlink()
            shutil.rmtree(folder / victim)
        else:
            killed[victim] = ckpt.list_checkpoints(folder / victim / "checkpoints")[-1]


@pytest.fixture(scope="session")  # once per worker, whatever order xdist sends the tests in
def every_family_killed(tmp_path_factory):
    """Every family's tiny recipe and the variants trained twice by tests/train_many.py: once
    straight through, and once killed with SIGKILL at a random moment of each run and resumed."""
    root = tmp_path_factory.mktemp("sigkill")
    runs = {}
    for family, tiny in RECIPES.items():
        every = max(tiny.steps // 20, 1)
        runs[family] = (tiny, [f"trainer.steps={tiny.steps}", f"trainer.checkpoint_every={every}",
                               f"trainer.log_every={every}"])  # fmt: skip
    ref = write_plan(root / "ref", runs)
    subprocess.run(driver_command(ref), env=ENV, capture_output=True, timeout=1500)
    killed = kill_each_run_once(write_plan(root / "killed", runs), seed=os.getpid())
    return root, killed


@pytest.mark.slow  # every recipe trained twice, one run killed: ~3.5 min
@pytest.mark.xdist_group("every-family-sigkill")  # one worker trains them all, in one process
@pytest.mark.parametrize("family", list(RECIPES))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(every_family_killed, family):
    root, killed = every_family_killed
    steps = RECIPES[family].steps
    for part in ("ref", "killed"):
        res = result(root / part, family)
        assert res["rc"] == 0, res["stderr"]
    assert family in killed, "the run finished before it could be killed"
    assert 0 < killed[family] <= steps
    assert result(root / "killed", family)["resumed"]
    ref, resumed = final(root / "ref" / family, steps), final(root / "killed" / family, steps)
    if RECIPES[family].init_from is not None:  # a warm restart: its EMA resumed with the rest
        assert any(k.startswith("ema.") for k in ref)
    assert_identical(ref, resumed)


@pytest.mark.slow  # two 3,000-step runs
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    subprocess.run(command(tmp_path / "ref"), env=ENV, check=True, capture_output=True)
    out = tmp_path / "stopped"
    proc = start_and_wait_for_a_checkpoint(out, command(out))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted (a checkpoint was saved; continue with --resume)" in err
    assert "Traceback" not in err
    steps = ckpt.list_checkpoints(out / "checkpoints")
    _, meta = ckpt.load_checkpoint(out / "checkpoints", steps[-1])  # written on SIGTERM; verifies
    assert meta["step"] == steps[-1]
    res = subprocess.run(command(out, "--resume"), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert_identical(final(tmp_path / "ref"), final(out))
