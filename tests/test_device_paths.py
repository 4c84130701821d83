"""The device paths on a machine without a GPU: the prepared GPU check runs its CPU part and exits
cleanly, and `trainer.compile` falls back with a message where torch.compile cannot run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script measures it")
def test_gpu_check_without_a_gpu_measures_the_cpu_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PY": sys.executable, "GPU_CHECK_FAMILIES": "flow-matching,gpt",
           "TMPDIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA GPU here" in proc.stderr and "nothing written to bench/results" in proc.stderr
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["gpu"] is None and set(record["families"]) == {"flow-matching", "gpt"}
    for rows in record["families"].values():
        assert list(rows) == ["cpu"] and rows["cpu"]["finite"] and rows["cpu"]["ms_per_step"] > 0


def test_compile_falls_back_with_a_message_where_torch_compile_cannot_run(tmp_path, monkeypatch,
                                                                          capsys):  # fmt: skip
    import genlab

    trainer_mod = importlib.import_module("genlab.train.trainer")  # (genlab.train is a function)

    monkeypatch.setattr(trainer_mod, "_COMPILE_CHECKED", {"cpu": "torch.compile is unavailable "
                                                          "on cpu (RuntimeError: no compiler)"})  # fmt: skip
    overrides = ["trainer.compile=true", "trainer.steps=3", "data.n=500", "trainer.batch_size=32"]
    run = genlab.train("configs/flow-matching-moons.yaml", tmp_path / "run", overrides=overrides,
                       evaluate=False, verbose=False)  # fmt: skip
    err = capsys.readouterr().err
    assert "trainer.compile: torch.compile is unavailable on cpu" in err
    assert "training without compilation" in err and run.dir.exists()
