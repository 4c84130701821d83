"""The trainer: exact resume, checkpoints that verify, batches that are reproducible."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from families import TINY as RECIPES

from genlab import checkpoint as ckpt
from genlab.api import build_model, load_config, load_data
from genlab.config import Config, DataConfig, TrainerConfig
from genlab.data.base import Dataset
from genlab.data.images import from_uint8
from genlab.data.text import encode
from genlab.errors import CheckpointError, GenlabError
from genlab.io import load_state_dict_checked
from genlab.models.diffusion.model import FlowMatching, FlowMatchingConfig
from genlab.models.two_stage.stage1 import TwoStage
from genlab.registry import MODELS
from genlab.train.batching import EpochBatcher
from genlab.train.optim import ema_decay_at, lr_at
from genlab.train.trainer import Trainer


def small_setup(tmp_path, name="run", steps=30, coupling="independent", **trainer):
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    ds = Dataset("gauss", "points", x[:450], x[450:])
    tc = dict(
        steps=steps,
        batch_size=32,
        progress=False,
        tensorboard=False,
        log_every=5,
        checkpoint_every=10,
        warmup=5,
        lr=1e-2,
    )
    tc.update(trainer)
    cfg = Config(
        trainer=TrainerConfig(**tc), model=FlowMatchingConfig(hidden=16, depth=2, coupling=coupling)
    )
    torch.manual_seed(0)  # the initial weights
    model = FlowMatching.from_config(cfg.model, (2,))
    return Trainer(model, ds, cfg, tmp_path / name)


def weights(tr):
    return {k: v.clone() for k, v in tr.state_tensors().items()}


@pytest.mark.parametrize(
    "stop,coupling", [(7, "independent"), (10, "independent"), (23, "ot"), (10, "ot")]
)
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, stop, coupling):
    full = small_setup(tmp_path, "full", coupling=coupling)
    full.fit()
    part = small_setup(tmp_path, "part", coupling=coupling)
    part.fit(stop_at=stop)  # as if the process died right after saving at `stop`
    resumed = small_setup(tmp_path, "part", coupling=coupling)
    resumed.fit(resume=True)
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        if k != "rng.global":
            assert torch.equal(a[k], b[k]), k


#: network sizes that keep every family's runs to a second or two (each takes the fields it has):
#: the discriminator of VQGAN and the KL autoencoder from step 4, so a resume at step 8 restores
#: both players; no perceptual term (its network would train on the data first); a one-level
#: U-Net without attention for latent diffusion
TINY = {"hidden": 16, "depth": 1, "layers": 2, "z_dim": 4, "time_dim": 4, "n_critic": 2,
        "channels": 8, "head": 8, "first_kernel": 3, "components": 2, "codes": 16, "code_dim": 4,
        "disc_channels": 8, "disc_start": 4, "perceptual": 0.0, "context": 8, "heads": 2,
        "block_size": 2, "channel_mults": [1], "attention": False}  # fmt: skip
VERSE = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer\n"


def family_data(kind: str) -> Dataset:
    """A tiny dataset of ``kind``, made in memory as genlab's loaders make them: labelled 2-D
    points (2 classes); 8x8 images of uint8 values in [-1, 1] (10 classes, labels); a character
    stream split in contiguous blocks with its vocabulary (``meta["vocab"]``, as
    :mod:`genlab.data.text` makes)."""
    g = torch.Generator().manual_seed(0)
    if kind == "points":
        x = torch.randn(300, 2, generator=g)
        y = (x[:, 0] > 0).long()
        return Dataset("blobs", "points", x[:270], x[270:], y[:270], y[270:], num_classes=2)
    if kind == "images":
        pixels = torch.randint(0, 256, (300, 8, 8), generator=g, dtype=torch.uint8).numpy()
        return from_uint8(pixels, (torch.arange(300) % 10).numpy(), "noise", n=None,
                          val_fraction=0.1, test_fraction=0.1, seed=0, source="memory")  # fmt: skip
    assert kind == "tokens", kind
    text = VERSE * 12
    vocab = "".join(sorted(set(text)))
    ids = encode(text, vocab)
    a, b = int(len(ids) * 0.8), int(len(ids) * 0.9)
    meta = {"source": "memory", "vocab": vocab, "vocab_size": len(vocab)}
    return Dataset("verse", "tokens", ids[:a], ids[a:b], test=ids[b:], meta=meta)


def stage1_family(family: str) -> str | None:
    """The family of the stage 1 that a second stage's tiny recipe (tests/families.py) trains;
    None for a family that is not a second stage."""
    tiny = RECIPES.get(family)
    if tiny is None or tiny.stage1 is None:
        return None
    return load_config(tiny.stage1.path).family


def family_kind(family: str) -> str:
    """The first data kind ``family`` takes; a second stage's, the first that the stage 1 of its
    tiny recipe takes too (images: the KL autoencoder under ldm, the VQ-VAE under vqgan-prior)."""
    kinds = MODELS.get(family).data_kinds
    first = stage1_family(family)
    if first is not None:
        kinds = [k for k in kinds if k in MODELS.get(first).data_kinds]
    return kinds[0]


def tiny_config(cls):
    """``cls``'s config with the :data:`TINY` sizes it has."""
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    return cls.Config(**{k: v for k, v in TINY.items() if k in fields})


