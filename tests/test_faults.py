"""Faults: a run killed with SIGKILL at a random moment, or stopped with SIGTERM, resumes to
bit-identical weights."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.train import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import EXEMPT, TINY  # noqa: E402

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
    for tiny in TINY.values():
        assert Path(tiny.path).is_file(), tiny.config
        assert (tiny.ddp_atol == 1e-5 and not tiny.ddp_overrides) or tiny.why


@pytest.mark.parametrize("family", list(TINY))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, family):
    tiny = TINY[family]
    every = max(tiny.steps // 20, 1)
    args = tiny.args(f"trainer.steps={tiny.steps}", f"trainer.checkpoint_every={every}",
                     f"trainer.log_every={every}")  # fmt: skip
    subprocess.run(command(tmp_path / "ref", config=tiny.path, args=args), env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "killed"
    proc = start_and_wait_for_a_checkpoint(out, command(out, config=tiny.path, args=args))
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.list_checkpoints(out / "checkpoints")[-1]
    res = subprocess.run(command(out, "--resume", config=tiny.path, args=args), env=ENV,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert_identical(final(tmp_path / "ref", tiny.steps), final(out, tiny.steps))
    assert 0 < killed_at <= tiny.steps


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
