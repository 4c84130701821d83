"""The test split never reaches training or selection: poison the test rows of a file and train
again, with validation, checkpoint selection and early stopping on; every checkpoint must be
bit-identical, while the evaluation (which reports on the test split) must change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab import checkpoint as ckpt
from genlab.data import load, split

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.log_every=5"]
SELECTION = ["trainer.val_every=5", "trainer.early_stopping=3", "trainer.checkpoint_every=5"]


def _train(config: str, data: Path, out: Path, *extra: str) -> dict[str, torch.Tensor]:
    cfg = genlab.load_config(
        ROOT / "configs" / config,
        ["data.name=null", f"data.path={data}", *QUIET, *SELECTION, *extra],
    )
    genlab.train(cfg, out, evaluate=False, verbose=False)
    return _checkpoints(out)


def _checkpoints(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every checkpoint the run kept (the last and the best by validation), and
    every validation loss it logged (what selection and early stopping decided on)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [(r["step"], r["val_loss"]) for r in lines if "val_loss" in r]
    assert len(val) >= 2, "the run must validate, so that selection could see a leak"
    out = {"val_loss": torch.tensor(val, dtype=torch.float64)}
    kept = [("last", ckpt.load_latest(run / "checkpoints"))]
    if ckpt.checkpoint_paths(run / "checkpoints", ckpt.BEST)[1].is_file():
        kept.append((ckpt.BEST, ckpt.load_checkpoint(run / "checkpoints", ckpt.BEST)))
    for which, (tensors, meta) in kept:
        out.update({f"{which}/{k}": v for k, v in tensors.items()})
        out[f"{which}/step"] = torch.tensor(int(meta["step"]))
    return out


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _test_rows(n: int, cfg: str, *extra: str) -> torch.Tensor:
    d = genlab.load_config(ROOT / "configs" / cfg, list(extra)).data
    return split(n, d.val_fraction, d.seed, d.test_fraction)[2]


def test_poisoned_test_points_leave_training_and_selection_bit_identical(tmp_path):
    x = load("moons", n=1200).train.numpy()
    rows = _test_rows(len(x), "flow-matching-moons.yaml").numpy()
    assert len(rows) == round(len(x) * 0.1) > 100
    poisoned = x.copy()
    poisoned[rows] = 50.0 + 10 * np.random.default_rng(0).standard_normal(poisoned[rows].shape)
    np.save(tmp_path / "clean.npy", x)
    np.save(tmp_path / "poisoned.npy", poisoned)
    tiny = ["model.hidden=16", "model.depth=2", "trainer.batch_size=64", "trainer.steps=40"]
    clean = _train("flow-matching-moons.yaml", tmp_path / "clean.npy", tmp_path / "a", *tiny)
    bad = _train("flow-matching-moons.yaml", tmp_path / "poisoned.npy", tmp_path / "b", *tiny)
    _assert_identical(clean, bad)
    # ... and the evaluation does read the test rows: its figures move, and say where they are from
    cfg = genlab.load_config(None, ["eval.n=100", "eval.seeds=1", "eval.nll_n=100"]).eval
    reps = [genlab.evaluate_run(genlab.load_run(tmp_path / r), cfg=cfg) for r in ("a", "b")]
    assert reps[0]["split"] == reps[1]["split"] == "test"
    assert all(m["split"] == "test" for r in reps for m in r["metrics"].values())
    assert reps[1]["metrics"]["w2"]["value"] > 10 * reps[0]["metrics"]["w2"]["value"]


def test_poisoned_test_images_reach_neither_training_nor_the_feature_network(tmp_path):
    from genlab.feature_networks import fingerprint

    ds = load("digits", val_fraction=0.0, test_fraction=0.0, n=600)
    images = np.round((ds.train.numpy()[:, 0] + 1) * 127.5).astype(np.uint8)
    labels = ds.labels_train.numpy()
    rows = _test_rows(len(images), "vae-digits.yaml").numpy()
    poisoned, bad_labels = images.copy(), labels.copy()
    poisoned[rows] = 255 - poisoned[rows]
    bad_labels[rows] = (bad_labels[rows] + 1) % 10
    np.savez(tmp_path / "clean.npz", images=images, labels=labels)
    np.savez(tmp_path / "poisoned.npz", images=poisoned, labels=bad_labels)
    tiny = ["model.hidden=16", "trainer.batch_size=32", "trainer.steps=30"]
    clean = _train("vae-digits.yaml", tmp_path / "clean.npz", tmp_path / "a", *tiny)
    bad = _train("vae-digits.yaml", tmp_path / "poisoned.npz", tmp_path / "b", *tiny)
    _assert_identical(clean, bad)
    a, b = (genlab.load_data(genlab.load_run(tmp_path / r).config) for r in ("a", "b"))
    assert fingerprint(a) == fingerprint(b)  # the feature network's data: train + validation
    assert not torch.equal(a.test, b.test)


def test_poisoned_test_text_leaves_training_bit_identical(tmp_path):
    """Text splits in contiguous blocks; the test block is shuffled (the same characters, so the
    vocabulary, which is the file's character set, is unchanged)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")[:6000]
    cut = len(text) - int(round(len(text) * 0.1))
    chars = list(text[cut:])
    np.random.default_rng(0).shuffle(chars)
    (tmp_path / "clean.txt").write_text(text, encoding="utf-8")
    (tmp_path / "poisoned.txt").write_text(text[:cut] + "".join(chars), encoding="utf-8")
    assert (tmp_path / "poisoned.txt").read_text(encoding="utf-8") != text
    tiny = ["model.depth=1", "model.context=16", "model.hidden=16", "model.heads=2",
            "trainer.batch_size=16", "trainer.steps=30"]  # fmt: skip
    clean = _train("char-gpt-shakespeare.yaml", tmp_path / "clean.txt", tmp_path / "a", *tiny)
    bad = _train("char-gpt-shakespeare.yaml", tmp_path / "poisoned.txt", tmp_path / "b", *tiny)
    _assert_identical(clean, bad)
    cfg = genlab.load_config(None, ["eval.nll_n=500"]).eval
    reps = [genlab.evaluate_run(genlab.load_run(tmp_path / r), cfg=cfg) for r in ("a", "b")]
    assert reps[0]["nll"]["split"] == "test" and reps[0]["nll"]["nats"] != reps[1]["nll"]["nats"]


def test_metrics_json_names_the_split_of_every_figure(tmp_path):
    x = load("moons", n=600).train.numpy()
    np.save(tmp_path / "p.npy", x)
    cfg = genlab.load_config(
        ROOT / "configs" / "maf-moons.yaml",
        ["data.name=null", f"data.path={tmp_path / 'p.npy'}", *QUIET, "trainer.steps=10",
         "model.hidden=8", "eval.n=50", "eval.seeds=1", "eval.nll_n=50"],
    )  # fmt: skip
    genlab.train(cfg, tmp_path / "run", verbose=False)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["split"] == "test" and report["nll"]["split"] == "test"
    assert report["metrics"] and all(m["split"] == "test" for m in report["metrics"].values())
    held = genlab.evaluate_run(genlab.load_run(tmp_path / "run"), held_out=tmp_path / "p.npy")
    assert held["split"] == "file" and held["nll"]["split"] == "file"
    assert len(held["data"]["sha256"]) == 64


@pytest.mark.parametrize("fractions", [(0.1, 0.1), (0.3, 0.0), (0.0, 0.25)])
def test_every_file_kind_splits_three_ways_deterministically(tmp_path, fractions):
    val, test = fractions
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.standard_normal((200, 3)))
    np.savez(tmp_path / "i.npz", images=rng.integers(0, 256, (200, 4, 4), dtype=np.uint8))
    (tmp_path / "t.txt").write_text("".join(rng.choice(list("abcd"), 2000)), encoding="utf-8")
    for name, size in (("p.npy", 200), ("i.npz", 200), ("t.txt", 2000)):
        a = load(path=tmp_path / name, val_fraction=val, test_fraction=test, seed=3)
        b = load(path=tmp_path / name, val_fraction=val, test_fraction=test, seed=3)
        parts = [(a.train, b.train), (a.val, b.val), (a.test, b.test)]
        assert all(torch.equal(p, q) for p, q in parts)
        assert [len(a.val), len(a.test)] == [round(size * val), round(size * test)]
        assert len(a.train) + len(a.val) + len(a.test) == size


def test_a_run_saved_before_the_test_split_keeps_its_split_and_says_how_to_evaluate(tmp_path):
    x = load("moons", n=300).train.numpy()
    np.save(tmp_path / "p.npy", x)
    cfg = genlab.load_config(
        ROOT / "configs" / "maf-moons.yaml",
        ["data.name=null", f"data.path={tmp_path / 'p.npy'}", *QUIET, "trainer.steps=2",
         "model.hidden=8", "data.test_fraction=0"],
    )  # fmt: skip
    genlab.train(cfg, tmp_path / "old", evaluate=False, verbose=False)
    saved = tmp_path / "old" / "config.yaml"  # as written before data.test_fraction existed
    saved.write_text(
        "\n".join(line for line in saved.read_text().splitlines() if "test_fraction" not in line)
    )
    run = genlab.load_run(tmp_path / "old")
    assert run.config.data.test_fraction == 0.0
    with pytest.raises(genlab.GenlabError, match="no test split.*--split val"):
        genlab.evaluate_run(run)
    val = genlab.load_config(None, ["eval.split=val", "eval.n=20", "eval.seeds=1"]).eval
    assert genlab.evaluate_run(run, cfg=val)["split"] == "val"