def trainer_config(steps: int = 12) -> TrainerConfig:
    return TrainerConfig(steps=steps, batch_size=32, progress=False, tensorboard=False, log_every=3,
                         checkpoint_every=4, warmup=2, lr=1e-2)  # fmt: skip


def tiny_stage1(out: Path, family: str, data: Dataset) -> Path:
    """A 12-step run of the autoencoder ``family`` in ``out`` (once), on ``data``'s training and
    validation examples written to a file its config names: a second stage reloads the data of
    its stage-1 run and checks that it holds the same examples as its own."""
    if (out / "config.yaml").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    x, y = torch.cat([data.train, data.val]), torch.cat([data.labels_train, data.labels_val])
    if data.kind == "images":  # the uint8 values they were made from
        x = ((x + 1) * 127.5).round().to(torch.uint8)
    path = out.parent / f"{out.name}-data.npz"
    np.savez(path, x=x.numpy(), labels=y.numpy())
    data_cfg = DataConfig(name=None, path=str(path), test_fraction=0.0)
    model = tiny_config(MODELS.get(family))
    cfg = Config(data=data_cfg, trainer=trainer_config(), model=model, family=family)
    own = load_data(cfg)
    torch.manual_seed(0)
    Trainer(build_model(cfg, own), own, cfg, out).fit()
    return out


def family_config(folder: Path, family: str, data: Dataset, steps: int = 12) -> Config:
    """A run's config for ``family`` with a tiny network; a second stage's names a tiny stage-1
    run on the same data (trained into ``folder/stage1`` on first use)."""
    model = tiny_config(MODELS.get(family))
    first = stage1_family(family)
    if first is not None:
        stage1 = tiny_stage1(folder / "stage1", first, data)
        model = dataclasses.replace(model, autoencoder=str(stage1))
    return Config(trainer=trainer_config(steps), model=model, family=family)


def family_setup(
    tmp_path, family: str, name: str, steps: int = 12, resume: bool = False
) -> Trainer:
    """A trainer for any registered family, with a tiny network, on a tiny dataset of the data
    kind :func:`family_kind` picks, the model built as ``genlab train`` builds it (bound to the
    data, and initialized from it unless ``resume``)."""
    ds = family_data(family_kind(family))
    cfg = family_config(tmp_path, family, ds, steps)
    torch.manual_seed(0)
    return Trainer(build_model(cfg, ds, resume=resume), ds, cfg, tmp_path / name)


def skip_uncovered(family: str) -> None:
    """Skip, with the reason, a family these tests cannot build on their own."""
    if issubclass(MODELS.get(family), TwoStage) and stage1_family(family) is None:
        pytest.skip(f"{family} is a second stage whose tiny recipe (tests/families.py) names no "
                    "stage 1 to train")  # fmt: skip


