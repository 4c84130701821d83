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

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "flow-matching-moons.yaml")
GAN = str(ROOT / "configs" / "gan-8gaussians.yaml")  # two players: critic and generator
GPT = str(ROOT / "configs" / "char-gpt-shakespeare.yaml")  # windows of a text at random offsets
EXTRA = {  # per config, after ARGS: a tiny GPT (data.n: the first 2000 characters)
    GPT: [
        "model.context=8",
        "model.hidden=16",
        "model.heads=2",
        "model.dropout=0.1",
        "trainer.val_every=0",
    ],
}
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


def command(out: Path, *extra: str, config: str = CONFIG) -> list[str]:
    return [
        sys.executable,
        "-m",
        "genlab",
        "train",
        config,
        *ARGS,
        *EXTRA.get(config, []),
        "--out",
        str(out),
        "--no-eval",
        *extra,
    ]


def final(out: Path) -> dict[str, torch.Tensor]:
    tensors, meta = ckpt.load_latest(out / "checkpoints")
    assert meta["step"] == 3000
    return {k: v for k, v in tensors.items() if k != "rng.global"}


def start_and_wait_for_a_checkpoint(out: Path, config: str = CONFIG) -> subprocess.Popen:
    proc = subprocess.Popen(
        command(out, config=config), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
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


@pytest.mark.parametrize("config", [CONFIG, GAN, GPT], ids=["flow-matching", "gan", "gpt"])
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, config):
    subprocess.run(command(tmp_path / "ref", config=config), env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "killed"
    proc = start_and_wait_for_a_checkpoint(out, config)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.list_checkpoints(out / "checkpoints")[-1]
    res = subprocess.run(command(out, "--resume", config=config), env=ENV, capture_output=True,
                         text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert_identical(final(tmp_path / "ref"), final(out))
    assert 0 < killed_at <= 3000


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    subprocess.run(command(tmp_path / "ref"), env=ENV, check=True, capture_output=True)
    out = tmp_path / "stopped"
    proc = start_and_wait_for_a_checkpoint(out)
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
