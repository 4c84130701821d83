"""The run directory, read from below every layer that needs it: the config a run names, its data,
a fresh model of its family, and a trained model rebuilt from its folder (:func:`load_run`). Models
(a second stage loading its stage-1 run), evaluation and the trainer import it downward; the
Python API re-exports it.

A run directory holds ``config.yaml`` (the resolved config) and ``checkpoints/`` (see
:mod:`genlab.checkpoint`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from genlab import checkpoint as ckpt
from genlab import config as config_mod
from genlab.config import Config
from genlab.data.base import Dataset
from genlab.errors import CheckpointError, DataError
from genlab.io import load_state_dict_checked
from genlab.registry import MODELS

if TYPE_CHECKING:  # the models sit above this module: it builds them through the registry
    from genlab.models.base import GenerativeModel, ModelSpec


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, saved: bool = False
) -> Config:
    """A :class:`Config` from a YAML file (or the defaults) and ``key=value`` overrides
    (``saved``: a run's own ``config.yaml``, see :func:`genlab.config.load`)."""
    return config_mod.load(path, overrides, saved=saved)


def load_data(cfg: Config) -> Dataset:
    """The dataset a config names (``data.path`` wins over ``data.name``)."""
    from genlab.data import load

    d = cfg.data
    fractions = {"val_fraction": d.val_fraction, "test_fraction": d.test_fraction}
    if d.path is not None:
        ds = load(path=d.path, seed=d.seed, **fractions, **d.options)
    else:
        ds = load(d.name, n=d.n, seed=d.seed, **fractions, **d.options)
    if d.pairs is None:
        return ds
    pairs = load(path=d.pairs, seed=d.seed, **fractions)
    if pairs.noise_train is None:
        raise DataError(
            f"data.pairs={d.pairs!r} has no 'noise' array (write it with genlab reflow)"
        )
    if pairs.shape != ds.shape:
        raise DataError(f"data.pairs holds examples of shape {pairs.shape}, the data {ds.shape}")
    return dataclasses.replace(
        ds, train=pairs.train, val=pairs.val, test=pairs.test, labels_train=pairs.labels_train,
        labels_val=pairs.labels_val, labels_test=pairs.labels_test, noise_train=pairs.noise_train,
        noise_val=pairs.noise_val, noise_test=pairs.noise_test,
    )  # fmt: skip


def build_model(
    cfg: Config, spec_or_dataset: ModelSpec | Dataset, *, resume: bool = False
) -> GenerativeModel:
    """A fresh model of ``cfg``'s family for the dataset's shape (or a saved spec): both carry
    ``shape`` and ``num_classes``, and for text the vocabulary. Data of a kind the family does not
    model (text for a flow, points for a GPT) is a :class:`DataError`.

    For a dataset (a model to train on it), the family first binds its config to the data
    (:meth:`~genlab.models.base.GenerativeModel.bind`: a second stage loads and checks its stage-1
    run), ``cfg.model`` becomes the bound config (what the run saves), and unless ``resume`` the
    model is initialized from the data (:meth:`~genlab.models.base.GenerativeModel.initialize`).
    A saved spec rebuilds the model from the config alone."""
    src = spec_or_dataset
    cls = MODELS.get(cfg.family)
    if isinstance(src, Dataset):
        if src.kind not in cls.data_kinds:
            raise DataError(
                f"{cfg.family} models train on {' or '.join(cls.data_kinds)}, and the data "
                f"{src.name!r} holds {src.kind}"
            )
        cfg.model = cls.bind(cfg.model, src, resume=resume)
        model = cls.from_config(cfg.model, src.shape, src.num_classes, src.meta.get("vocab"))
        if not resume:
            model.initialize(src)
        return model
    return cls.from_config(cfg.model, src.shape, src.num_classes, src.vocab)


@dataclass
class Run:
    """A run directory with its config and model (carrying the EMA weights when there are any)."""

    dir: Path
    config: Config
    model: GenerativeModel
    step: int
    _dataset: Dataset | None = field(default=None, repr=False)
    checkpoint: Path | None = None  # the checkpoint file the weights came from
    sha256: str | None = None  # its sha256 (hex), verified on loading

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_data(self.config)
        return self._dataset


def load_run(
    run_dir: str | Path,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    checkpoint: str | int = "auto",
) -> Run:
    """Rebuild a trained model from its run directory alone: its config and a checkpoint
    (``"auto"``: the best by validation loss when validation was tracked, else the newest good one;
    ``"last"``, ``"best"`` or a step number)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a genlab run: it has no config.yaml")
    cfg = load_config(cfg_path, saved=True)
    directory = run_dir / "checkpoints"
    if checkpoint == "auto":
        has_best = ckpt.checkpoint_paths(directory, ckpt.BEST)[1].is_file()
        checkpoint = ckpt.BEST if has_best else "last"
    if checkpoint == "last":
        found = ckpt.load_latest(directory)
    else:
        found = ckpt.load_checkpoint(directory, checkpoint)
    if found is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet (checkpoints/ is empty)")
    tensors, meta = found
    spec = meta["spec"]
    model = MODELS.get(cfg.family).from_config(
        cfg.model, tuple(spec["shape"]), spec.get("num_classes"), spec.get("vocab")
    )
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if prefix == "ema.":  # buffers are not averaged: take them from the raw weights
        for k, v in tensors.items():
            if k.startswith("model.") and k[6:] not in state:
                state[k[6:]] = v
    load_state_dict_checked(model, state, f"{run_dir} step {meta['step']}")
    model.to(device).eval()
    return Run(
        run_dir, cfg, model, int(meta["step"]), checkpoint=directory / meta["weights"],
        sha256=meta["sha256"],
    )  # fmt: skip