@pytest.mark.parametrize("family", MODELS.names())
def test_every_family_resumes_to_the_same_weights(tmp_path, family):
    # the registry's every family, with all its players, on the first data kind it takes (points,
    # images or text; a second stage over a tiny stage-1 run): stopped at a checkpoint and
    # resumed, a run reaches bit-identical weights, EMA, optimizer states and buffers
    skip_uncovered(family)
    full = family_setup(tmp_path, family, "full")
    full.fit()
    family_setup(tmp_path, family, "part").fit(stop_at=8)
    resumed = family_setup(tmp_path, family, "part", resume=True)
    resumed.fit(resume=True)
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and resumed.draws == full.draws
    for k in a:
        if k != "rng.global":
            assert torch.equal(a[k], b[k]), k


def test_players_gradients_never_leak(tmp_path):
    # a generator update leaves the critic's weights, gradients and optimizer state untouched,
    # and a critic update the generator's
    tr = family_setup(tmp_path, "gan", "gan")
    for _ in range(3):
        tr.train_step()  # both players have optimizer state now
    by = {ps.name: ps for ps in tr.players}
    for mover, still in (("generator", "critic"), ("critic", "generator")):
        other = by[still]
        params = [q.detach().clone() for q in other.params]
        grads = [None if q.grad is None else q.grad.clone() for q in other.params]
        state = {k: v.clone() for k, v in tr.state_tensors().items() if f"optim.{still}." in k}
        tr._update(by[mover], tr.next_batch())
        assert all(torch.equal(a, q) for a, q in zip(params, other.params)), mover
        for a, q in zip(grads, other.params):
            assert (a is None and q.grad is None) or torch.equal(a, q.grad), mover
        after = tr.state_tensors()
        assert all(torch.equal(v, after[k]) for k, v in state.items()), mover


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        small_setup(tmp_path).fit(resume=True)


def test_training_into_an_existing_run_refuses_to_overwrite(tmp_path):
    small_setup(tmp_path, steps=5).fit()
    with pytest.raises(GenlabError, match="--resume"):
        small_setup(tmp_path, steps=5).fit()


def test_checkpoint_round_trip_and_rotation(tmp_path):
    tr = small_setup(tmp_path, steps=40, keep_last=2)
    tr.fit()
    steps = ckpt.list_checkpoints(tr.checkpoint_dir)
    assert steps == [30, 40]
    tensors, meta = ckpt.load_checkpoint(tr.checkpoint_dir, 40)
    assert meta["step"] == 40 and meta["data_position"]["pos"] >= 0
    assert all(k.startswith(("model.", "ema.", "optim.", "rng.")) for k in tensors)
    assert not list(tr.checkpoint_dir.glob(".*tmp*"))  # no temporary files left behind


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    tr = small_setup(tmp_path, steps=20)
    tr.fit()
    w, _ = ckpt.checkpoint_paths(tr.checkpoint_dir, 20)
    blob = bytearray(w.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    w.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(tr.checkpoint_dir, 20)
    with pytest.warns(UserWarning, match="corrupt"):
        _, meta = ckpt.load_latest(tr.checkpoint_dir)
    assert meta["step"] == 10


def test_truncated_checkpoint_and_bad_sidecar_are_reported(tmp_path):
    tr = small_setup(tmp_path, steps=10)
    tr.fit()
    w, j = ckpt.checkpoint_paths(tr.checkpoint_dir, 10)
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(tr.checkpoint_dir, 10)
    j.write_text("{not json")
    with pytest.raises(CheckpointError, match="sidecar"):
        ckpt.load_checkpoint(tr.checkpoint_dir, 10)
    with pytest.raises(CheckpointError, match="no usable checkpoint"), pytest.warns(UserWarning):
        ckpt.load_latest(tr.checkpoint_dir)


def test_shape_mismatch_names_the_parameter(tmp_path):
    tr = small_setup(tmp_path, steps=5)
    tr.fit()
    other = FlowMatching.from_config(FlowMatchingConfig(hidden=8, depth=2), (2,))
    tensors, _ = ckpt.load_checkpoint(tr.checkpoint_dir, 5)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    with pytest.raises(CheckpointError, match=r"net\.net\.0\.weight.*\(16, 34\).*\(8, 34\)"):
        load_state_dict_checked(other, state, "test")


def test_metrics_logs_are_written(tmp_path):
    tr = small_setup(tmp_path, steps=20)
    tr.fit()
    rows = [json.loads(line) for line in (tr.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in rows)
    assert (tr.run_dir / "metrics.csv").read_text().startswith("step,loss,lr")
    assert (tr.run_dir / "config.yaml").is_file()


def test_the_progress_bar_shows_the_loss_between_log_lines(tmp_path, monkeypatch):
    import io

    from genlab.train import logs

    screen = io.StringIO()
    real = logs.tqdm
    monkeypatch.setattr(logs, "tqdm", lambda **kw: real(**{**kw, "disable": False, "file": screen}))
    monkeypatch.setattr(logs.LossWindow, "POSTFIX_EVERY", 0.0)
    tr = small_setup(tmp_path, steps=12, log_every=1000, progress=True)  # no log line at all
    tr.fit()
    assert "loss=" in screen.getvalue()


def test_a_diverging_run_stops_with_a_clear_message(tmp_path):
    tr = small_setup(tmp_path, steps=40, max_skipped=10)
    tr.batcher.x[:] = float("nan")
    with pytest.raises(GenlabError, match="10 steps in a row .* non-finite loss or gradient"):
        tr.fit()


def test_a_diverging_run_rolls_back_with_a_lower_learning_rate(tmp_path):
    tr = small_setup(
        tmp_path, steps=40, max_skipped=5, on_divergence="rollback", checkpoint_every=10
    )
    clean = tr.batcher.x.clone()
    real_step = tr.train_step
    poisoned = {"done": False}

    def step():
        if tr.step == 15 and not poisoned["done"]:  # the data goes bad for a while
            tr.batcher.x[:] = float("nan")
            poisoned["done"] = True
        if tr.step == 10 and poisoned["done"]:  # after the rollback it is clean again
            tr.batcher.x[:] = clean
        return real_step()

    tr.train_step = step
    tr.fit()
    assert tr.step == 40 and tr.rollbacks == 1 and tr.lr_scale == 0.5
    rows = [json.loads(r) for r in (tr.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("rollback") == 1 for r in rows)
    assert all(torch.isfinite(p).all() for p in tr.params)


def test_a_non_finite_step_is_skipped_and_counted(tmp_path):
    tr = small_setup(tmp_path, steps=10)
    for _ in range(3):
        tr.train_step()
    before = [p.detach().clone() for p in tr.params]
    state = {k: v.clone() for k, v in tr.state_tensors().items() if k.startswith("optim.")}
    x = tr.batcher.x.clone()
    tr.batcher.x[:] = float("inf")
    tr.train_step()
    assert int(tr.bad_steps) == 1
    assert all(torch.equal(a, p) for a, p in zip(before, tr.params))
    after = {k: v for k, v in tr.state_tensors().items() if k.startswith("optim.")}
    assert all(torch.equal(state[k], after[k]) for k in state)
    tr.batcher.x[:] = x
    tr.train_step()
    assert int(tr.bad_steps) == 1
    assert not all(torch.equal(a, p) for a, p in zip(before, tr.params))


def test_the_grad_scaler_path_counts_skipped_steps_and_stops_a_divergence(tmp_path):
    # fp16 runs step through a GradScaler; here a CPU one stands in for CUDA's: a step whose
    # gradient is not finite is skipped by the scaler and must be counted like any other
    tr = small_setup(tmp_path, steps=40, max_skipped=10)
    tr.players[0].scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    tr.train_step()
    assert int(tr.bad_steps) == 0
    tr.batcher.x[:] = float("nan")
    tr.train_step()
    assert int(tr.bad_steps) == 1 and int(tr.consecutive_bad) == 1
    with pytest.raises(GenlabError, match=r"\d+ steps in a row .* non-finite"):
        tr.fit()


def test_clipping_bounds_the_update_like_clip_grad_norm(tmp_path):
    # the fused path (grad_scale) and torch's clip_grad_norm_ give the same step
    a = small_setup(tmp_path, "a", steps=5, grad_clip=0.01, ema_decay=0.0)
    b = small_setup(tmp_path, "b", steps=5, grad_clip=0.01, ema_decay=0.0)
    assert a.players[0].fused
    a.train_step()
    batch = b.next_batch()
    for group in b.optimizer.param_groups:
        group["lr"] = lr_at(0, b.tc)
    b.model.loss(batch, b.generator).backward()
    torch.nn.utils.clip_grad_norm_(b.params, 0.01)
    b.optimizer.step()
    for pa, pb in zip(a.params, b.params):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_batcher_is_reproducible_and_covers_each_epoch():
    x = torch.arange(10.0)[:, None]
    b = EpochBatcher(x, None, batch_size=4, seed=3)
    seen = torch.cat([b.next().x for _ in range(5)]).flatten()  # 20 = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    c = EpochBatcher(x, None, batch_size=4, seed=3)
    c.next()
    state = c.state()
    d = EpochBatcher(x, None, batch_size=4, seed=3)
    d.load_state(state)
    assert torch.equal(torch.cat([d.next().x for _ in range(4)]).flatten(), seen[4:])


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4097, 65_537])
def test_a_computed_permutation_is_a_bijection_however_it_is_sliced(n):
    from genlab.train.batching import Permutation

    p = Permutation(n, key=11)
    whole = p[0:n]
    assert sorted(whole.tolist()) == list(range(n))
    assert torch.equal(torch.cat([p[0 : n // 3], p[n // 3 : n]]), whole)
    assert n < 17 or not torch.equal(whole, Permutation(n, key=12)[0:n])  # the key matters


def test_batcher_of_a_long_stream_covers_each_epoch_without_holding_it(monkeypatch):
    """Past PERM_LIMIT examples (a long text's windows) an epoch's order is computed per batch:
    each epoch still visits every example once, and a resumed batcher draws the same batches."""
    from genlab.train import batching

    monkeypatch.setattr(batching, "PERM_LIMIT", 8)
    x = torch.arange(30).to(torch.uint16).unfold(0, 3, 1)  # 28 windows of a uint16 stream
    b = EpochBatcher(x, None, batch_size=5, seed=3)
    assert isinstance(b._perm, batching.Permutation)
    seen = torch.cat([b.next().x for _ in range(28)])  # 140 = 5 epochs
    assert seen.dtype == torch.long  # token windows leave the batcher as int64
    for e in range(5):
        assert sorted(seen[28 * e : 28 * (e + 1), 0].tolist()) == list(range(28))
    c = EpochBatcher(x, None, batch_size=5, seed=3)
    for _ in range(7):
        c.next()
    d = EpochBatcher(x, None, batch_size=5, seed=3)
    d.load_state(c.state())
    assert torch.equal(torch.cat([d.next().x for _ in range(6)]), seen[35:65])


def test_schedule_and_ema_decay():
    tc = TrainerConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, tc) == pytest.approx(0.1)
    assert lr_at(9, tc) == pytest.approx(1.0)
    assert lr_at(10, tc) == pytest.approx(1.0)
    assert lr_at(55, tc) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(100, tc) == pytest.approx(0.1)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999) == 0.999


def test_ema_is_the_running_average_of_the_weights(tmp_path):
    tr = small_setup(tmp_path, steps=3, ema_decay=0.5, grad_clip=0.0)
    history = []
    for _ in range(3):
        tr.train_step()
        history.append([p.detach().clone() for p in tr.params])
    # by hand: e0 = w_init; e_k = e_{k-1} + (1 - d_k)(w_k - e_{k-1})
    init = small_setup(tmp_path, "init", steps=3)
    e = [p.detach().clone() for p in init.params]
    for k, ws in enumerate(history):
        d = ema_decay_at(k, 0.5)
        e = [ei + (1 - d) * (wi - ei) for ei, wi in zip(e, ws)]
    for ei, ti in zip(e, tr.ema):
        assert torch.allclose(ei, ti, atol=1e-6)


def test_validation_keeps_the_best_checkpoint_and_stops_early(tmp_path):
    tr = small_setup(tmp_path, steps=400, val_every=10, early_stopping=2, lr=0.3, warmup=0)
    tr.fit()  # a learning rate this high makes the validation loss stop improving quickly
    assert tr.stopped_early and tr.step < 400
    rows = [json.loads(r) for r in (tr.run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) >= 3
    _, meta = ckpt.load_checkpoint(tr.checkpoint_dir, ckpt.BEST)
    assert meta["best_val"] == pytest.approx(min(vals))
    assert tr.validate() == pytest.approx(vals[-1])  # deterministic: same generator every check


def test_validation_state_survives_resume(tmp_path):
    full = small_setup(tmp_path, "full", steps=40, val_every=10)
    full.fit()
    small_setup(tmp_path, "part", steps=40, val_every=10).fit(stop_at=20)
    resumed = small_setup(tmp_path, "part", steps=40, val_every=10)
    resumed.fit(resume=True)
    assert resumed.best_val == full.best_val


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    full = small_setup(tmp_path, "full", steps=30)
    full.fit()
    part = small_setup(tmp_path, "part", steps=30)
    real_step = part.train_step

    def interrupted():
        if part.step == 13:
            raise KeyboardInterrupt
        return real_step()

    part.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert ckpt.list_checkpoints(part.checkpoint_dir)[-1] == 13
    resumed = small_setup(tmp_path, "part", steps=30)
    resumed.fit(resume=True)
    a, b = weights(full), weights(resumed)
    for k in a:
        if k != "rng.global":
            assert torch.equal(a[k], b[k]), k


def test_a_full_disk_leaves_the_last_good_checkpoint_intact(tmp_path, monkeypatch):
    import errno
    import os

    tr = small_setup(tmp_path, steps=20)
    tr.fit(stop_at=10)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    tr.step = 20
    with pytest.raises(CheckpointError, match="No space left.*step 10\\) is intact"):
        tr.save()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert ckpt.list_checkpoints(tr.checkpoint_dir) == [10]
    assert not [p for p in tr.checkpoint_dir.iterdir() if "0000020" in p.name or "tmp" in p.name]
    _, meta = ckpt.load_latest(tr.checkpoint_dir)
    assert meta["step"] == 10


def test_ema_every_n_steps_uses_the_compounded_decay(tmp_path):
    tr = small_setup(tmp_path, steps=6, ema_decay=0.9, ema_every=3)
    init = [e.clone() for e in tr.ema]
    tr.train_step()
    tr.train_step()
    assert all(torch.equal(a, b) for a, b in zip(init, tr.ema))  # not yet
    tr.train_step()
    d = ema_decay_at(2, 0.9) ** 3
    for e0, e, p in zip(init, tr.ema, tr.params):
        assert torch.allclose(e, e0 + (1 - d) * (p.detach() - e0), atol=1e-6)


@pytest.mark.parametrize("family", ["pixelcnn", "vqvae"])
def test_channels_last_trains_to_the_same_weights_up_to_rounding_and_resumes_exactly(
    tmp_path, family
):
    """trainer.channels_last: convolution weights and image batches in NHWC order give the
    weights of the default layout up to float rounding, and a resumed run is bit-identical to an
    uninterrupted one in that layout (checkpoints are saved contiguous and loaded back)."""

    def nhwc_setup(name: str, resume: bool = False) -> Trainer:
        ds = family_data(family_kind(family))
        cfg = family_config(tmp_path, family, ds)
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, channels_last=True))
        torch.manual_seed(0)
        return Trainer(build_model(cfg, ds, resume=resume), ds, cfg, tmp_path / name)

    plain = family_setup(tmp_path, family, "plain")
    plain.fit()
    nhwc = nhwc_setup("nhwc")
    convs = [p for p in nhwc.model.parameters() if p.dim() == 4 and p.shape[1] * p.shape[2] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous() for p in convs)
    nhwc.fit()
    a, b = weights(plain), weights(nhwc)
    assert a.keys() == b.keys()
    for k in a:
        if k != "rng.global" and a[k].is_floating_point():
            torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    nhwc_setup("part").fit(stop_at=8)
    resumed = nhwc_setup("part", resume=True)
    resumed.fit(resume=True)
    c = weights(resumed)
    for k in b:
        if k != "rng.global":
            assert torch.equal(b[k], c[k]), k
